"""Where rnnpool keeps what it builds on a machine (compiled kernels, emulator plugins)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/rnnpool``, or ``~/.cache/rnnpool`` (read at call time)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnnpool"
