"""Wall-clock comparisons of several implementations on a shared, noisy machine."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Collection, Mapping, NamedTuple, Optional, Union

import torch

__all__ = ["CpuUse", "best_times", "contention_warning", "cpu_use", "describe_cpu_use",
           "parse_proc_stat"]


def best_times(fns: Mapping[str, Callable[[], object]], repeats: int,
               device: Union[str, torch.device] = "cpu") -> dict[str, float]:
    """Best wall time in seconds of each function over ``repeats`` rounds, after one warm-up
    call each. Every round runs each function once, in turn, so that load changes on a shared
    machine reach all of them alike; on a CUDA ``device`` (``"cuda"``, ``"cuda:1"``, a
    ``torch.device``) that device is synchronised before and after each call, so that the time
    is the GPU's work and not only its launch.

    Example::

        >>> t = best_times({"a": lambda: sum(range(100)), "b": lambda: sum(range(10))}, 3)
        >>> sorted(t)
        ['a', 'b']
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if cuda:
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize(dev)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


class CpuUse(NamedTuple):
    """CPU time spent outside this process over an interval, in CPUs (1.0 = one CPU all the
    time), on the CPUs this process may run on: ``busy`` running other work, ``steal`` taken by
    the hypervisor of a virtual machine."""

    cpus: int
    busy: float
    steal: float


def parse_proc_stat(text: str, cpus: Optional[Collection[int]] = None) -> tuple[int, int, int]:
    """``(busy, steal, total)`` jiffies summed over the lines ``cpuN`` of ``/proc/stat`` for
    ``N`` in ``cpus`` (all of them when None).

    Example::

        >>> parse_proc_stat("cpu  9 9 9 9\\ncpu0 100 0 50 800 10 0 5 20 0 0\\ncpu1 1 0 0 9\\n")
        (156, 20, 995)
    """
    busy = steal = total = 0
    seen = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or not fields[0][3:].isdigit():
            continue
        if cpus is not None and int(fields[0][3:]) not in cpus:
            continue
        # user nice system idle iowait irq softirq steal (guest time is already in user, nice)
        v = [int(f) for f in fields[1:9]]
        v += [0] * (8 - len(v))
        busy += v[0] + v[1] + v[2] + v[5] + v[6]
        steal += v[7]
        total += sum(v)
        seen += 1
    if not seen:
        raise ValueError("no per-CPU lines for these CPUs in /proc/stat")
    return busy, steal, total


def cpu_use(interval: float = 0.5, stat: Path = Path("/proc/stat")) -> Optional[CpuUse]:
    """How busy the CPUs this process may use are without it: ``/proc/stat`` read before and
    after sleeping ``interval`` seconds (this process adds next to nothing meanwhile). None
    where ``/proc/stat`` cannot be read (not Linux)."""
    mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        b0, s0, t0 = parse_proc_stat(stat.read_text(), mine)
        time.sleep(interval)
        b1, s1, t1 = parse_proc_stat(stat.read_text(), mine)
    except (OSError, ValueError):
        return None
    n = len(mine) if mine else (os.cpu_count() or 1)
    span = max(t1 - t0, 1)  # jiffies over n CPUs
    return CpuUse(n, n * (b1 - b0) / span, n * (s1 - s0) / span)


def contention_warning(use: Optional[CpuUse], threads: int) -> Optional[str]:
    """A warning when other work (or the hypervisor) leaves fewer than ``threads`` CPUs free,
    so that timings taken now are not the code's own; None when they are free.

    Example::

        >>> contention_warning(CpuUse(cpus=2, busy=1.0, steal=0.0), threads=2) is not None
        True
        >>> contention_warning(CpuUse(cpus=16, busy=1.0, steal=0.0), threads=2) is None
        True
    """
    if use is None:
        return None
    taken = use.busy + use.steal
    if use.cpus - taken >= threads - 0.25:
        return None
    return (f"warning: other work keeps {use.busy:.2f} of {use.cpus} CPUs busy and the "
            f"hypervisor takes {use.steal:.2f}: fewer than the {threads} threads asked for are "
            f"free, so these times are slower than the code's own")


def describe_cpu_use(threads: int, interval: float = 0.5) -> str:
    """What a benchmark prints before it times: other work and steal on this process's CPUs
    over ``interval`` seconds (:func:`cpu_use`), and :func:`contention_warning`'s line when
    fewer than ``threads`` are free; ``""`` where it cannot be measured."""
    use = cpu_use(interval)
    if use is None:
        return ""
    line = (f"other work on the {use.cpus} CPUs: {use.busy:.2f} busy, {use.steal:.2f} stolen by "
            f"the hypervisor (CPUs' worth, over {interval:g} s)")
    warning = contention_warning(use, threads)
    return f"{line}\n{warning}" if warning else line
