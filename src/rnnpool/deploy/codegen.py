"""Generate plain C99 for a quantized graph: const weights, one planned arena, straight-line calls.

:func:`generate_c` turns a :class:`~rnnpool.quant.ir.QGraph` into three files:

* ``model.h``: the API ``int rnnpool_model_run_rows(read_row, ctx, output)`` (the input
  delivered row by row by a callback), ``int rnnpool_model_run(const int8_t *input, int8_t
  *output)`` (a whole input buffer, through the same code), for detectors
  ``rnnpool_model_detect_rows`` (row input, boxes decoded as each head is produced) and size
  macros (``RNNPOOL_MODEL_ARENA_BYTES``, ``RNNPOOL_MODEL_INPUT_BYTES``,
  ``RNNPOOL_MODEL_OUTPUT_BYTES``, and shape / offset / scale / zero point of each output);
* ``model_weights.c``: every weight, bias, multiplier and parameter struct as ``const`` data
  (placed in flash by the linker);
* ``model.c``: ``static uint8_t arena[N]`` and the run function, one kernel call per op with
  fixed arena offsets planned by :mod:`rnnpool.deploy.planner` from the tensors' lifetimes.

The model's outputs are **int8**: the graph's :class:`~rnnpool.quant.ir.DequantizeF32` ops are
not emitted; their int8 inputs (the raw detection-head or classifier maps, HWC) are written to
``output`` one after the other, and dequantising (``scale * (q - zero_point)``) happens on the
host (:meth:`CModel.unpack`). No float arithmetic is generated. The input rows in use live in
the arena (a band of rows when the input's consumer is streamed); detectors' head maps are
planned in the arena too, live until their source is decoded (used when no output buffer is
given); a classifier's outputs go to the caller's buffer.

Example:
    >>> import numpy as np
    >>> from rnnpool.quant.ir import QGraph, QTensor, AddS8, make_add_params
    >>> g = QGraph(inputs=["x"], outputs=["y"])
    >>> _ = g.add_tensor(QTensor("x", (2, 2, 4), "int8", 0.1, 0))
    >>> _ = g.add_tensor(QTensor("t", (2, 2, 4), "int8", 0.2, 0))
    >>> _ = g.add_tensor(QTensor("y", (2, 2, 4), "int8", 0.4, 0))
    >>> p = make_add_params(0.1, 0, 0.1, 0, 0.2, 0)
    >>> g.ops += [AddS8("a1", "x", "x", "t", *p), AddS8("a2", "t", "t", "y", *p)]
    >>> build_model(g, stream=False).arena_bytes  # x and t (16 bytes each) held whole
    32
    >>> m = build_model(g)  # x and t streamed: one row (8 bytes) each at a time
    >>> m.arena_bytes, m.output_names, [o.name for o in m.units[0].ops]
    (16, ['y'], ['read_input', 'a1', 'a2'])
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .._io import atomic_write_text
from .planner import ArenaPlan, Buffer, check_plan, plan_arena

__all__ = ["CModel", "Unit", "build_model", "generate_c", "KERNEL_DIR", "kernel_sources",
           "STREAMABLE", "InputRows"]

CSRC = Path(__file__).resolve().parent / "csrc"
KERNEL_DIR = CSRC / "kernels"

_C_KEYWORDS = {"int", "char", "const", "static", "return", "if", "for", "while", "do", "void"}


def kernel_sources() -> List[Path]:
    """The C kernel sources (``csrc/kernels/*.c``) that generated models link with."""
    return sorted(KERNEL_DIR.glob("*.c"))


def _ident(name: str) -> str:
    s = re.sub(r"\W", "_", name)
    if not s or s[0].isdigit() or s in _C_KEYWORDS:
        s = "t_" + s
    return s


#: Ops whose kernels can be called on a band of output rows (row streaming); ``input_rows``
#: is the graph input, delivered row by row by the caller (:class:`InputRows`).
STREAMABLE = {"conv2d", "depthwise_conv2d", "conv2d_1x1", "add", "rnnpool", "l2norm",
              "input_rows"}


@dataclass
class InputRows:
    """Pseudo-op at the head of the schedule: the caller's ``read_row(ctx, y, row)`` produces
    the graph input one int8 HWC row at a time, into an arena buffer planned like any other
    (a band of rows when the input's only consumer is streamed, else the whole map)."""

    name: str
    output: str
    kind: str = "input_rows"

    @property
    def inputs(self) -> List[str]:
        return []

    @property
    def outputs(self) -> List[str]:
        return [self.output]


def _row_geometry(op) -> tuple:
    """``(KH, SH, PT)``: output row y reads input rows ``[y*SH - PT, y*SH - PT + KH)``."""
    if op.kind in ("conv2d", "depthwise_conv2d", "conv2d_1x1"):
        return int(np.asarray(op.weight).shape[1]), int(op.stride[0]), int(op.padding[0])
    if op.kind == "rnnpool":
        return int(op.kernel_size[0]), int(op.stride[0]), int(op.padding[0])
    return 1, 1, 0  # element-wise / per-pixel


def _c_outputs(g) -> List[str]:
    """Graph outputs as int8 maps: the inputs of DequantizeF32 ops, else the int8 outputs."""
    producers = {o: op for op in g.ops for o in op.outputs}
    names: List[str] = []
    for out in g.outputs:
        op = producers.get(out)
        if op is not None and op.kind == "dequantize":
            names += [n for n in op.inputs if n not in names]
        elif g.tensor(out).dtype == "int8":
            if out not in names:
                names.append(out)
        else:
            raise ValueError(f"graph output {out!r} is {g.tensor(out).dtype} and not produced "
                             "by a DequantizeF32 op: cannot generate integer C for it")
    return names


@dataclass
class Unit:
    """One step of the schedule: a single op, or a row-streamed group of ops.

    Attributes:
        ops: the ops, in graph order; the last one produces ``root``.
        root: the tensor the unit leaves as a whole map.
        band_rows: streamed intermediate tensor -> rows its band holds.
        call_rows: op name -> most output rows one kernel call computes.
    """

    ops: list
    root: str
    band_rows: Dict[str, int] = field(default_factory=dict)
    call_rows: Dict[str, int] = field(default_factory=dict)

    @property
    def streamed(self) -> bool:
        return len(self.ops) > 1


def _schedule(g, ops: list, c_outs: List[str], stream: bool, min_rows: Dict[str, int],
              row_ops: frozenset = frozenset()) -> List[Unit]:
    """Group ops into units. A tensor is streamed (kept as a band of rows) when it has exactly
    one consumer, both ends are :data:`STREAMABLE` (the input's producer is its row reader), and
    it is not an output."""
    producer = {o: op for op in ops for o in op.outputs}
    consumers: Dict[str, list] = {}
    for op in ops:
        for n in set(op.inputs):
            consumers.setdefault(n, []).append(op)

    def banded(t: str) -> bool:
        return (stream and t in producer and t not in c_outs and t not in g.outputs
                and len(consumers.get(t, [])) == 1 and producer[t].kind in STREAMABLE
                and consumers[t][0].kind in STREAMABLE)

    index = {op.name: i for i, op in enumerate(ops)}
    units = []
    for op in ops:
        if banded(op.outputs[0]):
            continue  # computed inside its consumer's unit
        members, todo = [], [op]
        while todo:
            o = todo.pop()
            members.append(o)
            todo += [producer[n] for n in set(o.inputs) if banded(n)]
        members.sort(key=lambda o: index[o.name])
        u = Unit(ops=members, root=op.outputs[0])
        if u.streamed:
            _simulate(g, u, producer, banded, min_rows, row_ops)
        units.append(u)
    return _outputs_first(units, g.inputs, c_outs)


def _outputs_first(units: List["Unit"], inputs, c_outs) -> List["Unit"]:
    """Reorder units so that each one producing a model output (a detection head) runs as soon
    as its inputs exist: the feature map it reads can then be freed early. The graph input
    counts as produced only once its :class:`InputRows` unit has run (an output unit reading
    the input directly, e.g. ``x + f(x)``, must not be moved before it)."""
    produced = {n for n in inputs if not any(
        op.kind == "input_rows" and n in op.outputs for u in units for op in u.ops)}
    deps = []
    for u in units:
        inside = {op.outputs[0] for op in u.ops}
        deps.append({n for op in u.ops for n in op.inputs if n not in inside})
    remaining = list(range(len(units)))
    order = []
    while remaining:
        ready = [i for i in remaining if units[i].root in c_outs and deps[i] <= produced]
        i = ready[0] if ready else remaining[0]
        remaining.remove(i)
        order.append(units[i])
        produced.add(units[i].root)
    return order


def _simulate(g, u: Unit, producer: dict, banded, min_rows: Dict[str, int],
              row_ops: frozenset = frozenset()) -> None:
    """Run the streaming schedule symbolically (the same recursion the C code runs) to size
    every band and the largest kernel call. Raises if a request goes backwards."""
    lo: Dict[str, int] = {}
    hi: Dict[str, int] = {}
    nxt: Dict[str, int] = {}  # incremental RNNPool: next padded input row to feed
    names = {o.outputs[0] for o in u.ops}

    def make(t: str, a: int, b: int) -> None:
        band = t != u.root
        lo.setdefault(t, 0)
        hi.setdefault(t, 0)
        if a < lo[t]:
            raise AssertionError(f"streaming {t}: rows {a}.. requested after {lo[t]}")
        if band and a > lo[t]:
            lo[t] = a
            hi[t] = max(hi[t], a)
        if b <= hi[t]:
            return
        start = hi[t]
        op = producer[t]
        if op.name in row_ops:
            _feed_rows(g, op, t, b, lo, hi, nxt, lambda x: x in names and banded(x), make)
            u.call_rows[op.name] = 1
            if band:
                u.band_rows[t] = max(u.band_rows.get(t, 0), hi[t] - lo[t])
            return
        b = min(max(b, start + min_rows.get(op.name, 1)), g.tensor(t).shape[0])
        kh, sh, pt = _row_geometry(op)
        for x in dict.fromkeys(op.inputs):
            if x in names and banded(x):
                h = g.tensor(x).shape[0]
                make(x, max(start * sh - pt, 0), min((b - 1) * sh - pt + kh, h))
        u.call_rows[op.name] = max(u.call_rows.get(op.name, 0), b - start)
        hi[t] = b
        if band:
            u.band_rows[t] = max(u.band_rows.get(t, 0), hi[t] - lo[t])

    for y in range(g.tensor(u.root).shape[0]):
        make(u.root, y, y + 1)


def rnnpool_row_output(kh: int, sh: int, h_out: int, y: int) -> int:
    """The RNNPool output row that padded input row ``y`` completes, or -1 (the Python twin of
    ``rnnpool_rnnpool_s8_row_output``)."""
    first = y - kh + 1
    if first < 0 or first % sh or first // sh >= h_out:
        return -1
    return first // sh


class _RowsOutOfOrder(Exception):
    """The reader of an incremental RNNPool's output skips rows (e.g. a 1x1 stride-2
    convolution): the row kernel completes rows in order only."""

    def __init__(self, op_name: str) -> None:
        super().__init__(op_name)
        self.op_name = op_name


def _feed_rows(g, op, t: str, b: int, lo, hi, nxt, internal, make) -> None:
    """Incremental RNNPool: feed padded input rows until output rows ``[.., b)`` exist."""
    kh, sh, pt = _row_geometry(op)
    x = op.inputs[0]
    h_in, h_out = g.tensor(x).shape[0], g.tensor(t).shape[0]
    hr = sh * (h_out - 1) + kh
    nxt.setdefault(t, 0)
    while hi[t] < b:
        y = nxt[t]
        if y >= hr:
            raise AssertionError(f"streaming {t}: padded row {y} beyond {hr}")
        r = y - pt
        if op.padding_mode == "replicate":
            r = min(max(r, 0), h_in - 1)
        if 0 <= r < h_in and internal(x):
            make(x, r, r + 1)
        oy = rnnpool_row_output(kh, sh, h_out, y)
        if oy >= 0:
            if oy != hi[t]:
                raise _RowsOutOfOrder(op.name)
            hi[t] = oy + 1
        nxt[t] = y + 1


@dataclass
class CModel:
    """A scheduled, planned, C-ready model (the result of :func:`build_model`).

    Attributes:
        graph: the source graph.
        input_name: the int8 graph input (HWC).
        output_names: int8 tensors the C code writes to ``output``, in order.
        output_offsets: byte offset of each of them in ``output``.
        units: the schedule (single ops and row-streamed groups).
        plan: arena plan (tensor, ``band:<tensor>`` or ``scratch:<op>`` -> offset).
        scratch: op name -> scratch bytes.
        sources: generated file name -> text.
        files: written files (after :func:`generate_c`).
        decode: the :class:`~rnnpool.deploy.decode.DecodeSpec` of the generated
            ``rnnpool_model_decode`` / ``rnnpool_model_detect_rows``, or None.
        max_boxes: ``RNNPOOL_MODEL_MAX_BOXES`` (detectors; 0 otherwise).
    """

    graph: object
    input_name: str
    output_names: List[str]
    output_offsets: Dict[str, int]
    units: List[Unit]
    plan: ArenaPlan
    scratch: Dict[str, int]
    sources: Dict[str, str] = field(default_factory=dict, repr=False)
    files: List[Path] = field(default_factory=list)
    decode: Optional[object] = None
    max_boxes: int = 0

    @property
    def arena_bytes(self) -> int:
        return self.plan.total

    @property
    def input_arena_bytes(self) -> int:
        """Arena bytes of the input (a band of rows, or the whole map)."""
        return next(b.size for b in self.plan.buffers if b.name == self.input_name)

    @property
    def output_arena_bytes(self) -> int:
        """Arena bytes of the head maps planned there (detectors; 0 otherwise)."""
        return sum(b.size for b in self.plan.buffers if b.name in self.output_names)

    @property
    def input_bytes(self) -> int:
        return self.graph.tensor(self.input_name).nbytes

    @property
    def output_bytes(self) -> int:
        return sum(self.graph.tensor(n).nbytes for n in self.output_names)

    @property
    def kernel_ops(self) -> int:
        return sum(len(u.ops) for u in self.units)

    def unpack(self, raw: bytes) -> Dict[str, np.ndarray]:
        """Split the bytes of one ``output`` buffer into int8 HWC arrays by tensor name."""
        buf = np.frombuffer(raw, dtype=np.int8)
        if buf.size != self.output_bytes:
            raise ValueError(f"output buffer has {buf.size} bytes, expected {self.output_bytes}")
        out = {}
        for n in self.output_names:
            t = self.graph.tensor(n)
            o = self.output_offsets[n]
            out[n] = buf[o:o + t.nbytes].reshape(t.shape)
        return out


# ----------------------------------------------------------------------------- C emission


class _Emitter:
    """Emits const data, the run function body, and the scratch-size expressions. Arena offsets
    appear as macros (``OFF_*``, ``SCR_*``) defined once the plan is known."""

    def __init__(self, g, input_name: str, output_offsets: Dict[str, int],
                 rnnpool_kernel: str = "row", arena_outputs: frozenset = frozenset()):
        self.g = g
        self.arena_outputs = arena_outputs  # outputs also planned in the arena (detectors)
        self.rnnpool_kernel = rnnpool_kernel  # streamed RNNPool: "row", "patch" or "map"
        self.min_rows: Dict[str, int] = {}  # op name -> rows computed per call at least
        self.row_ops: frozenset = frozenset()  # RNNPool ops run by the incremental row kernel
        self.input_name = input_name
        self.output_offsets = output_offsets
        self.data: List[str] = []
        self.decl: List[str] = []
        self.body: List[str] = []
        self.funcs: List[str] = []
        self.scratch_expr: Dict[str, str] = {}  # op name -> C expression of its scratch bytes
        self.macro: Dict[str, str] = {}  # tensor / op name -> short C id
        self.n_calls = 0

    def cid(self, name: str) -> str:
        if name not in self.macro:
            self.macro[name] = f"{_ident(name)[:40]}_{len(self.macro)}"
        return self.macro[name]

    # --- const data
    def array(self, name: str, ctype: str, values) -> str:
        a = np.asarray(values).ravel()
        if a.size == 0:
            raise ValueError(f"empty constant array {name}")
        lo, hi = {"int8_t": (-128, 127), "int16_t": (-32768, 32767),
                  "int32_t": (-(2 ** 31), 2 ** 31 - 1)}[ctype]
        if a.min() < lo or a.max() > hi:
            raise ValueError(f"constant {name} does not fit {ctype}: range [{a.min()}, {a.max()}]")
        vals = [str(int(v)) if int(v) != -(2 ** 31) else "INT32_MIN" for v in a]
        lines = [", ".join(vals[i:i + 24]) for i in range(0, len(vals), 24)]
        self.data.append(f"const {ctype} {name}[{a.size}] = {{\n    "
                         + ",\n    ".join(lines) + "\n};\n")
        self.decl.append(f"extern const {ctype} {name}[{a.size}];")
        return name

    def struct(self, name: str, ctype: str, init: str) -> str:
        self.data.append(f"const {ctype} {name} = {init};\n")
        self.decl.append(f"extern const {ctype} {name};")
        return name

    def dims(self, name: str, shape) -> str:
        h, w, c = (int(v) for v in shape)
        return self.struct(name, "rnnpool_dims", f"{{{h}, {w}, {c}}}")

    # --- tensors
    def base(self, name: str) -> str:
        """Pointer to row 0 of a whole tensor, or to the first row of a band. Outputs go to
        ``io->output``; a detector's maps go to the arena when ``io->output`` is NULL."""
        if name in self.arena_outputs:
            return f"RNNPOOL_MAP({self.output_offsets[name]}, OFF_{self.cid(name)})"
        if name in self.output_offsets:
            return f"(io->output + {self.output_offsets[name]})"
        return f"((int8_t *)(arena + OFF_{self.cid(name)}))"

    def drop_rows(self, t: str, j: int, rb: int) -> List[str]:
        """C lines of a band's prologue: drop the rows before ``a`` (moved to the band start)."""
        return [f"    if (a > st->lo[{j}]) {{  /* drop rows no longer needed */",
                f"        const int32_t keep = st->hi[{j}] - a;",
                f"        if (keep > 0) memmove({self.base(t)}, {self.base(t)} + "
                f"(a - st->lo[{j}]) * {rb}, (size_t)keep * {rb});",
                f"        st->lo[{j}] = a;",
                f"        if (st->hi[{j}] < a) st->hi[{j}] = a;",
                "    }"]

    # --- per-op constant parameters (shared by whole and streamed calls)
    def conv_consts(self, p: str, op) -> tuple:
        from ..quant.ir import c_weight

        pt, pb, pl, pr = (int(v) for v in op.padding)
        sh, sw = (int(v) for v in op.stride)
        params = (f"{{{int(op.input_offset)}, {int(op.output_offset)}, {sh}, {sw}, {pt}, {pb}, "
                  f"{pl}, {pr}, {{{int(op.act_min)}, {int(op.act_max)}}}}}")
        w = self.array(f"{p}_w", "int8_t", c_weight(op))
        b = self.array(f"{p}_b", "int32_t", np.asarray(op.bias, dtype=np.int64))
        mult = self.array(f"{p}_mult", "int32_t", op.multiplier)
        shift = self.array(f"{p}_shift", "int32_t", op.shift)
        return params, f"{{{mult}, {shift}}}", w, b

    @staticmethod
    def add_params(op) -> str:
        f = [op.input1_offset, op.input1_multiplier, op.input1_shift, op.input2_offset,
             op.input2_multiplier, op.input2_shift, op.left_shift, op.output_multiplier,
             op.output_shift, op.output_offset]
        return ("{" + ", ".join(str(int(v)) for v in f)
                + f", {{{int(op.act_min)}, {int(op.act_max)}}}}}")

    def fastgrnn(self, cell, p: str, input_size: int, first: bool) -> str:
        wih = np.asarray(cell.weight_ih)
        if first:
            w8 = self.array(f"{p}_wih", "int8_t", wih)
            ihq = (f"{{{self.array(f'{p}_ihmult', 'int32_t', cell.ih_multiplier)}, "
                   f"{self.array(f'{p}_ihshift', 'int32_t', cell.ih_shift)}}}")
            w16 = "NULL"
        else:
            w8, ihq = "NULL", "{NULL, NULL}"
            w16 = self.array(f"{p}_wih", "int16_t", wih)
        whh = self.array(f"{p}_whh", "int16_t", cell.weight_hh)
        bg = self.array(f"{p}_bg", "int32_t", cell.bias_gate)
        bu = self.array(f"{p}_bu", "int32_t", cell.bias_update)
        init = (f"{{{int(input_size)}, {cell.hidden}, {w8}, {ihq}, {w16}, {whh}, {bg}, {bu}, "
                f"{int(cell.frac_bits)}, {int(cell.zeta_q)}, {int(cell.nu_q)}}}")
        return self.struct(p, "rnnpool_fastgrnn_params", init)

    def consts(self, op, p: str) -> dict:
        """Emit an op's constants; returns the names the call needs."""
        k = op.kind
        c = {"p": p}
        if k in ("conv2d", "depthwise_conv2d", "conv2d_1x1"):
            params, quant, w, b = self.conv_consts(p, op)
            self.struct(f"{p}_params", "rnnpool_conv_params", params)
            self.struct(f"{p}_quant", "rnnpool_per_channel_quant", quant)
            c_out, kh, kw, cin_g = np.asarray(op.weight).shape
            fdims = (kh, kw, c_out) if k == "depthwise_conv2d" else (kh, kw, cin_g)
            self.dims(f"{p}_fdims", fdims)
            c.update(w=w, b=b, fn={"conv2d": "rnnpool_conv2d_s8",
                                   "depthwise_conv2d": "rnnpool_depthwise_conv2d_s8",
                                   "conv2d_1x1": "rnnpool_conv2d_1x1_s8"}[k])
        elif k == "add":
            self.struct(f"{p}_params", "rnnpool_add_params", self.add_params(op))
        elif k == "rnnpool":
            pt, pb, pl, pr = (int(v) for v in op.padding)
            kh, kw = (int(v) for v in op.kernel_size)
            sh, sw = (int(v) for v in op.stride)
            mode = {"zeros": 0, "replicate": 1}[op.padding_mode]
            self.struct(f"{p}_params", "rnnpool_rnnpool_params",
                        f"{{{kh}, {kw}, {sh}, {sw}, {pt}, {pb}, {pl}, {pr}, {mode}, "
                        f"{int(op.input_offset)}, {int(op.output_offset)}, "
                        f"{{{int(op.output_multiplier)}, {int(op.output_shift)}}}}}")
            cin = self.g.tensor(op.input).shape[2]
            c["r1"] = self.fastgrnn(op.rnn1, f"{p}_rnn1", cin, True)
            c["r2"] = self.fastgrnn(op.rnn2, f"{p}_rnn2", op.rnn1.hidden, False)
        elif k == "l2norm":
            self.struct(f"{p}_params", "rnnpool_l2norm_params",
                        f"{{{int(op.input_offset)}, {int(op.output_offset)}, "
                        f"{{{int(op.act_min)}, {int(op.act_max)}}}}}")
            mult = self.array(f"{p}_mult", "int32_t", op.multiplier)
            shift = self.array(f"{p}_shift", "int32_t", op.shift)
            self.struct(f"{p}_quant", "rnnpool_per_channel_quant", f"{{{mult}, {shift}}}")
        elif k == "avgpool":
            kh, kw = (int(v) for v in op.kernel_size)
            sh, sw = (int(v) for v in op.stride)
            self.struct(f"{p}_params", "rnnpool_pool_params",
                        f"{{{kh}, {kw}, {sh}, {sw}, {int(op.input_offset)}, "
                        f"{int(op.output_offset)}, {{{int(op.act_min)}, {int(op.act_max)}}}}}")
            self.struct(f"{p}_quant", "rnnpool_per_tensor_quant",
                        f"{{{int(op.multiplier)}, {int(op.shift)}}}")
        elif k == "mbconv":
            stages = {}
            for role in ("expand", "depthwise", "project"):
                sub = getattr(op, role)
                if sub is None:
                    stages[role] = "NULL"
                    continue
                params, quant, w, b = self.conv_consts(f"{p}_{role}", sub)
                stages[role] = "&" + self.struct(f"{p}_{role}", "rnnpool_mbconv_stage",
                                                 f"{{{params}, {quant}, {w}, {b}}}")
            add = "NULL"
            if op.add is not None:
                add = "&" + self.struct(f"{p}_add", "rnnpool_add_params", self.add_params(op.add))
            dw = np.asarray(op.depthwise.weight)
            self.struct(f"{p}_params", "rnnpool_mbconv_params",
                        f"{{{stages['expand']}, {stages['depthwise']}, {stages['project']}, "
                        f"{add}, {dw.shape[0]}, {dw.shape[1]}, {dw.shape[2]}}}")
        else:
            raise NotImplementedError(f"no C code generation for op kind {op.kind!r}")
        return c

    # --- the kernel call, for given dims / pointers / params expressions
    def call(self, op, c: dict, params: str, idims: str, ins: List[str], odims: str, out: str,
             ctx: str) -> str:
        k, p = op.kind, c["p"]
        self.n_calls += 1
        if k in ("conv2d", "depthwise_conv2d", "conv2d_1x1"):
            return (f"{c['fn']}(NULL, {params}, &{p}_quant, {idims}, {ins[0]}, &{p}_fdims, "
                    f"{c['w']}, {c['b']}, {odims}, {out})")
        if k == "add":
            return f"rnnpool_add_s8(NULL, {params}, {odims}, {ins[0]}, {ins[1]}, {out})"
        if k == "rnnpool":
            return (f"rnnpool_rnnpool_s8({ctx}, {params}, &{c['r1']}, &{c['r2']}, {idims}, "
                    f"{ins[0]}, {odims}, {out})")
        if k == "l2norm":
            return f"rnnpool_l2norm_s8(NULL, {params}, &{p}_quant, {odims}, {ins[0]}, {out})"
        if k == "avgpool":
            return (f"rnnpool_avgpool_s8(NULL, {params}, &{p}_quant, {idims}, {ins[0]}, {odims}, "
                    f"{out})")
        if k == "mbconv":
            return f"rnnpool_mbconv_s8({ctx}, {params}, {idims}, {ins[0]}, {odims}, {out})"
        raise NotImplementedError(op.kind)

    def scratch_query(self, op, c: dict, in_shape, out_shape, patch: bool = False) -> None:
        if op.kind not in ("rnnpool", "mbconv"):
            return
        p = c["p"]
        if patch:
            self.scratch_expr[op.name] = (f"rnnpool_rnnpool_patch_s8_get_buffer_size(&{p}_params, "
                                          f"&{c['r1']}, &{c['r2']})")
            return
        idims = "&(rnnpool_dims){%d, %d, %d}" % tuple(int(v) for v in in_shape)
        odims = "&(rnnpool_dims){%d, %d, %d}" % tuple(int(v) for v in out_shape)
        if op.kind == "rnnpool":
            e = (f"rnnpool_rnnpool_s8_get_buffer_size(&{p}_params, &{c['r1']}, &{c['r2']}, "
                 f"{idims}, {odims})")
        else:
            e = f"rnnpool_mbconv_s8_get_buffer_size(&{p}_params, {idims}, {odims})"
        self.scratch_expr[op.name] = e

    def ctx_decl(self, op, indent: str) -> List[str]:
        if op.name not in self.scratch_expr:
            return []
        s = self.cid("scratch:" + op.name)
        return [f"{indent}rnnpool_context ctx_{s};",
                f"{indent}ctx_{s}.buf = arena + SCR_{s};",
                f"{indent}ctx_{s}.size = SCRSZ_{s};"]

    def ctx_ref(self, op) -> str:
        if op.name not in self.scratch_expr:
            return "NULL"
        return f"&ctx_{self.cid('scratch:' + op.name)}"

    # --- units
    def whole(self, op, i: int) -> None:
        if op.kind == "input_rows":  # the input held whole: read every row
            t = self.g.tensor(op.output)
            rb = int(t.shape[1]) * int(t.shape[2])
            self.body += [f"    /* input {op.output}: every row from read_row */", "    {",
                          "        int32_t y;", f"        for (y = 0; y < {t.shape[0]}; y++) {{",
                          f"            if (io->read_row(io->ctx, y, {self.base(op.output)} + "
                          f"y * {rb}) != 0) return RNNPOOL_MODEL_READ_ERROR;", "        }", "    }"]
            return
        p = f"op{i}_{_ident(op.name)}"[:48]
        c = self.consts(op, p)
        t_in = self.g.tensor(op.inputs[0])
        t_out = self.g.tensor(op.outputs[0])
        self.dims(f"{p}_idims", t_in.shape)
        self.dims(f"{p}_odims", t_out.shape)
        self.scratch_query(op, c, t_in.shape, t_out.shape)
        self.body.append(f"    /* {op.kind} {op.name} */")
        self.body.append("    {")
        self.body += self.ctx_decl(op, "        ")
        expr = self.call(op, c, f"&{p}_params", f"&{p}_idims",
                         [self.base(n) for n in op.inputs], f"&{p}_odims",
                         self.base(op.outputs[0]), self.ctx_ref(op))
        self.body.append(f"        const rnnpool_status status = {expr};")
        self.body.append("        if (status != RNNPOOL_OK) return (int)status;")
        self.body.append("    }")

    def group(self, u: Unit, k: int, index: Dict[str, int]) -> None:
        names = [op.outputs[0] for op in u.ops]
        slot = {n: j for j, n in enumerate(names)}
        st = f"g{k}_state"
        self.funcs.append(f"typedef struct {{\n    int32_t lo[{len(names)}];\n"
                          f"    int32_t hi[{len(names)}];\n"
                          f"    int32_t nxt[{len(names)}];\n}} {st};\n")
        sig = f"(g{k}_state *st, const model_io *io, int32_t a, int32_t b)"
        for op in u.ops:
            t = op.outputs[0]
            fname = f"g{k}_make_{slot[t]}"
            self.funcs.append(f"static int {fname}{sig};")
        for op in u.ops:
            self._group_func(u, k, op, slot, sig, index[op.name])
        rt = self.g.tensor(u.root)
        self.body.append(f"    /* row-streamed group {k}: {', '.join(o.name for o in u.ops)} */")
        self.body.append("    {")
        self.body.append(f"        {st} st;")
        self.body.append("        int32_t y;")
        self.body.append("        memset(&st, 0, sizeof st);")
        self.body.append(f"        for (y = 0; y < {rt.shape[0]}; y++) {{")
        self.body.append(f"            const int rc = g{k}_make_{slot[u.root]}"
                         "(&st, io, y, y + 1);")
        self.body.append("            if (rc != 0) return rc;")
        self.body.append("        }")
        self.body.append("    }")

    def _group_func(self, u: Unit, k: int, op, slot: Dict[str, int], sig: str, i: int) -> None:
        g = self.g
        t = op.outputs[0]
        j = slot[t]
        band = t != u.root
        tt = g.tensor(t)
        rb = int(tt.shape[1]) * int(tt.shape[2])
        if op.kind == "input_rows":
            self._input_func(u, k, t, j, sig)
            return
        p = f"op{i}_{_ident(op.name)}"[:48]
        c = self.consts(op, p)
        kh, sh, pt = _row_geometry(op)
        x0 = g.tensor(op.inputs[0])
        rows = u.call_rows[op.name]
        if op.name in self.row_ops:
            self._row_func(u, k, op, slot, sig, c, p)
            return
        patch = op.kind == "rnnpool" and self.rnnpool_kernel == "patch"
        self.scratch_query(op, c, ((rows - 1) * sh + kh, x0.shape[1], x0.shape[2]),
                           (rows, tt.shape[1], tt.shape[2]), patch)
        L = [f"/* {op.kind} {op.name}: rows [a, b) of {t}"
             + (f" into a band of {u.band_rows[t]} rows */" if band else " */"),
             f"static int g{k}_make_{j}{sig}", "{"]
        L.append("    int32_t start;")
        L.append("    rnnpool_status status;")
        L.append("    (void)io;")
        L.append("    (void)a;")
        if band:
            cap = u.band_rows[t]
            L += self.drop_rows(t, j, rb)
        L.append(f"    if (b <= st->hi[{j}]) return 0;")
        if band:
            L.append(f"    if (b - st->lo[{j}] > {cap}) return (int)RNNPOOL_ARG_ERROR;")
        L.append(f"    start = st->hi[{j}];")
        r = self.min_rows.get(op.name, 1)
        if r > 1:  # compute at least r rows per call (fewer calls, larger bands)
            L.append(f"    if (b < start + {r}) b = start + {r} < {tt.shape[0]} ? start + {r} : "
                     f"{tt.shape[0]};")
        L.append("    {")
        L.append(f"        const int32_t ia = start * {sh} - {pt};")
        L.append(f"        const int32_t ib = (b - 1) * {sh} - {pt} + {kh};")
        L.append("        const int32_t ca = ia > 0 ? ia : 0;")
        L.append(f"        const int32_t cb = ib < {x0.shape[0]} ? ib : {x0.shape[0]};")
        in_ptrs = []
        for x in op.inputs:
            if x in slot:
                L.append(f"        status = (rnnpool_status)g{k}_make_{slot[x]}"
                         "(st, io, ca, cb);")
                L.append("        if (status != RNNPOOL_OK) return (int)status;")
        for x in op.inputs:
            xt = g.tensor(x)
            xrb = int(xt.shape[1]) * int(xt.shape[2])
            lo = f"st->lo[{slot[x]}]" if x in slot and x != u.root else "0"
            in_ptrs.append(f"{self.base(x)} + (ca - {lo}) * {xrb}")
        L.append(f"        {self._params_type(op)} prm = {p}_params;")
        L.append(f"        const rnnpool_dims id = {{cb - ca, {x0.shape[1]}, {x0.shape[2]}}};")
        L.append(f"        const rnnpool_dims od = {{b - start, {tt.shape[1]}, {tt.shape[2]}}};")
        if op.kind in ("add", "l2norm"):
            L.append("        (void)id;  /* element-wise: the output dims describe the slice */")
        if op.kind in ("conv2d", "depthwise_conv2d", "conv2d_1x1", "rnnpool"):
            L.append("        prm.pad_top = ca - ia;")
            L.append("        prm.pad_bottom = ib - cb;")
        L += self.ctx_decl(op, "        ")
        lo_t = f"st->lo[{j}]" if band else "0"
        out_ptr = f"{self.base(t)} + (start - {lo_t}) * {rb}"
        if patch:  # patch by patch, read in place from the slice: scratch of one patch only
            c_out = int(tt.shape[2])
            self.n_calls += 1
            L.append("        int32_t oy, ox;")
            L.append("        for (oy = 0; oy < od.h; oy++) {")
            L.append("            for (ox = 0; ox < od.w; ox++) {")
            L.append(f"                status = rnnpool_rnnpool_patch_s8({self.ctx_ref(op)}, &prm, "
                     f"&{c['r1']}, &{c['r2']}, &id, {in_ptrs[0]}, oy, ox, "
                     f"{out_ptr} + (oy * od.w + ox) * {c_out});")
            L.append("                if (status != RNNPOOL_OK) return (int)status;")
            L.append("            }")
            L.append("        }")
        else:
            expr = self.call(op, c, "&prm", "&id", in_ptrs, "&od", out_ptr, self.ctx_ref(op))
            L.append(f"        status = {expr};")
            L.append("        if (status != RNNPOOL_OK) return (int)status;")
        L.append("    }")
        L.append(f"    st->hi[{j}] = b;")
        L.append("    return 0;")
        L.append("}")
        self.funcs.append("\n".join(L) + "\n")

    def _row_func(self, u: Unit, k: int, op, slot: Dict[str, int], sig: str, c: dict,
                  p: str) -> None:
        """Incremental RNNPool (``rnnpool_rnnpool_s8_row``): one padded input row per call, the
        sweep state kept in the op's scratch between calls, so the input map is consumed row by
        row and the work equals the whole-map kernel's."""
        g = self.g
        t, x = op.outputs[0], op.inputs[0]
        j = slot[t]
        band = t != u.root
        tt, xt = g.tensor(t), g.tensor(x)
        rb, xrb = int(tt.shape[1]) * int(tt.shape[2]), int(xt.shape[1]) * int(xt.shape[2])
        kh, sh, pt = _row_geometry(op)
        hr = sh * (int(tt.shape[0]) - 1) + kh
        self.dims(f"{p}_idims", xt.shape)
        self.dims(f"{p}_odims", tt.shape)
        self.scratch_query(op, c, xt.shape, tt.shape)
        lo_t = f"st->lo[{j}]" if band else "0"
        lo_x = f"st->lo[{slot[x]}]" if x in slot and x != u.root else "0"
        L = [f"/* rnnpool {op.name}: rows [a, b) of {t}, fed one input row at a time */",
             f"static int g{k}_make_{j}{sig}", "{", "    rnnpool_status status;",
             "    (void)io;", "    (void)a;"]
        if band:
            L += self.drop_rows(t, j, rb)
        L.append(f"    if (b <= st->hi[{j}]) return 0;")
        if band:
            L.append(f"    if (b - st->lo[{j}] > {u.band_rows[t]}) return (int)RNNPOOL_ARG_ERROR;")
        L += self.ctx_decl(op, "    ")
        L += [f"    while (st->hi[{j}] < b) {{",
              f"        const int32_t y = st->nxt[{j}];",
              f"        int32_t r = y - {pt};",
              "        const int8_t *row = NULL;",
              f"        const int32_t oy = rnnpool_rnnpool_s8_row_output(&{p}_params, "
              f"&{p}_odims, y);",
              f"        if (y >= {hr}) return (int)RNNPOOL_ARG_ERROR;"]
        if op.padding_mode == "replicate":
            L.append(f"        r = r < 0 ? 0 : (r > {xt.shape[0] - 1} ? {xt.shape[0] - 1} : r);")
        L.append(f"        if (r >= 0 && r < {xt.shape[0]}) {{")
        if x in slot:
            L += [f"            status = (rnnpool_status)g{k}_make_{slot[x]}"
                  "(st, io, r, r + 1);",
                  "            if (status != RNNPOOL_OK) return (int)status;"]
        L += [f"            row = {self.base(x)} + (r - {lo_x}) * {xrb};", "        }",
              f"        if (oy >= 0 && oy != st->hi[{j}]) return (int)RNNPOOL_ARG_ERROR;",
              f"        status = rnnpool_rnnpool_s8_row({self.ctx_ref(op)}, &{p}_params, "
              f"&{c['r1']}, &{c['r2']}, &{p}_idims, y, row, &{p}_odims, "
              f"oy >= 0 ? {self.base(t)} + (oy - {lo_t}) * {rb} : NULL);",
              "        if (status != RNNPOOL_OK) return (int)status;",
              f"        st->nxt[{j}] = y + 1;",
              f"        if (oy >= 0) st->hi[{j}] = oy + 1;",
              "    }", "    return 0;", "}"]
        self.n_calls += 1
        self.funcs.append("\n".join(L) + "\n")

    def _input_func(self, u: Unit, k: int, t: str, j: int, sig: str) -> None:
        """The graph input as a band: rows ``[a, b)`` come from the caller's ``read_row``."""
        tt = self.g.tensor(t)
        rb = int(tt.shape[1]) * int(tt.shape[2])
        L = [f"/* input {t}: rows [a, b) from read_row into a band of {u.band_rows[t]} rows */",
             f"static int g{k}_make_{j}{sig}", "{", *self.drop_rows(t, j, rb),
             f"    if (b <= st->hi[{j}]) return 0;",
             f"    if (b - st->lo[{j}] > {u.band_rows[t]}) return (int)RNNPOOL_ARG_ERROR;",
             f"    while (st->hi[{j}] < b) {{",
             f"        if (io->read_row(io->ctx, st->hi[{j}], {self.base(t)} + "
             f"(st->hi[{j}] - st->lo[{j}]) * {rb}) != 0) return RNNPOOL_MODEL_READ_ERROR;",
             f"        st->hi[{j}]++;", "    }", "    return 0;", "}"]
        self.funcs.append("\n".join(L) + "\n")

    @staticmethod
    def _params_type(op) -> str:
        return {"conv2d": "rnnpool_conv_params", "depthwise_conv2d": "rnnpool_conv_params",
                "conv2d_1x1": "rnnpool_conv_params", "add": "rnnpool_add_params",
                "rnnpool": "rnnpool_rnnpool_params", "l2norm": "rnnpool_l2norm_params"}[op.kind]


def _query_scratch(e: _Emitter, weights_h: str, weights_c: str) -> Dict[str, int]:
    """Evaluate the kernels' ``*_get_buffer_size`` for every op that needs scratch by compiling
    and running a small host program against the same kernels (used when
    ``rnnpool.quant.ir.scratch_bytes`` is not available)."""
    import shutil
    import subprocess

    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("sizing RNNPool/MBConv scratch needs a host C compiler (gcc)")
    names = list(e.scratch_expr)
    with tempfile.TemporaryDirectory(prefix="rnnpool-scratch-") as d:
        d = Path(d)
        (d / "model_weights.h").write_text(weights_h)
        (d / "model_weights.c").write_text(weights_c)
        main = ['#include <stdio.h>', '#include "model_weights.h"', "int main(void)", "{"]
        main += [f'    printf("%ld\\n", (long)({e.scratch_expr[n]}));' for n in names]
        main += ["    return 0;", "}", ""]
        (d / "query.c").write_text("\n".join(main))
        exe = d / "query"
        cmd = [gcc, "-std=c99", "-O0", f"-I{CSRC}", f"-I{d}", str(d / "query.c"),
               str(d / "model_weights.c"), *map(str, kernel_sources()), "-o", str(exe)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"scratch-size query failed to compile:\n{p.stderr[-3000:]}")
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {n: int(v) for n, v in zip(names, out.split())}


def build_model(g, *, stream: bool = True, rnnpool_kernel: str = "row",
                rnnpool_rows: int = 1, decode=None, max_boxes: int = 100,
                alignment: int = 4) -> CModel:
    """Schedule, emit and plan a graph for C.

    The input is always read through the caller's row callback (``rnnpool_model_run_rows``;
    ``rnnpool_model_run`` copies rows from a whole buffer), into an arena buffer planned like
    the others: a band of rows when streaming allows, else the whole map. With ``decode``, the
    head maps are planned in the arena too, live until their source is decoded, so that
    ``rnnpool_model_detect_rows`` needs neither the frame nor the maps outside the arena.

    Args:
        g: a :class:`~rnnpool.quant.ir.QGraph` with one int8 input.
        stream: row-stream chains of convolution / RNNPool / add ops whose intermediate maps
            have a single consumer: each intermediate is kept as a band of a few rows (e.g. 3
            rows of an MBConv's expanded map, 8 rows of the map an RNNPool reads) instead of
            whole. Results are bit-identical; only memory and call counts change.
        rnnpool_kernel: RNNPool in a streamed group: ``"row"`` (default; the incremental
            ``rnnpool_rnnpool_s8_row`` fed one input row at a time, same work as the whole-map
            kernel, scratch proportional to the map width; it completes rows in order, so an
            RNNPool whose reader skips rows, such as a 1x1 stride-2 convolution, runs the
            ``"map"`` kernel instead), ``"patch"`` (patch by patch,
            ``rnnpool_rnnpool_patch_s8``: scratch of one patch, no sharing between patches) or
            ``"map"`` (the whole-map kernel on row slices: sharing only within a call).
        rnnpool_rows: with ``"map"``, RNNPool output rows per call (more rows share more work
            between vertically overlapping patches, at the cost of larger bands).
        decode: a :class:`~rnnpool.deploy.decode.DecodeSpec` to also generate the float-free
            detector decode (``rnnpool_model_decode`` and ``rnnpool_model_detect_rows``).
        max_boxes: ``RNNPOOL_MODEL_MAX_BOXES``, the box list a caller of the decode provides
            (the harness's size; the functions take any ``max_boxes``).
        alignment: arena offset alignment in bytes.
    """
    g.validate()
    if len(g.inputs) != 1:
        raise ValueError(f"the C model takes one input, the graph has {len(g.inputs)}")
    inp = g.inputs[0]
    if g.tensor(inp).dtype != "int8":
        raise ValueError(f"graph input {inp!r} must be int8, got {g.tensor(inp).dtype}")
    if int(max_boxes) < 1:
        raise ValueError(f"max_boxes must be >= 1, got {max_boxes}")
    outs = _c_outputs(g)
    if inp in outs:
        raise ValueError(f"graph input {inp!r} is also an output")
    ops = [op for op in g.ops if op.kind != "dequantize"]
    for op in ops:
        if len(op.outputs) != 1:
            raise NotImplementedError(f"op {op.name!r} has {len(op.outputs)} outputs")
    reader = "read_input"
    while any(op.name == reader for op in ops):
        reader += "_"
    ops = [InputRows(reader, inp)] + ops
    offsets, o = {}, 0
    for n in outs:
        offsets[n] = o
        o += g.tensor(n).nbytes
    if rnnpool_kernel not in ("row", "patch", "map"):
        raise ValueError(f"rnnpool_kernel must be 'row', 'patch' or 'map', got {rnnpool_kernel!r}")
    min_rows = {op.name: int(rnnpool_rows) for op in ops
                if op.kind == "rnnpool" and rnnpool_kernel == "map" and rnnpool_rows > 1}
    row_ops = {op.name for op in ops if op.kind == "rnnpool" and rnnpool_kernel == "row"}
    while True:
        try:
            units = _schedule(g, ops, outs, stream, min_rows, frozenset(row_ops))
            break
        except _RowsOutOfOrder as e:  # its reader skips rows: the map kernel on row slices
            row_ops.discard(e.op_name)
    unit_of = {op.outputs[0]: k for k, u in enumerate(units) for op in u.ops}

    # Detectors: source s is decoded after the unit that completes it and all earlier ones.
    sources: List[tuple] = []
    decode_after: Dict[int, List[int]] = {}
    if decode is not None:
        from .decode import decode_sources

        sources = decode_sources(g, decode)
        ready = -1
        for s, (cn, rn, _) in enumerate(sources):
            ready = max(ready, unit_of[cn], unit_of[rn])
            decode_after.setdefault(ready, []).append(s)
    arena_outputs = frozenset(n for cn, rn, _ in sources for n in (cn, rn))

    e = _Emitter(g, inp, offsets, rnnpool_kernel, arena_outputs)
    e.min_rows = min_rows
    e.row_ops = frozenset(row_ops)
    index = {op.name: i for i, op in enumerate(ops)}
    for k, u in enumerate(units):
        if u.streamed:
            e.group(u, k, index)
        else:
            e.whole(u.ops[0], index[u.ops[0].name])
        for s in decode_after.get(k, []):
            cn, rn, _ = sources[s]
            e.body += [f"    if (io->dec != NULL) {{  /* source {s} complete: merge its boxes */",
                       f"        rnnpool_decode_source(&rnnpool_decode_heads[{s}], {e.base(cn)}, "
                       f"{e.base(rn)}, io->dec);", "    }"]
        e.body.append("    RNNPOOL_PROFILE_MARK();")
    includes = ["#include <stddef.h>", "#include <stdint.h>", "",
                '#include "rnnpool_conv.h"', '#include "rnnpool_rnn.h"',
                '#include "rnnpool_types.h"']
    weights_h = "\n".join(["/* Generated by rnnpool.deploy.codegen: constant data. Do not edit. */",
                           "#ifndef RNNPOOL_MODEL_WEIGHTS_H", "#define RNNPOOL_MODEL_WEIGHTS_H",
                           *includes, "", *e.decl, "", "#endif", ""])
    weights_c = "\n".join(["/* Generated: weights and kernel parameters (const: flash). */",
                           '#include "model_weights.h"', "", *e.data])

    # Scratch sizes: the quantizer's Python twin if present, else the kernels themselves.
    scratch: Dict[str, int] = {}
    if e.scratch_expr:
        from ..quant import ir as qir

        twin = getattr(qir, "scratch_bytes", None)
        if twin is not None and not any(u.streamed for u in units):
            scratch = {n: int(twin(next(op for op in ops if op.name == n), g))
                       for n in e.scratch_expr}
        else:
            scratch = _query_scratch(e, weights_h, weights_c)

    # Lifetimes in units of the schedule.
    first: Dict[str, int] = {}
    last: Dict[str, int] = {}
    bufs = []
    for k, u in enumerate(units):
        first.setdefault(u.root, k)
        last.setdefault(u.root, k)
        inside = {op.outputs[0] for op in u.ops}
        for op in u.ops:
            for n in op.inputs:
                if n not in inside or n == u.root:
                    last[n] = max(last.get(n, k), k)
        for t, rows in u.band_rows.items():
            tt = g.tensor(t)
            bufs.append(Buffer(t, rows * int(tt.shape[1]) * int(tt.shape[2]), k, k))
        for op in u.ops:
            if op.name in scratch:
                bufs.append(Buffer("scratch:" + op.name, scratch[op.name], k, k))
    for k, ss in decode_after.items():
        for s in ss:
            for n in sources[s][:2]:
                last[n] = max(last[n], k)
    for n, f in first.items():
        if n not in outs or n in arena_outputs:
            bufs.append(Buffer(n, g.tensor(n).nbytes, f, last[n]))
    plan = plan_arena(bufs, alignment=alignment)
    check_plan(plan)

    defines = []
    for b in bufs:
        if b.name.startswith("scratch:"):
            s = e.cid(b.name)
            defines += [f"#define SCR_{s} {plan.offsets[b.name]}",
                        f"#define SCRSZ_{s} {scratch[b.name[len('scratch:'):]]}"]
        else:
            defines.append(f"#define OFF_{e.cid(b.name)} {plan.offsets[b.name]}")
    io_struct = ["/* What one run reads and writes (see model.h). */", "typedef struct {",
                 "    rnnpool_model_row_reader read_row;", "    void *ctx;",
                 "    int8_t *output; /* NULL: the head maps stay in the arena */"]
    decode_c_text = ""
    if decode is not None:
        from .decode import decode_c

        decode_c_text, dec_h = decode_c(g, decode, offsets)
        io_struct.append("    rnnpool_decode_state *dec; /* NULL: no decode during the run */")
    io_struct += ["} model_io;", ""]
    if arena_outputs:
        io_struct += ["/* A head map: in the caller's output buffer if given, "
                      "else in the arena. */",
                      "#define RNNPOOL_MAP(off, aoff) \\",
                      "    (io->output != NULL ? io->output + (off) : (int8_t *)(arena + (aoff)))",
                      ""]
    row_bytes = int(g.tensor(inp).shape[1]) * int(g.tensor(inp).shape[2])
    dec_init = ", NULL" if decode is not None else ""
    api = [
        "static int model_exec(const model_io *io)", "{", "    (void)io;", *e.body,
        "    return 0;", "}", "",
        "int rnnpool_model_run_rows(rnnpool_model_row_reader read_row, void *ctx, int8_t *output)",
        "{", f"    const model_io io = {{read_row, ctx, output{dec_init}}};",
        "    if (read_row == NULL || output == NULL) return (int)RNNPOOL_ARG_ERROR;",
        "    return model_exec(&io);", "}", "",
        "/* rnnpool_model_run's reader: rows of a whole caller buffer. */",
        "typedef struct {", "    const int8_t *input;", "} rnnpool_model_frame;", "",
        "static int rnnpool_model_copy_row(void *ctx, int32_t y, int8_t *row)", "{",
        "    const rnnpool_model_frame *f = (const rnnpool_model_frame *)ctx;",
        f"    memcpy(row, f->input + (size_t)y * {row_bytes}u, {row_bytes}u);",
        "    return 0;", "}", "",
        "int rnnpool_model_run(const int8_t *input, int8_t *output)", "{",
        "    rnnpool_model_frame f;",
        "    if (input == NULL || output == NULL) return (int)RNNPOOL_ARG_ERROR;",
        "    f.input = input;",
        "    return rnnpool_model_run_rows(rnnpool_model_copy_row, &f, output);", "}", ""]
    if decode is not None:
        api += [
            "int32_t rnnpool_model_detect_rows(rnnpool_model_row_reader read_row, void *ctx,",
            "                                  int32_t min_logit_q8, rnnpool_model_box *boxes,",
            "                                  int32_t max_boxes)", "{",
            "    rnnpool_decode_state s;", "    model_io io;", "    int rc;",
            "    if (read_row == NULL || boxes == NULL || max_boxes < 0) "
            "return (int32_t)RNNPOOL_ARG_ERROR;",
            "    s.min_logit_q8 = min_logit_q8;", "    s.boxes = boxes;",
            "    s.max_boxes = max_boxes;", "    s.n = 0;",
            "    io.read_row = read_row;", "    io.ctx = ctx;", "    io.output = NULL;",
            "    io.dec = &s;", "    rc = model_exec(&io);", "    return rc != 0 ? rc : s.n;",
            "}", ""]
    model_c = "\n".join([
        f"/* Generated by rnnpool.deploy.codegen: rnnpool_model_run(_rows), {e.n_calls} kernel "
        f"call sites, {sum(u.streamed for u in units)} row-streamed groups, one planned arena. */",
        "#include <string.h>", "", '#include "model.h"', '#include "model_weights.h"', "",
        "/* -DRNNPOOL_MODEL_PROFILE: call harness_mark() after each unit (instruction profile). */",
        "#ifdef RNNPOOL_MODEL_PROFILE", "void harness_mark(void);",
        "#define RNNPOOL_PROFILE_MARK() harness_mark()", "#else",
        "#define RNNPOOL_PROFILE_MARK() ((void)0)", "#endif", "",
        "static uint8_t arena[RNNPOOL_MODEL_ARENA_BYTES > 0 ? RNNPOOL_MODEL_ARENA_BYTES : 1]"
        " __attribute__((aligned(8)));", "", "/* Arena offsets (planned from lifetimes). */",
        *defines, "", decode_c_text, *io_struct, *e.funcs, "", *api])
    m = CModel(graph=g, input_name=inp, output_names=outs, output_offsets=offsets, units=units,
               plan=plan, scratch=scratch, decode=decode,
               max_boxes=int(max_boxes) if decode is not None else 0)
    header = _header(m)
    if decode is not None:
        header = header.replace("\n#endif\n", dec_h + _detect_header(m) + "\n#endif\n")
    m.sources = _stamp_export({"model.h": header, "model_weights.h": weights_h,
                               "model_weights.c": weights_c, "model.c": model_c})
    return m


def _stamp_export(sources: Dict[str, str]) -> Dict[str, str]:
    """Give the four files one export id (a hash of their contents) and make each check the
    ids of the headers it includes, so that a set mixed from two exports (an interrupted
    export, a file copied from another one) stops the C compiler instead of building a model
    with another model's weights or arena plan."""
    digest = hashlib.sha256("\0".join(sources[n] for n in sorted(sources)).encode())
    uid = f"0x{digest.hexdigest()[:8]}u"

    def error(names: str) -> List[str]:
        return [f"#if {names}", f'#error "{_MIXED_EXPORT}"', "#endif"]

    def after(text: str, line: str, add: List[str]) -> str:
        assert line + "\n" in text, line
        return text.replace(line + "\n", "\n".join([line, *add, ""]), 1)

    out = dict(sources)
    out["model.h"] = after(out["model.h"], "#define RNNPOOL_MODEL_H", [
        "/* Export id: the generated files check that they come from one export. */",
        f"#define RNNPOOL_MODEL_EXPORT_ID {uid}"])
    out["model_weights.h"] = after(out["model_weights.h"], "#define RNNPOOL_MODEL_WEIGHTS_H",
                                   [f"#define RNNPOOL_MODEL_WEIGHTS_EXPORT_ID {uid}"])
    out["model_weights.c"] = after(out["model_weights.c"], '#include "model_weights.h"',
                                   error(f"RNNPOOL_MODEL_WEIGHTS_EXPORT_ID != {uid}"))
    out["model.c"] = after(out["model.c"], '#include "model_weights.h"', error(
        f"RNNPOOL_MODEL_EXPORT_ID != {uid} || RNNPOOL_MODEL_WEIGHTS_EXPORT_ID != {uid}"))
    return out


_MIXED_EXPORT = ("model.h, model.c, model_weights.h and model_weights.c come from different "
                 "exports (an interrupted export?): export the model again")


def _detect_header(m: CModel) -> str:
    return f"""
/* Boxes a caller of the decode provides room for (code generation parameter). */
#define RNNPOOL_MODEL_MAX_BOXES {m.max_boxes}

/**
 * Runs the detector on one image delivered row by row and decodes it on the fly: each source's
 * head maps stay in the arena until merged into boxes (no frame, no output buffer). The boxes
 * equal rnnpool_model_decode(output of rnnpool_model_run, min_logit_q8, boxes, max_boxes).
 * @return the number of boxes (>= 0), or a negative status (kernel, RNNPOOL_MODEL_READ_ERROR,
 *         RNNPOOL_ARG_ERROR for NULL read_row / boxes or max_boxes < 0)
 */
int32_t rnnpool_model_detect_rows(rnnpool_model_row_reader read_row, void *ctx,
                                  int32_t min_logit_q8, rnnpool_model_box *boxes,
                                  int32_t max_boxes);
"""


def _header(m: CModel, prefix: str = "rnnpool_model") -> str:
    g = m.graph
    P = prefix.upper()
    t_in = g.tensor(m.input_name)
    row_bytes = int(t_in.shape[1]) * int(t_in.shape[2])
    lines = [
        f"/* Generated by rnnpool.deploy.codegen: {g.meta.get('model', 'model')}. Do not edit. */",
        f"#ifndef {P}_H", f"#define {P}_H", "", "#include <stdint.h>", "",
        "/* Activation arena: one static buffer, offsets planned from tensor lifetimes; it holds",
        " * the input rows in use (and, for detectors, the head maps until decoded). */",
        f"#define {P}_ARENA_BYTES {m.arena_bytes}",
        f"#define {P}_INPUT_ROWS_BYTES {m.input_arena_bytes}",
        f"/* Input: int8 HWC {tuple(t_in.shape)}, "
        f"real = {t_in.scale!r} * (q - {t_in.zero_point}). */",
        f"#define {P}_INPUT_BYTES {m.input_bytes}",
        f"#define {P}_INPUT_ROW_BYTES {row_bytes}",
        f"#define {P}_INPUT_H {t_in.shape[0]}", f"#define {P}_INPUT_W {t_in.shape[1]}",
        f"#define {P}_INPUT_C {t_in.shape[2]}",
        f"#define {P}_INPUT_ZERO_POINT {t_in.zero_point}",
        "/* Outputs: int8 HWC maps, one after the other in the output buffer. */",
        f"#define {P}_OUTPUT_BYTES {m.output_bytes}",
        f"#define {P}_NUM_OUTPUTS {len(m.output_names)}",
    ]
    for i, n in enumerate(m.output_names):
        t = g.tensor(n)
        lines += [f"/* output {i}: {n} {tuple(t.shape)}, "
                  f"real = {t.scale!r} * (q - {t.zero_point}) */",
                  f"#define {P}_OUT{i}_OFFSET {m.output_offsets[n]}",
                  f"#define {P}_OUT{i}_H {t.shape[0]}", f"#define {P}_OUT{i}_W {t.shape[1]}",
                  f"#define {P}_OUT{i}_C {t.shape[2]}",
                  f"#define {P}_OUT{i}_ZERO_POINT {t.zero_point}"]
    lines += ["", "/* Returned when read_row returns non-zero. */",
              f"#define {P}_READ_ERROR (-16)", "",
              "/**",
              " * Delivers input row y (int8 HWC, " + f"{P}_INPUT_ROW_BYTES bytes) into row, like",
              " * a camera's line DMA. Called with increasing y, each row at most once (rows no",
              " * output depends on may be skipped). Returns 0, or non-zero to abort the run.",
              " */",
              f"typedef int (*{prefix}_row_reader)(void *ctx, int32_t y, int8_t *row);", "",
              "/**", " * Runs the model on one image delivered row by row.",
              f" * @param output  int8 [{P}_OUTPUT_BYTES], the outputs at their offsets",
              " * @return 0 on success, else the failing kernel's rnnpool_status (< 0),",
              f" *         {P}_READ_ERROR, or RNNPOOL_ARG_ERROR for NULL arguments", " */",
              f"int {prefix}_run_rows({prefix}_row_reader read_row, void *ctx, int8_t *output);",
              "", "/**",
              " * Runs the model on one image in a whole buffer "
              "(rows copied by a built-in reader).",
              f" * @param input   int8 [{P}_INPUT_BYTES], HWC",
              f" * @param output  int8 [{P}_OUTPUT_BYTES], the outputs at their offsets",
              " * @return as rnnpool_model_run_rows", " */",
              f"int {prefix}_run(const int8_t *input, int8_t *output);", "", "#endif", ""]
    return "\n".join(lines)


def output_folder(out_dir) -> Path:
    """``out_dir`` as a path, refused (ValueError) when it exists and is not a folder."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    return out


def generate_c(g, out_dir, *, stream: bool = True, rnnpool_kernel: str = "row",
               rnnpool_rows: int = 1, decode=None, max_boxes: int = 100,
               model: Optional[CModel] = None) -> CModel:
    """Write ``model.h``, ``model_weights.h``, ``model_weights.c`` and ``model.c``.

    Args:
        g: the :class:`~rnnpool.quant.ir.QGraph`.
        out_dir: folder to write into (created).
        stream, rnnpool_kernel, rnnpool_rows, decode, max_boxes: see :func:`build_model`.
        model: an already built :class:`CModel` of ``g`` (built here if None).

    Returns:
        The :class:`CModel` with ``files`` set.
    """
    out = output_folder(out_dir)
    m = model or build_model(g, stream=stream, rnnpool_kernel=rnnpool_kernel,
                             rnnpool_rows=rnnpool_rows, decode=decode, max_boxes=max_boxes)
    out.mkdir(parents=True, exist_ok=True)
    m.files = []
    for name, text in m.sources.items():
        m.files.append(atomic_write_text(out / name, text))
    return m
