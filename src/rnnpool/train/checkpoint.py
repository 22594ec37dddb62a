"""Checkpoints: plain dicts written atomically, and rebuilding a model from one.

A checkpoint written by :func:`rnnpool.train.fit` holds ``model`` (state dict), ``optimizer``,
``scheduler``, ``scaler``, ``epoch`` (epochs completed), ``step`` (optimizer steps taken),
``world_size`` (training processes), ``best_metric``, ``history`` (per-epoch metric dicts),
``rng`` (python, numpy, torch and cuda states, one entry per process), ``config``
(``asdict(TrainConfig)``), ``model_name``, ``model_args`` and ``extra``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Union

import torch
from torch import nn

from .._io import atomic_output

__all__ = ["save_checkpoint", "load_checkpoint", "load_model_from_checkpoint", "load_weights",
           "export_weights"]

PathLike = Union[str, os.PathLike]


def save_checkpoint(obj: Any, path: PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically.

    The data goes to a temporary file in the same folder, is flushed to disk, and then replaces
    ``path`` with ``os.replace``; a crash leaves either the old file or the new one, never a
    truncated one.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> save_checkpoint({"a": 1}, os.path.join(d, "x.pt"))
    >>> load_checkpoint(os.path.join(d, "x.pt"))["a"]
    1
    """
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(
    path: PathLike, map_location: Union[str, torch.device] = "cpu"
) -> Dict[str, Any]:
    """Load a checkpoint dict; a missing or unreadable file raises a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        # weights_only=False: checkpoints hold numpy RNG state and plain python objects.
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # pickle/zip errors are deep and unhelpful
        raise ValueError(
            f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


def load_model_from_checkpoint(
    path: PathLike, map_location: Union[str, torch.device] = "cpu"
) -> nn.Module:
    """Rebuild the model of a checkpoint with ``create_model(model_name, **model_args)`` and load
    its weights (strictly). Returns the model in eval mode.

    Args:
        path: a checkpoint written by :func:`rnnpool.train.fit` or :func:`save_checkpoint`
            holding ``model``, ``model_name`` and (optionally) ``model_args``.
        map_location: where to load the tensors.
    """
    from ..models import create_model

    ckpt = load_checkpoint(path, map_location)
    name = ckpt.get("model_name")
    if not name:
        raise ValueError(f"{path}: checkpoint has no 'model_name'; cannot rebuild the model")
    if "model" not in ckpt:
        raise ValueError(f"{path}: checkpoint has no 'model' state dict")
    model = create_model(name, **(ckpt.get("model_args") or {}))
    load_weights(model, ckpt["model"], f"{path}: weights do not fit {name}")
    return model.eval()


def load_weights(model: torch.nn.Module, state: dict, what: str) -> None:
    """``model.load_state_dict(state)``; a mismatch is a ``ValueError`` starting with ``what``
    and naming the first missing, unexpected or mis-shaped keys (not torch's multi-line
    ``RuntimeError``)."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines()]
        raise ValueError(f"{what}: {' '.join(lines[:3])}") from None


_TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng")


def export_weights(src: PathLike, dst: PathLike, **extra: Any) -> Dict[str, Any]:
    """Write a deployable copy of a training checkpoint: the training state (optimizer,
    scheduler, AMP scaler, RNG states) is dropped; model weights, ``model_name``,
    ``model_args``, ``config``, ``history`` and ``extra`` (updated with ``extra``) are kept.
    The result still loads with :func:`load_model_from_checkpoint`. Returns the written dict.
    """
    ckpt = {k: v for k, v in load_checkpoint(src).items() if k not in _TRAINING_STATE}
    ckpt["extra"] = {**(ckpt.get("extra") or {}), **extra}
    save_checkpoint(ckpt, dst)
    return ckpt
