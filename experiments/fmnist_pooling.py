"""Fashion-MNIST pooling experiments (docs/experiments.md), on CPU with the shared trainer.

(1) Single-op probe (paper appendix C.2): one operator maps the 28x28 image to 1x1, then a
    linear layer: fmnist_probe_{rnnpool,conv,avg,max}.
(2) Downsampler ablation: fmnist_cnn_{rnnpool,avgpool,maxpool,convpool,renet} (one 4x
    downsampler to the same 7x7x32 map) and fmnist_cnn_base (two stride-2 convolutions).

Each (model, seed) trains on the first --train-limit training images with the shared
`rnnpool.train.fit` (SGD momentum 0.9, wd 4e-5, cosine lr, no warm-up; no augmentation unless
--augment) and is evaluated once, after the last
epoch, on the FULL 10,000-image test set. One JSON line per run is appended to --results with
accuracy, parameters, MAdds and peak RAM (rnnpool.analysis.profile_model, fp32, SPEC §2
convention), training throughput and the exact command.

Example (the commands used for docs/experiments.md):
    python experiments/fmnist_pooling.py --models fmnist_probe_rnnpool fmnist_probe_conv \
        fmnist_probe_avg fmnist_probe_max --seeds 0 1 2 --results experiments/results/probe.jsonl
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from rnnpool.analysis import profile_model
from rnnpool.data.classification import DataSpec, build_datasets
from rnnpool.models import create_model
from rnnpool.train import TrainConfig, fit
from rnnpool.train.classification import classification_loss, evaluate_classifier


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-limit", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--augment", action="store_true",
                   help="random crop (padding 2) + flip on the training images (default: none)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", required=True)
    p.add_argument("--runs", default="runs/fmnist_pooling")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)

    spec = DataSpec("fashion-mnist", train_limit=args.train_limit, augment=args.augment)
    data = build_datasets(spec)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        prof = profile_model(create_model(name), 28)
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = create_model(name)
            cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              seed=seed, out_dir=f"{args.runs}/{name}/seed{seed}",
                              progress=False, metric="train_loss", metric_mode="min")
            t0 = time.perf_counter()
            out = fit(model, data["train"], classification_loss, cfg, model_name=name,
                      model_args={}, extra={"task": "classification", "data": spec.to_dict()})
            train_s = time.perf_counter() - t0
            r = evaluate_classifier(model, data["val"], "cpu", 500)
            h = out["history"]
            row = {
                "model": name, "seed": seed, "test_acc": r["acc"], "test_n": r["n"],
                "final_train_loss": h[-1]["train_loss"], "params": prof.params,
                "madds": prof.madds, "peak_ram_bytes": prof.peak_bytes,
                "peak_layer": prof.peak_layer,
                "train_images_per_s": sum(e["train_images_per_s"] for e in h) / len(h),
                "train_seconds": train_s, "epochs": args.epochs,
                "train_limit": args.train_limit, "batch_size": args.batch_size, "lr": args.lr,
                "threads": args.threads, "augment": args.augment, "command": command,
            }
            with open(args.results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} seed {seed}: test acc {100 * r['acc']:.2f} % "
                  f"({row['train_images_per_s']:.0f} img/s, {train_s:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
