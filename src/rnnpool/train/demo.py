"""The training area's step of ``rnnpool demo``: evaluate the shipped Fashion-MNIST model."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

__all__ = ["demo_step"]


def demo_step(limit: Optional[int] = 2000, weights: Optional[str] = None,
              data_root: Optional[str] = None, batch_size: int = 500,
              verbose: bool = True) -> Dict[str, Any]:
    """Evaluate the shipped ``fmnist_rnnpool.pt`` on the Fashion-MNIST test set, offline.

    Args:
        limit: the first ``limit`` test images (``None``: all 10,000).
        weights: another checkpoint (default: the shipped one).
        data_root: the IDX folder (default: ``/usr/share/datasets/fashion-mnist``).
        batch_size: evaluation batch size.
        verbose: print one line with the result.

    Returns:
        ``{"model", "acc", "n", "seconds", "weights"}``.
    """
    from ..data.classification import DataSpec, build_datasets
    from ..weights import weights_path
    from .checkpoint import load_model_from_checkpoint
    from .classification import evaluate_classifier

    path = weights or str(weights_path())
    model = load_model_from_checkpoint(path)
    spec = DataSpec("fashion-mnist", root=data_root or "fashion-mnist", val_limit=limit)
    val = build_datasets(spec, splits=("val",))["val"]
    t0 = time.perf_counter()
    r = evaluate_classifier(model, val, "cpu", batch_size)
    dt = time.perf_counter() - t0
    name = type(model).__name__
    if verbose:
        print(f"Fashion-MNIST test ({r['n']} images): {name} from {path}: top-1 "
              f"{100 * r['acc']:.2f} % ({r['n'] / dt:.0f} images/s)")
    return {"model": name, "acc": r["acc"], "n": r["n"], "seconds": dt, "weights": path}
