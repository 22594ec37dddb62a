"""Post-training quantization: a float torch model -> :class:`~rnnpool.quant.ir.QGraph`.

The model is traced with ``torch.fx`` (``RNNPool2d`` and ``L2Norm``-like modules are leaves),
run on a calibration set to record every activation's range, and converted op by op:

* ``Conv2d [-> BatchNorm2d] [-> ReLU | ReLU6]``: BN folded into the weights and bias, the
  activation folded into the int8 clamp; int8 per-output-channel symmetric weights, int32 bias.
* ``x + y`` (residual): :class:`~rnnpool.quant.ir.AddS8`.
* a BatchNorm2d that follows no convolution (e.g. after RNNPool): a depthwise 1x1 convolution.
* ``RNNPool2d``: fixed point (:class:`~rnnpool.quant.ir.RNNPoolS8`): RNN1's ``W`` int8 per row,
  ``U``, RNN2's ``W`` and ``U`` int16 with a per-cell power-of-two format, hard sigmoid / tanh.
* ``L2Norm`` (a module with a per-channel ``weight``, dividing by the channel L2 norm):
  :class:`~rnnpool.quant.ir.L2NormS8`.
* ``AdaptiveAvgPool2d(1)`` / ``AvgPool2d`` / ``mean((2, 3))``: :class:`~rnnpool.quant.ir.AvgPoolS8`;
  ``flatten -> Linear``: a convolution whose kernel covers the map.
* Output assembly of detection heads (``permute(0, 2, 3, 1)``, ``contiguous``, ``view`` /
  ``reshape`` / ``flatten``, ``torch.cat`` along dim 1): :class:`~rnnpool.quant.ir.DequantizeF32`
  per output (no int8 concat, each head keeps its own scale).

Activations are int8 **asymmetric** (per-tensor scale and zero point from the calibration min /
max, widened to include 0), so ReLU6 outputs use all 256 levels. Anything else raises
:class:`UnsupportedLayerError` naming the node and the layer.
"""

from __future__ import annotations

import copy
import itertools
import math
import operator
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..nn import RNNPool2d
from ..nn import functional as RF
from . import ir
from .fixedpoint import quantize_multiplier, quantize_multipliers

__all__ = [
    "CalibrationError",
    "QuantConfig",
    "UnsupportedLayerError",
    "activation_qparams",
    "calibrate",
    "fold_bn",
    "is_l2norm",
    "quantize_model",
    "quantize_rnnpool",
    "trace",
]


class UnsupportedLayerError(ValueError):
    """The model contains a layer or operation the int8 flow cannot express."""


@dataclass
class QuantConfig:
    """Post-training quantization settings.

    Attributes:
        calibration: ``"minmax"`` (whole range) or ``"percentile"`` (clip each activation's
            range to the ``percentile`` / ``100 - percentile`` quantiles of the calibration set).
        percentile: used with ``"percentile"``.
        rnn_max_frac_bits: upper bound of the RNN weight format (pre-activations saturate at
            ``+-2**(15 - f)``; 11 keeps ``+-16``).
        batch_size: calibration batch size.
    """

    calibration: str = "minmax"
    percentile: float = 99.99
    rnn_max_frac_bits: int = 11
    batch_size: int = 16


def is_l2norm(m: nn.Module) -> bool:
    """A module is treated as S3FD L2Norm when its class is named ``L2Norm`` and it has a 1-D
    ``weight`` (per-channel scale)."""
    if type(m).__name__ != "L2Norm":
        return False
    w = m._parameters.get("weight", m._buffers.get("weight"))
    return isinstance(w, Tensor) and w.dim() == 1


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, RNNPool2d) or is_l2norm(m):
            return True
        return super().is_leaf_module(m, qualname)


class _BackboneHead(nn.Module):
    """``head(backbone(x))``: traced instead of a detector whose ``forward`` validates its input
    (the check is data-dependent control flow for ``torch.fx``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, x):
        return self.head(self.backbone(x))


class _ShapedProxy(fx.Proxy):
    """A proxy that also carries the concrete value computed on the example input, so that
    ``x.dim()``, ``x.shape`` and ``x.size()`` are plain Python values (shape specialisation)."""

    value = None

    def dim(self) -> int:
        return self.value.dim()

    def size(self, dim=None):
        return self.value.size() if dim is None else self.value.size(dim)

    @property
    def shape(self):
        return self.value.shape

    @property
    def ndim(self) -> int:
        return self.value.dim()


class _ShapeTracer(_Tracer):
    """Traces ``model`` on one example image, evaluating every node as it goes: shape queries
    become constants, so input-size checks and size-dependent padding trace. The graph is only
    valid for the example's shape and a batch of one."""

    def __init__(self, example: Tensor):
        super().__init__()
        self.example = example
        self.evaluating = False  # computing a node's value: run modules plainly

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ShapedProxy(node, self)

    def call_module(self, m, forward, args, kwargs):
        if self.evaluating:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self.evaluating:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None,
                     *rest, **kw):
        p = super().create_proxy(kind, target, args, kwargs, name, type_expr, *rest, **kw)
        if not isinstance(p, _ShapedProxy):
            return p

        def val(a):
            return a.value if isinstance(a, fx.Proxy) else a

        a = fx.node.map_aggregate(args, val)
        k = fx.node.map_aggregate(kwargs, val)
        self.evaluating = True
        try:
            self._evaluate(p, kind, target, a, k)
        finally:
            self.evaluating = False
        return p

    @torch.no_grad()
    def _evaluate(self, p: _ShapedProxy, kind: str, target, a, k) -> None:
        """The concrete value of the node behind ``p`` (args ``a``, kwargs ``k`` concrete)."""
        if kind == "placeholder":
            p.value = self.example
        elif kind == "get_attr":
            p.value = self.root
            for part in str(target).split("."):
                p.value = getattr(p.value, part)
        elif kind == "call_module":
            p.value = self.root.get_submodule(target)(*a, **k)
        elif kind == "call_method":
            p.value = getattr(a[0], target)(*a[1:], **k)
        elif kind == "call_function":
            p.value = target(*a, **k)


def _trace_site(model: nn.Module, e: BaseException) -> str:
    """Where tracing ``model`` failed: the innermost submodule and the line of the model's own
    code (not torch's) in the traceback of ``e``; '' if unknown."""
    names = {id(m): n for n, m in model.named_modules()}
    module, line = None, None
    tb = e.__traceback__
    while tb is not None:
        f = tb.tb_frame
        self_ = f.f_locals.get("self")
        if isinstance(self_, nn.Module) and id(self_) in names:
            module = (names[id(self_)], type(self_).__name__)
        path = f.f_code.co_filename.replace("\\", "/")
        if "/torch/" not in path and "/rnnpool/quant/" not in path:
            line = f"{f.f_code.co_name} ({path.rsplit('/', 1)[-1]}:{tb.tb_lineno})"
        tb = tb.tb_next
    parts = []
    if module is not None:
        parts.append(f"module {module[0] or '(top)'!r} ({module[1]})")
    if line is not None:
        parts.append(f"in {line}")
    return ", ".join(parts)


def trace(model: nn.Module, example: Tensor | None = None) -> fx.GraphModule:
    """``torch.fx`` trace with RNNPool2d and L2Norm kept as leaves. A model with ``backbone``
    and ``head`` whose own ``forward`` cannot be traced is traced as ``head(backbone(x))``;
    else, given ``example`` (one ``(1, C, H, W)`` image), the trace is specialised to its shape
    (shape checks and size-dependent code become constants) and the returned module has
    ``batch_one = True``: run it on one image at a time."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:
        if isinstance(getattr(model, "backbone", None), nn.Module) and isinstance(
                getattr(model, "head", None), nn.Module):
            return trace(_BackboneHead(model), example)
        if example is not None:
            try:
                gm = fx.GraphModule(model, _ShapeTracer(example[:1].float()).trace(model))
            except Exception:
                pass
            else:
                gm.batch_one = True
                return gm
        site = _trace_site(model, e)
        raise UnsupportedLayerError(
            f"torch.fx could not trace {type(model).__name__}"
            f"{' at ' + site if site else ''}: {str(e).strip().splitlines()[0]}. The int8 flow "
            "needs a forward without data-dependent control flow."
        ) from e
    return fx.GraphModule(model, graph)


class CalibrationError(ValueError):
    """The calibration images do not fit the model, or the model gives non-finite values."""


class _Recorder(fx.Interpreter):
    """Runs the traced model and records each tensor node's range and shape."""

    def __init__(self, gm: fx.GraphModule, stats: dict, keep: dict | None = None):
        super().__init__(gm)
        self.stats, self.keep = stats, keep
        self.modules = dict(gm.named_modules())
        self.error: str | None = None  # raised again without the context fx appends

    def run_node(self, n: fx.Node):
        try:
            out = super().run_node(n)
        except CalibrationError:
            raise
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.error = (f"{_describe(n, self.modules)} failed on the calibration images: "
                          f"{msg}")
            raise CalibrationError(self.error) from None
        if isinstance(out, Tensor) and out.is_floating_point():
            lo, hi = (float(out.min()), float(out.max())) if out.numel() else (math.inf,
                                                                               -math.inf)
            s = self.stats.setdefault(n.name, {"min": math.inf, "max": -math.inf, "samples": []})
            if out.numel() and not (math.isfinite(lo) and math.isfinite(hi)):
                if n.op == "placeholder":
                    self.error = ("the calibration images contain NaN or infinite values: "
                                  "activation ranges cannot be calibrated")
                    raise CalibrationError(self.error)
                # An error only if this tensor is quantized (-inf padding before a max pool
                # is not): see _Converter._tensor.
                s["nonfinite"] = True
                fin = out[torch.isfinite(out)]
                lo, hi = ((float(fin.min()), float(fin.max())) if fin.numel()
                          else (math.inf, -math.inf))
            shape = tuple(out.shape)
            if "shape" in s and s["shape"][1:] != shape[1:]:
                self.error = (
                    f"calibration batches differ in shape: {_describe(n, self.modules)} is "
                    f"{s['shape'][1:]} on one batch and {shape[1:]} on another (use images of "
                    "one size, the model's deployment input size)")
                raise CalibrationError(self.error)
            s["min"] = min(s["min"], lo)
            s["max"] = max(s["max"], hi)
            s["shape"] = shape
            if len(s["samples"]) < 64:
                flat = out.detach().flatten()
                idx = torch.randint(0, flat.numel(), (min(4096, flat.numel()),))
                s["samples"].append(flat[idx].numpy())
            if self.keep is not None:
                self.keep[n.name] = out.detach()
        return out


def float_model_on_cpu(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, or an eval-mode CPU float32 copy of it when a parameter or buffer
    lives elsewhere (a GPU, float64, bfloat16): the int8 flow computes in NumPy on the CPU."""
    model = model.eval()
    if all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point())
           for t in (*model.parameters(), *model.buffers())):
        return model
    return copy.deepcopy(model).to("cpu", torch.float32)


def _as_images(b, what: str) -> Tensor:
    """A calibration batch as a float ``(N, C, H, W)`` tensor, or a clear error."""
    if isinstance(b, np.ndarray):
        b = torch.from_numpy(b)
    if not isinstance(b, Tensor):
        raise CalibrationError(f"{what} must be a tensor or numpy array (N, C, H, W), got "
                               f"{type(b).__name__}")
    if b.dim() != 4:
        raise CalibrationError(f"{what} must be (N, C, H, W), got shape {tuple(b.shape)}")
    if b.is_complex():
        raise CalibrationError(f"{what} must be real, got {b.dtype}")
    return b.detach().to("cpu", torch.float32)


def _batches(images, batch_size: int, one: bool = False) -> Iterable[Tensor]:
    """Float ``(N, C, H, W)`` batches of ``images`` (one image each with ``one``)."""
    if isinstance(images, (Tensor, np.ndarray)):
        x = _as_images(images, "calibration images")
        step = 1 if one else batch_size
        for i in range(0, x.shape[0], step):
            yield x[i:i + step]
        return
    for i, b in enumerate(images):
        b = b[0] if isinstance(b, (tuple, list)) else b
        b = _as_images(b, f"calibration batch {i}")
        if one:
            yield from (b[j:j + 1] for j in range(b.shape[0]))
        else:
            yield b


@torch.no_grad()
def calibrate(gm: fx.GraphModule, images, config: QuantConfig) -> dict:
    """Run ``images`` through ``gm``; returns ``{node_name: {"min", "max", "shape"}}``.

    Raises:
        CalibrationError: images of the wrong rank, channels or mixed sizes, NaN / inf in the
            images or in a layer's output, or a layer that fails on them (named).
        ValueError: an empty calibration set or an unknown ``config.calibration``.
    """
    if config.calibration not in ("minmax", "percentile"):
        raise ValueError(
            f"calibration must be 'minmax' or 'percentile', got {config.calibration!r}")
    stats: dict = {}
    n = 0
    for b in _batches(images, config.batch_size, getattr(gm, "batch_one", False)):
        if b.shape[0] == 0:
            continue
        rec = _Recorder(gm, stats)
        try:
            rec.run(b)
        except Exception:
            if rec.error is None:
                raise
            raise CalibrationError(rec.error) from None
        n += b.shape[0]
    if n < 1:
        raise ValueError("calibration set is empty")
    if config.calibration == "percentile":
        for s in stats.values():
            v = np.concatenate(s["samples"])
            lo, hi = np.percentile(v, [100 - config.percentile, config.percentile])
            s["min"], s["max"] = max(s["min"], float(lo)), min(s["max"], float(hi))
    for s in stats.values():
        s.pop("samples")
    stats["__num_images__"] = n
    return stats


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 ``(scale, zero_point)`` covering ``[min(lo, 0), max(hi, 0)]``.

    >>> activation_qparams(0.0, 6.0)
    (0.023529411764705882, -128)
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / 255.0
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zp


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[Tensor, Tensor]:
    """Weights and bias of ``bn(conv(x))`` as one convolution (float64)."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0]).double()
    if bn is None:
        return w, b
    if not bn.track_running_stats or bn.running_var is None:
        raise UnsupportedLayerError(
            f"BatchNorm2d without running statistics cannot be folded: {bn}")
    inv = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(inv)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(inv)
    k = gamma * inv
    return w * k.view(-1, 1, 1, 1), (b - bn.running_mean.double()) * k + beta


def _act_clamp(kind: str | None, scale: float, zp: int) -> tuple[int, int]:
    lo, hi = -128, 127
    if kind in ("relu", "relu6"):
        lo = max(lo, zp)
    if kind == "relu6":
        hi = min(hi, zp + int(round(6.0 / scale)))
    return lo, hi


def _dead_hint(role: str, t: ir.QTensor) -> str:
    """The likely cause of a conv's unrepresentable factor when its ``role`` tensor ``t`` has
    the calibration range of a tensor that was always zero; else ''."""
    if 255 * t.scale >= 1e-6:
        return ""
    return (f"; its {role} {t.name!r} was zero on every calibration image (a dead activation): "
            "calibrate on images that exercise it, or remove it")


def _quantize_conv(name, inp: ir.QTensor, out: ir.QTensor, w: Tensor, b: Tensor, stride,
                   padding, groups: int, act: str | None) -> ir.Conv2dS8:
    """Float64 weights ``(C_out, C_in/g, KH, KW)`` and bias -> Conv2dS8 (OHWI int8)."""
    w = w.double()
    c_out = w.shape[0]
    amax = w.abs().reshape(c_out, -1).amax(1).numpy()
    # An all-zero output channel (pruned, or a BatchNorm with zero gain) computes only its bias:
    # quantize that bias at the output's step (multiplier 1), not at the input's. Beyond 2**24
    # output steps the output saturates either way.
    w_scale = np.where(amax > 0, amax / 127.0, out.scale / inp.scale)
    wq = np.clip(np.round(w.numpy() / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    bias_scale = inp.scale * w_scale
    bq = np.round(b.numpy() / bias_scale)
    bq = np.where(amax > 0, bq, np.clip(bq, -(2**24), 2**24))
    if np.abs(bq).max(initial=0) >= 2**31:
        raise UnsupportedLayerError(f"{name}: bias does not fit int32 at scale "
                                    f"{bias_scale.min()}{_dead_hint('input', inp)}")
    try:
        mult, shift = quantize_multipliers(bias_scale / out.scale)
    except ValueError as e:
        raise UnsupportedLayerError(f"{name}: {e}{_dead_hint('output', out)}") from None
    lo, hi = _act_clamp(act, out.scale, out.zero_point)
    return ir.Conv2dS8(
        name, inp.name, out.name, np.ascontiguousarray(wq.transpose(0, 2, 3, 1)),
        bq.astype(np.int32), tuple(stride), tuple(padding), groups, mult, shift,
        -inp.zero_point, out.zero_point, lo, hi,
    )


def _frac_bits(mats: list, max_bits: int, bias_abs: float, name: str) -> int:
    """Largest ``f <= max_bits`` with int16 weights, ``sum |w| * 2**f <= 2**14`` per row and
    biases within ``2**29`` at Q(f+14)."""
    amax = max(float(np.abs(m).max(initial=0)) for m in mats)
    l1 = max(float(np.abs(m).sum(1).max(initial=0)) for m in mats)
    f = max_bits
    if amax > 0:
        f = min(f, int(math.floor(math.log2(32767.0 / amax))))
    if l1 > 0:
        f = min(f, int(math.floor(math.log2(2.0**14 / l1))))
    if bias_abs > 0:
        f = min(f, int(math.floor(math.log2(2.0**15 / bias_abs))))
    if f < 2:
        raise UnsupportedLayerError(
            f"{name}: RNN weights too large for the int16 fixed-point format (max |w| {amax:.3g}, "
            f"max row L1 {l1:.3g}); retrain with smaller weights"
        )
    return f


def _cell_q(cell, name: str, max_bits: int, first: bool, in_scale: float = 1.0):
    p = cell.params()
    w = p.weight_ih.detach().double().numpy()
    u = p.weight_hh.detach().double().numpy()
    bz = p.bias_gate.detach().double().numpy() + 1.0
    bh = p.bias_update.detach().double().numpy()
    bias_abs = float(max(np.abs(bz).max(), np.abs(bh).max()))
    f = _frac_bits([u] if first else [u, w], max_bits, bias_abs, name)
    one = 2.0 ** (f + ir.STATE_FRAC_BITS)

    def q16(m):
        return np.clip(np.round(m * 2.0**f), -32767, 32767).astype(np.int16)

    kw = {}
    if first:
        amax = np.abs(w).max(1)
        w_scale = np.where(amax > 0, amax / 127.0, 1.0)
        wq = np.clip(np.round(w / w_scale[:, None]), -127, 127).astype(np.int8)
        kw["ih_multiplier"], kw["ih_shift"] = quantize_multipliers(in_scale * w_scale * one)
    else:
        wq = q16(w)
    zeta, nu = (float(v.detach()) if isinstance(v, Tensor) else float(v) for v in (p.zeta, p.nu))
    return ir.FastGRNNQ(
        weight_ih=wq, weight_hh=q16(u),
        bias_gate=np.round(bz * one).astype(np.int32),
        bias_update=np.round(bh * one).astype(np.int32),
        frac_bits=f, zeta_q=int(round(zeta * 2**14)), nu_q=int(round(nu * 2**14)), **kw,
    )


def quantize_rnnpool(m: RNNPool2d, name: str, inp: ir.QTensor, out: ir.QTensor,
                     max_frac_bits: int = 11) -> ir.RNNPoolS8:
    """Fixed-point :class:`~rnnpool.quant.ir.RNNPoolS8` of an :class:`~rnnpool.nn.RNNPool2d`."""
    if (m.rnn1.gate, m.rnn1.update) != ("hard_sigmoid", "hard_tanh"):
        warnings.warn(
            f"{name}: RNNPool uses gate={m.rnn1.gate!r}, update={m.rnn1.update!r}; the integer "
            "kernel uses hard_sigmoid / hard_tanh, so expect a float/int mismatch (train or "
            "fine-tune with the hard variants, e.g. rnnpool.quant.qat)", stacklevel=3)
    h, w = inp.shape[0], inp.shape[1]
    left, right, top, bottom = RF.rnnpool2d_padding((h, w), m.kernel_size, m.stride, m.padding)
    rnn1 = _cell_q(m.rnn1, name + ".rnn1", max_frac_bits, True, inp.scale)
    rnn2 = _cell_q(m.rnn2, name + ".rnn2", max_frac_bits, False)
    om, osh = quantize_multiplier(2.0**-ir.STATE_FRAC_BITS / out.scale)
    return ir.RNNPoolS8(
        name, inp.name, out.name, tuple(m.kernel_size), tuple(m.stride),
        (top, bottom, left, right), m.padding_mode, -inp.zero_point, rnn1, rnn2, om, osh,
        out.zero_point,
    )


# ---------------------------------------------------------------------------------------------
# Graph conversion


@dataclass
class _Val:
    """What an fx node's value is in the integer graph.

    kind: "map" (NCHW map or (N, C) vector <-> HWC int8 tensor ``names[0]``), "nhwc" (a
    permuted map), "flat" (``(N, L)`` concatenation of HWC-flattened parts), "rows" (``(N, M, K)``
    of parts), "chw" (``(N, C*H*W)`` NCHW-flattened map), "int" (a shape number).
    """

    kind: str
    names: tuple = ()
    k: int = 0
    maxout: tuple = ()  # per part: S3FD max-out background count m (1 = none)

    def mo(self) -> tuple:
        return self.maxout or (1,) * len(self.names)


_ACT_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6"}
#: Appended to "unsupported" errors: what the int8 flow (and the C backend) can express.
SUPPORTED = ("supported: Conv2d (zero padding, dilation 1, groups 1 or depthwise), Linear after "
             "flatten, each optionally followed by BatchNorm2d and ReLU / ReLU6 (an activation "
             "must be the only user of its input); BatchNorm2d; RNNPool2d; L2Norm; x + y of two "
             "maps of one shape; AdaptiveAvgPool2d(1), AvgPool2d without padding, mean((2, 3)); "
             "Identity / Dropout; detection-head permute(0, 2, 3, 1) / reshape / cat")
_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d)


def _act_of(n: fx.Node, modules: dict) -> str | None:
    if n.op == "call_module":
        return _ACT_MODULES.get(type(modules[n.target]))
    if n.op == "call_function" and n.target in (F.relu, torch.relu):
        return "relu"
    if n.op == "call_function" and n.target is F.relu6:
        return "relu6"
    if n.op == "call_method" and n.target == "relu":
        return "relu"
    return None


def _mean_dims(n: fx.Node) -> set:
    """The dims of a ``mean`` call node as a set (empty when not given as a tuple / list)."""
    d = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", ())
    return set(d) if isinstance(d, (tuple, list)) else set()


def _describe(n: fx.Node, modules: dict) -> str:
    if n.op == "call_module":
        return f"node {n.name!r} (module {n.target!r}: {type(modules[n.target]).__name__})"
    t = getattr(n.target, "__name__", str(n.target))
    return f"node {n.name!r} ({n.op} {t})"


class _Converter:
    def __init__(self, gm: fx.GraphModule, stats: dict, config: QuantConfig):
        self.gm, self.stats, self.config = gm, stats, config
        self.modules = dict(gm.named_modules())
        self.g = ir.QGraph(meta={"float_node": {}, "calibration_images": stats["__num_images__"],
                                 "calibration": config.calibration})
        self.vals: dict = {}
        self.users = {n: list(n.users) for n in gm.graph.nodes}
        self.consumed: set = set()

    # -- helpers
    def _tensor(self, node: fx.Node, hwc: tuple, float_node: str | None = None) -> ir.QTensor:
        s = self.stats[node.name]
        if s.get("nonfinite"):
            raise CalibrationError(f"{_describe(node, self.modules)} gives NaN or infinite "
                                   "values on the calibration images: its int8 range cannot be "
                                   "calibrated (check the model's weights)")
        scale, zp = activation_qparams(s["min"], s["max"])
        t = self.g.add_tensor(ir.QTensor(node.name, tuple(int(v) for v in hwc), "int8", scale, zp))
        self.g.meta["float_node"][node.name] = float_node or node.name
        return t

    def _map(self, n: fx.Node) -> ir.QTensor:
        v = self.vals.get(n)
        if v is None or v.kind != "map":
            raise UnsupportedLayerError(
                f"{_describe(n, self.modules)} is used as a feature map but is a "
                f"{'non-tensor' if v is None else v.kind!r} value here"
            )
        return self.g.tensor(v.names[0])

    def _hwc(self, node: fx.Node) -> tuple:
        shape = self.stats[node.name]["shape"]
        if len(shape) == 4:
            return (shape[2], shape[3], shape[1])
        if len(shape) == 2:
            return (1, 1, shape[1])
        raise UnsupportedLayerError(
            f"node {node.name!r} has shape {shape}; expected NCHW or (N, C)")

    def _absorb_act(self, n: fx.Node) -> tuple[fx.Node, str | None]:
        """Follow a single-user activation after ``n``; returns (last node, activation)."""
        us = self.users[n]
        if len(us) == 1 and _act_of(us[0], self.modules):
            self.consumed.add(us[0])
            return us[0], _act_of(us[0], self.modules)
        return n, None

    # -- ops
    def conv(self, n: fx.Node, conv: nn.Conv2d) -> None:
        if conv.padding_mode != "zeros" or conv.dilation != (1, 1):
            raise UnsupportedLayerError(
                f"{_describe(n, self.modules)}: only zero padding, dilation 1")
        groups = conv.groups
        if groups != 1 and not (groups == conv.in_channels == conv.out_channels):
            raise UnsupportedLayerError(
                f"{_describe(n, self.modules)}: grouped conv (only depthwise)")
        last, bn = n, None
        us = self.users[n]
        if len(us) == 1 and us[0].op == "call_module" and isinstance(
            self.modules[us[0].target], nn.BatchNorm2d
        ):
            bn = self.modules[us[0].target]
            last = us[0]
            self.consumed.add(last)
        last, act = self._absorb_act(last)
        inp = self._map(n.args[0])
        if isinstance(conv.padding, str):
            raise UnsupportedLayerError(f"{_describe(n, self.modules)}: string padding")
        ph, pw = conv.padding
        w, b = fold_bn(conv, bn)
        out = self._tensor(last, self._hwc(last))
        op = _quantize_conv(last.name, inp, out, w, b, conv.stride, (ph, ph, pw, pw), groups, act)
        self._check_out_shape(op, inp, out, last)
        self.g.ops.append(op)
        self.vals[last] = _Val("map", (out.name,))

    def _check_out_shape(self, op: ir.Conv2dS8, inp, out, node) -> None:
        kh, kw = op.weight.shape[1:3]
        t, b_, left, r = op.padding
        ho = (inp.shape[0] + t + b_ - kh) // op.stride[0] + 1
        wo = (inp.shape[1] + left + r - kw) // op.stride[1] + 1
        if (ho, wo) != tuple(out.shape[:2]):
            raise UnsupportedLayerError(f"node {node.name!r}: output size mismatch {(ho, wo)}")

    def batchnorm(self, n: fx.Node, bn: nn.BatchNorm2d) -> None:
        """A BatchNorm not after a convolution (e.g. after RNNPool): a per-channel affine map,
        i.e. a depthwise 1x1 convolution."""
        inp = self._map(n.args[0])
        c = inp.shape[2]
        ident = nn.Conv2d(c, c, 1, groups=c, bias=False).double()
        with torch.no_grad():
            ident.weight.fill_(1.0)
        w, b = fold_bn(ident, bn)
        last, act = self._absorb_act(n)
        out = self._tensor(last, self._hwc(last))
        self.g.ops.append(_quantize_conv(last.name, inp, out, w, b, (1, 1), (0, 0, 0, 0),
                                         c, act))
        self.vals[last] = _Val("map", (out.name,))

    def linear(self, n: fx.Node, lin: nn.Linear) -> None:
        src = n.args[0]
        v = self.vals.get(src)
        if v is None or v.kind not in ("map", "chw"):
            raise UnsupportedLayerError(f"{_describe(n, self.modules)}: Linear must follow a "
                                        "flatten of a feature map")
        inp = self.g.tensor(v.names[0])
        h, w, c = inp.shape
        if lin.in_features != h * w * c:
            raise UnsupportedLayerError(f"{_describe(n, self.modules)}: in_features mismatch")
        weight = lin.weight.detach().double().reshape(lin.out_features, c, h, w)
        bias = (lin.bias.detach().double() if lin.bias is not None
                else torch.zeros(lin.out_features).double())
        last, act = self._absorb_act(n)
        out = self._tensor(last, (1, 1, lin.out_features))
        self.g.ops.append(
            _quantize_conv(last.name, inp, out, weight, bias, (1, 1), (0, 0, 0, 0), 1, act))
        self.vals[last] = _Val("map", (out.name,))

    def add(self, n: fx.Node) -> None:
        a, b = n.args[0], n.args[1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            raise UnsupportedLayerError(f"{_describe(n, self.modules)}: add with a constant")
        ta, tb = self._map(a), self._map(b)
        if ta.shape != tb.shape:
            raise UnsupportedLayerError(f"{_describe(n, self.modules)}: broadcasting add")
        last, act = self._absorb_act(n)
        out = self._tensor(last, self._hwc(last))
        lo, hi = _act_clamp(act, out.scale, out.zero_point)
        params = ir.make_add_params(ta.scale, ta.zero_point, tb.scale, tb.zero_point,
                                    out.scale, out.zero_point)
        self.g.ops.append(ir.AddS8(last.name, ta.name, tb.name, out.name, *params, lo, hi))
        self.vals[last] = _Val("map", (out.name,))

    def rnnpool(self, n: fx.Node, m: RNNPool2d) -> None:
        inp = self._map(n.args[0])
        out = self._tensor(n, self._hwc(n))
        self.g.ops.append(quantize_rnnpool(m, n.name, inp, out, self.config.rnn_max_frac_bits))
        self.vals[n] = _Val("map", (out.name,))

    def l2norm(self, n: fx.Node, m: nn.Module) -> None:
        inp = self._map(n.args[0])
        last, act = self._absorb_act(n)
        out = self._tensor(last, self._hwc(last))
        wgt = m.weight.detach().double().numpy()
        mult, shift = quantize_multipliers(wgt * 2.0**-ir.STATE_FRAC_BITS / out.scale)
        lo, hi = _act_clamp(act, out.scale, out.zero_point)
        self.g.ops.append(ir.L2NormS8(last.name, inp.name, out.name, -inp.zero_point, mult, shift,
                                      out.zero_point, lo, hi))
        self.vals[last] = _Val("map", (out.name,))

    def avgpool(self, n: fx.Node, kernel, stride) -> None:
        inp = self._map(n.args[0])
        if kernel is None:
            kernel = stride = inp.shape[:2]
        last, act = self._absorb_act(n)
        out = self._tensor(last, self._hwc(last))
        kh, kw = kernel
        m, s = quantize_multiplier(inp.scale / (kh * kw * out.scale))
        lo, hi = _act_clamp(act, out.scale, out.zero_point)
        self.g.ops.append(ir.AvgPoolS8(last.name, inp.name, out.name, (kh, kw), tuple(stride),
                                       -inp.zero_point, m, s, out.zero_point, lo, hi))
        self.vals[last] = _Val("map", (out.name,))

    # -- layout-only ops
    def layout(self, n: fx.Node) -> bool:
        """Handle permute / contiguous / view / reshape / flatten / cat / size; True if handled."""
        t = n.target
        shape = self.stats.get(n.name, {}).get("shape")
        if n.op == "call_method" and t == "size" or (n.op == "call_function" and t is getattr):
            self.vals[n] = _Val("int")
            return True
        if n.op == "call_function" and t is operator.getitem \
                and self.vals.get(n.args[0]) is not None and self.vals[n.args[0]].kind == "int":
            self.vals[n] = _Val("int")
            return True
        src = n.args[0] if n.args else None
        v = self.vals.get(src) if isinstance(src, fx.Node) else None
        if n.op == "call_method" and t == "contiguous" and v is not None:
            self.vals[n] = v
            return True
        if self._maxout(n, v, shape):
            return True
        if n.op == "call_method" and t == "permute" and v is not None and v.kind == "map":
            dims = (tuple(a for a in n.args[1:]) if not isinstance(n.args[1], (tuple, list))
                    else tuple(n.args[1]))
            if dims != (0, 2, 3, 1):
                raise UnsupportedLayerError(
                    f"{_describe(n, self.modules)}: only permute(0, 2, 3, 1)")
            self.vals[n] = _Val("nhwc", v.names, 0, v.maxout)
            return True
        is_reshape = (n.op == "call_method" and t in ("view", "reshape", "flatten")) or (
            n.op == "call_function" and t in (torch.flatten, torch.reshape))
        if is_reshape and v is not None and shape is not None:
            if v.kind in ("nhwc", "flat", "rows"):
                if len(shape) == 3:
                    if any(m > 1 for m in v.mo()) and shape[-1] != 2:
                        raise UnsupportedLayerError(f"{_describe(n, self.modules)}: max-out "
                                                    "background needs rows of 2 logits")
                    self.vals[n] = _Val("rows", v.names, shape[-1], v.maxout)
                else:
                    if any(m > 1 for m in v.mo()):
                        raise UnsupportedLayerError(f"{_describe(n, self.modules)}: max-out "
                                                    "background outputs must be (N, A, 2)")
                    self.vals[n] = _Val("flat", v.names)
                return True
            if v.kind == "map" and len(shape) == 5:  # S3FD max-out: (N, A, m + 1, H, W)
                self.vals[n] = _Val("grouped", v.names, shape[2])
                return True
            if v.kind == "maxout" and len(shape) == 4:
                self.vals[n] = _Val("map", v.names, 0, (v.k - 1,))
                return True
            if v.kind == "map" and len(shape) == 2:
                hwc = self.g.tensor(v.names[0]).shape
                self.vals[n] = _Val("map" if hwc[:2] == (1, 1) else "chw", v.names)
                return True
        if n.op == "call_function" and t is torch.cat:
            parts = n.args[0]
            dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
            vs = [self.vals.get(p) for p in parts]
            kinds = {x.kind if x else None for x in vs}
            if dim in (1, -2) and kinds == {"rows"} and len({x.k for x in vs}) == 1:
                self.vals[n] = _Val("rows", sum((x.names for x in vs), ()), vs[0].k,
                                    sum((x.mo() for x in vs), ()))
                return True
            if (dim in (1, -1) and kinds <= {"flat", "map"} and shape is not None
                    and len(shape) == 2):
                self.vals[n] = _Val("flat", sum((x.names for x in vs), ()))
                return True
            raise UnsupportedLayerError(f"{_describe(n, self.modules)}: only concatenation of "
                                        "flattened head outputs along dim 1 is supported")
        return False

    def _maxout(self, n: fx.Node, v: _Val | None, shape) -> bool:
        """S3FD max-out background on a ``(N, A, m + 1, H, W)`` view of a head map: slices
        ``[:, :, :m]`` / ``[:, :, m:]``, ``amax(2, keepdim=True)`` and ``cat(.., 2)``."""
        t = n.target
        if (n.op == "call_function" and t is operator.getitem and v is not None
                and v.kind == "grouped"):
            idx = n.args[1]
            if (isinstance(idx, tuple) and len(idx) == 3 and idx[0] == slice(None)
                    and idx[1] == slice(None) and isinstance(idx[2], slice)
                    and idx[2].step is None):
                m = v.k - 1
                if idx[2] == slice(None, m) or idx[2] == slice(0, m):
                    self.vals[n] = _Val("grouped_bg", v.names, v.k)
                    return True
                if idx[2] in (slice(m, None), slice(m, v.k), slice(-1, None)):
                    self.vals[n] = _Val("grouped_fg", v.names, v.k)
                    return True
            raise UnsupportedLayerError(f"{_describe(n, self.modules)}: unsupported indexing of a "
                                        "grouped head map")
        if (n.op == "call_method" and t in ("amax", "max") and v is not None
                and v.kind == "grouped_bg"):
            dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
            if dim in (2, (2,), [2]) and shape is not None and len(shape) == 5:
                self.vals[n] = _Val("grouped_bgmax", v.names, v.k)
                return True
        if n.op == "call_function" and t is torch.cat and isinstance(n.args[0], (list, tuple)):
            vs = [self.vals.get(p) for p in n.args[0]]
            dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
            if (len(vs) == 2 and all(vs) and vs[0].kind == "grouped_bgmax"
                    and vs[1].kind == "grouped_fg" and vs[0].names == vs[1].names and dim == 2):
                self.vals[n] = _Val("maxout", vs[0].names, vs[0].k)
                return True
        return False

    def output(self, n: fx.Node) -> None:
        outs = n.args[0]
        single = not isinstance(outs, (tuple, list))
        for i, o in enumerate([outs] if single else outs):
            v = self.vals.get(o)
            if v is None or v.kind not in ("map", "rows", "flat"):
                raise UnsupportedLayerError(f"graph output {i} ({getattr(o, 'name', o)!r}) is not "
                                            "a feature map or flattened head outputs")
            shape = self.stats[o.name]["shape"]
            if v.kind == "map" and len(shape) == 4:
                k = shape[1]
                name = f"output_{i}"
            else:
                k = shape[-1] if v.kind != "map" else shape[1]
                name = f"output_{i}"
            mo = v.mo()
            rows = sum(self.g.tensor(p).numel * (2 if m > 1 else 1) // (m + 1 if m > 1 else 1)
                       for p, m in zip(v.names, mo)) // k
            self.g.add_tensor(ir.QTensor(name, (rows, k), "float32"))
            self.g.meta["float_node"][name] = o.name
            self.g.ops.append(ir.DequantizeF32(name, list(v.names), name, k,
                                               list(mo) if any(m > 1 for m in mo) else None))
            self.g.outputs.append(name)
        self.g.meta["output_shapes"] = [self.stats[o.name]["shape"] for o in
                                        ([outs] if single else outs)]

    def run(self) -> ir.QGraph:
        for n in self.gm.graph.nodes:
            if n in self.consumed:
                continue
            if n.op == "placeholder":
                shape = self.stats[n.name]["shape"]
                if len(shape) != 4:
                    raise UnsupportedLayerError(f"input {n.name!r} must be NCHW, got {shape}")
                t = self._tensor(n, self._hwc(n))
                self.g.inputs.append(t.name)
                self.vals[n] = _Val("map", (t.name,))
            elif n.op == "output":
                self.output(n)
            elif n.op == "call_module":
                m = self.modules[n.target]
                if isinstance(m, nn.Conv2d):
                    self.conv(n, m)
                elif isinstance(m, nn.Linear):
                    self.linear(n, m)
                elif isinstance(m, nn.BatchNorm2d):
                    self.batchnorm(n, m)
                elif isinstance(m, RNNPool2d):
                    self.rnnpool(n, m)
                elif is_l2norm(m):
                    self.l2norm(n, m)
                elif isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
                    self.avgpool(n, None, None)
                elif isinstance(m, nn.AvgPool2d) and m.padding in (0, (0, 0)) and not m.ceil_mode:

                    def pair(v):
                        return (v, v) if isinstance(v, int) else tuple(v)

                    self.avgpool(n, pair(m.kernel_size), pair(m.stride or m.kernel_size))
                elif isinstance(m, _PASS_MODULES):
                    self.vals[n] = self.vals[n.args[0]]
                elif isinstance(m, nn.Flatten) or not self.layout(n):
                    if isinstance(m, nn.Flatten):
                        v = self.vals[n.args[0]]
                        hwc = self.g.tensor(v.names[0]).shape
                        kind = "map" if v.kind == "map" and hwc[:2] == (1, 1) else (
                            "chw" if v.kind == "map" else "flat")
                        self.vals[n] = _Val(kind, v.names)
                    else:
                        raise UnsupportedLayerError(
                            f"unsupported layer for int8 deployment: {_describe(n, self.modules)}"
                            f"; {SUPPORTED}")
            elif (n.op == "call_function" and n.target in (operator.add, torch.add)
                  or n.op == "call_method" and n.target == "add"):
                self.add(n)
            elif (n.op == "call_function" and n.target is F.adaptive_avg_pool2d
                  and n.args[1] in (1, (1, 1))
                  or n.op == "call_method" and n.target == "mean"
                  and _mean_dims(n) in ({2, 3}, {-2, -1})):
                self.avgpool(n, None, None)
            elif n.op == "get_attr":
                if not self.users[n]:
                    continue
                raise UnsupportedLayerError(
                    f"{_describe(n, self.modules)}: parameters used outside a layer")
            elif not self.layout(n):
                raise UnsupportedLayerError(
                    f"unsupported operation for int8 deployment: {_describe(n, self.modules)}; "
                    f"{SUPPORTED}")
        self.g.validate()
        return self.g


def quantize_model(model: nn.Module, calibration_images, config: QuantConfig | None = None,
                   ranges: dict | None = None) -> ir.QGraph:
    """Post-training quantization of ``model`` to a :class:`~rnnpool.quant.ir.QGraph`.

    Args:
        model: float model (put in eval mode here; quantized from a CPU float32 copy when it
            lives on a GPU or in another dtype); forward takes one ``(N, C, H, W)`` tensor
            and returns a tensor or a tuple of tensors (e.g. ``(cls_logits, bbox_regression)``).
        calibration_images: ``(N, C, H, W)`` tensor or an iterable of batches (tensors or
            ``(images, ...)`` tuples), preprocessed exactly like the model's inputs. Use many
            images (tens to hundreds): activation ranges come from them.
        config: :class:`QuantConfig`.
        ranges: optional ``{fx_node_name: (min, max)}`` overriding calibrated activation ranges
            (used by :func:`rnnpool.quant.qat.convert` with the ranges learned during QAT).

    Returns:
        The quantized graph; ``g.meta["float_node"]`` maps each tensor to the fx node of the
        float model that computes its float counterpart (used by :mod:`rnnpool.quant.report`).

    Raises:
        UnsupportedLayerError: naming the first node that cannot be quantized.

    Example::

        >>> from torch import nn
        >>> m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6())
        >>> g = quantize_model(m, torch.randn(8, 1, 6, 6))
        >>> [op.kind for op in g.ops]
        ['conv2d', 'dequantize']
    """
    config = config or QuantConfig()
    model = float_model_on_cpu(model)
    batches = _batches(calibration_images, config.batch_size)
    first = next(batches, None)
    gm = trace(model, first)
    stats = calibrate(gm, batches if first is None else itertools.chain([first], batches),
                      config)
    for name, (lo, hi) in (ranges or {}).items():
        if name in stats:
            stats[name]["min"], stats[name]["max"] = float(lo), float(hi)
    g = _Converter(gm, stats, config).run()
    g.meta["model"] = type(model).__name__
    return g
