"""Build generated C models for the host or the emulated Cortex-M4 and run them on int8 inputs.

Both builds use the same harness (``csrc/harness/main_model.c``): it reads ``input.bin`` (int8
HWC images back to back) and runs each image through both APIs: ``rnnpool_model_run`` on a
whole buffer (``output.bin``; detectors also ``rnnpool_model_decode``: ``boxes.bin``), then the
row API with rows read straight from the file (``rows.bin``: detectors
``rnnpool_model_detect_rows`` boxes, classifiers ``rnnpool_model_run_rows`` outputs). The host
build runs natively (with ASan/UBSan by default); the Cortex-M4 build runs in QEMU and also
reports instructions per inference and the painted stack.

Example (needs gcc and the generated kernels)::

    m = codegen.generate_c(g, "out/c")
    exe = build_model_host(m, "out/host")
    outs = run_model_host(exe, m, [x_int8_hwc])      # list of {tensor: int8 HWC array}
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import mcu
from .codegen import CSRC, CModel, kernel_sources

__all__ = ["build_model_host", "run_model_host", "run_model_host_boxes", "read_boxes",
           "read_rows", "build_model_m4", "run_model_m4", "M4Result"]


def _model_dir(m: CModel) -> Path:
    if not m.files:
        raise ValueError("the model has no generated files: call codegen.generate_c first")
    return m.files[0].parent


def _sources(m: CModel) -> List[Path]:
    d = _model_dir(m)
    srcs = [d / "model.c", d / "model_weights.c", mcu.HARNESS_DIR / "main_model.c"]
    return srcs + kernel_sources()


def _write_inputs(m: CModel, inputs: Sequence[np.ndarray], workdir: Path) -> None:
    shape = tuple(m.graph.tensor(m.input_name).shape)
    blobs = []
    for i, x in enumerate(inputs):
        x = np.asarray(x)
        if x.dtype != np.int8 or tuple(x.shape) != shape:
            raise ValueError(f"input {i}: expected int8 HWC {shape}, got {x.dtype} {x.shape}")
        blobs.append(np.ascontiguousarray(x).tobytes())
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "input.bin").write_bytes(b"".join(blobs))
    for name in ("output.bin", "boxes.bin", "rows.bin"):
        if (workdir / name).exists():
            (workdir / name).unlink()


def _read_outputs(m: CModel, n: int, workdir: Path) -> List[Dict[str, np.ndarray]]:
    raw = (workdir / "output.bin").read_bytes()
    k = m.output_bytes
    if len(raw) != n * k:
        raise mcu.MCUError(f"output.bin has {len(raw)} bytes, expected {n} x {k}")
    return [m.unpack(raw[i * k:(i + 1) * k]) for i in range(n)]


def read_boxes(workdir, n: int, max_boxes: int, name: str = "boxes.bin") -> List[np.ndarray]:
    """Boxes written by the harness (``boxes.bin``, or ``rows.bin`` of a detector): per image an
    int32 count, then ``max_boxes`` (``CModel.max_boxes``) rows of 6 int32."""
    raw = np.fromfile(Path(workdir) / name, dtype="<i4")
    per = 1 + 6 * max_boxes
    if raw.size != n * per:
        raise mcu.MCUError(f"{name} has {raw.size} int32, expected {n} x {per}")
    out = []
    for i in range(n):
        blk = raw[i * per:(i + 1) * per]
        out.append(blk[1:].reshape(max_boxes, 6)[:int(blk[0])].copy())
    return out


def read_rows(m: CModel, workdir, n: int) -> list:
    """Results of the row API (``rows.bin``): per image, the boxes of
    ``rnnpool_model_detect_rows`` (detectors, as :func:`read_boxes`) or the outputs of
    ``rnnpool_model_run_rows`` by name."""
    if m.decode is not None:
        return read_boxes(workdir, n, m.max_boxes, "rows.bin")
    raw = (Path(workdir) / "rows.bin").read_bytes()
    k = m.output_bytes
    if len(raw) != n * k:
        raise mcu.MCUError(f"rows.bin has {len(raw)} bytes, expected {n} x {k}")
    return [m.unpack(raw[i * k:(i + 1) * k]) for i in range(n)]


def build_model_host(m: CModel, out_dir, *, sanitize: bool = True) -> Path:
    """Compile the generated model with the harness for the host; returns the executable."""
    return mcu.build_host(_sources(m), Path(out_dir), include_dirs=[CSRC, _model_dir(m)],
                          sanitize=sanitize)


def run_model_host(exe: Path, m: CModel, inputs: Sequence[np.ndarray], workdir=None,
                   timeout: float = 300.0) -> List[Dict[str, np.ndarray]]:
    """Run a host build on int8 HWC inputs; returns the int8 outputs of each input by name."""
    workdir = Path(workdir) if workdir is not None else Path(exe).parent
    _write_inputs(m, inputs, workdir)
    p = subprocess.run([str(Path(exe).resolve())], cwd=workdir, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise mcu.MCUError(f"host model exited with {p.returncode}:\n{p.stdout}{p.stderr}")
    return _read_outputs(m, len(inputs), workdir)


def run_model_host_boxes(exe: Path, m: CModel, inputs: Sequence[np.ndarray], workdir=None):
    """Like :func:`run_model_host`, also returning the decoded boxes (models with a decode)."""
    workdir = Path(workdir) if workdir is not None else Path(exe).parent
    outs = run_model_host(exe, m, inputs, workdir)
    return outs, read_boxes(workdir, len(inputs), m.max_boxes)


def build_model_m4(m: CModel, out_dir, *, ram_budget: int = 128 * 1024,
                   stack_bytes: int = 4096, flash_budget: int = 2 * 1024 * 1024,
                   profile: bool = False) -> mcu.Firmware:
    """Cross-compile the generated model with the harness for the Cortex-M4 (``-O2``).

    The RAM budget covers .data + .bss (the arena and all other static RAM) + ``stack_bytes``;
    a model that does not fit fails to link (:class:`~rnnpool.deploy.mcu.MCUError`).
    With ``profile``, the model marks the end of every unit (per-unit instruction counts in
    :attr:`M4Result.unit_instructions`).
    """
    fw = mcu.build_firmware(_sources(m), Path(out_dir), include_dirs=[CSRC, _model_dir(m)],
                            ram_budget=ram_budget, stack_bytes=stack_bytes,
                            flash_budget=flash_budget,
                            extra_cflags=["-DRNNPOOL_MODEL_PROFILE"] if profile else [])
    fw.profile = profile  # type: ignore[attr-defined]
    return fw


@dataclass
class M4Result:
    """Outputs and measurements of :func:`run_model_m4`.

    Attributes:
        outputs: per input, int8 outputs by tensor name.
        instructions: executed instructions of each inference (between the harness marks).
        stack_used: peak stack of the whole program (painted-stack scan), bytes.
        total_instructions: whole emulated run.
        unit_instructions: per unit of ``CModel.units``, for the first input (profile builds).
        boxes: per input, the decoded boxes (models with a decode): int32 ``(n, 6)`` rows
            ``x1, y1, x2, y2`` (Q8 pixels), ``logit`` (Q8), ``anchor``.
        decode_instructions: per input, instructions of ``rnnpool_model_decode``.
        rows: per input, the row API's result (:func:`read_rows`).
        rows_instructions: per input, instructions of the row API call (detectors:
            ``rnnpool_model_detect_rows``, inference and decode; the row reads included).
    """

    outputs: List[Dict[str, np.ndarray]]
    instructions: List[int]
    stack_used: int
    total_instructions: Optional[int]
    unit_instructions: List[int] = field(default_factory=list)
    stdout: str = field(repr=False, default="")
    boxes: List[np.ndarray] = field(default_factory=list)
    decode_instructions: List[int] = field(default_factory=list)
    rows: list = field(default_factory=list)
    rows_instructions: List[int] = field(default_factory=list)


def run_model_m4(fw: mcu.Firmware, m: CModel, inputs: Sequence[np.ndarray], workdir=None,
                 timeout: float = 600.0, count_instructions: bool = True) -> M4Result:
    """Run a Cortex-M4 build in QEMU on int8 HWC inputs (semihosting file I/O)."""
    workdir = Path(workdir) if workdir is not None else Path(fw.elf).parent
    _write_inputs(m, inputs, workdir)
    r = mcu.run_qemu(fw.elf, workdir, timeout=timeout, count_instructions=count_instructions,
                     mark_address=fw.mark_address)
    if r.values.get("images") != len(inputs):
        raise mcu.MCUError(f"the emulated harness ran {r.values.get('images')} of {len(inputs)} "
                           f"images:\n{r.stdout}")
    per_image, units, dec, rows = [], [], [], []
    k = (len(m.units) + 2) if getattr(fw, "profile", False) else 2  # marks around one inference
    d = 2 if m.decode is not None else 0  # the pair around the decode
    per = 2 * k + d  # whole-buffer run, decode, row-API run
    if r.marks:
        if len(r.marks) != per * len(inputs):
            raise mcu.MCUError(f"{len(r.marks)} harness marks, expected {per} x {len(inputs)}")
        marks = [r.marks[i:i + per] for i in range(0, len(r.marks), per)]
        per_image = [mk[k - 1] - mk[0] for mk in marks]
        if k > 2:
            units = [b - a for a, b in zip(marks[0][:k - 2], marks[0][1:k - 1])]
        if d:
            dec = [mk[k + 1] - mk[k] for mk in marks]
        rows = [mk[-1] - mk[k + d] for mk in marks]
    return M4Result(outputs=_read_outputs(m, len(inputs), workdir), instructions=per_image,
                    stack_used=r.values.get("stack_used", -1), total_instructions=r.instructions,
                    unit_instructions=units, stdout=r.stdout,
                    boxes=(read_boxes(workdir, len(inputs), m.max_boxes)
                           if m.decode is not None else []),
                    decode_instructions=dec, rows=read_rows(m, workdir, len(inputs)),
                    rows_instructions=rows)
