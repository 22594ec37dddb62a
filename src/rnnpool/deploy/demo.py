"""The deployment step of ``rnnpool demo``: int8 C on an emulated Cortex-M4.

:func:`mcu_demo` quantizes RNNPool-Face-M4 (320x240 monochrome; the given checkpoint, or seeded
random weights: RAM, flash and instruction figures do not depend on the weight values),
generates C, and when the Cortex-M4 toolchain is installed runs it in QEMU and prints the
measured RAM, flash and instructions. Given the trained checkpoint and its WIDER-format data
(``faces``), it calibrates on training images and prints the float and int8 AP on the val split.
If the detector cannot be quantized, it falls back to a small RNNPool classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

__all__ = ["mcu_demo"]

_FALLBACKS = ("fmnist_cnn_rnnpool_hard",)

#: Training images the trained detector is calibrated on.
CALIB_IMAGES = 32


def _candidates(weights: Optional[str]):
    """``(name, make)`` pairs; ``make()`` returns ``(model, trained)``."""
    from ..models import list_models
    from .commands import load_model

    def face():
        if weights is not None:
            try:
                return load_model("rnnpool_face_m4", str(weights), False), True
            except (ValueError, FileNotFoundError) as e:
                print(f"[mcu] cannot use {weights} ({e}); using seeded random weights")
        return load_model("rnnpool_face_m4", None, True), False

    yield "rnnpool_face_m4", face
    for name in _FALLBACKS:
        if name in list_models():
            yield name, (lambda n=name: (load_model(n, None, True), False))


def _ap_step(model, calib, faces: Path, work: Path, print_fn) -> dict:
    """Float vs int8 AP of the trained detector on the val split of ``faces``."""
    from .accuracy import detector_ap_float_vs_int8
    from .commands import model_input_chw, quantize_for_mcu

    g, _ = quantize_for_mcu(model, model_input_chw(model, None), calib)
    ap = detector_ap_float_vs_int8(model, g, faces, work / "ap")
    print_fn(f"[mcu] AP float vs int8 (synthetic val, {ap['images']} images, WIDER protocol, "
             "int8 = integer reference = the C outputs):")
    for name in ("float", "int8"):
        a = ap[name]
        print_fn(f"[mcu]   {name:5s}  easy {a['easy']:.3f}  medium {a['medium']:.3f}  "
                 f"hard {a['hard']:.3f}   ({ap['seconds'][name]:.1f} s)")
    return ap


def mcu_demo(workdir, weights: Optional[str] = None, print_fn=print,
             faces: Optional[str] = None) -> Optional[dict]:
    """Quantize, generate C, run on the emulated Cortex-M4 and print the figures.

    Args:
        workdir: folder for the generated C, builds and emulator files.
        weights: checkpoint of ``rnnpool_face_m4`` (None: seeded random weights).
        print_fn: where progress lines go.
        faces: the WIDER-format folder the checkpoint was trained on: with a checkpoint,
            calibrate on its first train images and report float vs int8 AP on its val split.

    Returns:
        A dict of the figures (``model``, ``arena_bytes``, ``total_ram_bytes``, ``flash_bytes``,
        ``instructions``, ``bit_exact``, and ``ap`` when measured), or None if no model could
        be deployed. Without the toolchain, only the C is generated (``instructions`` is None).
    """
    from ..quant.ptq import UnsupportedLayerError
    from . import codegen, mcu
    from .commands import model_input_chw, quantize_for_mcu
    from .report import mcu_report

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name, make in _candidates(weights):
        model, trained = make()
        chw = model_input_chw(model, None) if hasattr(model, "config") else None
        if chw is None:
            chw = model_input_chw(model, "28x28")
        calib, calib_count, ap_data = "synthetic", 8, None
        if trained and faces is not None and Path(faces).is_dir():
            from .accuracy import face_calibration

            calib = face_calibration(model, faces, CALIB_IMAGES)
            calib_count, ap_data = len(calib), Path(faces)
            print_fn(f"[mcu] {name}: PTQ calibrated on {calib_count} training images of {faces}")
        if mcu.find_toolchain() is None:
            try:
                g, _ = quantize_for_mcu(model, chw, calib, calib_count)
                g.meta["model"] = name
                m = codegen.generate_c(g, work / name / "c")
            except (UnsupportedLayerError, NotImplementedError) as e:
                print_fn(f"[mcu] {name}: cannot deploy yet ({str(e).splitlines()[0]})")
                continue
            print_fn(f"[mcu] {name}: int8 C in {work / name / 'c'}: arena {m.arena_bytes} B")
            print_fn("[mcu] Cortex-M4 toolchain not installed (gcc-arm-none-eabi, "
                     "libnewlib-arm-none-eabi, qemu-system-arm): skipping the emulator run")
            res = {"model": name, "arena_bytes": m.arena_bytes, "instructions": None}
            if ap_data is not None:
                res["ap"] = _ap_step(model, calib, ap_data, work / name, print_fn)
            return res
        try:
            # The configuration that fits Face-M4 in 128 KiB with the fewest instructions.
            rep = mcu_report(model, chw, model_name=name, calib=calib, calib_count=calib_count,
                             ram_budget=128 * 1024, stack_bytes=1536, n_images=1,
                             workdir=work / name, rnnpool_kernel="row")
        except (UnsupportedLayerError, NotImplementedError, mcu.MCUError) as e:
            print_fn(f"[mcu] {name}: cannot deploy ({str(e).splitlines()[0]})")
            continue
        print_fn(f"[mcu] {name}: generated C in {work / name / 'c'}, run on QEMU mps2-an386 "
                 "(Cortex-M4):")
        for line in rep.format().splitlines():
            print_fn(f"[mcu]   {line}")
        res = {"model": name, "arena_bytes": rep.arena_bytes,
               "total_ram_bytes": rep.total_ram_bytes, "flash_bytes": rep.flash_bytes,
               "instructions": min(rep.instructions), "bit_exact": rep.bit_exact,
               "report": rep}
        if ap_data is not None:
            res["ap"] = _ap_step(model, calib, ap_data, work / name, print_fn)
        return res
    print_fn("[mcu] no model could be quantized for the microcontroller")
    return None
