"""From raw S3FD outputs to detections: softmax, threshold, top-k, decode, clip, NMS."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .boxes import clip_boxes, nms
from .coder import BoxCoder

__all__ = ["postprocess_detections"]


def postprocess_detections(
    cls_logits: Tensor,
    bbox_regression: Tensor,
    anchors: Tensor,
    coder: BoxCoder | None = None,
    image_hw: Sequence[int] | None = None,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.3,
    pre_nms_top_k: int = 5000,
    max_detections: int = 750,
) -> list[tuple[Tensor, Tensor]]:
    """Turn a batch of raw outputs into per-image face detections.

    For each image: face probability ``softmax(logits)[..., 1]``; keep the anchors with
    probability ``> score_thresh``; the best ``pre_nms_top_k`` of them are decoded with
    ``coder`` and clipped to ``image_hw``; greedy NMS at ``nms_thresh`` (S3FD: 0.3); at most
    ``max_detections`` (S3FD: 750) survive.

    Args:
        cls_logits: ``Tensor[B, A, 2]``.
        bbox_regression: ``Tensor[B, A, 4]``.
        anchors: ``Tensor[A, 4]`` cxcywh.
        coder: the :class:`BoxCoder` of training. Default: ``BoxCoder()``.
        image_hw: clip boxes to this ``(H, W)``; ``None`` does not clip.

    Returns:
        per image ``(boxes Tensor[K, 4] xyxy, scores Tensor[K])``, by decreasing score.

    Example::

        >>> anchors = torch.tensor([[10., 10., 8., 8.], [11., 10., 8., 8.], [40., 40., 8., 8.]])
        >>> logits = torch.tensor([[[0., 3.], [0., 2.], [0., -3.]]])
        >>> boxes, scores = postprocess_detections(logits, torch.zeros(1, 3, 4), anchors)[0]
        >>> boxes.tolist(), f"{scores.item():.3f}"  # the 2nd box overlaps the 1st (IoU 0.78)
        ([[6.0, 6.0, 14.0, 14.0]], '0.953')
    """
    coder = coder or BoxCoder()
    if (
        cls_logits.dim() != 3
        or cls_logits.shape[-1] != 2
        or bbox_regression.shape[:2] != cls_logits.shape[:2]
    ):
        raise ValueError(
            f"expected cls_logits [B, A, 2] and bbox_regression [B, A, 4], got "
            f"{tuple(cls_logits.shape)} and {tuple(bbox_regression.shape)}"
        )
    scores_all = torch.softmax(cls_logits.float(), -1)[..., 1]
    out = []
    for scores, deltas in zip(scores_all, bbox_regression.float()):
        keep = (scores > score_thresh).nonzero().squeeze(1)
        s = scores[keep]
        if s.numel() > pre_nms_top_k:
            s, top = s.topk(pre_nms_top_k)
            keep = keep[top]
        boxes = coder.decode(deltas[keep], anchors[keep].to(deltas))
        if image_hw is not None:
            boxes = clip_boxes(boxes, image_hw[0], image_hw[1])
        limit = max_detections if max_detections >= 0 else None  # lets NMS stop early
        k = nms(boxes, s, nms_thresh, max_keep=limit)[:max_detections]
        out.append((boxes[k], s[k]))
    return out
