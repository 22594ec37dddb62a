"""S3FD multibox loss: smooth-L1 box regression + cross-entropy with 3:1 hard negative mining."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .boxes import box_convert
from .coder import BoxCoder
from .matcher import S3FDMatcher

__all__ = ["MultiBoxLoss", "hard_negative_mask"]


def hard_negative_mask(bg_loss: Tensor, positive: Tensor, neg_pos_ratio: float = 3.0) -> Tensor:
    """Pick each image's hardest negatives.

    Args:
        bg_loss: ``Tensor[B, A]`` classification loss of every anchor as background.
        positive: ``Tensor[B, A]`` bool, the matched anchors.
        neg_pos_ratio: negatives per positive. Default: 3.

    Returns:
        ``Tensor[B, A]`` bool: for image ``b``, the ``min(ratio * P_b, A - P_b)`` negatives with
        the largest ``bg_loss`` (ties: lower anchor index), where ``P_b`` is its positive count.
    """
    num_pos = positive.sum(1, keepdim=True)
    num_neg = torch.minimum(
        (num_pos.to(torch.float64) * neg_pos_ratio).floor().long(), positive.shape[1] - num_pos
    )
    loss = bg_loss.detach().masked_fill(positive, float("-inf"))
    k_max = int(num_neg.max()) if num_neg.numel() else 0
    if k_max <= 0:
        return torch.zeros_like(positive, dtype=torch.bool)
    if not bool(loss.isnan().any()):  # (a stable sort puts NaN first: left to the sort below)
        # Without a full sort (several times faster): the num_neg-th largest loss is the cut;
        # all larger losses are taken, and of the equal ones the lowest anchor indices first,
        # which is exactly the first num_neg of the stable descending sort.
        cut = loss.topk(k_max, dim=1).values.gather(1, (num_neg - 1).clamp(min=0))
        above, tie = loss > cut, loss == cut
        ties_taken = num_neg - above.sum(1, keepdim=True)
        return (above | (tie & (tie.cumsum(1) <= ties_taken))) & (num_neg > 0)
    order = torch.sort(loss, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=order.device).expand_as(order)
    )
    return rank < num_neg


class MultiBoxLoss:
    r"""The S3FD training loss of a batch.

    Anchors are matched with :class:`S3FDMatcher`. With ``P`` the positives over the batch:

    .. math::
        L = \frac{1}{\max(P, 1)}\Big(\sum_{a \in pos} \mathrm{smoothL1}(t_a - \hat t_a)
            + \sum_{a \in pos \cup hard\,neg} \mathrm{CE}(z_a, y_a)\Big)

    where ``t`` are the :class:`BoxCoder` encodings of the matched faces and the hard negatives
    are, per image, the ``3 P_b`` background anchors of largest background cross-entropy.

    Args:
        coder: the box coder (shared with inference). Default: ``BoxCoder()``.
        matcher: the anchor matcher. Default: ``S3FDMatcher()``.
        neg_pos_ratio: hard negatives per positive. Default: 3.

    Example::

        >>> crit = MultiBoxLoss()
        >>> anchors = torch.tensor([[5., 5., 10., 10.], [15., 5., 10., 10.]])  # cxcywh
        >>> cls, reg = torch.zeros(1, 2, 2), torch.zeros(1, 2, 4)
        >>> loss, logs = crit(cls, reg, anchors, [torch.tensor([[0., 0., 10., 10.]])])
        >>> round(loss.item(), 4), logs["num_pos"]  # two CE terms of log(2), exact box
        (1.3863, 1.0)
    """

    def __init__(
        self,
        coder: BoxCoder | None = None,
        matcher: S3FDMatcher | None = None,
        neg_pos_ratio: float = 3.0,
    ) -> None:
        self.coder = coder or BoxCoder()
        self.matcher = matcher or S3FDMatcher()
        self.neg_pos_ratio = float(neg_pos_ratio)

    def __call__(
        self,
        cls_logits: Tensor,
        bbox_regression: Tensor,
        anchors: Tensor,
        gt_boxes: Sequence[Tensor],
    ) -> tuple[Tensor, dict[str, float]]:
        """
        Args:
            cls_logits: ``Tensor[B, A, 2]`` (background, face) logits.
            bbox_regression: ``Tensor[B, A, 4]``.
            anchors: ``Tensor[A, 4]`` cxcywh.
            gt_boxes: one ``Tensor[M_i, 4]`` xyxy per image.

        Returns:
            ``(loss, logs)`` with ``logs`` holding ``loss_cls``, ``loss_box`` and ``num_pos``.
        """
        B, A = cls_logits.shape[:2]
        if cls_logits.shape != (B, A, 2) or bbox_regression.shape != (B, A, 4):
            raise ValueError(
                f"expected cls_logits [B, A, 2] and bbox_regression [B, A, 4], got "
                f"{tuple(cls_logits.shape)} and {tuple(bbox_regression.shape)}"
            )
        if anchors.shape != (A, 4) or len(gt_boxes) != B:
            raise ValueError(
                f"anchors must be [{A}, 4] and gt_boxes a list of {B}, got "
                f"{tuple(anchors.shape)} and {len(gt_boxes)}"
            )
        # The loss runs in float32 (or float64) even under autocast: pixel coordinates and
        # log-scales lose too much in float16.
        if bbox_regression.dtype in (torch.float16, torch.bfloat16):
            bbox_regression = bbox_regression.float()
        anchors = anchors.to(bbox_regression)
        gt_boxes = [g.to(bbox_regression) for g in gt_boxes]
        matched = self.matcher(gt_boxes, box_convert(anchors, "cxcywh", "xyxy"))  # [B, A]
        positive = matched >= 0
        num_pos = int(positive.sum())
        norm = max(num_pos, 1)

        # Box regression on the positives.
        if num_pos:
            b_idx, a_idx = positive.nonzero(as_tuple=True)
            offsets = torch.tensor([0] + [len(g) for g in gt_boxes], device=matched.device).cumsum(
                0
            )
            all_gt = torch.cat(gt_boxes)
            target = self.coder.encode(
                all_gt[offsets[b_idx] + matched[b_idx, a_idx]], anchors[a_idx]
            )
            loss_box = F.smooth_l1_loss(bbox_regression[b_idx, a_idx], target, reduction="sum")
        else:
            loss_box = bbox_regression.sum() * 0.0

        # Classification on positives + hard negatives.
        labels = positive.long()
        logits = cls_logits if cls_logits.dtype == torch.float64 else cls_logits.float()
        ce = F.cross_entropy(logits.reshape(-1, 2), labels.view(-1), reduction="none").view(B, A)
        negatives = hard_negative_mask(ce, positive, self.neg_pos_ratio)
        loss_cls = ce[positive | negatives].sum()
        loss = (loss_box + loss_cls) / norm
        logs = {
            "loss_cls": float(loss_cls.detach()) / norm,
            "loss_box": float(loss_box.detach()) / norm,
            "num_pos": float(num_pos) / max(B, 1),
        }
        return loss, logs
