"""``rnnpool mcu-report``: quantize, generate C, run on the emulated Cortex-M4, and measure.

Figures (all from the build and the emulator, none estimated):

* arena: the planned activation buffer (``RNNPOOL_MODEL_ARENA_BYTES``);
* static RAM: .data + .bss of the firmware (the arena plus all other static data);
* peak stack: the painted stack scanned after the run (whole program, harness included);
* total RAM = static RAM + peak stack. The input image and the output maps are the caller's
  buffers (the harness keeps them in the board's external PSRAM) and are listed apart;
* flash: .text (code + const weights) + .data initialisers;
* instructions per inference: TCG-plugin count between the harness marks around
  ``rnnpool_model_run``;
* agreement: the C outputs must equal the numpy integer reference bit for bit; dequantized, they
  are compared with the float model (max abs error per output, and for detectors the overlap of
  the top-scoring anchors).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["MCUReport", "mcu_report", "dequantize_outputs"]


def dequantize_outputs(m, outs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Float graph outputs from the C model's int8 maps (the DequantizeF32 semantics).

    Args:
        m: the :class:`~rnnpool.deploy.codegen.CModel`.
        outs: int8 HWC outputs by name (one image).

    Returns:
        graph output name -> float32 ``(1, N, K)`` (int8 graph outputs: dequantized HWC).
    """
    from ..quant import reference

    g = m.graph
    res = {k: v[None].astype(np.float32)
           for k, v in reference.dequantize_outputs(g, outs).items()}
    for name in g.outputs:
        if name not in res:  # an int8 graph output
            t = g.tensor(name)
            res[name] = np.float32(t.scale) * (outs[name].astype(np.float32) - t.zero_point)
    return res


@dataclass
class MCUReport:
    """Measurements of one model on the emulated Cortex-M4 (see the module docstring)."""

    model: str
    input_shape: tuple
    arena_bytes: int
    static_ram_bytes: int
    stack_bytes: int
    stack_reserved: int
    flash_bytes: int
    input_bytes: int
    output_bytes: int
    instructions: List[int]
    bit_exact: bool
    host_bit_exact: Optional[bool]
    max_abs_err: Dict[str, float] = field(default_factory=dict)
    float_range: Dict[str, float] = field(default_factory=dict)
    top_anchor_overlap: Optional[float] = None
    ram_budget: int = 0
    n_ops: int = 0
    workdir: Optional[str] = None
    profile: List[tuple] = field(default_factory=list)
    decode_instructions: Optional[int] = None
    top1_agreement: Optional[float] = None
    n_images: int = 0
    decode_boxes: Optional[int] = None

    @property
    def total_ram_bytes(self) -> int:
        return self.static_ram_bytes + self.stack_bytes

    def format(self) -> str:
        kib = lambda b: f"{b} B ({b / 1024:.1f} KiB)"  # noqa: E731
        ins = self.instructions
        lines = [
            f"model                 {self.model}, input {'x'.join(map(str, self.input_shape))} "
            f"(HWC int8), {self.n_ops} kernel calls",
            f"arena                 {kib(self.arena_bytes)}",
            f"static RAM (data+bss) {kib(self.static_ram_bytes)}",
            f"peak stack (painted)  {kib(self.stack_bytes)} of {self.stack_reserved} reserved",
            f"total RAM             {kib(self.total_ram_bytes)} "
            f"(budget {kib(self.ram_budget)}; linked with RAM LENGTH = budget)",
            f"caller I/O buffers    input {kib(self.input_bytes)}, outputs "
            f"{kib(self.output_bytes)} (not in the figures above)",
            f"flash (text+data)     {kib(self.flash_bytes)}",
            f"instructions/image    {min(ins) / 1e6:.2f} M" + (
                f" (min; max {max(ins) / 1e6:.2f} M over {len(ins)} images)" if len(ins) > 1
                else "") + " counted in QEMU (TCG plugin)",
            f"bit-exact vs integer reference: Cortex-M4 {'yes' if self.bit_exact else 'NO'}"
            + ("" if self.host_bit_exact is None
               else f", host {'yes' if self.host_bit_exact else 'NO'}"),
        ]
        for k, v in self.max_abs_err.items():
            lines.append(f"float agreement       {k}: max abs err {v:.4g} "
                         f"(float output range +-{self.float_range.get(k, 0):.3g})")
        if self.decode_instructions is not None:
            lines.append(f"fixed-point decode    {self.decode_instructions / 1e6:.2f} M instr. "
                         f"({self.decode_boxes} boxes with face logit >= 0, first image)")
        for ops, n in self.profile:
            lines.append(f"  {n / 1e6:9.2f} M  {ops}")
        if self.top1_agreement is not None:
            lines.append(f"classifier agreement  int8 top-1 == float top-1 on "
                         f"{self.top1_agreement * 100:.1f} % of {self.n_images} images")
        if self.top_anchor_overlap is not None:
            lines.append(f"detection agreement   top-100 anchors by face score shared with the "
                         f"float model: {self.top_anchor_overlap * 100:.0f} %")
        return "\n".join(lines)


def mcu_report(model, chw: Sequence[int], *, model_name: str = "model", calib: str = "synthetic",
               calib_count: int = 16, ram_budget: int = 128 * 1024, stack_bytes: int = 4096,
               n_images: int = 1, workdir=None, timeout: float = 1200.0,
               check_host: bool = False, stream: bool = True, rnnpool_kernel: str = "row",
               rnnpool_rows: int = 1, profile: bool = False) -> MCUReport:
    """Quantize ``model``, generate C, run it in QEMU and measure (see the module docstring).

    Args:
        model: float model in eval mode.
        chw: input ``(C, H, W)``.
        model_name: shown in the report.
        calib: ``"synthetic"`` or a folder of calibration images.
        calib_count: calibration images.
        ram_budget: RAM LENGTH of the linker script (the link fails beyond it).
        stack_bytes: stack reserved inside the budget.
        n_images: test images run in the emulator (taken from the calibration set).
        workdir: keep the build here (default: a temporary folder).
        timeout: emulator timeout in seconds.
        check_host: also build for the host (ASan/UBSan) and compare.
        stream, rnnpool_kernel, rnnpool_rows: code generation options
            (:func:`~rnnpool.deploy.codegen.build_model`).
        profile: also count instructions per unit of the schedule (``MCUReport.profile``).
    """
    import torch

    from ..quant import reference
    from . import codegen, runner
    from .commands import quantize_for_mcu

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="rnnpool-mcu-")
        workdir = tmp.name
    work = Path(workdir)
    try:
        g, x = quantize_for_mcu(model, tuple(chw), calib, calib_count)
        g.meta["model"] = model_name
        from .decode import DecodeSpec

        spec = DecodeSpec.from_model(model)
        m = codegen.generate_c(g, work / "c", stream=stream, rnnpool_kernel=rnnpool_kernel,
                               rnnpool_rows=rnnpool_rows, decode=spec)
        t_in = g.tensor(m.input_name)
        images = x[:max(1, n_images)]
        qs = [reference.quantize_input(im, t_in) for im in images]
        fw = runner.build_model_m4(m, work / "m4", ram_budget=ram_budget, stack_bytes=stack_bytes,
                                   profile=profile)
        res = runner.run_model_m4(fw, m, qs, workdir=work / "m4", timeout=timeout)
        refs = [reference.run(g, q) for q in qs]
        exact = all(np.array_equal(o[n], r[n]) for o, r in zip(res.outputs, refs)
                    for n in m.output_names)
        host_exact = None
        if check_host:
            exe = runner.build_model_host(m, work / "host")
            hout = runner.run_model_host(exe, m, qs)
            host_exact = all(np.array_equal(o[n], r[n]) for o, r in zip(hout, refs)
                             for n in m.output_names)
        errs: Dict[str, float] = {}
        ranges: Dict[str, float] = {}
        overlaps = []
        top1 = []
        with torch.no_grad():
            for im, o in zip(images, res.outputs):
                fo = model(im[None])
                fo = [fo] if isinstance(fo, torch.Tensor) else list(fo)
                deq = dequantize_outputs(m, o)
                for name, f in zip(g.outputs, fo):
                    f = f.numpy()
                    d = deq[name].reshape(f.shape)
                    errs[name] = max(errs.get(name, 0.0), float(np.abs(d - f).max()))
                    ranges[name] = max(ranges.get(name, 0.0), float(np.abs(f).max()))
                if len(fo) == 1 and fo[0].dim() == 2:  # classifier logits (1, K)
                    top1.append(int(fo[0].argmax()) == int(deq[g.outputs[0]].argmax()))
                if len(fo) == 2 and fo[0].shape[-1] == 2:  # detector: (cls_logits, bbox)
                    fs = fo[0][0, :, 1] - fo[0][0, :, 0]
                    qd = deq[g.outputs[0]].reshape(fo[0].shape)[0]
                    qs_ = torch.from_numpy(qd[:, 1] - qd[:, 0])
                    k = min(100, fs.numel())
                    a = set(torch.topk(fs, k).indices.tolist())
                    b = set(torch.topk(qs_, k).indices.tolist())
                    overlaps.append(len(a & b) / k)
        n_calls = sum(1 for op in g.ops if op.kind != "dequantize")
        return MCUReport(
            model=model_name, input_shape=tuple(t_in.shape), arena_bytes=m.arena_bytes,
            static_ram_bytes=fw.static_ram_bytes, stack_bytes=res.stack_used,
            stack_reserved=fw.stack_reserved, flash_bytes=fw.flash_bytes,
            input_bytes=m.input_bytes, output_bytes=m.output_bytes,
            instructions=res.instructions, bit_exact=exact, host_bit_exact=host_exact,
            max_abs_err=errs, float_range=ranges,
            top_anchor_overlap=float(np.mean(overlaps)) if overlaps else None,
            ram_budget=ram_budget, n_ops=n_calls, workdir=None if tmp else str(work),
            profile=[(", ".join(o.name for o in u.ops), n)
                     for u, n in zip(m.units, res.unit_instructions)],
            decode_instructions=min(res.decode_instructions) if res.decode_instructions else None,
            decode_boxes=len(res.boxes[0]) if res.boxes else None,
            top1_agreement=float(np.mean(top1)) if top1 else None, n_images=len(qs))
    finally:
        if tmp is not None:
            tmp.cleanup()
