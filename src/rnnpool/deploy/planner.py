"""Static memory planning: place buffers with known lifetimes in one byte arena.

Generated C holds every activation of a model in one ``static uint8_t arena[N]``. Each buffer is
described by its size and the inclusive range of steps (operator indices) during which it must
stay intact; two buffers may share bytes only if their lifetimes do not overlap. This module
assigns offsets greedily (largest buffer first, each one into the best-fitting gap left by the
already placed buffers that are live at the same time), the strategy of TFLite Micro's greedy
planner.

Example:
    >>> bufs = [Buffer("a", 100, 0, 1), Buffer("b", 60, 1, 2), Buffer("c", 100, 2, 3)]
    >>> p = plan_arena(bufs)
    >>> p.total, p.offsets["a"], p.offsets["c"]
    (160, 0, 0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

__all__ = ["Buffer", "ArenaPlan", "plan_arena", "peak_live_bytes", "check_plan"]


@dataclass(frozen=True)
class Buffer:
    """One buffer to place in the arena.

    Args:
        name: unique identifier.
        size: bytes (> 0).
        first_use: first step at which the buffer is written.
        last_use: last step at which it is read (inclusive, ``>= first_use``).
    """

    name: str
    size: int
    first_use: int
    last_use: int

    def overlaps(self, other: "Buffer") -> bool:
        """True if the two lifetimes share at least one step."""
        return self.first_use <= other.last_use and other.first_use <= self.last_use


@dataclass
class ArenaPlan:
    """Result of :func:`plan_arena`.

    Attributes:
        offsets: byte offset of each buffer, by name.
        total: arena size in bytes (end of the highest buffer, rounded up to the alignment).
        buffers: the planned buffers (sizes as given).
        alignment: every offset is a multiple of this.
    """

    offsets: Dict[str, int]
    total: int
    buffers: List[Buffer]
    alignment: int


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _validate(buffers: Sequence[Buffer], alignment: int) -> None:
    if alignment < 1:
        raise ValueError(f"alignment must be >= 1, got {alignment}")
    seen = set()
    for b in buffers:
        if b.name in seen:
            raise ValueError(f"duplicate buffer name {b.name!r}")
        seen.add(b.name)
        if b.size <= 0:
            raise ValueError(f"buffer {b.name!r}: size must be > 0, got {b.size}")
        if b.last_use < b.first_use:
            raise ValueError(
                f"buffer {b.name!r}: last_use {b.last_use} < first_use {b.first_use}")


def plan_arena(buffers: Sequence[Buffer], alignment: int = 4) -> ArenaPlan:
    """Assign arena offsets so that no two buffers live at the same step share a byte.

    Buffers are taken in decreasing size (ties: earlier first use, then name). Each one goes into
    the smallest gap between the already placed, time-overlapping buffers that holds it (best
    fit), or on top of the highest of them when no gap fits.

    Args:
        buffers: the buffers; names must be unique.
        alignment: byte alignment of every offset (sizes are padded up to it when placing).

    Returns:
        ArenaPlan with offsets and total size. ``total`` is at least :func:`peak_live_bytes`.
    """
    _validate(buffers, alignment)
    order = sorted(buffers, key=lambda b: (-_align(b.size, alignment), b.first_use, b.name))
    placed: List[tuple] = []  # (offset, padded size, buffer)
    offsets: Dict[str, int] = {}
    for b in order:
        size = _align(b.size, alignment)
        live = sorted((o, s) for o, s, pb in placed if pb.overlaps(b))
        best_off, best_gap = None, None
        cursor = 0
        for o, s in live:
            gap = o - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best_off, best_gap = cursor, gap
            cursor = max(cursor, o + s)
        if best_off is None:
            best_off = cursor
        offsets[b.name] = best_off
        placed.append((best_off, size, b))
    total = max((o + s for o, s, _ in placed), default=0)
    return ArenaPlan(offsets=offsets, total=_align(total, alignment), buffers=list(buffers),
                     alignment=alignment)


def peak_live_bytes(buffers: Sequence[Buffer], alignment: int = 1) -> int:
    """The largest total size of buffers live at one step: a lower bound for any plan."""
    steps = {b.first_use for b in buffers}
    return max((sum(_align(b.size, alignment) for b in buffers
                    if b.first_use <= t <= b.last_use) for t in steps), default=0)


def check_plan(plan: ArenaPlan) -> None:
    """Raise ``AssertionError`` if two time-overlapping buffers share bytes or one lies outside
    the arena or is misaligned."""
    bufs = plan.buffers
    for b in bufs:
        o = plan.offsets[b.name]
        assert o % plan.alignment == 0, f"{b.name} at {o} not {plan.alignment}-aligned"
        assert 0 <= o and o + b.size <= plan.total, f"{b.name} [{o}, {o + b.size}) outside arena"
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            if a.overlaps(b):
                oa, ob = plan.offsets[a.name], plan.offsets[b.name]
                assert oa + a.size <= ob or ob + b.size <= oa, (
                    f"live buffers {a.name} [{oa}, {oa + a.size}) and {b.name} "
                    f"[{ob}, {ob + b.size}) overlap")
