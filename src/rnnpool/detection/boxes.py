"""Box utilities. Boxes are ``Tensor[N, 4]`` in ``xyxy`` format (``x1 <= x2``, ``y1 <= y2``)
unless a function says otherwise; ``xywh`` is ``(left, top, width, height)`` as in WIDER FACE and
``cxcywh`` is centre and size. Every detector, loss, evaluator and exporter in rnnpool uses these.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["box_convert", "box_area", "box_iou", "clip_boxes", "nms", "batched_nms"]


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``Tensor[N, 4]`` between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``.

    >>> box_convert(torch.tensor([[10., 20., 4., 6.]]), "xywh", "xyxy")
    tensor([[10., 20., 14., 26.]])
    """
    fmts = ("xyxy", "xywh", "cxcywh")
    if in_fmt not in fmts or out_fmt not in fmts:
        raise ValueError(f"box formats must be one of {fmts}, got {in_fmt!r} -> {out_fmt!r}")
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        x1, y1, x2, y2 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    else:
        x1, y1, x2, y2 = a, b, c, d
    if out_fmt == "xyxy":
        return torch.stack([x1, y1, x2, y2], -1)
    if out_fmt == "xywh":
        return torch.stack([x1, y1, x2 - x1, y2 - y1], -1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def box_area(boxes: Tensor) -> Tensor:
    """``Tensor[N, 4]`` xyxy -> ``Tensor[N]`` areas (zero for degenerate boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU: ``Tensor[N, 4]``, ``Tensor[M, 4]`` (xyxy) -> ``Tensor[N, M]``.

    Pairs whose union is empty get IoU 0.

    >>> box_iou(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]]))
    tensor([[0.3333]])
    """
    # Coordinate by coordinate: contiguous [N, M] operands (about 2x faster than [N, M, 2]
    # strided ones), the same operations per element, so the same bits.
    ax1, ay1, ax2, ay2 = a[:, None, :].unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    w = (torch.min(ax2, bx2) - torch.max(ax1, bx1)).clamp(min=0)
    h = (torch.min(ay2, by2) - torch.max(ay1, by1)).clamp(min=0)
    inter = w * h
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(a.dtype).tiny), 0.0)


def clip_boxes(boxes: Tensor, height: float, width: float) -> Tensor:
    """Clip xyxy boxes to ``[0, width] x [0, height]``."""
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


def nms(
    boxes: Tensor, scores: Tensor, iou_threshold: float, max_keep: int | None = None
) -> Tensor:
    """Greedy non-maximum suppression.

    Keeps the highest-scoring box, drops every remaining box whose IoU with it exceeds
    ``iou_threshold``, and repeats. Ties in score keep the lower index first.

    Args:
        boxes: ``Tensor[N, 4]`` xyxy.
        scores: ``Tensor[N]``.
        iou_threshold: boxes with IoU ``> iou_threshold`` to a kept box are suppressed.
        max_keep: stop after this many kept boxes (the first ``max_keep`` of the full result).

    Returns:
        ``Tensor[K]`` int64 indices of the kept boxes, by decreasing score.
    """
    if boxes.numel() == 0 or (max_keep is not None and max_keep <= 0):
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    n = b.shape[0]
    limit = n if max_keep is None else int(max_keep)
    # Blocks of _NMS_BLOCK boxes in score order: greedy inside a block on its small IoU matrix,
    # then the block's kept boxes suppress the later live boxes. Only IoUs against kept boxes
    # are computed (not the N x N matrix), the same values box_iou(b, b) would hold.
    alive = torch.ones(n, dtype=torch.bool)
    keep: list[int] = []
    for start in range(0, n, _NMS_BLOCK):
        stop = min(start + _NMS_BLOCK, n)
        idx = alive[start:stop].nonzero().squeeze(1) + start
        if idx.numel() == 0:
            continue
        over = (box_iou(b[idx], b[idx]) > iou_threshold).cpu().numpy()
        sup = np.zeros(len(idx), dtype=bool)
        kept = []
        for i in range(len(idx)):
            if sup[i]:
                continue
            kept.append(i)
            if len(keep) + len(kept) == limit:
                break
            sup |= over[i]
        keep.extend(idx[kept].tolist())
        if len(keep) >= limit or stop == n:
            break
        rest = alive[stop:].nonzero().squeeze(1) + stop
        if rest.numel():
            hit = (box_iou(b[idx[kept]], b[rest]) > iou_threshold).any(0).cpu()
            alive[rest[hit]] = False
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


#: Boxes per block of :func:`nms` (a few hundred: small greedy matrices, few large calls).
_NMS_BLOCK = 256


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS applied independently per category ``idxs`` (boxes of different ids never suppress)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offset = idxs.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold)
