"""Model files shipped with the package (loadable with
:func:`rnnpool.train.load_model_from_checkpoint`).

``fmnist_rnnpool.pt``: ``fmnist_cnn_rnnpool_hard`` (hard sigmoid / tanh cells, as the int8 kernels
compute them) trained on Fashion-MNIST (see docs/experiments.md).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["weights_path", "FMNIST_RNNPOOL"]

FMNIST_RNNPOOL = "fmnist_rnnpool.pt"


def weights_path(name: str = FMNIST_RNNPOOL) -> Path:
    """Path of a shipped weights file (``FileNotFoundError`` if it is not installed)."""
    path = Path(__file__).with_name(name)
    if not path.is_file():
        available = sorted(p.name for p in Path(__file__).parent.glob("*.pt"))
        raise FileNotFoundError(f"shipped weights {name!r} not found; available: {available}")
    return path
