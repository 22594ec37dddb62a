"""The one training loop of rnnpool, shared by classification and detection.

Read top to bottom: setup (process group, device, seeds), init or resume, then per epoch: a
DataLoader with a per-epoch seeded sampler, the optimizer steps with a per-step cosine learning
rate, evaluation on the main process, metrics to the console and ``metrics.csv``, and atomic
``last.pt`` / ``best.pt`` checkpoints. What a task needs beyond that comes in as plain functions
(``loss_fn``, ``evaluate``, ``after_step``); there is no trainer class and no callback system.

Resuming (``TrainConfig.resume``) restores model, optimizer, AMP scaler, step counters, history
and every random number generator, and rebuilds the epoch's DataLoader from its seed, so that a
run interrupted after any epoch and resumed ends with the same weights as an uninterrupted run.

Under ``torchrun`` the model is wrapped in ``DistributedDataParallel`` (gloo on CPU, NCCL on
CUDA); each rank sees its share of every epoch through a ``DistributedSampler`` (the batch size
is per process), only rank 0 logs, evaluates and saves, and every rank returns rank 0's metrics.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import math
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from .._io import atomic_write_text, remove_stale_temporaries
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup_distributed,
    setup_distributed,
)
from .schedule import cosine_lr

__all__ = ["fit", "resolve_device", "LossFn", "EvaluateFn"]

LossFn = Callable[[nn.Module, Any, torch.device], Tuple[Tensor, Dict[str, float]]]
EvaluateFn = Callable[[nn.Module, torch.device], Dict[str, float]]


def fit(
    model: nn.Module,
    train_set: Dataset,
    loss_fn: LossFn,
    config: TrainConfig,
    *,
    collate_fn: Optional[Callable] = None,
    evaluate: Optional[EvaluateFn] = None,
    after_step: Optional[Callable[[nn.Module], None]] = None,
    model_name: Optional[str] = None,
    model_args: Optional[dict] = None,
    extra: Optional[dict] = None,
) -> Dict[str, Any]:
    """Train ``model`` on ``train_set`` with SGD and a cosine learning rate.

    Args:
        model: the network (moved to the run's device here).
        train_set: a map-style dataset; batches come from a DataLoader built inside ``fit``.
        loss_fn: ``loss_fn(model, batch, device) -> (loss, logs)``; ``batch`` is what the
            DataLoader yields (loss_fn moves it to ``device``), ``logs`` a dict of floats that
            are averaged over the epoch and reported as ``train_<key>``.
        config: the :class:`TrainConfig`.
        collate_fn: the DataLoader's collate function (default: torch's).
        evaluate: ``evaluate(model, device) -> dict`` of floats, run at the end of each epoch on
            the main process only (so on the whole validation set, not a shard) with the model
            in eval mode. ``config.metric`` picks best.pt.
        after_step: called with the (unwrapped) model after every optimizer step.
        model_name, model_args: stored in the checkpoint so that
            :func:`~rnnpool.train.checkpoint.load_model_from_checkpoint` can rebuild the model.
        extra: any other picklable data to store in the checkpoint (class names, transforms).

    Returns:
        ``{"best_metric", "last_metrics", "history"}`` (history: one dict per epoch), rank 0's
        on every rank of a distributed run.
    """
    info = setup_distributed(config.device)
    try:
        return _fit(model, train_set, loss_fn, config, info, collate_fn, evaluate, after_step,
                    model_name, model_args, extra)
    finally:
        cleanup_distributed(info)


def resolve_device(name: str, local_rank: int = 0, world_size: int = 1,
                   option: str = "device") -> torch.device:
    """The device of a ``--device`` value for the process of ``local_rank``: ``"auto"``
    (``cuda:<local_rank>`` when CUDA is available, else ``cpu``), ``"cpu"``, ``"cuda"``
    (``cuda:<local_rank>``) or ``"cuda:N"`` (with several processes, N must be the local rank:
    under torchrun each process trains on the GPU of its local rank).

    Raises:
        ValueError: naming ``option``: another device type, CUDA where there is none, or a GPU
            this machine does not have.
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    usage = f"{option} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(usage) from None
    # 'mps', 'meta', 'xla', 'cpu:1' parse, but nothing here runs on them.
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index):
        raise ValueError(usage)
    if dev.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch is built without CUDA" if torch.version.cuda is None
               else "no CUDA GPU is visible")
        raise ValueError(f"{option} {name!r}: CUDA is not available ({why}); use {option} cpu")
    if dev.index is None:
        dev = torch.device("cuda", local_rank)
    elif world_size > 1 and dev.index != local_rank:
        raise ValueError(f"{option} {name!r}: each of the {world_size} processes trains on the "
                         f"GPU of its local rank; use {option} cuda or auto")
    count = torch.cuda.device_count()
    if dev.index >= count:
        raise ValueError(f"{option} {name!r}: this machine has {count} CUDA device"
                         f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
    return dev


def _fit(model, train_set, loss_fn, config, info: DistInfo, collate_fn, evaluate, after_step,
         model_name, model_args, extra):
    device = resolve_device(config.device, info.local_rank, info.world_size)
    out_dir = Path(config.out_dir)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("last.pt", "best.pt", "metrics.csv"):  # left by a kill during a write
            remove_stale_temporaries(out_dir / name)
    use_amp = config.amp and device.type == "cuda"
    autocast = ((lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp
                else contextlib.nullcontext)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # Seeds: each rank offsets its seed (as in nanoGPT); the model was built by the caller and
    # DDP broadcasts rank 0's weights, so model init is unaffected.
    _seed_everything(config.seed + info.rank)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)

    steps_per_epoch = _steps_per_epoch(len(train_set), config, info)
    if steps_per_epoch == 0:
        raise ValueError(f"training set has {len(train_set)} samples: no full batch of "
                         f"{config.batch_size} per process")
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))

    start_epoch, step, history = 0, 0, []
    best = -math.inf if config.metric_mode == "max" else math.inf
    if config.resume:
        ckpt = load_checkpoint(out_dir / "last.pt", map_location=device)
        missing = [k for k in ("model", "optimizer", "epoch", "step") if k not in ckpt]
        if missing:
            raise ValueError(f"{out_dir / 'last.pt'}: not a training checkpoint of fit() (no "
                             f"{', '.join(missing)}); cannot resume from it")
        _check_resume(ckpt, out_dir / "last.pt", config, model_name, model_args, extra,
                      info)
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise ValueError(f"{out_dir / 'last.pt'} holds weights of another architecture than "
                             f"the model being trained: {e}") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") and use_amp:
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step, history = ckpt["epoch"], ckpt["step"], list(ckpt.get("history", []))
        best = ckpt.get("best_metric", best) if ckpt.get("best_metric") is not None else best
        rng = ckpt.get("rng") or []
        if len(rng) == info.world_size:
            _set_rng_state(rng[info.rank])
        elif rng:  # resumed on a different number of processes: exactness is not possible
            _seed_everything(config.seed + info.rank + 7919 * start_epoch)
        if info.is_main:
            print(f"resumed from {out_dir / 'last.pt'} at epoch {start_epoch}, step {step}")
    elif info.is_main and (out_dir / "last.pt").is_file():
        try:
            old_epoch = f" (epoch {load_checkpoint(out_dir / 'last.pt').get('epoch')})"
        except ValueError:
            old_epoch = ""
        print(f"warning: {out_dir / 'last.pt'} holds a checkpoint{old_epoch}; this run starts "
              "afresh and replaces it after its first epoch (--resume continues it instead)",
              file=sys.stderr)

    train_model: nn.Module = model
    if info.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    warned_metric = False
    last_metrics: Dict[str, float] = history[-1] if history else {}
    for epoch in range(start_epoch, config.epochs):
        loader = _make_loader(train_set, config, epoch, info, collate_fn, device)
        train_model.train()
        sums: Dict[str, float] = {}
        n_steps, n_images, t0 = 0, 0, time.perf_counter()
        bar = _progress(config, info, epoch, steps_per_epoch)
        # islice, not a break: a break fetches (and augments) one batch more than is trained on.
        for batch in itertools.islice(loader, steps_per_epoch):
            lr = cosine_lr(step, total_steps, config.lr, config.min_lr, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast():
                loss, logs = loss_fn(train_model, batch, device)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if after_step is not None:
                after_step(model)
            step += 1
            n_steps += 1
            n_images += _batch_size(batch)
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if bar is not None:
                bar.update(1)
                if n_steps % max(1, config.log_every) == 0 or n_steps == steps_per_epoch:
                    bar.set_postfix(loss=f"{sums['loss'] / n_steps:.4f}", lr=f"{lr:.4g}")
        if bar is not None:
            bar.close()
        train_time = time.perf_counter() - t0
        train_logs = all_reduce_mean({f"train_{k}": v / max(1, n_steps) for k, v in sums.items()},
                                     info, device)
        row: Dict[str, float] = {"epoch": epoch + 1, "step": step, "lr": lr}
        row.update(train_logs)
        row["train_images_per_s"] = n_images * info.world_size / max(train_time, 1e-9)
        row["epoch_time_s"] = train_time

        if info.is_main and evaluate is not None:
            model.eval()
            with torch.no_grad():
                row.update({k: float(v) for k, v in evaluate(model, device).items()})
            model.train()

        improved = False
        if info.is_main:
            if config.metric in row:
                value = row[config.metric]
                improved = value > best if config.metric_mode == "max" else value < best
                if improved:
                    best = value
            elif not warned_metric:
                print(f"warning: metric {config.metric!r} not among {sorted(row)}; best.pt is "
                      "not written", file=sys.stderr)
                warned_metric = True
        # Val metrics and the best.pt decision exist on rank 0 only: every rank takes rank 0's,
        # so that fit() returns the same history and best metric everywhere (also a barrier).
        row, improved, best = broadcast_object((row, improved, best), info)
        history.append(row)
        last_metrics = row
        rng_states = all_gather_objects(_get_rng_state(), info)
        if info.is_main:
            print(_format_row(row, config.epochs), flush=True)
            _write_csv(history, out_dir / "metrics.csv")
            ckpt = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"kind": "cosine", "total_steps": total_steps,
                              "warmup_steps": warmup_steps, "last_lr": lr},
                "scaler": scaler.state_dict() if use_amp else None,
                "epoch": epoch + 1,
                "step": step,
                "world_size": info.world_size,
                "best_metric": best if math.isfinite(best) else None,
                "history": history,
                "rng": rng_states,
                "config": asdict(config),
                "model_name": model_name,
                "model_args": dict(model_args or {}),
                "extra": extra,
            }
            # best.pt first: a crash between the two writes then resumes from the previous
            # last.pt and redoes the epoch, rewriting best.pt (the other order would leave a
            # last.pt whose best_metric no later epoch beats, and a stale best.pt).
            if improved:
                save_checkpoint(ckpt, out_dir / "best.pt")
            save_checkpoint(ckpt, out_dir / "last.pt")
        barrier(info)

    return {"best_metric": best if math.isfinite(best) else None, "last_metrics": last_metrics,
            "history": history}


# ----------------------------------------------------------------------------------- helpers

# Settings that do not change what a run computes: a resumed run may change them freely.
_RESUME_FREE = frozenset({"resume", "out_dir", "log_every", "progress"})


def _check_resume(ckpt: dict, path: Path, config: TrainConfig, model_name: Optional[str],
                  model_args: Optional[dict], extra: Optional[dict], info: DistInfo) -> None:
    """Refuse to resume another model's checkpoint; warn (main process) about settings that
    differ from the checkpoint's, which make the run differ from an uninterrupted one: the
    config's, and the task's in ``extra`` (data set, crop size, sparsity, ...; entries of
    dicts in ``extra`` compared one by one, keys present in only one side ignored)."""
    saved_name = ckpt.get("model_name")
    if model_name is not None and saved_name is not None and saved_name != model_name:
        raise ValueError(f"{path} was written while training {saved_name!r}, not {model_name!r}: "
                         "resume with the same model or choose another --out-dir")
    saved_args = ckpt.get("model_args")
    if model_args is not None and saved_args and dict(model_args) != saved_args:  # {}: unknown
        raise ValueError(f"{path} was written with model arguments {saved_args}, not "
                         f"{dict(model_args)}")
    saved = ckpt.get("config") or {}
    changed = [f"{k} {saved[k]!r} -> {v!r}" for k, v in asdict(config).items()
               if k not in _RESUME_FREE and k in saved and saved[k] != v]
    # The number of processes sets the global batch, the steps per epoch (so the lr schedule)
    # and the data order; checkpoints without "world_size" hold one RNG state per process.
    saved_world = ckpt.get("world_size", len(ckpt.get("rng") or []) or None)
    if saved_world is not None and saved_world != info.world_size:
        changed.append(f"processes {saved_world} -> {info.world_size}")
    saved_extra = ckpt.get("extra")
    if isinstance(extra, dict) and isinstance(saved_extra, dict):
        for k, v in extra.items():
            old = saved_extra.get(k)
            if isinstance(v, dict) and isinstance(old, dict):
                changed += [f"{k}.{kk} {old[kk]!r} -> {vv!r}" for kk, vv in v.items()
                            if kk in old and _differs(old[kk], vv)]
            elif k in saved_extra and _differs(old, v):
                changed.append(f"{k} {old!r} -> {v!r}")
    if changed and info.is_main:
        print(f"warning: resuming {path} with settings that differ from the checkpoint's "
              f"({', '.join(changed)}): the run will not match an uninterrupted one",
              file=sys.stderr)


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except Exception:  # tensors, arrays: no single truth value
        return repr(a) != repr(b)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _get_rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        # One state per GPU the run saw: restore those that are visible now (resuming with
        # fewer visible GPUs failed here).
        visible = state["cuda"][:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in visible])


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank) % (2**63)


def _worker_init(worker_id: int) -> None:
    # torch seeds python's `random` and torch in each worker from the loader's generator;
    # numpy is not, so derive it from the same seed.
    np.random.seed(torch.initial_seed() % 2**32)


def _drop_last(n_samples: int, config: TrainConfig) -> bool:
    # Drop the ragged last batch (BatchNorm dislikes a batch of one) unless that leaves nothing.
    return n_samples >= config.batch_size


def _steps_per_epoch(n: int, config: TrainConfig, info: DistInfo) -> int:
    per_rank = math.ceil(n / info.world_size) if info.distributed else n
    steps = per_rank // config.batch_size if _drop_last(per_rank, config) else math.ceil(
        per_rank / config.batch_size)
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    return steps


def _make_loader(train_set, config: TrainConfig, epoch: int, info: DistInfo, collate_fn,
                 device: torch.device) -> DataLoader:
    gen = torch.Generator()
    gen.manual_seed(_epoch_seed(config.seed, epoch, info.rank))
    if info.distributed:
        sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(train_set, generator=gen)
    return DataLoader(
        train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers,
        collate_fn=collate_fn, drop_last=_drop_last(len(sampler), config), generator=gen,
        worker_init_fn=_worker_init if config.workers > 0 else None,
        pin_memory=device.type == "cuda",
    )


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.dim() else 1
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    return 0


def _progress(config: TrainConfig, info: DistInfo, epoch: int, total: int):
    if not (config.progress and info.is_main):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                dynamic_ncols=True, file=sys.stderr)


def _format_row(row: Dict[str, float], epochs: int) -> str:
    parts = [f"epoch {int(row['epoch'])}/{epochs}"]
    for k, v in row.items():
        if k in ("epoch", "step"):
            continue
        if k == "lr":
            parts.append(f"lr {v:.4g}")
        elif k == "train_images_per_s":
            parts.append(f"{v:.1f} img/s")
        elif k == "epoch_time_s":
            parts.append(f"{v:.1f} s")
        else:
            parts.append(f"{k} {v:.4f}")
    return "  ".join(parts)


def _write_csv(history: List[Dict[str, float]], path: Path) -> None:
    """Write all epochs' metrics (columns: union of keys, in order of first appearance)."""
    columns: List[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in columns})
    atomic_write_text(path, buf.getvalue())
