"""The FastGRNN cell (Kusupati et al., NeurIPS 2018), the recurrent unit inside RNNPool."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from . import functional as RF

__all__ = ["FastGRNNCell"]


def _product(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` in the factors' dtype, also under autocast: autocast would round a low-rank
    matrix to float16 / bfloat16 while the cell's other parameters keep theirs (RNNPool2d then
    refused the mixed dtypes)."""
    if RF._autocast_on(a.device.type):
        with torch.autocast(a.device.type, enabled=False):
            return a @ b
    return a @ b


class FastGRNNCell(nn.Module):
    r"""A FastGRNN recurrent cell.

    .. code-block:: text

        pre = W x + U h
        z   = gate(pre + b_z)
        h~  = update(pre + b_h)
        h'  = z * h + (zeta * (1 - z) + nu) * h~

    ``W`` and ``U`` are shared by the gate and the candidate. ``gate`` is ``sigmoid`` or
    ``hard_sigmoid`` (``clamp((a + 1) / 2, 0, 1)``); ``update`` is ``tanh`` or ``hard_tanh``
    (``clamp(a, -1, 1)``). With ``trainable_zeta_nu=False`` (the RNNPool paper), ``zeta`` and
    ``nu`` are the fixed numbers given; with ``True`` (the reference code), they are
    ``sigmoid(zeta_raw)`` and ``sigmoid(nu_raw)`` with raw values initialised at +100 / -100.

    Args:
        input_size: features of ``x``.
        hidden_size: features of ``h``.
        gate: ``"sigmoid"`` (default) or ``"hard_sigmoid"``.
        update: ``"tanh"`` (default) or ``"hard_tanh"``.
        zeta: fixed ``zeta`` when not trainable. Default: 1.
        nu: fixed ``nu`` when not trainable. Default: 0.
        trainable_zeta_nu: learn ``zeta`` and ``nu`` through a sigmoid. Default: ``False``.
        w_rank: if given, ``W = W1 @ W2`` with ``W1: (hidden, w_rank)``, ``W2: (w_rank, input)``.
        u_rank: if given, ``U = U1 @ U2`` likewise.

    Shape:
        - x: :math:`(B, H_{in})`, h: :math:`(B, H_{hidden})`; output :math:`(B, H_{hidden})`.

    Attributes:
        weight_ih: ``(hidden, input)`` (full rank) or ``weight_ih1`` / ``weight_ih2``.
        weight_hh: ``(hidden, hidden)`` (full rank) or ``weight_hh1`` / ``weight_hh2``.
        bias_gate, bias_update: ``(hidden,)``, initialised to 1 and 0.
        zeta_raw, nu_raw: scalars, only when ``trainable_zeta_nu``.

    Sparsity: :meth:`sparsify_` keeps the largest-magnitude fraction of each matrix and stores a
    mask; call :meth:`apply_sparsity_` after every optimizer step to keep pruned entries at zero.

    Example::

        >>> cell = FastGRNNCell(4, 8)
        >>> h = cell(torch.randn(3, 4), torch.zeros(3, 8))
        >>> h.shape
        torch.Size([3, 8])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        gate: str = "sigmoid",
        update: str = "tanh",
        zeta: float = 1.0,
        nu: float = 0.0,
        trainable_zeta_nu: bool = False,
        w_rank: Optional[int] = None,
        u_rank: Optional[int] = None,
    ) -> None:
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name, v in (("w_rank", w_rank), ("u_rank", u_rank)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        if gate not in RF.GATES:
            raise ValueError(f"gate must be one of {sorted(RF.GATES)}, got {gate!r}")
        if update not in RF.UPDATES:
            raise ValueError(f"update must be one of {sorted(RF.UPDATES)}, got {update!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.gate, self.update = gate, update
        self.w_rank, self.u_rank = w_rank, u_rank
        self.trainable_zeta_nu = trainable_zeta_nu
        self.fixed_zeta, self.fixed_nu = float(zeta), float(nu)

        def matrix(rows: int, cols: int, rank: Optional[int], name: str) -> None:
            if rank is None:
                self.register_parameter(name, nn.Parameter(torch.empty(rows, cols)))
            else:
                self.register_parameter(name + "1", nn.Parameter(torch.empty(rows, rank)))
                self.register_parameter(name + "2", nn.Parameter(torch.empty(rank, cols)))

        matrix(hidden_size, input_size, w_rank, "weight_ih")
        matrix(hidden_size, hidden_size, u_rank, "weight_hh")
        self.bias_gate = nn.Parameter(torch.empty(hidden_size))
        self.bias_update = nn.Parameter(torch.empty(hidden_size))
        if trainable_zeta_nu:
            self.zeta_raw = nn.Parameter(torch.empty(()))
            self.nu_raw = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(hidden), 1/sqrt(hidden)) matrices, ``b_z = 1``, ``b_h = 0``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if name.startswith("weight_"):
                nn.init.uniform_(p, -bound, bound)
        nn.init.ones_(self.bias_gate)
        nn.init.zeros_(self.bias_update)
        if self.trainable_zeta_nu:
            nn.init.constant_(self.zeta_raw, 100.0)
            nn.init.constant_(self.nu_raw, -100.0)

    def matrix_names(self) -> list[str]:
        """Names of the weight matrices (the factors when low-rank)."""
        return [n for n, _ in self.named_parameters() if n.startswith("weight_")]

    @property
    def W(self) -> Tensor:
        """Effective ``(hidden, input)`` input matrix."""
        if self.w_rank is None:
            return self.weight_ih
        return _product(self.weight_ih1, self.weight_ih2)

    @property
    def U(self) -> Tensor:
        """Effective ``(hidden, hidden)`` recurrent matrix."""
        if self.u_rank is None:
            return self.weight_hh
        return _product(self.weight_hh1, self.weight_hh2)

    def params(self) -> RF.FastGRNNParams:
        """The effective parameters, as used by :mod:`rnnpool.nn.functional`."""
        if self.trainable_zeta_nu:
            zeta, nu = torch.sigmoid(self.zeta_raw), torch.sigmoid(self.nu_raw)
        else:
            zeta, nu = self.fixed_zeta, self.fixed_nu
        return RF.FastGRNNParams(
            self.W, self.U, self.bias_gate, self.bias_update, zeta, nu, self.gate, self.update
        )

    def forward(self, x: Tensor, h: Optional[Tensor] = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"FastGRNNCell expects input (B, {self.input_size}), got {tuple(x.shape)}"
            )
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        elif h.shape != (x.shape[0], self.hidden_size):
            raise ValueError(f"FastGRNNCell expects state (B, {self.hidden_size}) = "
                             f"{(x.shape[0], self.hidden_size)} for input {tuple(x.shape)}, "
                             f"got {tuple(h.shape)}")
        return RF.fastgrnn_cell(x, h, self.params())

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def sparsify_(self, keep_ih: float, keep_hh: float) -> None:
        """Hard-threshold each matrix to its ``keep`` fraction of largest magnitudes.

        Stores the masks as buffers (``mask_<name>``) so :meth:`apply_sparsity_` can re-apply them
        after optimizer steps, and so they travel with the state dict.
        """
        for name, keep in (("weight_ih", keep_ih), ("weight_hh", keep_hh)):
            if not 0.0 < keep <= 1.0:  # every fraction checked before any mask is made
                raise ValueError(f"keep fraction for {name} must be in (0, 1], got {keep}")
        for name in self.matrix_names():
            keep = keep_ih if name.startswith("weight_ih") else keep_hh
            p = getattr(self, name)
            k = max(1, int(round(keep * p.numel())))
            idx = p.abs().flatten().topk(k).indices
            mask = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
            mask[idx] = True
            self.register_buffer("mask_" + name, mask.view_as(p))
        self.apply_sparsity_()

    @torch.no_grad()
    def apply_sparsity_(self) -> None:
        """Zero the entries pruned by :meth:`sparsify_` (no-op without masks)."""
        for name in self.matrix_names():
            mask = getattr(self, "mask_" + name, None)
            if mask is not None:
                getattr(self, name).mul_(mask)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # Masks exist only after sparsify_: create them when a checkpoint carries them, shaped
        # as their matrix (so that a mask of another shape is a size mismatch, not broadcast).
        for name in self.matrix_names():
            key = prefix + "mask_" + name
            if key in state_dict and getattr(self, "mask_" + name, None) is None:
                p = getattr(self, name)
                self.register_buffer("mask_" + name,
                                     torch.zeros(p.shape, dtype=torch.bool, device=p.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def density(self) -> dict[str, float]:
        """Fraction of non-zero entries per matrix."""
        return {n: float((getattr(self, n) != 0).float().mean()) for n in self.matrix_names()}

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, gate={self.gate!r}, update={self.update!r}"
        if self.trainable_zeta_nu:
            s += ", trainable_zeta_nu=True"
        elif (self.fixed_zeta, self.fixed_nu) != (1.0, 0.0):
            s += f", zeta={self.fixed_zeta}, nu={self.fixed_nu}"
        if self.w_rank is not None:
            s += f", w_rank={self.w_rank}"
        if self.u_rank is not None:
            s += f", u_rank={self.u_rank}"
        return s
