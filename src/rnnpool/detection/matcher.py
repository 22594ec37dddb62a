"""S3FD anchor matching with scale compensation, vectorised over the batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .boxes import box_iou

__all__ = ["BACKGROUND", "S3FDMatcher"]

BACKGROUND = -1
"""Matched index of an anchor that matches no face."""


class S3FDMatcher:
    r"""Assigns each anchor a ground-truth face (its index in the image) or :data:`BACKGROUND`.

    Per image (Zhang et al., S3FD, 2017, section 3.3 "scale compensation anchor matching"):

    1. Each anchor takes the face of highest IoU (ties: the later face). It is positive if that
       IoU is ``>= pos_iou`` (0.35).
    2. Each face's best anchor (first of equal IoU) is forced positive for that face (when two
       faces share a best anchor, the later face keeps it).
    3. Let ``c_j`` be the number of positive anchors of face ``j`` and
       ``N = floor(mean_j c_j)`` over the image's faces. Each face with ``c_j < N`` takes
       ``N - c_j`` more anchors, among the still-negative anchors whose best face (step 1) is
       ``j`` and whose IoU is in ``(low_iou, pos_iou)``, by decreasing IoU (ties: lower anchor
       index first), so it ends with up to ``N`` anchors.

    Faces with non-positive width or height are ignored. All steps run as batched tensor
    operations on the concatenated faces of the batch (no loop over images or anchors).

    Args:
        pos_iou: IoU threshold of stage 1. Default: 0.35.
        low_iou: lower IoU bound of the stage-2 candidates (exclusive). Default: 0.1.
        compensate: run stage 3. Default: ``True``.

    Example::

        >>> m = S3FDMatcher()
        >>> anchors = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.], [0., 0., 4., 4.]])
        >>> m([torch.tensor([[1., 1., 11., 11.]]), torch.zeros(0, 4)], anchors)
        tensor([[ 0, -1, -1],
                [-1, -1, -1]])
    """

    def __init__(
        self, pos_iou: float = 0.35, low_iou: float = 0.1, compensate: bool = True
    ) -> None:
        if not 0.0 <= low_iou < pos_iou <= 1.0:
            raise ValueError(f"need 0 <= low_iou < pos_iou <= 1, got {low_iou}, {pos_iou}")
        self.pos_iou, self.low_iou, self.compensate = float(pos_iou), float(low_iou), compensate

    def __call__(self, gt_boxes: Sequence[Tensor], anchors_xyxy: Tensor) -> Tensor:
        """Match a batch.

        Args:
            gt_boxes: one ``Tensor[M_i, 4]`` (xyxy) per image (``M_i`` may be 0).
            anchors_xyxy: ``Tensor[A, 4]`` xyxy, shared by the batch.

        Returns:
            ``Tensor[B, A]`` int64: the matched face's row in ``gt_boxes[b]``, or ``-1``.
        """
        B, A = len(gt_boxes), anchors_xyxy.shape[0]
        device = anchors_xyxy.device
        matched = torch.full((B, A), BACKGROUND, dtype=torch.long, device=device)
        for i, g in enumerate(gt_boxes):
            if g.dim() != 2 or g.shape[-1] != 4:
                raise ValueError(f"gt_boxes[{i}] must be Tensor[M, 4], got shape {tuple(g.shape)}")
        counts = torch.tensor([g.shape[0] for g in gt_boxes], device=device)
        if B == 0 or int(counts.sum()) == 0:
            return matched
        gt = torch.cat([g.to(device=device, dtype=anchors_xyxy.dtype) for g in gt_boxes])
        img = torch.repeat_interleave(torch.arange(B, device=device), counts)  # [T]
        first = torch.cumsum(counts, 0) - counts  # global index of each image's first face
        valid = (gt[:, 2] > gt[:, 0]) & (gt[:, 3] > gt[:, 1])
        gt, img, local = (
            gt[valid],
            img[valid],
            (torch.arange(len(valid), device=device) - first[img])[valid],
        )
        T = gt.shape[0]
        if T == 0:
            return matched
        iou = box_iou(gt, anchors_xyxy)  # [T, A]
        tidx = torch.arange(T, device=device)

        # Stage 1: best face per anchor (per image), positive at >= pos_iou.
        neg_inf = torch.full((B, A), -1.0, dtype=iou.dtype, device=device)
        best_iou = neg_inf.scatter_reduce(0, img[:, None].expand(T, A), iou, "amax")
        is_best = iou == best_iou[img]
        cand = torch.where(is_best, tidx[:, None], torch.full_like(iou, -1, dtype=torch.long))
        best_t = torch.full((B, A), -1, dtype=torch.long, device=device).scatter_reduce(
            0, img[:, None].expand(T, A), cand, "amax"
        )
        assign = torch.where(best_iou >= self.pos_iou, best_t, torch.full_like(best_t, -1))

        # Stage 2: every face's best anchor is positive for it (the later face wins a tie).
        best_anchor = iou.argmax(1)
        flat = assign.view(-1)
        forced = torch.full_like(flat, -1).scatter_reduce(0, img * A + best_anchor, tidx, "amax")
        flat = torch.where(forced >= 0, forced, flat)
        assign = flat.view(B, A)

        # Stage 3: scale compensation, up to the image's mean count of anchors per face.
        if self.compensate:
            pos = assign >= 0
            c = torch.bincount(assign[pos], minlength=T)  # [T]
            faces_per_img = torch.bincount(img, minlength=B)
            anchors_per_img = torch.zeros(B, dtype=torch.long, device=device).index_add_(0, img, c)
            n_img = torch.div(anchors_per_img, faces_per_img.clamp(min=1), rounding_mode="floor")
            need = (n_img[img] - c).clamp(min=0)  # [T]
            cmask = (~pos) & (best_iou > self.low_iou) & (best_iou < self.pos_iou)
            cb = cmask.view(-1).nonzero().squeeze(1)  # flat (b, a) indices of candidates
            if cb.numel() and int(need.max()) > 0:
                ct, ciou = best_t.view(-1)[cb], best_iou.view(-1)[cb]
                order = torch.sort(ciou, descending=True, stable=True).indices
                order = order[torch.sort(ct[order], stable=True).indices]  # by face, then IoU
                ct_sorted = ct[order]
                per_face = torch.bincount(ct_sorted, minlength=T)
                start = torch.cumsum(per_face, 0) - per_face
                rank = torch.arange(len(order), device=device) - start[ct_sorted]
                take = rank < need[ct_sorted]
                flat = assign.view(-1).clone()
                flat[cb[order[take]]] = ct_sorted[take]
                assign = flat.view(B, A)
        return torch.where(assign >= 0, local[assign.clamp(min=0)], assign)

    def __repr__(self) -> str:
        return (f"S3FDMatcher(pos_iou={self.pos_iou}, low_iou={self.low_iou}, "
                f"compensate={self.compensate})")
