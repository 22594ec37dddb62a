"""RNNPool2d speed at the paper's layer shapes, against the reference code's approach.

The baseline is the straightforward implementation the reference code uses: unfold the map
into patches, then run RNN1 over the rows and over the columns of the patch batch (input
projection inside every step), and RNN2's four sweeps one after the other. RNNPool2d runs with
its compiled CPU kernel (``backend="native"``, the default where it builds) and, for comparison,
in torch ops only (``backend="torch"``). All run in the same process, on the same inputs and
weights, interleaved (each round runs every implementation once, in turn); the table gives
the best times and the speed-up ratios over the baseline.

    python benchmarks/bench_rnnpool.py                # all shapes, 2 threads
    python benchmarks/bench_rnnpool.py --shapes vww --repeats 5
    python benchmarks/bench_rnnpool.py --device cuda  # on a GPU
    python benchmarks/bench_rnnpool.py --sets 5       # the table 5 times, then each ratio's
                                                      # range and median over the 5 sets
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rnnpool.analysis.timing import best_times, describe_cpu_use
from rnnpool.nn import RNNPool2d
from rnnpool.nn._native import native_available, native_status
from rnnpool.nn.functional import rnnpool2d_padding
from rnnpool.nn.unfold_baseline import unfold_rnnpool2d


@dataclass
class Shape:
    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    s: int
    h1: int
    h2: int


SHAPES = {
    "face-quant": Shape("Face-Quant", 2, 4, 320, 320, 8, 4, 8, 8),
    "face-m4": Shape("Face-M4", 4, 4, 120, 160, 8, 4, 16, 16),
    "mobilenetv2": Shape("MobileNetV2", 4, 32, 112, 112, 6, 4, 16, 16),
    "vww": Shape("VWW", 8, 8, 112, 112, 6, 4, 8, 8),
}


def bench(shape: Shape, repeats: int, device: str, backends: list[str]) -> dict:
    torch.manual_seed(0)
    layer = RNNPool2d(shape.c, shape.h1, shape.h2, shape.k, shape.s, padding="same").to(device)
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device, requires_grad=True)
    pads = rnnpool2d_padding((shape.h, shape.w), shape.k, shape.s, "same")

    def run_with(backend: str) -> Callable[[], torch.Tensor]:
        def fn() -> torch.Tensor:
            layer.backend = backend
            return layer(x)
        return fn

    def base():
        return unfold_rnnpool2d(x, layer.rnn1.params(), layer.rnn2.params(), shape.k, shape.s, pads)

    fns = {b: run_with(b) for b in backends}
    fns["base"] = base
    with torch.no_grad():
        y_base = base()
        for b in backends:
            y = fns[b]()
            err = (y - y_base).abs().max().item()
            assert y.shape == y_base.shape and err < 1e-4, f"{b} and baseline disagree: {err}"

    def fwd(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                fn()
        return run

    def fwd_bwd(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        return lambda: fn().sum().backward()

    res = {"shape": shape, "patches": y_base.shape[0] * y_base.shape[2] * y_base.shape[3]}
    for name, t in best_times({k: fwd(f) for k, f in fns.items()}, repeats, device).items():
        res[name + "_fwd"] = t
    for name, t in best_times({k: fwd_bwd(f) for k, f in fns.items()},
                              max(1, repeats // 2 + 1), device).items():
        res[name + "_fb"] = t
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sets", type=int, default=1,
                    help="run the whole table this many times, then summarise the ratios")
    args = ap.parse_args()
    if args.repeats < 1 or args.sets < 1 or args.threads < 1:
        ap.error("--repeats, --sets and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    backends = ["torch"]
    if args.device == "cpu":
        if native_available():
            backends.insert(0, "native")
        else:
            print(f"compiled kernel unavailable ({native_status()}): torch path only")
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"best of {args.repeats} runs "
          f"(forward+backward: best of {max(1, args.repeats // 2 + 1)})")
    hdr = (f"{'layer':<12} {'input':<15} {'k/s':>4} {'h1/h2':>6} {'backend':>7} | {'fwd ms':>8} "
           f"{'base ms':>8} {'ratio':>6} | {'f+b ms':>8} {'base ms':>8} {'ratio':>6} | "
           f"{'patches/s fwd':>13}")
    ratios: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.sets):
        # A busy machine makes every row slower, the baseline's too.
        use = describe_cpu_use(torch.get_num_threads()) if args.device == "cpu" else ""
        if use:
            print(use)
        print(hdr)
        print("-" * len(hdr))
        for key in args.shapes:
            r = bench(SHAPES[key], args.repeats, args.device, backends)
            s = r["shape"]
            for b in backends:
                fwd, fb = r["base_fwd"] / r[b + "_fwd"], r["base_fb"] / r[b + "_fb"]
                ratios.setdefault((s.name, b), []).append((fwd, fb))
                print(
                    f"{s.name:<12} {f'{s.n}x{s.c}x{s.h}x{s.w}':<15} {f'{s.k}/{s.s}':>4} "
                    f"{f'{s.h1}/{s.h2}':>6} {b:>7} | {r[b + '_fwd'] * 1e3:8.1f} "
                    f"{r['base_fwd'] * 1e3:8.1f} {fwd:5.1f}x | "
                    f"{r[b + '_fb'] * 1e3:8.1f} {r['base_fb'] * 1e3:8.1f} "
                    f"{fb:5.1f}x | {r['patches'] / r[b + '_fwd']:13.3g}",
                    flush=True,
                )
    if args.sets > 1:
        print(f"\nratios over {args.sets} sets: range (median)")
        for (name, b), v in ratios.items():
            fwd, fb = sorted(x[0] for x in v), sorted(x[1] for x in v)
            print(f"{name:<12} {b:>7} | fwd {fwd[0]:.1f}-{fwd[-1]:.1f}x "
                  f"({statistics.median(fwd):.1f}x) | f+b {fb[0]:.1f}-{fb[-1]:.1f}x "
                  f"({statistics.median(fb):.1f}x)")


if __name__ == "__main__":
    main()
