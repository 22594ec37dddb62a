"""The deployment step of ``rnnpool demo``: int8 C on an emulated Cortex-M4.

:func:`mcu_demo` quantizes RNNPool-Face-M4 (320x240 monochrome; the shipped or given weights, or
seeded random ones: RAM, flash and instruction figures do not depend on the weight values),
generates C, and when the Cortex-M4 toolchain is installed runs it in QEMU and prints the
measured RAM, flash and instructions. If the detector cannot be quantized, it falls back to a
small RNNPool classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

__all__ = ["mcu_demo"]

_FALLBACKS = ("fmnist_cnn_rnnpool_hard",)


def _candidates(weights: Optional[str]):
    from ..models import list_models
    from .commands import load_model

    def face():
        if weights is not None:
            try:
                return load_model("rnnpool_face_m4", str(weights), False)
            except (ValueError, FileNotFoundError) as e:
                print(f"[mcu] cannot use {weights} ({e}); using seeded random weights")
        return load_model("rnnpool_face_m4", None, True)

    yield "rnnpool_face_m4", face
    for name in _FALLBACKS:
        if name in list_models():
            yield name, (lambda n=name: load_model(n, None, True))


def mcu_demo(workdir, weights: Optional[str] = None, print_fn=print) -> Optional[dict]:
    """Quantize, generate C, run on the emulated Cortex-M4 and print the figures.

    Args:
        workdir: folder for the generated C, builds and emulator files.
        weights: checkpoint of ``rnnpool_face_m4`` (None: seeded random weights).
        print_fn: where progress lines go.

    Returns:
        A dict of the figures (``model``, ``arena_bytes``, ``total_ram_bytes``, ``flash_bytes``,
        ``instructions``, ``bit_exact``), or None if no model could be deployed. Without the
        toolchain, only the C is generated (``instructions`` is None).
    """
    from ..quant.ptq import UnsupportedLayerError
    from . import codegen, mcu
    from .commands import model_input_chw, quantize_for_mcu
    from .report import mcu_report

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name, make in _candidates(weights):
        model = make()
        chw = model_input_chw(model, None) if hasattr(model, "config") else None
        if chw is None:
            chw = model_input_chw(model, "28x28")
        if mcu.find_toolchain() is None:
            try:
                g, _ = quantize_for_mcu(model, chw, "synthetic", 8)
                g.meta["model"] = name
                m = codegen.generate_c(g, work / name / "c")
            except (UnsupportedLayerError, NotImplementedError) as e:
                print_fn(f"[mcu] {name}: cannot deploy yet ({str(e).splitlines()[0]})")
                continue
            print_fn(f"[mcu] {name}: int8 C in {work / name / 'c'}: arena {m.arena_bytes} B")
            print_fn("[mcu] Cortex-M4 toolchain not installed (gcc-arm-none-eabi, "
                     "libnewlib-arm-none-eabi, qemu-system-arm): skipping the emulator run")
            return {"model": name, "arena_bytes": m.arena_bytes, "instructions": None}
        try:
            # The configuration that fits Face-M4 in 128 KiB with the fewest instructions.
            rep = mcu_report(model, chw, model_name=name, calib="synthetic", calib_count=8,
                             ram_budget=128 * 1024, stack_bytes=1536, n_images=1,
                             workdir=work / name, rnnpool_kernel="row")
        except (UnsupportedLayerError, NotImplementedError, mcu.MCUError) as e:
            print_fn(f"[mcu] {name}: cannot deploy ({str(e).splitlines()[0]})")
            continue
        print_fn(f"[mcu] {name}: generated C in {work / name / 'c'}, run on QEMU mps2-an386 "
                 "(Cortex-M4):")
        for line in rep.format().splitlines():
            print_fn(f"[mcu]   {line}")
        return {"model": name, "arena_bytes": rep.arena_bytes,
                "total_ram_bytes": rep.total_ram_bytes, "flash_bytes": rep.flash_bytes,
                "instructions": min(rep.instructions), "bit_exact": rep.bit_exact,
                "report": rep}
    print_fn("[mcu] no model could be quantized for the microcontroller")
    return None
