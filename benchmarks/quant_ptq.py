"""Quantization accuracy experiment (results go to docs/deploy.md, "Quantization" section).

1. Fashion-MNIST SmallCNN with an RNNPool downsampler (the training engineer's
   ``rnnpool.models.small.SmallCNN``, RNNPool patch 6 stride 4, h1 = h2 = 8), trained briefly here
   with the SOFT sigmoid / tanh (what most checkpoints use) and, separately, with the hard
   variants. PTQ (calibration images from the train split) -> int8 accuracy with the numpy
   integer reference (bit-exact with the C kernels) on test images; then QAT fine-tuning of the
   soft model and its int8 accuracy.
2. rnnpool_face_m4 (320x240 mono, hard gates, random weights + realistic BN statistics: no face
   checkpoint exists offline): per-layer error / SNR of the integer graph against the float
   activations on natural images (opencv-doc / scikit-image photos).

    python benchmarks/quant_ptq.py --train 12000 --epochs 2 --test 2000 --out runs/quant_ptq.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rnnpool.data.fashion_mnist import FashionMNIST
from rnnpool.models import create_model
from rnnpool.models.small import SmallCNN
from rnnpool.nn import RNNPool2d
from rnnpool.quant import ir
from rnnpool.quant.ptq import quantize_model
from rnnpool.quant.qat import convert, prepare_qat
from rnnpool.quant.report import accuracy, format_layer_errors, layer_errors


def small_cnn(hard: bool) -> SmallCNN:
    kw = dict(gate="hard_sigmoid", update="hard_tanh") if hard else {}

    def pool(cin, cout, kernel_size, stride):
        return RNNPool2d(cin, cout // 4, cout // 4, kernel_size, stride, padding="same", **kw)

    return SmallCNN(pool)


def train(model, x, y, epochs, lr=2e-3, bs=128, seed=0, freeze_bn=False):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr)
    steps = epochs * (len(x) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - bs + 1, bs):
            idx = perm[i:i + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def float_acc(model, x, y):
    return float((torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)]) == y)
                 .float().mean())


def natural_images(n: int, hw=(240, 320)) -> torch.Tensor:
    import cv2
    from skimage import data

    imgs = []
    d = Path("/usr/share/doc/opencv-doc/examples/data")
    for p in sorted(d.glob("*.jpg")) + sorted(d.glob("*.png")):
        im = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if im is not None and min(im.shape) >= 120:
            imgs.append(im)
    for f in ("camera", "astronaut", "coffee", "chelsea", "rocket"):
        im = getattr(data, f)()
        imgs.append(im if im.ndim == 2 else cv2.cvtColor(im, cv2.COLOR_RGB2GRAY))
    out = []
    for im in imgs[:n]:
        im = cv2.resize(im, (hw[1], hw[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        out.append((torch.from_numpy(im)[None] - 0.449) / 0.226)
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=12000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--calib", type=int, default=500)
    ap.add_argument("--out", default="runs/quant_ptq.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tr = FashionMNIST(split="train", limit=args.train)
    te = FashionMNIST(split="test", limit=args.test)
    xtr = tr.images[:, None].float() / 255
    xte = te.images[:, None].float() / 255
    ytr, yte = tr.targets, te.targets
    calib = xtr[:args.calib]
    lines = [f"Command: `python benchmarks/quant_ptq.py --train {args.train} "
             f"--epochs {args.epochs} --test {args.test} --calib {args.calib}`", ""]
    lines += ["| model | float top-1 | int8 top-1 (PTQ) | float/int8 agreement |",
              "|---|---|---|---|"]
    models = {}
    for hard in (True, False):
        t0 = time.time()
        m = train(small_cnn(hard), xtr, ytr, args.epochs)
        g = quantize_model(m, calib)
        acc = accuracy(m, g, xte, yte)
        name = f"SmallCNN-RNNPool ({'hard' if hard else 'soft'} gates)"
        models[hard] = (m, g)
        lines.append(f"| {name} | {acc['float_top1']:.4f} | {acc['int8_top1']:.4f} | "
                     f"{acc['agreement']:.4f} |")
        print(lines[-1], f"({time.time() - t0:.0f}s)", flush=True)
    # QAT of the soft model: hard gates + fake quant, one epoch at a low learning rate.
    t0 = time.time()
    soft = models[False][0]
    qat = train(prepare_qat(soft), xtr, ytr, 1, lr=5e-4, freeze_bn=True)
    gq = convert(qat, calib)
    acc = accuracy(qat.source, gq, xte, yte)
    with torch.no_grad():
        qat_f = float_acc(qat, xte, yte)
    lines.append(f"| soft model after 1 QAT epoch (float = fake-quant model) | {qat_f:.4f} | "
                 f"{acc['int8_top1']:.4f} | - |")
    print(lines[-1], f"({time.time() - t0:.0f}s)", flush=True)
    m, g = models[True]
    lines += ["", format_layer_errors(layer_errors(m, g, xte[:50]),
                                      "SmallCNN-RNNPool (hard gates), PTQ, 50 test images")]
    # Face M4 per-layer errors.
    sys.path.insert(0, str(ROOT / "tests"))
    from quant._models import randomize_bn

    torch.manual_seed(0)
    face = randomize_bn(create_model("rnnpool_face_m4", gate="hard_sigmoid", update="hard_tanh"))
    imgs = natural_images(40)
    t0 = time.time()
    gf = quantize_model(face, imgs[:-4])
    rows = layer_errors(face, ir.fuse_mbconv(gf) if False else gf, imgs[-4:])
    lines += ["", format_layer_errors(
        rows, f"rnnpool_face_m4 320x240 (random weights, hard gates), PTQ on {len(imgs) - 4} "
              "natural images, errors on 4 others")]
    print(f"face: {time.time() - t0:.0f}s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
