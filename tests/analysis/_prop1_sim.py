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
