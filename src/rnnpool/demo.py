"""``rnnpool demo``: the most complete end-to-end path, on data that ships offline.

1. The operator: RNNPool2d at MobileNetV2-RNNPool's layer shape, its MAdds, and its speed-up
   over the unfold-into-patches implementation the reference code uses.
2. The memory claim: MobileNetV2 vs MobileNetV2-RNNPool, peak RAM / MAdds / parameters.
3. Classification: the shipped Fashion-MNIST RNNPool model evaluated on the real test set.
4. Face detection: a synthetic WIDER-format set (real LFW faces on real people-free photos),
   a few minutes of CPU training of RNNPool-Face-M4, WIDER-protocol AP, boxes drawn on photos.
5. Deployment: the trained detector quantized to int8, compiled to C and run on an emulated
   Cortex-M4 (when the toolchain is installed), with RAM, flash and instruction counts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on offline data",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="rnnpool-demo", help="output folder (default: rnnpool-demo)")
    p.add_argument("--minutes", type=float, default=3.0,
                   help="wall-clock minutes of face-detector training (default: 3)")
    p.add_argument("--quick", action="store_true",
                   help="a fast smoke run: tiny data, seconds of training, fewer test images")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["operator", "profile", "classify", "faces", "mcu"],
                   help="steps to leave out")
    p.set_defaults(func=run)


def _header(i: int, title: str) -> None:
    print(f"\n== {i}. {title} " + "=" * max(0, 70 - len(title)), flush=True)


def operator_step(quick: bool) -> dict:
    """RNNPool2d at MobileNetV2-RNNPool's layer shape: output, MAdds, speed-up over unfold."""
    import torch

    from .analysis.timing import best_times, contention_warning, cpu_use
    from .nn import RNNPool2d
    from .nn._native import native_available, native_status
    from .nn.functional import rnnpool2d_padding
    from .nn.unfold_baseline import unfold_rnnpool2d

    torch.manual_seed(0)
    pool = RNNPool2d(32, 16, 16, kernel_size=6, stride=4, padding="same")
    n = 1 if quick else 4
    x = torch.randn(n, 32, 112, 112)
    pads = rnnpool2d_padding((112, 112), 6, 4, "same")
    p1, p2 = pool.rnn1.params(), pool.rnn2.params()

    busy = contention_warning(cpu_use(0.2), torch.get_num_threads())
    with torch.no_grad():
        y = pool(x)
        err = (y - unfold_rnnpool2d(x, p1, p2, 6, 4, pads)).abs().max().item()
        t = best_times({"fast": lambda: pool(x),
                        "base": lambda: unfold_rnnpool2d(x, p1, p2, 6, 4, pads)}, 3)
        t_fast, t_base = t["fast"], t["base"]
    print(f"RNNPool2d(32, h1=16, h2=16, kernel 6, stride 4, 'same'): {tuple(x.shape)} -> "
          f"{tuple(y.shape)}")
    print(f"  per image: {pool.macs((112, 112)) / 1e6:.1f} M MAdds by the paper's formula, "
          f"{pool.executed_macs((112, 112)) / 1e6:.1f} M executed (shared row/column work)")
    kernel = ("compiled CPU kernel" if native_available()
              else f"torch ops; compiled kernel unavailable: {native_status()}")
    print(f"  forward ({kernel}) {t_fast * 1e3:.1f} ms vs {t_base * 1e3:.1f} ms unfold baseline: "
          f"{t_base / t_fast:.1f}x faster (max abs difference {err:.1e}); "
          f"full table: python benchmarks/bench_rnnpool.py")
    if busy:
        print(f"  {busy}")
    return {"speedup": t_base / t_fast, "max_abs_diff": err}


def profile_step() -> dict:
    """MobileNetV2 vs MobileNetV2-RNNPool at 224x224, 10 classes, the paper's accounting."""
    from .analysis.profile import compare, profile_model

    a = profile_model("mobilenetv2", 224, 4, num_classes=10)
    b = profile_model("mobilenetv2_rnnpool", 224, 4, num_classes=10)
    print(compare(a, b))
    return {"peak_bytes": (a.peak_bytes, b.peak_bytes)}


def run(args: argparse.Namespace) -> int:
    if not args.minutes > 0:  # also nan
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results: dict = {}
    step = 0
    if "operator" not in args.skip:
        step += 1
        _header(step, "RNNPool operator")
        results["operator"] = operator_step(args.quick)
    if "profile" not in args.skip:
        step += 1
        _header(step, "Peak RAM, MAdds, parameters (standard layer-by-layer accounting, fp32)")
        results["profile"] = profile_step()
    if "classify" not in args.skip:
        step += 1
        _header(step, "Fashion-MNIST: the shipped RNNPool model on the real test set")
        from .train.demo import demo_step

        results["classify"] = demo_step(limit=1000 if args.quick else None)
    checkpoint = None
    if "faces" not in args.skip:
        step += 1
        _header(step, "Face detection: synthetic WIDER-format set, CPU training, AP, drawn boxes")
        from .detection.demo import face_demo

        kw = dict(minutes=0.15, num_train=24, num_val=8, crop=128) if args.quick else dict(
            minutes=args.minutes)
        # Hard gates: the int8 kernels of step 5 implement them (SPEC §6).
        hard = {"gate": "hard_sigmoid", "update": "hard_tanh"}
        faces = face_demo(out / "faces-demo", model_args=hard, **kw)
        results["faces"] = faces
        checkpoint = faces.get("checkpoint")
        ap = faces.get("ap", {})
        print(f"AP (synthetic val, WIDER protocol): easy {ap.get('easy', float('nan')):.3f} "
              f"medium {ap.get('medium', float('nan')):.3f} "
              f"hard {ap.get('hard', float('nan')):.3f}")
        for img in faces.get("images", []):
            print(f"  boxes drawn: {img}")
    if "mcu" not in args.skip:
        step += 1
        _header(step, "Cortex-M4: int8 quantization, generated C, emulated run")
        from .deploy.demo import mcu_demo

        results["mcu"] = mcu_demo(out / "mcu-demo", weights=checkpoint,
                                  faces=Path(faces["data"]) if checkpoint else None)
    print(f"\ndemo finished in {time.perf_counter() - t_start:.0f} s; outputs in {out}/")
    return 0
