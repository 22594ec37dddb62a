"""Tables and plot for docs/experiments.md from the JSON lines of fmnist_pooling.py.

    python experiments/fmnist_report.py --probe experiments/results/probe.jsonl \
        --ablation experiments/results/ablation.jsonl \
        --ablation-long experiments/results/ablation_10ep.jsonl --plot docs/fmnist_ablation_ram.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import OrderedDict
from pathlib import Path


def _load(path):
    groups = OrderedDict()
    if path and Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            groups.setdefault(r["model"], []).append(r)
    return groups


def _table(groups) -> str:
    out = ["| model | test acc % (mean ± std) | seeds | params | MAdds | peak RAM (fp32) | "
           "train img/s | command |", "|---|---|---|---|---|---|---|---|"]
    for name, rows in groups.items():
        accs = [100 * r["test_acc"] for r in rows]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        seeds = ",".join(str(r["seed"]) for r in rows)
        ips = statistics.mean(r["train_images_per_s"] for r in rows)
        r0 = rows[0]
        cmd = (f"python experiments/fmnist_pooling.py --models {name} --seeds {seeds.replace(',', ' ')}"
               f" --train-limit {r0['train_limit']} --epochs {r0['epochs']}"
               f" --batch-size {r0['batch_size']} --lr {r0['lr']}"
               + (" --augment" if r0.get("augment") else "") + " --results OUT.jsonl")
        out.append(f"| `{name}` | {statistics.mean(accs):.2f} ± {sd:.2f} | {seeds} | "
                   f"{r0['params']:,} | {r0['madds'] / 1e6:.2f} M | "
                   f"{r0['peak_ram_bytes'] / 1024:.1f} KiB | {ips:.0f} | "
                   + f"`{cmd}` |")
    return "\n".join(out)


def _plot(groups, path, longer=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (name, rows) in enumerate(groups.items()):
        accs = [100 * r["test_acc"] for r in rows]
        # models with the same peak RAM are spread by +-1 KiB so that their bars stay visible
        ram = rows[0]["peak_ram_bytes"] / 1024 + 0.8 * (k - (len(groups) - 1) / 2)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        ax.errorbar(ram, statistics.mean(accs), yerr=sd, fmt="o", capsize=4, label=name)
        ax.scatter([ram] * len(accs), accs, s=8, alpha=0.4, color="gray")
        if longer and name in longer:
            acc10 = [100 * r["test_acc"] for r in longer[name]]
            sd10 = statistics.stdev(acc10) if len(acc10) > 1 else 0.0
            ax.errorbar(ram, statistics.mean(acc10), yerr=sd10, fmt="s", mfc="none", capsize=3,
                        color=ax.lines[-1].get_color() if ax.lines else None,
                        label=f"{name}, {longer[name][0]['epochs']} epochs")
    ax.set_xlabel("peak RAM, fp32 activations (KiB, SPEC §2; points spread by <= 2 KiB)")
    ax.set_ylabel("Fashion-MNIST test accuracy (%)")
    ax.set_title("4x downsampler ablation, 6k training images\n(filled: 3 epochs, 3 seeds; hollow: longer runs)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--probe")
    p.add_argument("--ablation")
    p.add_argument("--ablation-long", help="the same models trained longer (hollow squares)")
    p.add_argument("--plot")
    args = p.parse_args(argv)
    probe, abl = _load(args.probe), _load(args.ablation)
    if probe:
        print("### Single-op probe\n\n" + _table(probe) + "\n")
    if abl:
        print("### Downsampler ablation\n\n" + _table(abl) + "\n")
        if args.plot:
            _plot(abl, args.plot, _load(args.ablation_long))
            print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
