"""Training configuration: one dataclass, CLI flags derived from its fields."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Dict, Optional, Union, get_args, get_origin, get_type_hints

__all__ = ["TrainConfig", "add_config_arguments", "config_from_args"]


@dataclass
class TrainConfig:
    """Everything the shared training loop (:func:`rnnpool.train.fit`) needs to know.

    The defaults are the paper's classification recipe (SGD, momentum 0.9, weight decay 4e-5,
    cosine learning rate from 0.05, batch 256; SPEC §3). The config is stored verbatim
    (``dataclasses.asdict``) in every checkpoint.

    >>> cfg = TrainConfig(epochs=2, batch_size=8)
    >>> cfg.lr, cfg.momentum, cfg.weight_decay
    (0.05, 0.9, 4e-05)
    """

    epochs: int = 150
    batch_size: int = 256  # per process; the global batch under torchrun is world_size times this
    lr: float = 0.05  # peak learning rate (after warm-up), cosine decay to min_lr
    min_lr: float = 0.0
    warmup_epochs: float = 0.0  # linear warm-up from 0, counted in (fractional) epochs
    momentum: float = 0.9
    weight_decay: float = 4e-5
    nesterov: bool = False
    amp: bool = False  # CUDA autocast + GradScaler when on a GPU; ignored on CPU
    seed: int = 0
    workers: int = 0  # DataLoader worker processes
    out_dir: str = "runs/exp"
    resume: bool = False  # continue from out_dir/last.pt exactly
    max_steps_per_epoch: Optional[int] = None  # cap on optimizer steps per epoch (quick runs)
    log_every: int = 10  # steps between progress-bar updates of the running loss
    metric: str = "val_acc"  # key of evaluate()'s dict that selects best.pt
    metric_mode: str = "max"  # "max" or "min"
    device: str = "auto"  # "auto": cuda if available else cpu
    progress: bool = True  # tqdm bar (main process only)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.metric_mode not in ("max", "min"):
            raise ValueError(f"metric_mode must be 'max' or 'min', got {self.metric_mode!r}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        for name in ("lr", "momentum", "weight_decay"):
            if not getattr(self, name) >= 0:  # also nan
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum > 0")
        if self.min_lr < 0:  # fit sets the lr per step, bypassing SGD's own check
            raise ValueError(f"min_lr must be >= 0, got {self.min_lr}")


# Help of the flags whose meaning is not plain from the name (the rest show only the default).
_HELP = {
    "batch_size": "images per process and step; under torchrun the global batch is "
    "nproc_per_node times this",
    "lr": "peak learning rate after warm-up, cosine decay to --min-lr; not scaled with the "
    "number of processes",
    "warmup_epochs": "linear warm-up from 0, in (fractional) epochs",
    "max_steps_per_epoch": "cap on optimizer steps per epoch (per process) for quick runs",
    "resume": "continue exactly from OUT_DIR/last.pt (start with the same number of processes)",
    "metric": "metric that selects best.pt",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(
    parser: argparse.ArgumentParser, defaults: Optional[Dict[str, Any]] = None
) -> None:
    """Add one ``--flag`` per :class:`TrainConfig` field to ``parser``.

    Args:
        parser: the parser (or argument group) to extend.
        defaults: overrides of the dataclass defaults shown in ``--help`` (e.g. per data set).
    """
    defaults = defaults or {}
    hints = get_type_hints(TrainConfig)
    group = parser.add_argument_group("training (TrainConfig)")
    for f in fields(TrainConfig):
        typ = hints[f.name]
        default = defaults.get(f.name, f.default)
        shown = "see the description" if default is None and f.default is not None else (
            default)
        text = f"{_HELP[f.name]} (default: {shown})" if f.name in _HELP else f"(default: {shown})"
        if get_origin(typ) is Union:  # Optional[X]
            typ = next(a for a in get_args(typ) if a is not type(None))
        if typ is bool:
            group.add_argument(
                _flag(f.name), dest=f.name, default=default,
                action=argparse.BooleanOptionalAction, help=text,
            )
        else:
            group.add_argument(
                _flag(f.name), dest=f.name, type=typ, default=default,
                metavar=typ.__name__.upper(), help=text,
            )


def config_from_args(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """Build a :class:`TrainConfig` from parsed arguments (fields missing in ``args`` keep their
    defaults); ``overrides`` win over both."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values.update(overrides)
    return TrainConfig(**values)


def config_from_dict(d: Dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved with ``dataclasses.asdict`` (unknown keys are an error)."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
    return dataclasses.replace(TrainConfig(), **d)
