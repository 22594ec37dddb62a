r"""Time per training step (forward + backward + SGD step) of MobileNetV2 vs MobileNetV2-RNNPool.

A published critique measured RNNPool models training 3.2x slower than the plain MobileNetV2.
This benchmark measures the ratio on this machine: batch of random 224x224 images, cross-entropy,
SGD with momentum, models from ``rnnpool.create_model`` in train mode. Models are timed in
alternating rounds (A, B, A, B, ...) so that load from other processes hits both alike; the
median step time per model is reported. It also times the RNNPool2d layer alone (forward +
backward at the shape it has in the model) to tell how much of the step it costs.

    python benchmarks/bench_train_step.py                       # batch 8, 224x224, CPU
    python benchmarks/bench_train_step.py --batch-size 32 --device cuda --amp
    python benchmarks/bench_train_step.py --models mobilenetv2 mobilenetv2_rnnpool \
        fmnist_cnn_rnnpool --size 28 --in-chans 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import List

import torch
import torch.nn.functional as F

from rnnpool.analysis.timing import describe_cpu_use
from rnnpool.models import create_model
from rnnpool.nn import RNNPool2d


def _step_fn(model, x, y, device, amp):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step():
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def _rnnpool_layers(model, x) -> List[tuple]:
    """(module, input shape at the full batch) of every RNNPool2d, found with forward hooks on
    a one-image pass."""
    found = []
    hooks = [m.register_forward_hook(lambda m, i, o: found.append((m, tuple(i[0].shape))))
             for m in model.modules() if isinstance(m, RNNPool2d)]
    with torch.no_grad():
        model.eval()(x[:1])
    model.train()
    for h in hooks:
        h.remove()
    return [(m, (x.shape[0],) + shape[1:]) for m, shape in found]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["mobilenetv2", "mobilenetv2_rnnpool"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=10, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, args.in_chans, args.size, args.size, device=device)
    y = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    steps, times, models = {}, {}, {}
    for name in args.models:
        kw = {"num_classes": args.num_classes}
        if args.in_chans != 3:
            kw["in_chans"] = args.in_chans
        m = create_model(name, **kw).to(device).train()
        models[name] = m
        steps[name] = _step_fn(m, x, y, device, args.amp and device.type == "cuda")
        times[name] = []
        for _ in range(args.warmup):
            steps[name]()
    use = describe_cpu_use(args.threads) if device.type == "cpu" else ""
    if use:
        print(use)
    for _ in range(args.rounds):
        for name in args.models:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)

    base = statistics.median(times[args.models[0]])
    print(f"train step, batch {args.batch_size}, {args.size}x{args.size}, {device}, "
          f"{args.threads} threads, median of {args.rounds}")
    print(f"{'model':<28} {'ms/step':>9} {'images/s':>9} {'vs ' + args.models[0]:>16}")
    for name in args.models:
        t = statistics.median(times[name])
        print(f"{name:<28} {1000 * t:9.1f} {args.batch_size / t:9.1f} {t / base:15.2f}x")

    # The RNNPool layers alone: forward + backward at their in-model shapes.
    for name, m in models.items():
        for layer, shape in _rnnpool_layers(m, x):
            inp = torch.randn(shape, device=device, requires_grad=True)
            lt = []
            for i in range(args.warmup + args.rounds):
                t0 = time.perf_counter()
                layer(inp).sum().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i >= args.warmup:
                    lt.append(time.perf_counter() - t0)
            t = statistics.median(lt)
            share = t / statistics.median(times[name])
            print(f"  {name}: {layer.__class__.__name__} on input {tuple(shape)}: fwd+bwd "
                  f"{1000 * t:.1f} ms = {100 * share:.0f} % of its train step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
