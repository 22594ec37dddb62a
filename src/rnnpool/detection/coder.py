"""SSD box encoding with variances: the one coder shared by the loss and the post-processing."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .boxes import box_convert

__all__ = ["BoxCoder"]


class BoxCoder:
    r"""Encodes xyxy boxes relative to ``cxcywh`` anchors, and decodes regressions back.

    .. math::
        t_x = \frac{x_c - a_x}{v_0 a_w},\quad t_y = \frac{y_c - a_y}{v_0 a_h},\quad
        t_w = \frac{\log(w / a_w)}{v_1},\quad t_h = \frac{\log(h / a_h)}{v_1}

    with ``(v_0, v_1) = variances`` (SSD / S3FD: 0.1, 0.2). :meth:`decode` inverts it and clamps
    ``v_1 t_w`` and ``v_1 t_h`` to ``clip`` before the ``exp`` so untrained outputs cannot
    overflow.

    Args:
        variances: ``(v_0, v_1)``. Default: ``(0.1, 0.2)``.
        clip: upper bound of the log-scale before ``exp``. Default: ``log(1000 / 16)``.

    Example::

        >>> coder = BoxCoder()
        >>> anchors = torch.tensor([[50., 50., 20., 20.]])            # cxcywh
        >>> coder.encode(torch.tensor([[42., 44., 62., 64.]]), anchors)  # xyxy, centre (52, 54)
        tensor([[1., 2., 0., 0.]])
    """

    def __init__(
        self, variances: tuple[float, float] = (0.1, 0.2), clip: float = math.log(1000.0 / 16)
    ):
        if len(variances) != 2 or min(variances) <= 0:
            raise ValueError(f"variances must be two positive numbers, got {variances}")
        self.variances = (float(variances[0]), float(variances[1]))
        self.clip = float(clip)

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """``boxes`` ``Tensor[..., 4]`` xyxy and ``anchors`` ``Tensor[..., 4]`` cxcywh (broadcast)
        -> regression targets ``Tensor[..., 4]``."""
        v0, v1 = self.variances
        b = box_convert(boxes.reshape(-1, 4), "xyxy", "cxcywh").reshape(boxes.shape)
        wh = b[..., 2:].clamp(min=torch.finfo(b.dtype).tiny)
        return torch.cat(
            [
                (b[..., :2] - anchors[..., :2]) / (v0 * anchors[..., 2:]),
                torch.log(wh / anchors[..., 2:]) / v1,
            ],
            -1,
        )

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Regressions ``Tensor[..., 4]`` and anchors ``Tensor[..., 4]`` cxcywh -> xyxy boxes."""
        v0, v1 = self.variances
        centre = anchors[..., :2] + deltas[..., :2] * v0 * anchors[..., 2:]
        wh = anchors[..., 2:] * torch.exp((deltas[..., 2:] * v1).clamp(max=self.clip))
        return torch.cat([centre - wh / 2, centre + wh / 2], -1)

    def __repr__(self) -> str:
        return f"BoxCoder(variances={self.variances})"
