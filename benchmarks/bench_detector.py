"""Face detector throughput on this machine: training images/s and inference latency.

Training step = prepare_batch + forward + MultiBoxLoss (matching included) + backward + SGD step
on random images at the model's training crop (640x640 RGB, 320x320 monochrome) with 6 random
faces per image. Inference = the model's forward on one image at its design input
(640x480 / 320x240), post-processing excluded.

    python benchmarks/bench_detector.py [--models rnnpool_face_quant ...] [--batch 4] [--iters 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from rnnpool.analysis.timing import describe_cpu_use
from rnnpool.detection.commands import detection_loss_fn
from rnnpool.models import create_model, list_models


def random_targets(n: int, size: int, g: torch.Generator):
    out = []
    for _ in range(n):
        wh = torch.rand(6, 2, generator=g) * size / 4 + 8
        xy = torch.rand(6, 2, generator=g) * (size - wh)
        out.append({"boxes": torch.cat([xy, xy + wh], 1)})
    return out


def bench(name: str, batch: int, iters: int) -> dict:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = create_model(name)
    cfg = model.config
    size = cfg.train_size
    images = torch.rand(batch, 3, size, size, generator=g)
    targets = random_targets(batch, size, g)
    loss_fn = detection_loss_fn()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    times = []
    for i in range(iters + 1):
        t0 = time.perf_counter()
        loss, _ = loss_fn(model, (images, targets), torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators
            times.append(time.perf_counter() - t0)
    train_ips = batch / (sum(times) / len(times))
    # Inference: the model's forward at its design input (post-processing excluded: on an
    # untrained model nearly every anchor passes the score threshold, unlike a trained one).
    model.eval()
    h, w = cfg.input_size
    x = torch.randn(1, cfg.in_chans, h, w, generator=g)
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(iters):
            model(x)
    latency = (time.perf_counter() - t0) / iters
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "train_size": size,
        "train_ips": train_ips,
        "infer_hw": f"{w}x{h}",
        "infer_s": latency,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list_models("rnnpool_face_*"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}"
    )
    for line in describe_cpu_use(torch.get_num_threads()).splitlines():
        print(f"# {line}")
    print(
        f"| model | params | train crop | train images/s (batch {args.batch}) "
        "| inference input | forward s/image |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        r = bench(name, args.batch, args.iters)
        print(
            f"| {r['model']} | {r['params']:,} | {r['train_size']} | {r['train_ips']:.2f} | "
            f"{r['infer_hw']} | {r['infer_s']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
