"""Cortex-M4 figures of RNNPool-Face-M4 (320x240) and the tiny Fashion-MNIST model.

Quantizes each model (PTQ, synthetic calibration unless --calib), generates C with each
code-generation variant, links it for the Cortex-M4 with the RAM budget as the linker's RAM
LENGTH, runs it in QEMU (mps2-an386) and prints a markdown table: arena, static RAM, painted
stack, flash, instructions per image (TCG plugin), bit-exactness against the integer reference.

    python benchmarks/mcu_face_m4.py [--weights CKPT] [--calib DIR] [--images 2]

Results and the command line are recorded in docs/deploy.md.
"""

from __future__ import annotations

import argparse
import time

from rnnpool.deploy.commands import load_model
from rnnpool.deploy.report import mcu_report

VARIANTS = [
    # (label, stream, RNNPool kernel in streamed groups, rows per call, ram budget, stack)
    ("row-streamed, incremental RNNPool row kernel (default)", True, "row", 1, 128 * 1024, 1536),
    ("row-streamed, RNNPool patch by patch", True, "patch", 1, 128 * 1024, 4096),
    ("row-streamed, RNNPool map kernel, 3 rows per call", True, "map", 3, 128 * 1024, 1536),
    ("layer by layer (no streaming)", False, "row", 1, 1024 * 1024, 4096),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="rnnpool_face_m4 checkpoint (default: random)")
    ap.add_argument("--calib", default="synthetic")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--skip-small", action="store_true")
    args = ap.parse_args()

    face = load_model("rnnpool_face_m4", args.weights, args.weights is None)
    runs = [("rnnpool_face_m4", face, (1, 240, 320), v) for v in VARIANTS]
    if not args.skip_small:
        small = load_model("fmnist_cnn_rnnpool", None, True)
        runs.append(("fmnist_cnn_rnnpool", small, (1, 28, 28),
                     VARIANTS[0][:4] + (16 * 1024, 1536)))
    print("| model | variant | arena | static RAM | peak stack | total RAM | flash | "
          "instructions / image | bit-exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    profiles = []
    for name, model, chw, (label, stream, kernel, rows, budget, stack) in runs:
        t0 = time.time()
        rep = mcu_report(model, chw, model_name=name, calib=args.calib, calib_count=16,
                         ram_budget=budget, stack_bytes=stack, n_images=args.images,
                         stream=stream, rnnpool_kernel=kernel, rnnpool_rows=rows, profile=True,
                         timeout=1800)
        k = lambda b: f"{b / 1024:.1f} KiB"  # noqa: E731
        print(f"| {name} | {label} | {k(rep.arena_bytes)} | {k(rep.static_ram_bytes)} | "
              f"{rep.stack_bytes} B | {k(rep.total_ram_bytes)} | {k(rep.flash_bytes)} | "
              f"{min(rep.instructions) / 1e6:.1f} M | {'yes' if rep.bit_exact else 'NO'} |",
              flush=True)
        profiles.append((name, label, rep, time.time() - t0))
    for name, label, rep, dt in profiles:
        print(f"\n{name}, {label} ({dt:.0f} s):")
        print(rep.format())


if __name__ == "__main__":
    main()
