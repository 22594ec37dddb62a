"""Measured activation peaks: count live activation storage while a model runs.

:class:`ActivationTracker` is a ``TorchDispatchMode`` that adds the bytes of every storage an
op creates and subtracts them when the last tensor using it is freed, so its peak is the
largest amount of activation memory alive at once (parameters, buffers and the model input
are not counted). :func:`banded_rnnpool` makes every ``RNNPool2d`` whose input comes from
convolution / BatchNorm / activation modules run *band by band*: for each row of output
patches it computes only the input rows that band reads (through those layers, back to the
model input) and writes one output row, so the RNNPool's input map is never whole.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..nn import RNNPool2d
from ..nn.functional import rnnpool2d, rnnpool2d_output_size, rnnpool2d_padding

__all__ = ["ActivationTracker", "MeasuredPeak", "measure_peak", "banded_rnnpool"]


class ActivationTracker(TorchDispatchMode):
    """Track live activation bytes through a forward pass.

    Attributes:
        current: bytes alive now.
        peak: the largest value of ``current`` so far.
        peak_module: name of the outermost named module running at the peak (if
            :meth:`watch` was used).
        module_peaks: peak bytes seen while each watched module ran.
    """

    def __init__(self, ignore: Optional[list[Tensor]] = None) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self.peak_module = ""
        self.module_peaks: dict[str, int] = {}
        self._refs: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self._ignore = {t.untyped_storage().data_ptr() for t in (ignore or []) if t.numel()}
        self._stack: list[str] = []
        self._handles: list[Any] = []

    def watch(self, model: nn.Module) -> "ActivationTracker":
        """Attribute peaks to ``model``'s direct children (and deeper named modules)."""
        for name, m in model.named_modules():
            if not name or name.count(".") > 1:
                continue
            self._handles.append(m.register_forward_pre_hook(
                lambda _m, _a, n=name: self._stack.append(n)))
            self._handles.append(m.register_forward_hook(self._pop))
        return self

    def _pop(self, _m: nn.Module, _a: Any, _o: Any) -> None:
        self._stack.pop()

    def unwatch(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _free(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            self.current -= self._sizes.pop(key)
            del self._refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, Tensor) or t.numel() == 0:
                continue
            key = t.untyped_storage().data_ptr()
            if key in self._ignore:
                continue
            if key not in self._refs:
                self._refs[key] = 0
                self._sizes[key] = t.untyped_storage().nbytes()
                self.current += self._sizes[key]
            self._refs[key] += 1
            weakref.finalize(t, self._free, key)
        if self.current > self.peak:
            self.peak = self.current
            self.peak_module = self._stack[-1] if self._stack else ""
        for name in self._stack:
            self.module_peaks[name] = max(self.module_peaks.get(name, 0), self.current)
        return out


@dataclass
class MeasuredPeak:
    """Result of :func:`measure_peak`.

    Attributes:
        peak_bytes: largest live activation storage during the forward pass.
        peak_module: module running at that moment.
        module_peaks: per module, the peak while it ran.
    """

    peak_bytes: int
    peak_module: str
    module_peaks: dict[str, int] = field(default_factory=dict)


@torch.no_grad()
def measure_peak(model: nn.Module, x: Tensor, banded: bool = False) -> MeasuredPeak:
    """Run ``model(x)`` in eval mode under :class:`ActivationTracker`, after one untracked run
    (so that what layers cache across calls, such as RNNPool's sweep indices, is not counted as
    activations of the first call).

    Args:
        model: the model.
        x: its input (not counted).
        banded: run RNNPool layers band by band (:func:`banded_rnnpool`).

    Returns:
        :class:`MeasuredPeak` (fp32 storage bytes, so compare with 4 bytes per activation).
    """
    was = model.training
    model.eval()
    tracker = ActivationTracker(ignore=[x, *model.parameters(), *model.buffers()]).watch(model)
    ctx = banded_rnnpool(model, x) if banded else contextlib.nullcontext()
    try:
        with ctx:
            model(x)  # untracked (the function runs under no_grad)
            with tracker:
                out = model(x)
                del out
    finally:
        tracker.unwatch()
        model.train(was)
    return MeasuredPeak(tracker.peak, tracker.peak_module, dict(tracker.module_peaks))


# ---- banded execution ------------------------------------------------------------------------
class _Rows:
    """A map that is never materialised: it computes any band of its rows on request."""

    def __init__(
        self, src: Union["_Rows", Tensor], module: Optional[nn.Module], fn: Any = None
    ) -> None:
        self.src, self.module, self.fn = src, module, fn
        n, c, h, w = src.shape
        if isinstance(module, nn.Conv2d):
            (kh, kw), (sh, sw) = module.kernel_size, module.stride
            (ph, pw), (dh, dw) = module.padding, module.dilation
            h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
            w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
            c = module.out_channels
        self.shape = (n, c, h, w)

    def rows(self, a: int, b: int) -> Tensor:
        """Rows ``[a, b)`` (``0 <= a < b <= H``) of this map."""
        m = self.module
        if m is None:
            return _get_rows(self.src, a, b)
        if isinstance(m, nn.Conv2d):
            (kh, _), (sh, _), (ph, pw), (dh, _) = m.kernel_size, m.stride, m.padding, m.dilation
            lo, hi = a * sh - ph, (b - 1) * sh - ph + dh * (kh - 1) + 1
            x = _padded_rows(self.src, lo, hi)
            return F.conv2d(x, m.weight, m.bias, m.stride, (0, pw), m.dilation, m.groups)
        return self.fn(_get_rows(self.src, a, b))


def _get_rows(src: Union[_Rows, Tensor], a: int, b: int) -> Tensor:
    return src.rows(a, b) if isinstance(src, _Rows) else src[:, :, a:b]


def _padded_rows(src: Union[_Rows, Tensor], lo: int, hi: int, replicate: bool = False
                 ) -> Tensor:
    """Rows ``[lo, hi)`` of ``src`` with zero rows (``replicate``: copies of the first or last
    row) where the range leaves the map."""
    h = src.shape[2]
    if replicate:  # row indices clamped to the map
        a, b = min(max(lo, 0), h - 1), min(max(hi - 1, 0), h - 1) + 1
        x = _get_rows(src, a, b)
        idx = torch.arange(lo, hi, device=x.device).clamp(0, h - 1) - a
        return x.index_select(2, idx)
    x = _get_rows(src, max(lo, 0), min(hi, h))
    top, bottom = max(0, -lo), max(0, hi - h)
    return F.pad(x, (0, 0, top, bottom)) if top or bottom else x


_POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Identity, nn.Hardtanh, nn.Sigmoid)


def _lazy_forward(module: nn.Module, original: Any) -> Any:
    def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(x, (_Rows, Tensor)) and not args and not kwargs:
            if isinstance(module, nn.Conv2d) and (
                module.padding_mode != "zeros" or isinstance(module.padding, str)
            ):
                return original(x if isinstance(x, Tensor) else _materialise(x))
            return _Rows(x, module, original)
        return original(x, *args, **kwargs)

    return forward


def _materialise(x: "_Rows") -> Tensor:
    return x.rows(0, x.shape[2])


def _banded_rnnpool_forward(pool: RNNPool2d, original: Any, band: int) -> Any:
    def forward(x: Any) -> Tensor:
        if not isinstance(x, (_Rows, Tensor)):
            return original(x)
        if isinstance(x, Tensor) and x.shape[1] != pool.in_channels:
            return original(x)
        n, _, h, w = x.shape
        if tuple(pool.output_size((h, w))) == (1, 1) and pool.kernel_size != (h, w):
            return original(x if isinstance(x, Tensor) else _materialise(x))
        (kh, kw), (sh, sw) = pool.kernel_size, pool.stride
        ho, wo = rnnpool2d_output_size((h, w), (kh, kw), (sh, sw), pool.padding)
        left, right, top, _bottom = rnnpool2d_padding((h, w), (kh, kw), (sh, sw), pool.padding)
        p1, p2 = pool.rnn1.params(), pool.rnn2.params()
        out: Optional[Tensor] = None
        for o0 in range(0, ho, band):
            o1 = min(ho, o0 + band)
            lo, hi = o0 * sh - top, (o1 - 1) * sh - top + kh
            rows = _padded_rows(x, lo, hi, replicate=pool.padding_mode == "replicate")
            if left or right:
                mode = "replicate" if pool.padding_mode == "replicate" else "constant"
                rows = F.pad(rows, (left, right, 0, 0), mode=mode)
            y = rnnpool2d(rows, p1, p2, (kh, kw), (sh, sw), 0, backend=pool.backend)
            if out is None:  # the layer's own device and dtype (not the CPU's float32)
                out = y.new_empty(n, pool.out_channels, ho, wo)
            out[:, :, o0:o1] = y
            del rows, y
        assert out is not None
        return out

    return forward


@contextlib.contextmanager
def banded_rnnpool(model: nn.Module, example: Tensor, band_rows: int = 1) -> Iterator[nn.Module]:
    """Within the context, ``model``'s RNNPool layers run band by band.

    One traced forward pass on ``example`` finds, for every ``RNNPool2d``, the convolution,
    BatchNorm and activation modules between it and the model input. Inside the context those
    modules return a lazy row source instead of a tensor, and the RNNPool pulls, for each band
    of ``band_rows`` output rows, just the input rows it needs, computed through those layers
    from the model input (overlapping rows are recomputed). Any other module handed a lazy
    source gets it materialised, so the model computes the same outputs.

    Args:
        model: the model; its modules are patched for the duration of the context.
        example: an input of the size that will be run (used for the trace).
        band_rows: output rows of RNNPool per band.
    """
    from ._trace import trace_model

    trace = trace_model(model, example)
    lazy: list[nn.Module] = []
    pools: list[nn.Module] = []
    for node in trace.nodes:
        if node.kind != "rnnpool" or not isinstance(node.module, RNNPool2d):
            continue
        chain, mods, ok = set(node.inputs[:1]), [], True
        for prev in reversed(trace.nodes[: node.index]):
            if not chain.intersection(prev.outputs):
                continue
            if not isinstance(prev.module, (nn.Conv2d, *_POINTWISE)):
                ok = False
                break
            mods.append(prev.module)
            chain.update(prev.inputs)
        if ok and chain.intersection(trace.model_inputs):
            lazy += mods
        pools.append(node.module)
    patched: list[nn.Module] = []
    try:
        for m in pools:
            m.forward = _banded_rnnpool_forward(m, m.forward, band_rows)  # type: ignore
            patched.append(m)
        for m in dict.fromkeys(lazy):
            m.forward = _lazy_forward(m, m.forward)  # type: ignore[method-assign]
            patched.append(m)
        _install_materialise_hooks(model, patched)
        yield model
    finally:
        for m in patched:
            del m.forward
        for h in getattr(model, "_rnnpool_banded_hooks", []):
            h.remove()
        if hasattr(model, "_rnnpool_banded_hooks"):
            del model._rnnpool_banded_hooks


def _install_materialise_hooks(model: nn.Module, patched: list[nn.Module]) -> None:
    """Materialise lazy sources handed to any other module, and lazy model outputs."""
    hooks = []
    patched_set = set(map(id, patched))

    def pre(m: nn.Module, args: Any) -> Any:
        if id(m) in patched_set or not any(isinstance(a, _Rows) for a in args):
            return None
        if isinstance(m, nn.Sequential):
            return None  # its children decide
        return tuple(_materialise(a) if isinstance(a, _Rows) else a for a in args)

    def post(m: nn.Module, args: Any, out: Any) -> Any:
        return _materialise(out) if isinstance(out, _Rows) and m is model else None

    for m in model.modules():
        hooks.append(m.register_forward_pre_hook(pre))
    hooks.append(model.register_forward_hook(post))
    model._rnnpool_banded_hooks = hooks  # type: ignore[assignment]
