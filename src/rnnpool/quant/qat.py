"""Quantization-aware fine-tuning (fake quantization with straight-through estimators).

:func:`prepare_qat` returns a trainable copy of a float model whose forward simulates the int8
graph that :func:`rnnpool.quant.ptq.quantize_model` builds:

* every convolution runs with its BatchNorm folded in (running statistics frozen, ``gamma`` /
  ``beta`` still trained) and its folded weights fake-quantized per output channel (int8,
  symmetric);
* RNNPool runs with the hard sigmoid / hard tanh of the integer kernel and RNN1's ``W``
  fake-quantized per row (int8); its int16 matrices are left in float (their rounding error is
  below int8 activation noise);
* a :class:`FakeQuant` (int8 asymmetric, EMA min / max observer) follows every tensor that is
  an int8 tensor of the integer graph (input, conv / add / RNNPool / L2Norm / pool outputs).

Gradients pass straight through the rounding and are zero outside the clamp range. Fine-tune
with the usual loop (``rnnpool.train.fit`` or a plain loop), then :func:`convert` builds the
:class:`~rnnpool.quant.ir.QGraph` from the fine-tuned weights and the learned ranges.

Example::

    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6())
    >>> qat = prepare_qat(m.eval())
    >>> y = qat(torch.randn(2, 1, 6, 6))
    >>> g = convert(qat, torch.randn(4, 1, 6, 6))
    >>> [op.kind for op in g.ops]
    ['conv2d', 'dequantize']
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..nn import RNNPool2d
from ..nn import functional as RF
from . import ir
from .ptq import QuantConfig, _act_of, is_l2norm, quantize_model, trace

__all__ = ["FakeQuant", "convert", "fake_quant_weight", "prepare_qat"]


def fake_quant_weight(w: Tensor) -> Tensor:
    """Symmetric int8 per-output-channel (dim 0) fake quantization with a straight-through
    gradient."""
    dims = tuple(range(1, w.dim()))
    scale = (w.detach().abs().amax(dim=dims, keepdim=True) / 127.0).clamp_min(1e-12)
    q = torch.clamp(torch.round(w / scale), -127, 127) * scale
    return w + (q - w).detach()


class FakeQuant(nn.Module):
    """int8 asymmetric fake quantization of activations with an EMA min / max observer.

    In training mode the observed range is updated (momentum ``momentum``) before quantizing;
    in eval mode the stored range is used. Gradient: 1 inside the range, 0 outside.

    Attributes:
        min_val, max_val: the range (buffers), as used by :func:`convert`.
    """

    def __init__(self, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            lo, hi = x.detach().min(), x.detach().max()
            if not bool(self.initialized):
                self.min_val.copy_(lo)
                self.max_val.copy_(hi)
                self.initialized.fill_(True)
            else:
                self.min_val.lerp_(lo, self.momentum)
                self.max_val.lerp_(hi, self.momentum)
        lo = torch.clamp(self.min_val, max=0.0)
        hi = torch.clamp(self.max_val, min=0.0)
        scale = torch.clamp((hi - lo) / 255.0, min=1e-8)
        zp = torch.clamp(torch.round(-128 - lo / scale), -128, 127)
        qmin, qmax = (-128 - zp) * scale, (127 - zp) * scale
        xc = torch.maximum(torch.minimum(x, qmax), qmin)
        q = (torch.clamp(torch.round(x / scale) + zp, -128, 127) - zp) * scale
        return xc + (q - xc).detach()

    def extra_repr(self) -> str:
        return f"min={float(self.min_val):.4g}, max={float(self.max_val):.4g}"


class _QATConv(nn.Module):
    """Conv (+ frozen-statistics BN folded in) with fake-quantized folded weights."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: Tensor) -> Tensor:
        w, c = self.conv.weight, self.conv
        b = c.bias if c.bias is not None else torch.zeros(w.shape[0], device=w.device)
        if self.bn is not None:
            bn = self.bn
            k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            w = w * k.view(-1, 1, 1, 1)
            b = (b - bn.running_mean) * k + bn.bias
        return F.conv2d(x, fake_quant_weight(w), b, c.stride, c.padding, c.dilation, c.groups)


class _QATLinear(nn.Module):
    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.lin = lin

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, fake_quant_weight(self.lin.weight), self.lin.bias)


class _QATRNNPool(nn.Module):
    """RNNPool with the hard non-linearities and RNN1's ``W`` fake-quantized per row."""

    def __init__(self, pool: RNNPool2d):
        super().__init__()
        self.pool = pool
        for cell in (pool.rnn1, pool.rnn2):
            cell.gate, cell.update = "hard_sigmoid", "hard_tanh"

    def forward(self, x: Tensor) -> Tensor:
        p = self.pool
        p1 = p.rnn1.params()
        p1 = p1._replace(weight_ih=fake_quant_weight(p1.weight_ih))
        return RF.rnnpool2d(x, p1, p.rnn2.params(), p.kernel_size, p.stride, p.padding,
                            p.padding_mode)


class _QATModel(fx.GraphModule):
    """The QAT graph; ``source`` is the float model whose parameters it trains."""

    def train(self, mode: bool = True) -> "_QATModel":
        # BatchNorm statistics stay frozen (the integer graph uses the running ones), also for
        # a BN that no convolution absorbed (e.g. after RNNPool).
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


_TENSOR_MODULES = (nn.Conv2d, nn.Linear, nn.ReLU, nn.ReLU6, nn.BatchNorm2d, RNNPool2d,
                   nn.AdaptiveAvgPool2d, nn.AvgPool2d)


def _is_quantized_tensor_node(n: fx.Node, modules: dict) -> bool:
    """True if ``n``'s output is an int8 tensor of the integer graph (mirrors ptq._Converter)."""
    if n.op == "placeholder":
        return True
    if n.op == "call_module":
        m = modules[n.target]
        ok = isinstance(m, _TENSOR_MODULES) or is_l2norm(m)
    elif n.op == "call_function":
        import operator

        ok = n.target in (operator.add, torch.add, F.relu, torch.relu, F.relu6,
                          F.adaptive_avg_pool2d)
    elif n.op == "call_method":
        ok = n.target in ("add", "relu", "mean")
    else:
        ok = False
    if not ok:
        return False
    users = list(n.users)
    if len(users) == 1:
        u = users[0]
        if _act_of(u, modules) or (u.op == "call_module" and isinstance(modules[u.target],
                                                                         nn.BatchNorm2d)):
            if not (n.op == "call_module" and isinstance(modules[n.target], RNNPool2d)):
                return False  # folded into the next node's int8 output
    return True


def prepare_qat(model: nn.Module) -> nn.Module:
    """A trainable fake-quantized copy of ``model`` (see the module docstring).

    The copy's BatchNorm statistics are frozen (use ``.train()`` for FakeQuant observers and
    dropout; BN layers stay in eval mode). ``convert(qat_model, images)`` gives the QGraph.
    """
    src = copy.deepcopy(model).eval()
    gm = trace(src)
    modules = dict(gm.named_modules())
    graph = gm.graph
    fq_names = []
    alias: dict = {}  # conv node -> name of the BN node it absorbed (the PTQ tensor name)
    for n in list(graph.nodes):
        if n.op == "call_module":
            m = modules[n.target]
            if isinstance(m, nn.Conv2d):
                users = list(n.users)
                bn = None
                if len(users) == 1 and users[0].op == "call_module" and isinstance(
                        modules[users[0].target], nn.BatchNorm2d):
                    bn = modules[users[0].target]
                gm.add_submodule(n.target, _QATConv(m, bn))
                if bn is not None:
                    bn_node = users[0]
                    alias[n.name] = bn_node.name
                    bn_node.replace_all_uses_with(n)
                    graph.erase_node(bn_node)
            elif isinstance(m, nn.Linear):
                gm.add_submodule(n.target, _QATLinear(m))
            elif isinstance(m, RNNPool2d):
                gm.add_submodule(n.target, _QATRNNPool(m))
    # FakeQuant after every int8 tensor, decided on the original module types.
    ref_modules = dict(trace(src).named_modules())
    for n in list(graph.nodes):
        if not _is_quantized_tensor_node(n, ref_modules):
            continue
        name = f"fq_{n.name}"
        gm.add_submodule(name, FakeQuant())
        with graph.inserting_after(n):
            fq = graph.call_module(name, (n,))
        n.replace_all_uses_with(fq, delete_user_cb=lambda u, fq=fq: u is not fq)
        fq_names.append((name, alias.get(n.name, n.name)))
    graph.lint()
    gm.recompile()
    gm.__class__ = type("QATGraphModule", (_QATModel, type(gm)), {})
    gm.source = src  # shares parameters with the QAT modules
    gm.fake_quant_nodes = fq_names
    return gm


def convert(qat_model: nn.Module, calibration_images, config: QuantConfig | None = None
            ) -> ir.QGraph:
    """The :class:`~rnnpool.quant.ir.QGraph` of a fine-tuned :func:`prepare_qat` model.

    Activation ranges come from the FakeQuant observers; ``calibration_images`` (a few are
    enough) give shapes and the ranges of any tensor without an observer.
    """
    src = getattr(qat_model, "source", None)
    if src is None:
        raise ValueError("convert expects a model returned by prepare_qat")
    modules = dict(qat_model.named_modules())
    ranges = {node: (float(modules[fq].min_val), float(modules[fq].max_val))
              for fq, node in qat_model.fake_quant_nodes if bool(modules[fq].initialized)}
    return quantize_model(src.eval(), calibration_images, config, ranges=ranges)
