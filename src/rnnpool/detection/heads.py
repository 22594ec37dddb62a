"""S3FD detection heads: L2Norm, per-source classification/regression convolutions, max-out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["L2Norm", "S3FDHead"]


class L2Norm(nn.Module):
    r"""Channel-wise L2 normalisation with a learnable per-channel scale (ParseNet, SSD, S3FD).

    .. math:: y_{c} = \gamma_c \frac{x_c}{\sqrt{\sum_{c'} x_{c'}^2} + \epsilon}

    Args:
        channels: ``C``.
        scale: initial value of every :math:`\gamma_c`.
        eps: added to the norm. Default: ``1e-10``.

    Shape:
        ``(N, C, H, W) -> (N, C, H, W)``.

    Example::

        >>> y = L2Norm(2, scale=10.0)(torch.tensor([3., 4.]).view(1, 2, 1, 1))
        >>> y.flatten().tolist()
        [6.0, 8.0]
    """

    # Per pixel (across channels at one position): the memory analysis may compute it window
    # by window, like an activation (rnnpool.analysis; docs/models.md).
    elementwise = True

    def __init__(self, channels: int, scale: float, eps: float = 1e-10) -> None:
        super().__init__()
        self.channels, self.scale, self.eps = channels, float(scale), eps
        self.weight = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.weight, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        norm = x.pow(2).sum(1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, scale={self.scale}"


class S3FDHead(nn.Module):
    r"""Classification and box-regression convolutions on every source, flattened and concatenated.

    Source ``k`` (``C_k`` channels) optionally passes through :class:`L2Norm` (scale
    ``l2norm_scales[k]``), then a ``3x3`` conv (stride ``head_strides[k]``) gives ``A_k * 4`` box
    regressions and a ``3x3`` conv gives ``A_k * 2`` logits ``(background, face)``. On the first
    source with ``maxout_bg = n > 1`` the classification conv has ``A_0 * (n + 1)`` outputs: ``n``
    background logits, of which the maximum is kept (S3FD's max-out background label), and one
    face logit.

    Args:
        in_channels: ``C_k`` per source.
        num_anchors: ``A_k`` anchors per location per source.
        l2norm_scales: initial L2Norm scales of the first ``len(l2norm_scales)`` sources.
            Default: none.
        maxout_bg: background logits on the first source. Default: 3.
        head_strides: stride of each source's head convolutions. Default: all 1.

    Shape:
        - Input: list of ``(N, C_k, H_k, W_k)``.
        - Output: ``(cls_logits (N, A, 2), bbox_regression (N, A, 4))``, ``A = sum_k A_k H'_k W'_k``
          in the order source, row, column, anchor.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_anchors: Sequence[int],
        l2norm_scales: Sequence[float] = (),
        maxout_bg: int = 3,
        head_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        n = len(in_channels)
        head_strides = list(head_strides or [1] * n)
        if len(num_anchors) != n or len(head_strides) != n or len(l2norm_scales) > n:
            raise ValueError(
                f"{n} sources but {len(num_anchors)} anchor counts, {len(head_strides)} head "
                f"strides and {len(l2norm_scales)} L2Norm scales"
            )
        if maxout_bg < 1:
            raise ValueError(f"maxout_bg must be >= 1, got {maxout_bg}")
        self.num_anchors, self.maxout_bg = list(num_anchors), maxout_bg
        self.norms = nn.ModuleList(
            [L2Norm(c, s) for c, s in zip(in_channels, l2norm_scales)]
            + [nn.Identity() for _ in range(n - len(l2norm_scales))]
        )
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for k, (c, a, s) in enumerate(zip(in_channels, num_anchors, head_strides)):
            ncls = a * (maxout_bg + 1) if k == 0 else a * 2
            self.cls_convs.append(nn.Conv2d(c, ncls, 3, s, 1))
            self.reg_convs.append(nn.Conv2d(c, a * 4, 3, s, 1))

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        if len(features) != len(self.cls_convs):
            raise ValueError(f"S3FDHead expects {len(self.cls_convs)} sources, got {len(features)}")
        cls_out, reg_out = [], []
        for k, x in enumerate(features):
            x = self.norms[k](x)
            n = x.shape[0]
            a = self.num_anchors[k]
            logits = self.cls_convs[k](x)
            if k == 0 and self.maxout_bg > 1:
                h, w = logits.shape[-2:]
                logits = logits.view(n, a, self.maxout_bg + 1, h, w)
                bg = logits[:, :, : self.maxout_bg].amax(2, keepdim=True)
                logits = torch.cat([bg, logits[:, :, self.maxout_bg :]], 2).view(n, a * 2, h, w)
            cls_out.append(logits.permute(0, 2, 3, 1).reshape(n, -1, 2))
            reg_out.append(self.reg_convs[k](x).permute(0, 2, 3, 1).reshape(n, -1, 4))
        return torch.cat(cls_out, 1), torch.cat(reg_out, 1)
