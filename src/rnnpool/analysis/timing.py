"""Wall-clock comparisons of several implementations on a shared, noisy machine."""

from __future__ import annotations

import time
from typing import Callable, Mapping

import torch

__all__ = ["best_times"]


def best_times(fns: Mapping[str, Callable[[], object]], repeats: int,
               device: str = "cpu") -> dict[str, float]:
    """Best wall time in seconds of each function over ``repeats`` rounds, after one warm-up
    call each. Every round runs each function once, in turn, so that load changes on a shared
    machine reach all of them alike; on ``device="cuda"`` each call is synchronised.

    Example::

        >>> t = best_times({"a": lambda: sum(range(100)), "b": lambda: sum(range(10))}, 3)
        >>> sorted(t)
        ['a', 'b']
    """
    cuda = device == "cuda"
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best
