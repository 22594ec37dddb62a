"""The straightforward RNNPool the reference code uses, kept as the speed baseline.

Unfold the map into patches, then run RNN1 over the rows and over the columns of the patch
batch (the input projection inside every step) and RNN2's four sweeps one after the other.
Used by ``benchmarks/bench_rnnpool.py`` and ``rnnpool demo`` to report the fast path's speed-up;
:func:`rnnpool.nn.functional.rnnpool2d` is the implementation to use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .functional import FastGRNNParams, fastgrnn_cell

__all__ = ["unfold_rnnpool2d"]


def unfold_rnnpool2d(x: torch.Tensor, p1: FastGRNNParams, p2: FastGRNNParams, k: int, s: int,
                     pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Unfold into patches and run the RNNs on the patch batch (the reference code's way)."""
    x = F.pad(x, pads)
    n, c, hp, wp = x.shape
    ho, wo = (hp - k) // s + 1, (wp - k) // s + 1
    patches = F.unfold(x, k, stride=s)  # (N, C*k*k, L)
    L = patches.shape[-1]
    patches = patches.view(n, c, k, k, L).permute(0, 4, 2, 3, 1).reshape(n * L, k, k, c)

    def run(seq: torch.Tensor, p: FastGRNNParams) -> torch.Tensor:  # seq (B, T, in)
        h = seq.new_zeros(seq.shape[0], p.weight_hh.shape[0])
        for t in range(seq.shape[1]):
            h = fastgrnn_cell(seq[:, t], h, p)
        return h

    h1 = p1.weight_hh.shape[0]
    rows = run(patches.reshape(n * L * k, k, c), p1).view(n * L, k, h1)
    cols = run(patches.transpose(1, 2).reshape(n * L * k, k, c), p1).view(n * L, k, h1)
    out = torch.cat(
        [run(rows, p2), run(rows.flip(1), p2), run(cols, p2), run(cols.flip(1), p2)], 1
    )
    return out.view(n, ho, wo, -1).permute(0, 3, 1, 2)
