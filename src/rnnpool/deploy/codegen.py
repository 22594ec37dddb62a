"""Generate plain C99 for a quantized graph: const weights, one planned arena, straight-line calls.

:func:`generate_c` turns a :class:`~rnnpool.quant.ir.QGraph` into three files:

* ``model.h``: the API ``int rnnpool_model_run(const int8_t *input, int8_t *output)`` and size
  macros (``RNNPOOL_MODEL_ARENA_BYTES``, ``RNNPOOL_MODEL_INPUT_BYTES``,
  ``RNNPOOL_MODEL_OUTPUT_BYTES``, and shape / offset / scale / zero point of each output);
* ``model_weights.c``: every weight, bias, multiplier and parameter struct as ``const`` data
  (placed in flash by the linker);
* ``model.c``: ``static uint8_t arena[N]`` and the run function, one kernel call per op with
  fixed arena offsets planned by :mod:`rnnpool.deploy.planner` from the tensors' lifetimes.

The model's outputs are **int8**: the graph's :class:`~rnnpool.quant.ir.DequantizeF32` ops are
not emitted; their int8 inputs (the raw detection-head or classifier maps, HWC) are written to
``output`` one after the other, and dequantising (``scale * (q - zero_point)``) happens on the
host (:meth:`CModel.unpack`). No float arithmetic is generated. The input image is read in place
from the caller's buffer (HWC int8) and the outputs are written straight to the caller's buffer,
so neither occupies the arena.

Example:
    >>> import numpy as np
    >>> from rnnpool.quant.ir import QGraph, QTensor, AddS8, make_add_params
    >>> g = QGraph(inputs=["x"], outputs=["y"])
    >>> _ = g.add_tensor(QTensor("x", (2, 2, 4), "int8", 0.1, 0))
    >>> _ = g.add_tensor(QTensor("t", (2, 2, 4), "int8", 0.2, 0))
    >>> _ = g.add_tensor(QTensor("y", (2, 2, 4), "int8", 0.4, 0))
    >>> p = make_add_params(0.1, 0, 0.1, 0, 0.2, 0)
    >>> g.ops += [AddS8("a1", "x", "x", "t", *p), AddS8("a2", "t", "t", "y", *p)]
    >>> m = build_model(g)
    >>> m.arena_bytes, m.output_names
    (16, ['y'])
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .planner import ArenaPlan, Buffer, check_plan, plan_arena

__all__ = ["CModel", "build_model", "generate_c", "KERNEL_DIR", "kernel_sources"]

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


@dataclass
class CModel:
    """A planned, C-ready model (the result of :func:`build_model`).

    Attributes:
        graph: the source graph.
        input_name: the int8 graph input (HWC).
        output_names: int8 tensors the C code writes to ``output``, in order.
        output_offsets: byte offset of each of them in ``output``.
        plan: arena plan (tensor or ``scratch:<op>`` name -> offset).
        arena_bytes: size of the arena.
        scratch: op name -> scratch bytes.
        files: generated files (after :func:`generate_c`).
    """

    graph: object
    input_name: str
    output_names: List[str]
    output_offsets: Dict[str, int]
    plan: ArenaPlan
    scratch: Dict[str, int]
    files: List[Path] = field(default_factory=list)

    @property
    def arena_bytes(self) -> int:
        return self.plan.total

    @property
    def input_bytes(self) -> int:
        return self.graph.tensor(self.input_name).nbytes

    @property
    def output_bytes(self) -> int:
        return sum(self.graph.tensor(n).nbytes for n in self.output_names)

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


def _scratch_bytes(op, g) -> int:
    """Scratch bytes an op's kernel needs (0 for most kernels)."""
    if op.kind not in ("rnnpool", "mbconv"):
        return 0
    from ..quant import ir as qir

    fn = getattr(qir, "scratch_bytes", None)
    if fn is None:
        raise NotImplementedError(
            f"op {op.name!r} ({op.kind}) needs scratch memory, and rnnpool.quant.ir.scratch_bytes "
            "(the Python twin of the kernel's *_get_buffer_size) is not available")
    return int(fn(op, g))


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


def build_model(g, alignment: int = 4) -> CModel:
    """Plan a graph for C: pick the int8 outputs, compute lifetimes, place buffers in the arena.

    Args:
        g: a :class:`~rnnpool.quant.ir.QGraph` with one int8 input.
        alignment: arena offset alignment in bytes.
    """
    g.validate()
    if len(g.inputs) != 1:
        raise ValueError(f"the C model takes one input, the graph has {len(g.inputs)}")
    inp = g.inputs[0]
    if g.tensor(inp).dtype != "int8":
        raise ValueError(f"graph input {inp!r} must be int8, got {g.tensor(inp).dtype}")
    outs = _c_outputs(g)
    ops = [op for op in g.ops if op.kind != "dequantize"]
    first: Dict[str, int] = {}
    last: Dict[str, int] = {}
    for i, op in enumerate(ops):
        for n in op.outputs:
            first.setdefault(n, i)
            last.setdefault(n, i)
        for n in op.inputs:
            last[n] = i
    bufs, scratch = [], {}
    for n, f in first.items():
        if n in outs or n == inp:
            continue
        bufs.append(Buffer(n, g.tensor(n).nbytes, f, last[n]))
    for i, op in enumerate(ops):
        s = _scratch_bytes(op, g)
        if s:
            scratch[op.name] = s
            bufs.append(Buffer(f"scratch:{op.name}", s, i, i))
    plan = plan_arena(bufs, alignment=alignment)
    check_plan(plan)
    offsets, o = {}, 0
    for n in outs:
        offsets[n] = o
        o += g.tensor(n).nbytes
    return CModel(graph=g, input_name=inp, output_names=outs, output_offsets=offsets, plan=plan,
                  scratch=scratch)


# ----------------------------------------------------------------------------- C emission


class _Emitter:
    def __init__(self, m: CModel):
        self.m = m
        self.g = m.graph
        self.data: List[str] = []  # model_weights.c
        self.decl: List[str] = []  # extern declarations (private header)
        self.body: List[str] = []  # run function body

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

    # --- tensor pointers
    def ptr(self, name: str, const: bool) -> str:
        m = self.m
        if name == m.input_name:
            return "input"
        if name in m.output_offsets:
            return f"(output + {m.output_offsets[name]})"
        off = m.plan.offsets[name]
        return f"((int8_t *)(arena + {off}))"

    def call(self, op_name: str, expr: str) -> None:
        self.body.append(f"    /* {op_name} */")
        self.body.append(f"    status = {expr};")
        self.body.append("    if (status != RNNPOOL_OK) return (int)status;")

    # --- ops
    def conv_parts(self, p: str, op) -> tuple:
        pt, pb, pl, pr = (int(v) for v in op.padding)
        sh, sw = (int(v) for v in op.stride)
        params = (f"{{{int(op.input_offset)}, {int(op.output_offset)}, {sh}, {sw}, {pt}, {pb}, "
                  f"{pl}, {pr}, {{{int(op.act_min)}, {int(op.act_max)}}}}}")
        from ..quant.ir import c_weight

        w = self.array(f"{p}_w", "int8_t", c_weight(op))
        b = self.array(f"{p}_b", "int32_t", np.asarray(op.bias, dtype=np.int64))
        mult = self.array(f"{p}_mult", "int32_t", op.multiplier)
        shift = self.array(f"{p}_shift", "int32_t", op.shift)
        return params, f"{{{mult}, {shift}}}", w, b

    def conv(self, op, p: str) -> None:
        params, quant, w, b = self.conv_parts(p, op)
        self.struct(f"{p}_params", "rnnpool_conv_params", params)
        self.struct(f"{p}_quant", "rnnpool_per_channel_quant", quant)
        c_out, kh, kw, cin_g = np.asarray(op.weight).shape
        fdims = (kh, kw, c_out) if op.kind == "depthwise_conv2d" else (kh, kw, cin_g)
        self.dims(f"{p}_fdims", fdims)
        self.dims(f"{p}_idims", self.g.tensor(op.input).shape)
        self.dims(f"{p}_odims", self.g.tensor(op.output).shape)
        fn = {"conv2d": "rnnpool_conv2d_s8", "depthwise_conv2d": "rnnpool_depthwise_conv2d_s8",
              "conv2d_1x1": "rnnpool_conv2d_1x1_s8"}[op.kind]
        self.call(op.name, f"{fn}(NULL, &{p}_params, &{p}_quant, &{p}_idims, "
                           f"{self.ptr(op.input, True)}, &{p}_fdims, {w}, {b}, &{p}_odims, "
                           f"{self.ptr(op.output, False)})")

    @staticmethod
    def add_params(op) -> str:
        f = [op.input1_offset, op.input1_multiplier, op.input1_shift, op.input2_offset,
             op.input2_multiplier, op.input2_shift, op.left_shift, op.output_multiplier,
             op.output_shift, op.output_offset]
        return "{" + ", ".join(str(int(v)) for v in f) + f", {{{int(op.act_min)}, {int(op.act_max)}}}}}"

    def add(self, op, p: str) -> None:
        self.struct(f"{p}_params", "rnnpool_add_params", self.add_params(op))
        self.dims(f"{p}_dims", self.g.tensor(op.output).shape)
        self.call(op.name, f"rnnpool_add_s8(NULL, &{p}_params, &{p}_dims, "
                           f"{self.ptr(op.input1, True)}, {self.ptr(op.input2, True)}, "
                           f"{self.ptr(op.output, False)})")

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
        return self.struct(f"{p}", "rnnpool_fastgrnn_params", init)

    def scratch_ctx(self, op, p: str, size_expr: str) -> str:
        size = self.m.scratch[op.name]
        off = self.m.plan.offsets[f"scratch:{op.name}"]
        self.body.append(f"    /* {op.name}: scratch planned {size} bytes */")
        self.body.append(f"    if ({size_expr} > {size}) return (int)RNNPOOL_ARG_ERROR;")
        self.body.append(f"    {p}_ctx.buf = arena + {off};")
        self.body.append(f"    {p}_ctx.size = {size};")
        self.locals.append(f"    rnnpool_context {p}_ctx;")
        return f"&{p}_ctx"

    def rnnpool(self, op, p: str) -> None:
        pt, pb, pl, pr = (int(v) for v in op.padding)
        kh, kw = (int(v) for v in op.kernel_size)
        sh, sw = (int(v) for v in op.stride)
        mode = {"zeros": 0, "replicate": 1}[op.padding_mode]
        self.struct(f"{p}_params", "rnnpool_rnnpool_params",
                    f"{{{kh}, {kw}, {sh}, {sw}, {pt}, {pb}, {pl}, {pr}, {mode}, "
                    f"{int(op.input_offset)}, {int(op.output_offset)}, "
                    f"{{{int(op.output_multiplier)}, {int(op.output_shift)}}}}}")
        ishape = self.g.tensor(op.input).shape
        r1 = self.fastgrnn(op.rnn1, f"{p}_rnn1", ishape[2], True)
        r2 = self.fastgrnn(op.rnn2, f"{p}_rnn2", op.rnn1.hidden, False)
        self.dims(f"{p}_idims", ishape)
        self.dims(f"{p}_odims", self.g.tensor(op.output).shape)
        ctx = "NULL"
        if op.name in self.m.scratch:
            ctx = self.scratch_ctx(op, p, f"rnnpool_rnnpool_s8_get_buffer_size(&{p}_params, &{r1}, "
                                          f"&{r2}, &{p}_idims, &{p}_odims)")
        self.call(op.name, f"rnnpool_rnnpool_s8({ctx}, &{p}_params, &{r1}, &{r2}, &{p}_idims, "
                           f"{self.ptr(op.input, True)}, &{p}_odims, {self.ptr(op.output, False)})")

    def l2norm(self, op, p: str) -> None:
        self.struct(f"{p}_params", "rnnpool_l2norm_params",
                    f"{{{int(op.input_offset)}, {int(op.output_offset)}, "
                    f"{{{int(op.act_min)}, {int(op.act_max)}}}}}")
        mult = self.array(f"{p}_mult", "int32_t", op.multiplier)
        shift = self.array(f"{p}_shift", "int32_t", op.shift)
        self.struct(f"{p}_quant", "rnnpool_per_channel_quant", f"{{{mult}, {shift}}}")
        self.dims(f"{p}_dims", self.g.tensor(op.input).shape)
        self.call(op.name, f"rnnpool_l2norm_s8(NULL, &{p}_params, &{p}_quant, &{p}_dims, "
                           f"{self.ptr(op.input, True)}, {self.ptr(op.output, False)})")

    def avgpool(self, op, p: str) -> None:
        kh, kw = (int(v) for v in op.kernel_size)
        sh, sw = (int(v) for v in op.stride)
        self.struct(f"{p}_params", "rnnpool_pool_params",
                    f"{{{kh}, {kw}, {sh}, {sw}, {int(op.input_offset)}, {int(op.output_offset)}, "
                    f"{{{int(op.act_min)}, {int(op.act_max)}}}}}")
        self.struct(f"{p}_quant", "rnnpool_per_tensor_quant",
                    f"{{{int(op.multiplier)}, {int(op.shift)}}}")
        self.dims(f"{p}_idims", self.g.tensor(op.input).shape)
        self.dims(f"{p}_odims", self.g.tensor(op.output).shape)
        self.call(op.name, f"rnnpool_avgpool_s8(NULL, &{p}_params, &{p}_quant, &{p}_idims, "
                           f"{self.ptr(op.input, True)}, &{p}_odims, {self.ptr(op.output, False)})")

    def mbconv(self, op, p: str) -> None:
        stages = {}
        for role in ("expand", "depthwise", "project"):
            sub = getattr(op, role)
            if sub is None:
                stages[role] = "NULL"
                continue
            params, quant, w, b = self.conv_parts(f"{p}_{role}", sub)
            stages[role] = "&" + self.struct(f"{p}_{role}", "rnnpool_mbconv_stage",
                                             f"{{{params}, {quant}, {w}, {b}}}")
        add = "NULL"
        if op.add is not None:
            add = "&" + self.struct(f"{p}_add", "rnnpool_add_params", self.add_params(op.add))
        dw = np.asarray(op.depthwise.weight)
        hidden, kh, kw = dw.shape[0], dw.shape[1], dw.shape[2]
        self.struct(f"{p}_params", "rnnpool_mbconv_params",
                    f"{{{stages['expand']}, {stages['depthwise']}, {stages['project']}, {add}, "
                    f"{hidden}, {kh}, {kw}}}")
        self.dims(f"{p}_idims", self.g.tensor(op.input).shape)
        self.dims(f"{p}_odims", self.g.tensor(op.output).shape)
        ctx = "NULL"
        if op.name in self.m.scratch:
            ctx = self.scratch_ctx(op, p, f"rnnpool_mbconv_s8_get_buffer_size(&{p}_params, "
                                          f"&{p}_idims, &{p}_odims)")
        self.call(op.name, f"rnnpool_mbconv_s8({ctx}, &{p}_params, &{p}_idims, "
                           f"{self.ptr(op.input, True)}, &{p}_odims, {self.ptr(op.output, False)})")

    def emit(self) -> None:
        self.locals: List[str] = []
        handlers = {"conv2d": self.conv, "depthwise_conv2d": self.conv, "conv2d_1x1": self.conv,
                    "add": self.add, "rnnpool": self.rnnpool, "l2norm": self.l2norm,
                    "avgpool": self.avgpool, "mbconv": self.mbconv}
        for i, op in enumerate(self.g.ops):
            if op.kind == "dequantize":
                continue
            if op.kind not in handlers:
                raise NotImplementedError(f"no C code generation for op kind {op.kind!r}")
            handlers[op.kind](op, f"op{i}_{_ident(op.name)}"[:60])


def _header(m: CModel, prefix: str) -> str:
    g = m.graph
    P = prefix.upper()
    t_in = g.tensor(m.input_name)
    lines = [
        f"/* Generated by rnnpool.deploy.codegen: {g.meta.get('model', 'model')}. Do not edit. */",
        f"#ifndef {P}_H", f"#define {P}_H", "", "#include <stdint.h>", "",
        f"/* Activation arena: one static buffer, offsets planned from tensor lifetimes. */",
        f"#define {P}_ARENA_BYTES {m.arena_bytes}",
        f"/* Input: int8 HWC {tuple(t_in.shape)}, real = {t_in.scale!r} * (q - {t_in.zero_point}). */",
        f"#define {P}_INPUT_BYTES {m.input_bytes}",
        f"#define {P}_INPUT_H {t_in.shape[0]}", f"#define {P}_INPUT_W {t_in.shape[1]}",
        f"#define {P}_INPUT_C {t_in.shape[2]}",
        f"#define {P}_INPUT_ZERO_POINT {t_in.zero_point}",
        f"/* Outputs: int8 HWC maps, one after the other in the output buffer. */",
        f"#define {P}_OUTPUT_BYTES {m.output_bytes}",
        f"#define {P}_NUM_OUTPUTS {len(m.output_names)}",
    ]
    for i, n in enumerate(m.output_names):
        t = g.tensor(n)
        lines += [f"/* output {i}: {n} {tuple(t.shape)}, real = {t.scale!r} * (q - {t.zero_point}) */",
                  f"#define {P}_OUT{i}_OFFSET {m.output_offsets[n]}",
                  f"#define {P}_OUT{i}_H {t.shape[0]}", f"#define {P}_OUT{i}_W {t.shape[1]}",
                  f"#define {P}_OUT{i}_C {t.shape[2]}",
                  f"#define {P}_OUT{i}_ZERO_POINT {t.zero_point}"]
    lines += ["", "/**", " * Runs the model on one image.",
              f" * @param input   int8 [{P}_INPUT_BYTES], HWC", 
              f" * @param output  int8 [{P}_OUTPUT_BYTES], the outputs at their offsets",
              " * @return 0 on success, else the failing kernel's rnnpool_status (< 0)", " */",
              f"int {prefix}_run(const int8_t *input, int8_t *output);", "", f"#endif", ""]
    return "\n".join(lines)


def generate_c(g, out_dir, *, prefix: str = "rnnpool_model", model: Optional[CModel] = None
               ) -> CModel:
    """Write ``model.h``, ``model_weights.c`` and ``model.c`` for a quantized graph.

    Args:
        g: the :class:`~rnnpool.quant.ir.QGraph`.
        out_dir: folder to write into (created).
        prefix: C name prefix of the API (``<prefix>_run``, ``<PREFIX>_ARENA_BYTES``).
        model: an already planned :class:`CModel` of ``g`` (planned here if None).

    Returns:
        The :class:`CModel` with ``files`` set.
    """
    m = model or build_model(g)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    e = _Emitter(m)
    e.emit()
    includes = ['#include <stddef.h>', '#include <stdint.h>', '', '#include "rnnpool_conv.h"',
                '#include "rnnpool_rnn.h"', '#include "rnnpool_types.h"']
    weights_h = "\n".join([f"/* Generated: constant data of {prefix}. Do not edit. */",
                           f"#ifndef {prefix.upper()}_WEIGHTS_H", f"#define {prefix.upper()}_WEIGHTS_H",
                           *includes, "", *e.decl, "", "#endif", ""])
    weights_c = "\n".join([f"/* Generated: weights and parameters of {prefix} (const: flash). */",
                           f'#include "model_weights.h"', "", *e.data])
    n_kernel_calls = sum(1 for line in e.body if line.startswith("    status ="))
    model_c = "\n".join([
        f"/* Generated: {prefix}_run, {n_kernel_calls} kernel calls over one planned arena. */",
        '#include "model.h"', '#include "model_weights.h"', "",
        f"static uint8_t arena[{prefix.upper()}_ARENA_BYTES > 0 ? {prefix.upper()}_ARENA_BYTES : 1]"
        " __attribute__((aligned(8)));", "",
        f"int {prefix}_run(const int8_t *input, int8_t *output)", "{",
        "    rnnpool_status status;", *e.locals, "    (void)input;", "    (void)output;",
        *e.body, "    return 0;", "}", ""])
    files = {"model.h": _header(m, prefix), "model_weights.h": weights_h,
             "model_weights.c": weights_c, "model.c": model_c}
    m.files = []
    for name, text in files.items():
        path = out / name
        with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp") as f:
            f.write(text)
        Path(f.name).replace(path)
        m.files.append(path)
    return m
