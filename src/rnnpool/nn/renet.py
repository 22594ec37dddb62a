"""ReNet (Visin et al., 2015): bidirectional RNN sweeps over non-overlapping patches.

A pooling baseline in the RNNPool paper's ablation.
"""

from __future__ import annotations

from torch import Tensor, nn

from .functional import IntPair, _pair

__all__ = ["ReNet2d"]


class ReNet2d(nn.Module):
    r"""ReNet layer: a vertical then a horizontal bidirectional GRU over flattened patches.

    The input is cut into non-overlapping ``patch_size`` patches, each flattened to a vector of
    ``C * p_h * p_w``. A bidirectional GRU sweeps each column of patches (top-down and bottom-up),
    then a second one sweeps each row of the result (left-right and right-left).

    Args:
        in_channels: ``C``.
        hidden: GRU state size per direction; the output has ``2 * hidden`` channels.
        patch_size: ``(p_h, p_w)``, also the downsampling factor.

    Shape:
        - Input: :math:`(N, C, H, W)` with ``H``, ``W`` divisible by the patch size.
        - Output: :math:`(N, 2 \cdot hidden, H / p_h, W / p_w)`.

    Example::

        >>> ReNet2d(8, 16, 4)(torch.randn(2, 8, 32, 32)).shape
        torch.Size([2, 32, 8, 8])
    """

    def __init__(self, in_channels: int, hidden: int, patch_size: IntPair) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("hidden", hidden)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_channels, self.hidden = in_channels, hidden
        self.patch_size = _pair(patch_size, "patch_size")
        ph, pw = self.patch_size
        self.vertical = nn.GRU(in_channels * ph * pw, hidden, batch_first=True, bidirectional=True)
        self.horizontal = nn.GRU(2 * hidden, hidden, batch_first=True, bidirectional=True)

    @property
    def out_channels(self) -> int:
        return 2 * self.hidden

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ReNet2d expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        n, c, h, w = x.shape
        ph, pw = self.patch_size
        if h % ph or w % pw:
            raise ValueError(f"ReNet2d input size {(h, w)} is not divisible by patch {(ph, pw)}")
        gh, gw = h // ph, w // pw
        # (N, C, gh, ph, gw, pw) -> (N, gw, gh, C*ph*pw): one sequence per column of patches.
        p = x.reshape(n, c, gh, ph, gw, pw).permute(0, 4, 2, 1, 3, 5).reshape(n * gw, gh, -1)
        v, _ = self.vertical(p)  # (N*gw, gh, 2h)
        v = v.reshape(n, gw, gh, -1).transpose(1, 2).reshape(n * gh, gw, -1)
        o, _ = self.horizontal(v)  # (N*gh, gw, 2h)
        return o.reshape(n, gh, gw, -1).permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return f"{self.in_channels}, hidden={self.hidden}, patch_size={self.patch_size}"
