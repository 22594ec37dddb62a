"""A literal node-level simulation of the row-by-row schedule of a valid-convolution chain."""

from __future__ import annotations


def simulate_row_by_row(in_hw, layers):
    """Peak live intermediate activations when computing the final output row by row.

    ``layers``: list of ``(kernel, stride, channels)``; convolutions are "valid" (no padding).
    Every node (one spatial position of one layer, all its channels) is computed exactly once,
    when first needed, and freed once every node of the next layer that reads it is computed.
    Returns ``(peak, final_hw, sizes)``.
    """
    sizes = [tuple(in_hw)]
    for k, s, _c in layers:
        h, w = sizes[-1]
        sizes.append(((h - k) // s + 1, (w - k) // s + 1))
    n = len(layers)
    computed = [set() for _ in range(n + 1)]
    done_consumers = [dict() for _ in range(n + 1)]
    live = [0]
    peak = [0]

    def readers(q, i, j):
        # nodes of layer q + 1 reading node (i, j) of layer q
        k, s, _ = layers[q]
        h, w = sizes[q + 1]
        rows = [a for a in range(h) if a * s <= i < a * s + k]
        cols = [b for b in range(w) if b * s <= j < b * s + k]
        return len(rows) * len(cols)

    def compute(q, i, j):
        if (i, j) in computed[q]:
            return
        if q > 0:
            k, s, _ = layers[q - 1]
            for a in range(i * s, i * s + k):
                for b in range(j * s, j * s + k):
                    compute(q - 1, a, b)
        computed[q].add((i, j))
        if 0 < q < n:
            live[0] += layers[q - 1][2]
            peak[0] = max(peak[0], live[0])
        if q > 0:
            k, s, _ = layers[q - 1]
            for a in range(i * s, i * s + k):
                for b in range(j * s, j * s + k):
                    key = (a, b)
                    done_consumers[q - 1][key] = done_consumers[q - 1].get(key, 0) + 1
                    if 0 < q - 1 and done_consumers[q - 1][key] == readers(q - 1, a, b):
                        live[0] -= layers[q - 2][2]

    m, w = sizes[-1]
    for i in range(m):
        for j in range(w):
            compute(n, i, j)
    return peak[0], sizes[-1], sizes


def brute_force_min_peak(mid_hw, out_hw, k):
    """Smallest possible peak of live intermediate nodes over *every* serial order that
    computes each node once, for a 1-channel chain input -> mid (``mid_hw``) -> out
    (``out_hw``, valid ``k x k`` convolution, stride 1). The input is not counted. A node
    is live from its computation until all its readers are computed. Exhaustive search
    (Dijkstra on the peak) over the sets of computed nodes."""
    import heapq

    mh, mw = mid_hw
    oh, ow = out_hw
    n_mid = mh * mw
    outs = [(i, j) for i in range(oh) for j in range(ow)]
    deps = [sum(1 << ((i + a) * mw + (j + b)) for a in range(k) for b in range(k))
            for i, j in outs]
    readers = [sum(1 << t for t, d in enumerate(deps) if d >> m & 1) for m in range(n_mid)]
    full_out = (1 << len(outs)) - 1

    def live(mid, out):
        return sum(1 for m in range(n_mid) if mid >> m & 1 and readers[m] & ~out)

    start = (0, 0)
    best = {start: 0}
    heap = [(0, 0, 0)]
    while heap:
        peak, mid, out = heapq.heappop(heap)
        if out == full_out:
            return peak
        if best.get((mid, out), 1 << 30) < peak:
            continue
        cur = live(mid, out)
        moves = []
        for m in range(n_mid):
            if not mid >> m & 1 and readers[m] & ~out:
                moves.append((mid | 1 << m, out, cur + 1))
        for t, d in enumerate(deps):
            if not out >> t & 1 and d & mid == d:
                moves.append((mid, out | 1 << t, cur))  # computing it needs its inputs live
        for nmid, nout, during in moves:
            npeak = max(peak, during)
            if best.get((nmid, nout), 1 << 30) > npeak:
                best[(nmid, nout)] = npeak
                heapq.heappush(heap, (npeak, nmid, nout))
    raise AssertionError("unreachable")
