"""The arena planner against an exhaustive optimal packing on small random cases."""

import itertools
import random

import pytest

from rnnpool.deploy.planner import Buffer, check_plan, peak_live_bytes, plan_arena


def _optimal_total(buffers, alignment=1):
    """Exhaustive optimum: try every placement order, each buffer at the lowest offset free of
    the already placed, time-overlapping ones. (Placing in the order of an optimal solution's
    offsets never ends higher than that solution, so the minimum over orders is optimal.)"""
    best = None
    for perm in itertools.permutations(buffers):
        placed = []
        for b in perm:
            size = -(-b.size // alignment) * alignment
            live = sorted((o, s) for o, s, pb in placed if pb.overlaps(b))
            off = 0
            for o, s in live:  # lowest gap that fits
                if o - off >= size:
                    break
                off = max(off, o + s)
            placed.append((off, size, b))
        total = max(o + s for o, s, _ in placed)
        best = total if best is None else min(best, total)
    return best


def _random_case(rng, n):
    bufs = []
    for i in range(n):
        a = rng.randrange(0, 8)
        bufs.append(Buffer(f"b{i}", rng.choice([1, 3, 4, 8, 10, 16, 32, 50]) * rng.randrange(1, 4),
                           a, a + rng.randrange(0, 4)))
    return bufs


def test_no_live_overlap_and_near_optimal_on_random_cases():
    rng = random.Random(0)
    ratios, exact = [], 0
    for _ in range(150):
        bufs = _random_case(rng, rng.randrange(2, 7))
        p = plan_arena(bufs, alignment=1)
        check_plan(p)
        opt = _optimal_total(bufs)
        assert peak_live_bytes(bufs) <= opt <= p.total
        ratios.append(p.total / opt)
        exact += p.total == opt
    # The greedy heuristic is not always optimal, but on these sizes it rarely loses much.
    assert exact >= 0.8 * len(ratios), exact
    assert max(ratios) <= 1.5, max(ratios)


def test_chain_reuses_memory():
    # A plain layer chain: each buffer lives from its producer to its consumer.
    sizes = [100, 400, 50, 400, 30]
    bufs = [Buffer(f"t{i}", s, i, i + 1) for i, s in enumerate(sizes)]
    p = plan_arena(bufs, alignment=1)
    check_plan(p)
    assert p.total == peak_live_bytes(bufs) == 500  # 100 + 400 at step 1


@pytest.mark.parametrize("alignment", [4, 16])
def test_alignment(alignment):
    rng = random.Random(1)
    for _ in range(30):
        bufs = _random_case(rng, 5)
        p = plan_arena(bufs, alignment=alignment)
        check_plan(p)
        assert p.total >= _optimal_total(bufs, alignment)


def test_check_plan_catches_overlap():
    bufs = [Buffer("a", 8, 0, 1), Buffer("b", 8, 1, 2)]
    p = plan_arena(bufs)
    p.offsets["b"] = p.offsets["a"] + 4
    with pytest.raises(AssertionError, match="overlap"):
        check_plan(p)


def test_bad_input():
    with pytest.raises(ValueError, match="duplicate"):
        plan_arena([Buffer("a", 1, 0, 0), Buffer("a", 1, 0, 0)])
    with pytest.raises(ValueError, match="size"):
        plan_arena([Buffer("a", 0, 0, 0)])
    with pytest.raises(ValueError, match="last_use"):
        plan_arena([Buffer("a", 4, 3, 1)])
