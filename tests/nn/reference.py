"""A literal, slow RNNPool: one patch at a time, explicit loops, written to be read.

It is the independent reference the fast implementation is checked against. Nothing here is
shared with ``rnnpool.nn.functional`` except the parameter container.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cell_step(x: Tensor, h: Tensor, p) -> Tensor:
    """One FastGRNN step on single vectors, exactly as the SPEC writes it."""
    pre = p.weight_ih @ x + p.weight_hh @ h
    a_z = pre + p.bias_gate
    a_h = pre + p.bias_update
    if p.gate == "sigmoid":
        z = 1.0 / (1.0 + torch.exp(-a_z))
    else:
        z = torch.clamp((a_z + 1.0) / 2.0, 0.0, 1.0)
    if p.update == "tanh":
        h_tilde = torch.tanh(a_h)
    else:
        h_tilde = torch.clamp(a_h, -1.0, 1.0)
    return z * h + (p.zeta * (1.0 - z) + p.nu) * h_tilde


def run_rnn(seq: list[Tensor], p) -> Tensor:
    """Final state of a cell over a list of vectors, from a zero state."""
    h = torch.zeros(p.weight_hh.shape[0], dtype=seq[0].dtype)
    for x in seq:
        h = cell_step(x, h, p)
    return h


def rnnpool_patch(patch: Tensor, p1, p2) -> Tensor:
    """Algorithm 1 on one (C, r, c) patch -> vector of 4 * h2."""
    _, r, c = patch.shape
    row_summaries = [run_rnn([patch[:, i, j] for j in range(c)], p1) for i in range(r)]
    col_summaries = [run_rnn([patch[:, i, j] for i in range(r)], p1) for j in range(c)]
    row_fwd = run_rnn(row_summaries, p2)
    row_rev = run_rnn(row_summaries[::-1], p2)
    col_fwd = run_rnn(col_summaries, p2)
    col_rev = run_rnn(col_summaries[::-1], p2)
    return torch.cat([row_fwd, row_rev, col_fwd, col_rev])


def pad_input(x: Tensor, left: int, right: int, top: int, bottom: int, mode: str) -> Tensor:
    """Pad (N, C, H, W) by explicit index arithmetic (no torch padding op)."""
    n, ch, h, w = x.shape
    out = torch.zeros(n, ch, h + top + bottom, w + left + right, dtype=x.dtype)
    for i in range(h + top + bottom):
        for j in range(w + left + right):
            si, sj = i - top, j - left
            if mode == "replicate":
                si, sj = min(max(si, 0), h - 1), min(max(sj, 0), w - 1)
            elif not (0 <= si < h and 0 <= sj < w):
                continue
            out[:, :, i, j] = x[:, :, si, sj]
    return out


def rnnpool_reference(x: Tensor, p1, p2, kernel, stride, pads, mode="zeros") -> Tensor:
    """RNNPool over a (N, C, H, W) map, patch by patch. ``pads`` = (left, right, top, bottom)."""
    (r, c), (sh, sw) = kernel, stride
    xp = pad_input(x, *pads, mode)
    n, _, hp, wp = xp.shape
    ho, wo = (hp - r) // sh + 1, (wp - c) // sw + 1
    h2 = p2.weight_hh.shape[0]
    out = torch.zeros(n, 4 * h2, ho, wo, dtype=x.dtype)
    for b in range(n):
        for oi in range(ho):
            for oj in range(wo):
                patch = xp[b, :, oi * sh : oi * sh + r, oj * sw : oj * sw + c]
                out[b, :, oi, oj] = rnnpool_patch(patch, p1, p2)
    return out
