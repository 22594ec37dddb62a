"""Trace one forward pass into a flat list of layer nodes and the values flowing between them.

Forward hooks delimit *units* (recognised blocks, RNNPool, and leaf layers); a
``TorchDispatchMode`` sees every ATen op, so functional code between modules (``x + y``,
``torch.cat``, reshapes of detection heads) is traced too, and multiply-adds are counted from
the executed convolution / matrix products. Values are identified by tensor storage, so views
and in-place ops are recognised as the same memory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..models._blocks import InvertedResidual
from ..nn import ReNet2d, RNNPool2d

__all__ = ["Node", "Trace", "trace_model", "BLOCK_KINDS"]

#: Block kinds recognised through a ``block_kind`` class attribute (SPEC §2 memory rules).
BLOCK_KINDS = ("mbconv", "residual", "dense", "inception")

_ALIAS_MODULES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm,
    nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    nn.LeakyReLU, nn.PReLU, nn.GELU, nn.ELU, nn.Hardtanh, nn.Softmax,
)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)

_aten = torch.ops.aten
_CONV_OPS = {_aten.convolution.default, _aten._convolution.default}
_MM_OPS = {_aten.mm.default, _aten.addmm.default}
_BMM_OPS = {_aten.bmm.default, _aten.baddbmm.default}
_CAT_OPS = {_aten.cat.default, _aten.stack.default}
_GPOOL_OPS = {_aten.mean.dim, _aten.sum.dim_IntList, _aten.amax.default}
_POOL_OPS = {
    _aten.avg_pool2d.default, _aten.max_pool2d_with_indices.default,
    _aten._adaptive_avg_pool2d.default, _aten.adaptive_max_pool2d.default,
}
_MV_OPS = {_aten.mv.default, _aten.addmv.default, _aten.dot.default}
#: Ops that read weights but do no multiply-adds of the activations (lookups, copies, norms).
_NO_MADDS = {
    _aten.embedding.default, _aten._embedding_bag.default, _aten.embedding_bag.default,
    _aten._embedding_bag_forward_only.default, _aten.index_select.default,
    _aten.gather.default, _aten.take.default, _aten.index.Tensor, _aten.clone.default,
    _aten._to_copy.default, _aten.copy_.default, _aten._unsafe_view.default,
    _aten.cat.default, _aten.stack.default, _aten.constant_pad_nd.default,
    _aten.native_layer_norm.default, _aten.native_group_norm.default,
    _aten.native_batch_norm.default, _aten._native_batch_norm_legit_no_training.default,
    _aten.lift_fresh.default, _aten.zeros_like.default, _aten.empty_like.default,
    _aten.ones_like.default, _aten.full_like.default, _aten.flip.default, _aten.roll.default,
    _aten.repeat.default, _aten.scatter.src, _aten.index_put.default,
    _aten._weight_norm_interface.default,
}


def _is_sdpa(func: Any) -> bool:
    name = func.overloadpacket.__name__
    return name.startswith("_scaled_dot_product") or name == "scaled_dot_product_attention"


@dataclass
class Node:
    """One layer of the traced forward pass.

    Attributes:
        index: position in execution order.
        name: module path (``blocks.0.1``) or ATen op name for functional code.
        kind: ``mbconv``, ``residual``, ``dense``, ``inception`` (blocks), ``rnnpool``,
            ``stream`` (window poolers of the ablation), ``renet``, ``rnn``, ``conv``,
            ``conv1x1``, ``linear``, ``pool``, ``gpool`` (global pooling), ``cat``, ``binary``
            (element-wise op of two maps), ``alias`` (element-wise / view / BN: no new memory),
            or ``other``.
        module: the module, or ``None`` for functional ops.
        inputs, outputs: value ids.
        in_shapes, out_shapes: shapes of those values as this node saw them.
        madds: multiply-adds (RNNPool by the paper's formula).
        executed_madds: multiply-adds as executed (RNNPool with shared overlapping work).
        params: parameters owned by the module (0 for functional ops).
        leaves: ``(kind, kernel, stride, out_shape, in_hw)`` of every spatial leaf layer
            inside (kind ``conv``, ``dwconv`` (depthwise), ``pool``, ``rnnpool``, ``renet``).
    """

    index: int
    name: str
    kind: str
    module: Optional[nn.Module]
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    in_shapes: list[tuple[int, ...]] = field(default_factory=list)
    out_shapes: list[tuple[int, ...]] = field(default_factory=list)
    madds: int = 0
    executed_madds: int = 0
    params: int = 0
    leaves: list[tuple] = field(default_factory=list)


@dataclass
class Trace:
    """Result of :func:`trace_model`.

    Attributes:
        nodes: layer nodes in execution order.
        numel: elements of each value (per image).
        model_inputs: value ids of the model's inputs.
        model_outputs: value ids of the model's outputs.
        total_params: unique parameters of the model.
        notes: ``"layer: op"`` for every op that reads weights but whose multiply-adds the
            tracer does not know (they are missing from the totals).
    """

    nodes: list[Node]
    numel: dict[int, int]
    model_inputs: list[int]
    model_outputs: list[int]
    total_params: int
    notes: list[str] = field(default_factory=list)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def _unit_kind(m: nn.Module) -> Optional[str]:
    """The node kind of module ``m`` if it is a unit, else ``None`` (a container to descend)."""
    kind = getattr(m, "block_kind", None)
    if kind in BLOCK_KINDS:
        return kind
    if isinstance(m, InvertedResidual):
        return "mbconv"
    if isinstance(m, RNNPool2d):
        return "rnnpool"
    if isinstance(m, ReNet2d):
        return "renet"
    if getattr(m, "streams_input", False):
        return "stream"
    if isinstance(m, nn.RNNBase):
        return "rnn"
    if next(m.children(), None) is not None or isinstance(
        m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    ):
        return None
    if isinstance(m, nn.Conv2d):
        return "conv1x1" if m.kernel_size == (1, 1) else "conv"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return "gpool" if _pair(m.output_size) == (1, 1) else "pool"
    if isinstance(m, _POOLS):
        return "pool"
    if isinstance(m, _ALIAS_MODULES) or getattr(m, "elementwise", False):
        return "alias"
    return "other"


def _rnn_macs(m: nn.RNNBase, x: Tensor, batch: int = 1) -> int:
    gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1)
    steps = x.shape[1] * x.shape[0] if x.dim() == 3 else x.shape[0]
    dirs = 2 if m.bidirectional else 1
    hid = m.hidden_size
    proj = getattr(m, "proj_size", 0)  # LSTM with projections: the state is h_t = P h'_t
    out = proj or hid
    total, inp = 0, m.input_size
    for _ in range(m.num_layers):
        total += dirs * steps * (gates * hid * (inp + out) + hid * proj)
        inp = out * dirs
    return total // batch


def _spatial_leaf(m: nn.Module, out: Any) -> Optional[tuple]:
    if not isinstance(out, Tensor) or out.dim() != 4:
        return None
    if isinstance(m, nn.Conv2d):
        kind = "dwconv" if m.groups == m.in_channels > 1 else "conv"
        return (kind, _pair(m.kernel_size), _pair(m.stride), tuple(out.shape))
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return ("pool", _pair(m.kernel_size), _pair(m.stride or m.kernel_size), tuple(out.shape))
    if isinstance(m, RNNPool2d):
        return ("rnnpool", tuple(m.kernel_size), tuple(m.stride), tuple(out.shape))
    if getattr(m, "streams_input", False) and hasattr(m, "kernel_size"):
        return ("pool", _pair(m.kernel_size), _pair(m.stride), tuple(out.shape))
    if isinstance(m, ReNet2d):
        return ("renet", tuple(m.patch_size), tuple(m.patch_size), tuple(out.shape))
    return None


class _Tracer(TorchDispatchMode):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.nodes: list[Node] = []
        self.numel: dict[int, int] = {}
        self.value_of: dict[int, int] = {}  # storage address -> value id
        self.keep: list[Tensor] = []  # keeps traced storages alive so addresses are not reused
        self.inputs: list[int] = []
        self.ids = itertools.count()
        self.unit: Optional[Node] = None
        self.unit_module: Optional[nn.Module] = None
        self.suppress = 0  # > 0 inside modules whose MAdds come from a formula
        self.leaf_specs: list[tuple] = []
        self.param_ptrs = {
            t.untyped_storage().data_ptr()
            for t in itertools.chain(model.parameters(), model.buffers())
            if t.numel()
        }
        self.names = {m: n or "model" for n, m in model.named_modules()}
        self.handles: list[Any] = []
        self.batch = 1  # the example's batch: sizes and MAdds are per image
        self.stack: list[nn.Module] = []  # modules running, innermost last
        self.notes: dict[str, None] = {}

    # ---- values ---------------------------------------------------------------------------
    @staticmethod
    def _key(t: Tensor) -> int:
        return t.untyped_storage().data_ptr()

    def _is_activation(self, t: Any) -> bool:
        return isinstance(t, Tensor) and t.numel() > 0 and self._key(t) not in self.param_ptrs

    def _value_in(self, t: Tensor) -> int:
        key = self._key(t)
        if key not in self.value_of:  # a tensor from outside: a model input
            vid = next(self.ids)
            self.value_of[key] = vid
            self.numel[vid] = max(1, t.numel() // self.batch)
            self.inputs.append(vid)
            self.keep.append(t)
        return self.value_of[key]

    def _value_out(self, t: Tensor, alias_of: Optional[int] = None) -> int:
        key = self._key(t)
        self.keep.append(t)
        if alias_of is not None:
            self.value_of[key] = alias_of
            return alias_of
        vid = next(self.ids)
        self.value_of[key] = vid
        self.numel[vid] = max(1, t.numel() // self.batch)
        return vid

    def _acts(self, obj: Any) -> list[Tensor]:
        return [t for t in tree_flatten(obj)[0] if self._is_activation(t)]

    # ---- module hooks ---------------------------------------------------------------------
    def install(self) -> None:
        for m in self.model.modules():
            self.handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._post, with_kwargs=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def _pre(self, m: nn.Module, args: Any, kwargs: Any) -> None:
        self.stack.append(m)
        if isinstance(m, (RNNPool2d, nn.RNNBase)):
            self.suppress += 1
        if self.unit is not None:
            return
        kind = _unit_kind(m)
        if kind is None:
            return
        ins = self._acts((args, kwargs))
        node = Node(len(self.nodes), self.names.get(m, type(m).__name__), kind, m)
        node.inputs = [self._value_in(t) for t in ins]
        node.in_shapes = [tuple(t.shape) for t in ins]
        node.params = sum(p.numel() for p in m.parameters())
        self.unit, self.unit_module = node, m
        self.leaf_specs = []

    def _post(self, m: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is m:  # (and whatever a caught exception left above it)
                del self.stack[i:]
                break
        if isinstance(m, (RNNPool2d, nn.RNNBase)):
            self.suppress -= 1
            x = self._acts((args, kwargs))[0]
            if isinstance(m, RNNPool2d):
                hw = tuple(x.shape[-2:])
                macs, executed = m.macs(hw), m.executed_macs(hw)
            else:
                macs = executed = _rnn_macs(m, x, self.batch)
            if self.unit is not None:
                self.unit.madds += macs
                self.unit.executed_madds += executed
        if self.unit is None:
            return
        spec = _spatial_leaf(m, out)
        if spec is not None and (
            next(m.children(), None) is None or isinstance(m, (RNNPool2d, ReNet2d))
        ):
            x = self._acts((args, kwargs))
            self.leaf_specs.append(spec + (tuple(x[0].shape[-2:]) if x else (),))
        if m is not self.unit_module:
            return
        node, self.unit, self.unit_module = self.unit, None, None
        node.leaves = self.leaf_specs
        outs, extra = self._split_outputs(None, self._acts(out))
        node.out_shapes = [tuple(t.shape) for t in outs]
        if node.kind == "alias":
            src = node.inputs[0] if node.inputs else None
            node.outputs = [self._value_out(t, alias_of=src) for t in outs]
        else:
            in_keys = {k: v for k, v in self.value_of.items() if v in node.inputs}
            node.outputs = [
                self._value_out(t, alias_of=in_keys.get(self._key(t))) for t in outs
            ]
        for t in extra:
            self._value_out(t, alias_of=node.outputs[0] if node.outputs else None)
        self.nodes.append(node)

    @staticmethod
    def _split_outputs(func: Any, outs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The maps an op or module produces, and the side results held with the first one:
        integer indices next to floating values (max pooling, ``max(dim)``, ``topk``) and the
        log-sum-exp of attention kernels."""
        if len(outs) < 2 or not outs[0].is_floating_point():
            return outs, []
        if func is not None and _is_sdpa(func):
            return outs[:1], outs[1:]
        keep = [t for t in outs if t.is_floating_point()]
        return keep, [t for t in outs if not t.is_floating_point()]

    def where(self) -> str:
        """The innermost module running (the model itself is ``"model"``)."""
        return self.names.get(self.stack[-1], type(self.stack[-1]).__name__) \
            if self.stack else "model"

    def _note_uncounted(self, func: Any, args: Any, kwargs: Any) -> None:
        """Record an op that reads weights but whose multiply-adds are not counted."""
        tags, schema = getattr(func, "tags", ()), getattr(func, "_schema", None)
        if (func in _NO_MADDS or torch.Tag.pointwise in tags or torch.Tag.reduction in tags
                or schema is None or any(r.alias_info is not None for r in schema.returns)):
            return  # element-wise, reductions, views and in-place ops, lookups and copies
        if not any(isinstance(t, Tensor) and t.dim() >= 2 and t.numel()
                   and self._key(t) in self.param_ptrs for t in tree_flatten((args, kwargs))[0]):
            return
        where = self.unit.name if self.unit is not None else self.where()
        self.notes[f"{where}: {func.overloadpacket.__name__}"] = None

    # ---- ATen ops -------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is _aten.convolution.default and not args[6]:
            # Only shapes matter to the analysis: skip the arithmetic of convolutions.
            try:
                out = _conv_shape_only(*args)
            except _ChannelMismatch as e:
                vid = self.value_of.get(self._key(args[0]))
                # an unseen tensor outside a unit is the model input on its way in
                e.reads_input = vid in self.inputs or (vid is None and self.unit is None)
                raise
        else:
            out = func(*args, **kwargs)
        if self.suppress:
            return out
        macs = _op_macs(func, args, out, self.batch)
        if not macs:
            self._note_uncounted(func, args, kwargs)
        if self.unit is not None:
            self.unit.madds += macs
            self.unit.executed_madds += macs
            return out
        ins = self._acts((args, kwargs))
        outs, extra = self._split_outputs(func, self._acts(out))
        if not ins or not outs:
            return out
        in_ids = [self._value_in(t) for t in ins]
        in_keys = {self._key(t): v for t, v in zip(ins, in_ids)}
        kind = _op_kind(func, ins, outs)
        if kind == "alias" or all(self._key(t) in in_keys for t in outs):
            for t in outs:
                self._value_out(t, alias_of=in_keys.get(self._key(t), in_ids[0]))
            return out
        node = Node(len(self.nodes), str(func.overloadpacket.__name__), kind, None)
        node.inputs = list(dict.fromkeys(in_ids))
        node.in_shapes = [tuple(t.shape) for t in ins]
        node.out_shapes = [tuple(t.shape) for t in outs]
        node.outputs = [self._value_out(t) for t in outs]
        for t in extra:
            self._value_out(t, alias_of=node.outputs[0])
        node.madds = node.executed_madds = macs
        if kind in ("conv", "conv1x1") and out.dim() == 4:
            w = args[1]
            kind_ = "dwconv" if args[8] == ins[0].shape[1] > 1 else "conv"
            node.leaves = [(kind_, tuple(w.shape[-2:]), _pair(args[3]), tuple(out.shape),
                            tuple(ins[0].shape[-2:]))]
        self.nodes.append(node)
        return out


class _ChannelMismatch(RuntimeError):
    """A convolution given the wrong number of input channels (``expected``); ``reads_input``:
    whether it read the model's input."""

    def __init__(self, msg: str, expected: int) -> None:
        super().__init__(msg)
        self.expected = expected
        self.reads_input = False


def _conv_shape_only(x: Tensor, w: Tensor, _b: Any, stride: Any, padding: Any,
                     dilation: Any, *_rest: Any) -> Tensor:
    groups = int(_rest[2]) if len(_rest) > 2 else 1
    if x.shape[1] != w.shape[1] * groups:  # what the real convolution would reject
        raise _ChannelMismatch(
            f"convolution with weight {tuple(w.shape)} and groups={groups} expects "
            f"{w.shape[1] * groups} input channels, got input {tuple(x.shape)}",
            w.shape[1] * groups,
        )
    dims = x.dim() - 2
    size = [x.shape[0], w.shape[0]]
    padded = [x.shape[2 + i] + 2 * padding[i] for i in range(dims)]
    kernel = [(w.shape[2 + i] - 1) * dilation[i] + 1 for i in range(dims)]
    if any(p < k for p, k in zip(padded, kernel)):  # as eager PyTorch words it
        raise RuntimeError(
            f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
            f"Kernel size: ({' x '.join(map(str, kernel))}). Kernel size can't be greater "
            f"than actual input size"
        )
    for i in range(dims):
        size.append((padded[i] - kernel[i]) // stride[i] + 1)
    return x.new_zeros(size)


def _op_macs(func: Any, args: Any, out: Any, batch: int = 1) -> int:
    """Multiply-adds of one ATen op, per image of a batch of ``batch``."""
    if func in _CONV_OPS:
        x, w = args[0], args[1]
        transposed = bool(args[6]) if len(args) > 6 else False
        k = int(torch.tensor(w.shape[2:]).prod()) if w.dim() > 2 else 1
        if transposed:
            return x.numel() // batch * w.shape[1] * k
        return out.numel() // batch * w.shape[1] * k
    if func in _MM_OPS:
        a, b = (args[1], args[2]) if func is _aten.addmm.default else (args[0], args[1])
        return a.shape[0] * a.shape[1] * b.shape[1] // batch
    if func in _BMM_OPS:
        a, b = (args[1], args[2]) if func is _aten.baddbmm.default else (args[0], args[1])
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2] // batch
    if func in _MV_OPS:
        a = args[1] if func is _aten.addmv.default else args[0]
        return a.numel() // batch
    if _is_sdpa(func):  # softmax(Q K^T) V: L x S x E for the scores, L x S x Ev for the sum
        q, k, v = args[0], args[1], args[2]
        return q.numel() // q.shape[-1] * k.shape[-2] * (q.shape[-1] + v.shape[-1]) // batch
    return 0


def _op_kind(func: Any, ins: list[Tensor], outs: list[Tensor]) -> str:
    if func in _CONV_OPS:
        w = ins[1] if len(ins) > 1 else None
        return "conv1x1" if w is not None and tuple(w.shape[-2:]) == (1, 1) else "conv"
    if func in _MM_OPS or func in _BMM_OPS:
        return "linear"
    if func in _CAT_OPS:
        return "cat"
    if func in _GPOOL_OPS or func in _POOL_OPS:
        o = outs[0]
        return "gpool" if o.dim() >= 2 and o.numel() * 1 <= o.shape[0] * o.shape[1] else "pool"
    if torch.Tag.pointwise in func.tags or func in (
        _aten.clone.default, _aten._to_copy.default, _aten.copy_.default,
        _aten.native_batch_norm.default, _aten._native_batch_norm_legit_no_training.default,
    ):
        big = [t for t in ins if t.numel() == outs[0].numel()]
        return "binary" if len(big) >= 2 else "alias"
    if func is _aten.constant_pad_nd.default:
        return "alias"
    return "other"


@torch.no_grad()
def trace_model(model: nn.Module, example: Any) -> Trace:
    """Run ``model(example)`` (a tensor or tuple of tensors, batch 1) once and trace it.

    The model is put in eval mode for the trace and its mode restored afterwards. Only shapes
    matter, so convolutions return zeros of the right shape instead of being computed.
    """
    tracer = _Tracer(model)
    first = tree_flatten(example)[0][:1]
    if first and isinstance(first[0], Tensor) and first[0].dim() >= 2:
        tracer.batch = max(1, int(first[0].shape[0]))
    was_training = model.training
    model.eval()
    # The fused attention kernels (nn.MultiheadAttention / TransformerEncoderLayer fast path)
    # are single ops whose products the tracer cannot see: run the composite path instead.
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha is not None else None
    if mha is not None:
        mha.set_fastpath_enabled(False)
    tracer.install()
    try:
        with tracer:
            out = model(*example) if isinstance(example, tuple) else model(example)
    except Exception as e:
        # name the layer that failed (not the model itself: its own checks say enough)
        if tracer.stack and tracer.stack[-1] is not model and len(e.args) == 1 \
                and isinstance(e.args[0], str):
            e.args = (f"{e.args[0]} (in layer '{tracer.where()}', "
                      f"{type(tracer.stack[-1]).__name__})",)
        raise
    finally:
        tracer.remove()
        model.train(was_training)
        if mha is not None:
            mha.set_fastpath_enabled(fast)
    outs = [tracer.value_of.get(tracer._key(t)) for t in tree_flatten(out)[0]
            if isinstance(t, Tensor) and t.numel()]
    total = sum(p.numel() for p in model.parameters())
    return Trace(tracer.nodes, tracer.numel, tracer.inputs,
                 [o for o in outs if o is not None], total, list(tracer.notes))
