r"""Peak activation memory by the paper's conventions (SPEC §2).

**Standard (layer-by-layer) convention** (:func:`standard_memory`), from the Visual Wake Words
paper / TFLite as the RNNPool paper uses it. Layers run one after another; the memory a layer
needs, in activations (per image), is

* MBConv (inverted residual) block: ``input + output`` (the expanded map is produced channel by
  channel and never held whole);
* residual block: ``max(input, output)``;
* dense block: ``output`` (layers write into the block's concatenated output);
* inception block: ``input + the 3 smallest branch outputs``;
* 1x1 convolution: ``max(input, output)`` ("computed on the fly": pixel by pixel in place);
* RNNPool: ``output + one input patch`` (``r * c * C_in``) when its input can be produced
  patch by patch (see below; not when its one patch is the whole map, whose layers in front
  then run layer by layer: ``input + output``); the window poolers of the ablation
  (:mod:`~rnnpool.models._pooling` layers with ``streams_input``) likewise; ReNet:
  ``2 * output + one patch``;
* BatchNorm, activations, views and other element-wise ops: nothing (fused into the producer);
* anything else (``k x k`` convolutions, pooling, linear, concatenation, RNNs): ``input + output``;

plus every materialised map that is live across the layer (produced before, read after: skip
connections at model level, detection sources kept for later heads).

*On demand.* A map is never held whole when every reader can consume it window by window:
RNNPool reads patches, so the layers in front of it (convolutions, pooling, element-wise;
back to the image) are computed per patch, recomputing overlaps (this is how RNNPool's input
map is "never held whole"). A global pooling layer reduces a stream of pixels, so a 1x1
convolution feeding it is computed on the fly. Model outputs that no later layer reads, and maps
that only flow into them through reshapes and concatenation (detection head outputs), stream to
post-processing and are not counted. The model input is counted when some layer needs it whole.

With ``bytes_per_activation`` 4 (fp32) or 1 (int8) this gives bytes; KB and MB are binary.

Worked check (SPEC §2): MobileNetV2 at 224 peaks at the first MBConv,
``(112^2 * 32 + 112^2 * 16) * 4 B = 2,408,448 B``; MobileNetV2-RNNPool at the first MBConv after
RNNPool, ``(28^2 * 64 + 14^2 * 64) * 4 B = 250,880 B``.

**No-recompute lower bound** (:func:`prop1_bound`), Propositions 1 and 2 of the paper: an
``l``-layer stride-1 convolution chain whose output nodes see a ``(2 k_q + 1)^2`` window of
layer ``q`` (``c_q`` channels), final layer ``m x n``, needs at least
``2 sum_q c_q k_q min(m - 1, n - 1)`` activations for its intermediate layers in any serial
order that computes every node once. With strides, ``k'_q = 2 k_q + 1 - s`` rows overlap
between consecutive windows and the layer is ``S_q m x S_q n`` (``S_q`` the product of the
strides after ``q``): ``sum_q c_q k'_q min(S_q m - 1, S_q n - 1)``. A row-by-row schedule meets
it up to one row per layer. ``k_q`` is read as the half-width of the convolution that reads
layer ``q`` (that convolution's output nodes see ``2 k_q + 1`` rows of ``q``); with ``k_q``
taken as the receptive field of the *final* output instead, the sum exceeds what a row-by-row
schedule (a literal node-level simulation in the tests) keeps, so it would not be a lower
bound. The profile applies it to the spatial layers in execution order (branches of blocks
taken in order: an approximation for non-chain networks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ._trace import Node, Trace

__all__ = [
    "LayerMemory", "standard_memory", "prop1_bound", "ChainLayer", "chain_from_trace",
]

_RANK = {None: 0, "pixel": 1, "patch": 2}
_STREAM_KINDS = ("rnnpool", "stream", "renet")
_TILE_KINDS = ("conv", "conv1x1", "pool")


@dataclass
class LayerMemory:
    """Memory of one node under the standard convention, in activations (elements).

    Attributes:
        need: what the layer itself needs (its rule above).
        live: other materialised maps live across it.
        total: ``need + live``.
        materialised: per output value, whether it is held whole.
    """

    need: int
    live: int
    total: int
    materialised: list[bool]


def _whole_map(node: Node) -> bool:
    """An RNNPool whose one patch is its whole input map (the last-pool variants)."""
    m = node.module
    return (node.kind == "rnnpool" and m is not None and hasattr(m, "macs")
            and bool(node.in_shapes)
            and tuple(m.output_size(node.in_shapes[0][-2:])) == (1, 1))


def _tile(node: Node, numel_in: int, in_shape: tuple[int, ...]) -> int:
    """Elements of one input window of a streaming consumer."""
    m = node.module
    cin = in_shape[1] if len(in_shape) > 1 else 1
    if node.kind == "rnnpool" and m is not None:
        if _whole_map(node):
            return numel_in
        r, c = m.kernel_size
        return r * c * cin
    if node.kind == "renet" and m is not None:
        ph, pw = m.patch_size
        return ph * pw * cin
    k = getattr(m, "kernel_size", 1)
    kh, kw = (k, k) if isinstance(k, int) else k
    return kh * kw * cin


def standard_memory(trace: Trace) -> list[LayerMemory]:
    """Per-node memory (elements per image) of ``trace`` under the standard convention.

    Returns one :class:`LayerMemory` per node of ``trace.nodes``; alias nodes get zeros.
    """
    nodes = trace.nodes
    numel = trace.numel
    producer: dict[int, int] = {}
    consumers: dict[int, list[int]] = {}
    for n in nodes:
        if n.kind == "alias":
            continue
        for v in n.outputs:
            if v not in n.inputs:
                producer.setdefault(v, n.index)
        for v in dict.fromkeys(n.inputs):
            consumers.setdefault(v, []).append(n.index)
    outputs = set(trace.model_outputs)
    values = sorted(numel, key=lambda v: producer.get(v, -1), reverse=True)

    out_bound: dict[int, bool] = {}
    demand: dict[int, Optional[str]] = {}
    for v in values:
        cons = [c for c in consumers.get(v, []) if c != producer.get(v)]
        # Flows only into model outputs through concatenation / pooling (e.g. max-out of
        # detection logits): streamed to post-processing. A model output that later layers
        # read is a map like any other for them.
        out_bound[v] = (v in outputs and not cons) or (
            bool(cons) and all(
                nodes[c].kind in ("cat", "pool", "gpool")
                and all(out_bound.get(o, False) for o in nodes[c].outputs)
                for c in cons
            )
        )
        d: Optional[str] = "patch" if out_bound[v] else None
        if not out_bound[v] and cons:
            d, decided = "patch", False
            for c in cons:
                node = nodes[c]
                if node.kind in (*_TILE_KINDS, "cat") and node.outputs and all(
                    out_bound.get(o, False) for o in node.outputs
                ):
                    continue  # streams its result out: neither needs nor forbids on demand
                decided = True
                if node.kind in _STREAM_KINDS:
                    # A patch that is the whole map is the map: computing it "per patch" holds
                    # every map of the chain in front whole, so it is produced layer by layer.
                    got: Optional[str] = None if _whole_map(node) else "patch"
                elif node.kind == "gpool":
                    got = "pixel"
                elif node.kind in _TILE_KINDS and node.outputs:
                    got = "patch"
                    for o in node.outputs:
                        od = "patch" if out_bound.get(o) else demand.get(o)
                        got = od if _RANK[od] < _RANK[got] else got
                    if got == "pixel" and node.kind != "conv1x1":
                        got = None
                else:
                    got = None
                d = got if _RANK[got] < _RANK[d] else d
            if not decided:
                d = None
        p = producer.get(v)
        if d is not None and not out_bound[v] and p is not None and (
            nodes[p].kind not in _TILE_KINDS
        ):
            d = None  # blocks, RNNPool, linear... are never recomputed
        demand[v] = d

    def held(v: int) -> bool:
        return demand.get(v) is None and not out_bound.get(v, False)

    def size(v: int) -> int:
        return numel[v] if held(v) else 0

    # Materialised inputs of on-demand maps stay live until the on-demand map's last reader.
    last: dict[int, int] = {v: max(consumers.get(v, [-1])) for v in numel}
    for v in values:
        if not held(v) and v in producer:
            for w in nodes[producer[v]].inputs:
                last[w] = max(last[w], last[v])
    first = {v: producer.get(v, -1) for v in numel}
    held_values = [v for v in numel if held(v)]

    result = []
    for n in nodes:
        if n.kind == "alias":
            result.append(LayerMemory(0, 0, 0, [False] * len(n.outputs)))
            continue
        ins = list(dict.fromkeys(n.inputs))
        outs = [v for v in dict.fromkeys(n.outputs) if v not in ins]
        i_sz, o_sz = sum(size(v) for v in ins), sum(size(v) for v in outs)
        kind = n.kind
        if kind == "mbconv":
            need = i_sz + o_sz
        elif kind in ("residual", "conv1x1"):
            need = max(i_sz, o_sz)
        elif kind == "dense":
            need = o_sz
        elif kind == "inception":
            branches = getattr(n.module, "branch_channels", None)
            if branches and n.out_shapes:
                total_c = sum(branches)
                sizes = sorted(numel[outs[0]] * c // total_c for c in branches) if outs else []
                need = i_sz + sum(sizes[:3]) if held(outs[0]) else i_sz
            else:
                need = i_sz + o_sz
        elif kind in _STREAM_KINDS or kind == "gpool":
            streamed = bool(ins) and not held(ins[0])
            if streamed and not out_bound.get(ins[0], False):
                tile = _tile(n, numel[ins[0]], n.in_shapes[0]) if kind != "gpool" else 0
                need = o_sz + tile + (o_sz if kind == "renet" else 0)
            else:
                need = i_sz + o_sz + (o_sz if kind == "renet" else 0)
        else:
            need = i_sz + o_sz
        skip = set(ins) | set(outs)
        live = sum(numel[v] for v in held_values
                   if v not in skip and first[v] < n.index <= last[v])
        result.append(LayerMemory(need, live, need + live, [held(v) for v in n.outputs]))
    return result


@dataclass
class ChainLayer:
    """One layer of a convolution chain for :func:`prop1_bound`.

    Attributes:
        kernel: kernel height (square kernels; the receptive field uses the height).
        stride: stride.
        channels: output channels ``c``.
        out_hw: output ``(H, W)``.
        depthwise: each output channel reads one input channel (then a schedule can finish
            one channel at a time, and the layer it reads contributes one channel's rows).
    """

    kernel: int
    stride: int
    channels: int
    out_hw: tuple[int, int]
    depthwise: bool = False


def prop1_bound(chain: Sequence[ChainLayer]) -> int:
    """Lower bound (activations) on intermediate-layer memory without recomputation.

    ``chain[j]`` maps layer ``j - 1`` to layer ``j``; the intermediate layers are the outputs
    of ``chain[:-1]`` and the last layer's output is ``m x n``. Layer ``q`` contributes
    ``c_q * (K - s) * min(S_q m - 1, S_q n - 1)`` with ``K``, ``s`` the kernel and stride of the
    layer reading it and ``S_q`` the product of the strides after ``q`` (``c_q = 1`` when the
    reading layer is depthwise: Proposition 1 assumes every output node reads all channels).

    >>> # stride 1, 3x3 kernels (k_q = 1): 2 * (4 + 8) * 1 * (6 - 1)
    >>> prop1_bound([ChainLayer(3, 1, 4, (6, 6)), ChainLayer(3, 1, 8, (6, 6)),
    ...              ChainLayer(3, 1, 2, (6, 6))])
    120
    """
    if len(chain) < 2:
        return 0
    m, n = chain[-1].out_hw
    s_prod, total = 1, 0
    for j in range(len(chain) - 1, 0, -1):
        s_prod *= chain[j].stride
        q = chain[j - 1]
        k_prime = max(0, chain[j].kernel - chain[j].stride)
        c = 1 if chain[j].depthwise else q.channels
        term = c * k_prime * max(0, min(s_prod * m - 1, s_prod * n - 1))
        total += min(term, q.channels * q.out_hw[0] * q.out_hw[1])
    return total


def chain_from_trace(trace: Trace) -> list[ChainLayer]:
    """The spatial layers of ``trace`` in execution order, as a chain, up to the last map
    larger than 1x1. A layer whose input size differs from the previous chain layer's output
    (a strided shortcut branch) is left out; same-size branches are taken in order."""
    chain: list[ChainLayer] = []
    for n in trace.nodes:
        for kind, kernel, stride, shape, in_hw in n.leaves:
            if len(shape) != 4 or shape[-1] * shape[-2] <= 1:
                continue
            if chain and tuple(in_hw) != chain[-1].out_hw:
                continue
            chain.append(ChainLayer(kernel[0], stride[0], shape[1], (shape[2], shape[3]),
                                    kind == "dwconv"))
    return chain
