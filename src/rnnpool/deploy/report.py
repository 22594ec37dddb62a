"""``rnnpool mcu-report``: quantize, generate C, run on the emulated Cortex-M4, and measure.

Figures (all from the build and the emulator, none estimated):

* arena: the planned buffer (``RNNPOOL_MODEL_ARENA_BYTES``): the input rows in use, the
  activations and kernel scratch, and for detectors the head maps until their source is decoded;
* static RAM: .data + .bss of the firmware: the arena, the box list of the decode (detectors,
  ``max_boxes`` x 24 B) or the classifier's output buffer, and the harness's own variables;
* peak stack: the painted stack scanned after the run (whole program, harness included);
* total RAM = static RAM + peak stack: everything the row API (``rnnpool_model_detect_rows`` /
  ``rnnpool_model_run_rows``) needs; the harness feeds it rows straight from the input file
  (semihosting reads), so no frame is resident. The whole-buffer API's frame and output maps
  are caller buffers (the harness keeps them in the board's PSRAM) and are listed apart;
* flash: .text (code + const weights) + .data initialisers;
* instructions per inference: TCG-plugin count between the harness marks around each API call;
* agreement: the C outputs must equal the numpy integer reference bit for bit, and the row
  API's result must equal the whole-buffer API's (detectors: the boxes of
  ``rnnpool_model_decode`` on the maps); dequantized, the outputs are compared with the float
  model (max abs error per output, and for detectors the overlap of the top-scoring anchors).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .decode import BOX_BYTES

__all__ = ["MCUReport", "mcu_report", "dequantize_outputs"]


def _outputs_equal(m, outs: list, refs: list) -> bool:
    return all(np.array_equal(o[n], r[n]) for o, r in zip(outs, refs) for n in m.output_names)


def _rows_equal(m, rows: list, boxes: list, refs: list) -> bool:
    """The row API's results equal the whole-buffer API's: a detector's boxes those of
    ``rnnpool_model_decode`` on the (bit-exact) maps, a classifier's outputs the reference."""
    if len(rows) != len(refs):
        return False
    if m.decode is not None:
        return len(boxes) == len(rows) and all(np.array_equal(a, b) for a, b in zip(rows, boxes))
    return _outputs_equal(m, rows, refs)


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
    input_rows_bytes: int = 0
    output_arena_bytes: int = 0
    result_bytes: int = 0
    max_boxes: int = 0
    rows_instructions: List[int] = field(default_factory=list)
    rows_bit_exact: Optional[bool] = None
    host_rows_bit_exact: Optional[bool] = None

    @property
    def total_ram_bytes(self) -> int:
        return self.static_ram_bytes + self.stack_bytes

    @property
    def other_static_bytes(self) -> int:
        """Static RAM besides the arena and the box list / output buffer (the harness's)."""
        return self.static_ram_bytes - self.arena_bytes - self.result_bytes

    def format(self) -> str:
        kib = lambda b: f"{b} B ({b / 1024:.1f} KiB)"  # noqa: E731
        mi = lambda v: f"{min(v) / 1e6:.2f} M" + (  # noqa: E731
            f" (min; max {max(v) / 1e6:.2f} M over {len(v)} images)" if len(v) > 1 else "")
        yn = lambda b: "yes" if b else "NO"  # noqa: E731
        det = self.max_boxes > 0
        api = "rnnpool_model_detect_rows" if det else "rnnpool_model_run_rows"
        lines = [
            f"model                 {self.model}, input {'x'.join(map(str, self.input_shape))} "
            f"(HWC int8), {self.n_ops} kernel calls",
            f"RAM of the row API ({api}; rows fed by semihosting reads, no frame resident):",
            f"  input rows          {kib(self.input_rows_bytes)} (in the arena)",
            f"  arena               {kib(self.arena_bytes)}: input rows, activations, scratch"
            + (f", head maps until decoded ({self.output_arena_bytes} B in all)" if det else ""),
            (f"  boxes               {kib(self.result_bytes)} ({self.max_boxes} x {BOX_BYTES} B, "
             "top-K by logit)" if det else f"  outputs             {kib(self.result_bytes)}"),
            f"  other static        {kib(self.other_static_bytes)} (harness)",
            f"  static RAM          {kib(self.static_ram_bytes)} (data+bss)",
            f"  peak stack          {kib(self.stack_bytes)} of {self.stack_reserved} reserved "
            "(painted)",
            f"  total RAM           {kib(self.total_ram_bytes)} "
            f"(budget {kib(self.ram_budget)}; linked with RAM LENGTH = budget)",
            f"whole-buffer API      rnnpool_model_run also needs the caller's frame "
            f"{kib(self.input_bytes)} and output maps {kib(self.output_bytes)} (PSRAM in the "
            "harness): total with them in SRAM "
            f"{kib(self.total_ram_bytes + self.input_bytes + self.output_bytes)}",
            f"flash (text+data)     {kib(self.flash_bytes)}",
            f"instructions/image    {mi(self.instructions)} rnnpool_model_run (whole buffer), "
            "counted in QEMU (TCG plugin)",
        ]
        if self.rows_instructions:
            lines.append(f"                      {mi(self.rows_instructions)} {api} (row reads"
                         + (" and decode included)" if det else " included)"))
        lines.append(
            f"bit-exact vs integer reference: Cortex-M4 {yn(self.bit_exact)}"
            + ("" if self.host_bit_exact is None else f", host {yn(self.host_bit_exact)}"))
        if self.rows_bit_exact is not None:
            what = "boxes == rnnpool_model_decode of the maps" if det else "outputs == reference"
            lines.append(f"row API ({what}): Cortex-M4 {yn(self.rows_bit_exact)}"
                         + ("" if self.host_rows_bit_exact is None
                            else f", host {yn(self.host_rows_bit_exact)}"))
        for k, v in self.max_abs_err.items():
            lines.append(f"float agreement       {k}: max abs err {v:.4g} "
                         f"(float output range +-{self.float_range.get(k, 0):.3g})")
        if self.decode_instructions is not None:
            lines.append(f"fixed-point decode    {self.decode_instructions / 1e6:.2f} M instr. "
                         f"rnnpool_model_decode ({self.decode_boxes} boxes kept of at most "
                         f"{self.max_boxes}, face logit >= 0, first image)")
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
               rnnpool_rows: int = 1, profile: bool = False, max_boxes: int = 100) -> MCUReport:
    """Quantize ``model``, generate C, run it in QEMU and measure (see the module docstring).

    Args:
        model: float model in eval mode.
        chw: input ``(C, H, W)``.
        model_name: shown in the report.
        calib: ``"synthetic"``, a folder of calibration images, or a normalised calibration
            batch ``(N, C, H, W)``.
        calib_count: calibration images.
        ram_budget: RAM LENGTH of the linker script (the link fails beyond it).
        stack_bytes: stack reserved inside the budget.
        n_images: test images run in the emulator, taken from the calibration set (at most
            as many as it has).
        workdir: keep the build here (default: a temporary folder).
        timeout: emulator timeout in seconds.
        check_host: also build for the host (ASan/UBSan) and compare.
        stream, rnnpool_kernel, rnnpool_rows: code generation options
            (:func:`~rnnpool.deploy.codegen.build_model`).
        profile: also count instructions per unit of the schedule (``MCUReport.profile``).
        max_boxes: detectors: the box list of the decode (``RNNPOOL_MODEL_MAX_BOXES``), in RAM.
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
        if not 1 <= n_images <= len(x):
            raise ValueError(f"n_images (--images) must be 1 to the {len(x)} calibration "
                             f"images the test images come from, got {n_images} (raise "
                             "calib_count / --calib-count, or give a folder with more images)")
        g.meta["model"] = model_name
        from .decode import DecodeSpec

        spec = DecodeSpec.from_model(model)
        m = codegen.generate_c(g, work / "c", stream=stream, rnnpool_kernel=rnnpool_kernel,
                               rnnpool_rows=rnnpool_rows, decode=spec, max_boxes=max_boxes)
        t_in = g.tensor(m.input_name)
        images = x[:n_images]
        qs = [reference.quantize_input(im, t_in) for im in images]
        fw = runner.build_model_m4(m, work / "m4", ram_budget=ram_budget, stack_bytes=stack_bytes,
                                   profile=profile)
        res = runner.run_model_m4(fw, m, qs, workdir=work / "m4", timeout=timeout)
        refs = [reference.run(g, q) for q in qs]
        exact = _outputs_equal(m, res.outputs, refs)
        rows_exact = _rows_equal(m, res.rows, res.boxes, refs)
        host_exact = host_rows_exact = None
        if check_host:
            exe = runner.build_model_host(m, work / "host")
            hout = runner.run_model_host(exe, m, qs)
            host_exact = _outputs_equal(m, hout, refs)
            hboxes = (runner.read_boxes(exe.parent, len(qs), m.max_boxes)
                      if m.decode is not None else [])
            host_rows_exact = _rows_equal(m, runner.read_rows(m, exe.parent, len(qs)), hboxes,
                                          refs)
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
                    d = reference.in_float_layout(deq[name], f.shape)
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
            top1_agreement=float(np.mean(top1)) if top1 else None, n_images=len(qs),
            input_rows_bytes=m.input_arena_bytes, output_arena_bytes=m.output_arena_bytes,
            result_bytes=(m.max_boxes * BOX_BYTES if m.decode is not None else m.output_bytes),
            max_boxes=m.max_boxes, rows_instructions=res.rows_instructions,
            rows_bit_exact=rows_exact, host_rows_bit_exact=host_rows_exact)
    finally:
        if tmp is not None:
            tmp.cleanup()
