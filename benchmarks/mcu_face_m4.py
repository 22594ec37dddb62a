"""Cortex-M4 figures of RNNPool-Face-M4 (320x240) and the tiny Fashion-MNIST model.

Quantizes each model (PTQ, synthetic calibration unless --calib), generates C with each
code-generation variant, links it for the Cortex-M4 with the RAM budget as the linker's RAM
LENGTH, runs it in QEMU (mps2-an386) through both APIs and prints a markdown table: RAM of the
row API (input rows and head maps inside the arena, the box list or output buffer, the painted
stack; the frame is read row by row by semihosting and never resident), flash, instructions per
image of ``rnnpool_model_run`` (whole buffer) and of the row API (``rnnpool_model_detect_rows``:
inference + decode), bit-exactness of both APIs. Variants whose total exceeds 128 KiB are
linked with a larger budget so they can be measured; the default is linked at 128 KiB.

    python benchmarks/mcu_face_m4.py [--weights CKPT] [--calib DIR] [--images 2]

Results and the command line are recorded in docs/deploy.md.
"""

from __future__ import annotations

import argparse
import time

from rnnpool.deploy.commands import load_model
from rnnpool.deploy.report import mcu_report

KIB = 1024
VARIANTS = [
    # (label, stream, RNNPool kernel in streamed groups, rows per call, boxes, budget, stack)
    ("row-streamed, incremental RNNPool row kernel, 100 boxes (default)", True, "row", 1, 100,
     128 * KIB, 1536),
    ("the same, 750 boxes", True, "row", 1, 750, 160 * KIB, 1536),
    ("row-streamed, RNNPool patch by patch, 750 boxes", True, "patch", 1, 750, 128 * KIB, 4096),
    ("row-streamed, RNNPool map kernel, 3 rows per call, 100 boxes", True, "map", 3, 100,
     160 * KIB, 1536),
    ("layer by layer (no streaming), 100 boxes", False, "row", 1, 100, 1024 * KIB, 4096),
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
        small = load_model("fmnist_cnn_rnnpool_hard", None, True)
        runs.append(("fmnist_cnn_rnnpool_hard", small, (1, 28, 28),
                     ("row-streamed, incremental RNNPool row kernel (default)", True, "row", 1,
                      100, 16 * KIB, 1536)))
    print("| model | variant | input rows | arena | boxes / outputs | static RAM | peak stack | "
          "total RAM | flash | instr. `run` | instr. row API | bit-exact (run, row API) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    profiles = []
    for name, model, chw, (label, stream, kernel, rows, boxes, budget, stack) in runs:
        t0 = time.time()
        rep = mcu_report(model, chw, model_name=name, calib=args.calib, calib_count=16,
                         ram_budget=budget, stack_bytes=stack, n_images=args.images,
                         stream=stream, rnnpool_kernel=kernel, rnnpool_rows=rows, profile=True,
                         timeout=1800, max_boxes=boxes)
        k = lambda b: f"{b / KIB:.1f} KiB"  # noqa: E731
        mark = "" if rep.total_ram_bytes <= 128 * KIB else " (> 128 KiB)"
        print(f"| {name} | {label} | {rep.input_rows_bytes} B | {k(rep.arena_bytes)} | "
              f"{k(rep.result_bytes)} | {k(rep.static_ram_bytes)} | {rep.stack_bytes} B | "
              f"{k(rep.total_ram_bytes)}{mark} | {k(rep.flash_bytes)} | "
              f"{min(rep.instructions) / 1e6:.1f} M | {min(rep.rows_instructions) / 1e6:.1f} M | "
              f"{'yes' if rep.bit_exact else 'NO'}, {'yes' if rep.rows_bit_exact else 'NO'} |",
              flush=True)
        profiles.append((name, label, rep, time.time() - t0))
    for name, label, rep, dt in profiles:
        print(f"\n{name}, {label} ({dt:.0f} s):")
        print(rep.format())


if __name__ == "__main__":
    main()
