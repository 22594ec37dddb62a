"""Test-time augmentation for face detection: several scales, horizontal flip, box voting."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .boxes import box_iou
from .predict import FacePredictor, ImageInput, to_image_tensor

__all__ = ["box_voting", "tta_predict"]


def box_voting(
    boxes: Tensor, scores: Tensor, iou_thresh: float = 0.3, max_detections: int = 750
) -> tuple[Tensor, Tensor]:
    """Merge overlapping detections (S3FD / PyramidBox "bbox vote").

    Repeatedly takes the highest-scoring remaining box and the group of remaining boxes with
    IoU ``>= iou_thresh`` to it (itself included); the group is replaced by its score-weighted
    mean box with the group's highest score, and removed.

    Args:
        boxes: ``Tensor[N, 4]`` xyxy. scores: ``Tensor[N]``.

    Returns:
        ``(boxes Tensor[K, 4], scores Tensor[K])`` by decreasing score, ``K <= max_detections``.

    Example::

        >>> b = torch.tensor([[0., 0., 10., 10.], [2., 0., 12., 10.], [50., 50., 60., 60.]])
        >>> merged, s = box_voting(b, torch.tensor([0.75, 0.25, 0.5]))
        >>> merged.tolist(), s.tolist()
        ([[0.5, 0.0, 10.5, 10.0], [50.0, 50.0, 60.0, 60.0]], [0.75, 0.5])
    """
    if boxes.numel() == 0:
        return boxes.reshape(0, 4), scores.reshape(0)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes, scores = boxes[order], scores[order]
    iou = box_iou(boxes, boxes)
    alive = torch.ones(len(boxes), dtype=torch.bool)
    out_b, out_s = [], []
    for i in range(len(boxes)):
        if not alive[i] or len(out_b) >= max_detections:
            continue
        group = alive & (iou[i].cpu() >= iou_thresh)
        group[i] = True
        w = scores[group][:, None]
        out_b.append((boxes[group] * w).sum(0) / w.sum())
        out_s.append(scores[i])
        alive &= ~group
    return torch.stack(out_b), torch.stack(out_s)


def tta_predict(
    predictor: FacePredictor,
    image: ImageInput,
    scales: Sequence[float] = (0.5, 1.0, 1.5),
    flip: bool = True,
    vote_iou: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """Multi-scale + flip detection with box voting.

    The image runs at each ``scale`` times the predictor's input size (``predictor.input_hw``),
    and mirrored at scale 1 when ``flip``; all detections (mapped back to image pixels) are
    merged with :func:`box_voting`.

    Returns:
        ``(boxes Tensor[K, 4] xyxy, scores Tensor[K])`` in image pixels, by decreasing score.
    """
    t = to_image_tensor(image)
    h, w = predictor.input_hw(t.shape[-2:])
    runs = [(s, False) for s in scales] + ([(1.0, True)] if flip else [])
    all_b, all_s = [], []
    for s, f in runs:
        hw = (max(1, round(h * s)), max(1, round(w * s)))
        b, sc = predictor.raw(t, hw, flip=f)
        all_b.append(b.cpu())
        all_s.append(sc.cpu())
    return box_voting(torch.cat(all_b), torch.cat(all_s), vote_iou, predictor.max_detections)
