"""Face detector throughput on this machine: training images/s and inference latency.

Training step = prepare_batch + forward + MultiBoxLoss (matching included) + backward + SGD step
on random images at the model's training crop (640x640 RGB, 320x320 monochrome) with 6 random
faces per image. Inference = the model's forward on one image at its design input
(640x480 / 320x240), post-processing excluded.

    python benchmarks/bench_detector.py [--models rnnpool_face_quant ...] [--batch 4] [--iters 3]

Where a real training step's time goes (``--breakdown``) and old vs new code of the parts around
the model (``--ab``), on a synthetic WIDER-format set (``rnnpool make-faces``; made in a temporary
folder unless ``--data`` is given), batch 8, 2 threads by default:

    python benchmarks/bench_detector.py --breakdown --models rnnpool_face_m4 rnnpool_face_quant
    python benchmarks/bench_detector.py --ab --models rnnpool_face_m4 rnnpool_face_quant

``--breakdown``: median ms per part over ``--rounds`` steps: data (load + augmentation + collate
of the batch, ``DataLoader`` with 0 workers as ``train-detector``'s default), forward, loss
(matching, encoding, hard-negative mining; matching also alone), backward, optimizer; then the
prediction of one val image (``FacePredictor`` defaults) split into forward and post-processing
(decode + NMS). ``--ab``: the replaced implementations, kept literally in
``tests/detection/test_speed_paths.py``, are patched in for "old"; old and new alternate in each
round (same process, same inputs) and the median of the per-round ratios old/new is printed with
its min-max.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import platform
import statistics
import tempfile
import time
from pathlib import Path

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


# ----------------------------------------------------------------------------- breakdown and A/B
def _faces(data):
    if data:
        return data
    from rnnpool.data.synthetic_faces import make_faces

    root = Path(tempfile.mkdtemp(prefix="bench_faces_"))
    make_faces(root, num_train=64, num_val=8, seed=0)
    return str(root)


class _Parts:
    """Everything one training step and one prediction need, built once per model."""

    def __init__(self, name, root, batch):
        from rnnpool.data.widerface import WiderFaceDetection
        from rnnpool.detection.commands import build_train_set
        from rnnpool.detection.loss import MultiBoxLoss
        from rnnpool.detection.predict import FacePredictor

        torch.manual_seed(0)
        self.model = create_model(name)
        cfg = self.model.config
        self.train_set = build_train_set(
            "widerface", root, cfg.train_size, cfg.in_chans == 1, anchors=cfg.anchor_sizes
        )
        self.val_set = WiderFaceDetection(root, "val")
        self.batch, self.crit, self.i = batch, MultiBoxLoss(), 0
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9,
                                   weight_decay=5e-4)
        self.predictor = FacePredictor(self.model)

    def data(self):
        from rnnpool.data.detection_transforms import detection_collate

        n = len(self.train_set)
        items = [self.train_set[(self.i + k) % n] for k in range(self.batch)]
        self.i += self.batch
        return detection_collate(items)

    def step(self, t):
        """One training step; adds the seconds of each part to ``t``."""
        from rnnpool.detection.boxes import box_convert
        from rnnpool.detection.predict import prepare_batch

        m, cfg = self.model.train(), self.model.config
        t0 = time.perf_counter()
        images, targets = self.data()
        t1 = time.perf_counter()
        x = prepare_batch(images, cfg)
        cls, reg = m(x)
        t2 = time.perf_counter()
        anchors = m.anchors(tuple(x.shape[-2:]), device=torch.device("cpu"), dtype=torch.float32)
        gts = [tg["boxes"] for tg in targets]
        t3 = time.perf_counter()
        self.crit.matcher(gts, box_convert(anchors, "cxcywh", "xyxy"))
        t4 = time.perf_counter()
        loss, _ = self.crit(cls, reg, anchors, gts)
        t5 = time.perf_counter()
        self.opt.zero_grad()
        loss.backward()
        t6 = time.perf_counter()
        self.opt.step()
        t7 = time.perf_counter()
        for k, v in (("data", t1 - t0), ("forward", t2 - t1), ("loss", t5 - t4),
                     ("  (matching alone)", t4 - t3), ("backward", t6 - t5),
                     ("optimizer", t7 - t6)):
            t.setdefault(k, []).append(v)

    def predict(self, t, index=0):
        from rnnpool.detection.postprocess import postprocess_detections
        from rnnpool.detection.predict import prepare_batch

        p = self.predictor
        image = self.val_set[index % len(self.val_set)][0]
        hw = p.input_hw(image.shape[-2:])
        x = torch.nn.functional.interpolate(image[None], size=hw, mode="bilinear",
                                            antialias=hw[0] < image.shape[1])
        with torch.no_grad():
            t0 = time.perf_counter()
            cls, reg = p.model(prepare_batch(x.clamp(0, 1), p.config))
            t1 = time.perf_counter()
            postprocess_detections(
                cls, reg, p.model.anchors(hw), image_hw=hw, score_thresh=p.score_thresh,
                nms_thresh=p.nms_thresh, pre_nms_top_k=p.pre_nms_top_k,
                max_detections=p.max_detections)
            t2 = time.perf_counter()
        t.setdefault("predict: forward", []).append(t1 - t0)
        t.setdefault("predict: decode + NMS", []).append(t2 - t1)


def breakdown(names, root, batch, rounds):
    for name in names:
        parts = _Parts(name, root, batch)
        t = {}
        for i in range(rounds + 1):
            parts.step(t if i else {})  # the first step warms up allocators
            parts.predict(t if i else {}, i)
        med = {k: statistics.median(v) for k, v in t.items()}
        step = sum(v for k, v in med.items() if not k.startswith(("  ", "predict")))
        print(f"\n{name}: train step, batch {batch}, crop {parts.model.config.train_size}, "
              f"median of {rounds}: {1000 * step:.0f} ms")
        print("| part | ms | % of step |\n|---|---:|---:|")
        for k, v in med.items():
            share = f"{100 * v / step:.1f}" if not k.startswith("predict") else ""
            print(f"| {k} | {1000 * v:.1f} | {share} |")


def _references():
    path = Path(__file__).resolve().parents[1] / "tests" / "detection" / "test_speed_paths.py"
    spec = importlib.util.spec_from_file_location("_speed_refs", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def old_paths():
    """Patch the replaced implementations (literal copies in the tests) back in."""
    from rnnpool.data import detection_transforms as T
    from rnnpool.detection import boxes, loss, matcher, postprocess

    ref = _references()

    patches = {
        (boxes, "box_iou"): ref.ref_box_iou,
        (matcher, "box_iou"): ref.ref_box_iou,
        (postprocess, "nms"): lambda b, s, t, max_keep=None: ref.ref_nms(b, s, t),
        (loss, "hard_negative_mask"): ref.ref_hard_negative_mask,
        (T, "photometric_distort"): ref.ref_photometric_distort,
    }
    saved = {k: getattr(*k) for k in patches}
    try:
        for (mod, attr), fn in patches.items():
            setattr(mod, attr, fn)
        yield
    finally:
        for (mod, attr), fn in saved.items():
            setattr(mod, attr, fn)


def ab(names, root, batch, rounds):
    """Old vs new per part, interleaved; prints median old/new ratio and min-max."""
    import numpy as np

    from rnnpool.detection.boxes import box_convert, box_iou
    from rnnpool.detection.loss import hard_negative_mask

    ref = _references()
    for name in names:
        parts = _Parts(name, root, batch)
        m, cfg = parts.model, parts.model.config
        images, targets = parts.data()
        gts = [tg["boxes"] for tg in targets]
        s = cfg.train_size
        anchors = m.anchors((s, s), device=torch.device("cpu"), dtype=torch.float32)
        axy = box_convert(anchors, "cxcywh", "xyxy")
        gt = torch.cat(gts)
        with torch.no_grad():
            cls, reg = m(torch.randn(batch, cfg.in_chans, s, s))
        cls, reg = cls.detach().requires_grad_(), reg.detach().requires_grad_()
        positive = parts.crit.matcher(gts, axy) >= 0
        ce = torch.nn.functional.cross_entropy(
            cls.detach().reshape(-1, 2), positive.long().view(-1), reduction="none"
        ).view(batch, -1)
        item = parts.train_set.boxes[0], parts.train_set.image_paths[0]
        from rnnpool.data.detection_transforms import load_rgb

        pil = load_rgb(item[1])
        pred_in = [parts.val_set[i][0] for i in range(4)]

        def loss_step():
            parts.crit(cls, reg, anchors, gts)[0].backward()

        def augment():
            rng = np.random.default_rng(parts.i)
            parts.train_set.transform(pil, item[0], rng=rng)

        cases = {
            "box_iou (faces x anchors)": lambda: box_iou(gt, axy),
            "matching": lambda: parts.crit.matcher(gts, axy),
            "hard-negative mining": lambda: hard_negative_mask(ce, positive),
            "loss fwd+bwd (all)": loss_step,
            "augmentation per image (no decode)": augment,
            "predict 4 val images (FacePredictor)": lambda: [parts.predictor(x) for x in pred_in],
            "train step incl. data (batch)": lambda: parts.step({}),
        }
        # the new code, then the old; bit-identical results are asserted by the tests
        old_fns = {"box_iou (faces x anchors)": lambda: ref.ref_box_iou(gt, axy),
                   "hard-negative mining": lambda: ref.ref_hard_negative_mask(ce, positive)}
        print(f"\n{name}: old/new time ratio, median of {rounds} interleaved rounds [min-max]")
        print("| part | new ms | old/new | range |\n|---|---:|---:|---:|")
        for label, fn in cases.items():
            old_fn = old_fns.get(label, fn)
            fn(), old_fn()
            ratios, new_t = [], []
            for r in range(rounds):
                times = {}
                for which in (("new", "old") if r % 2 else ("old", "new")):
                    ctx = old_paths() if which == "old" else contextlib.nullcontext()
                    with ctx:
                        t0 = time.perf_counter()
                        (old_fn if which == "old" else fn)()
                        times[which] = time.perf_counter() - t0
                ratios.append(times["old"] / times["new"])
                new_t.append(times["new"])
            print(f"| {label} | {1000 * statistics.median(new_t):.1f} | "
                  f"{statistics.median(ratios):.2f}x | {min(ratios):.2f}-{max(ratios):.2f} |",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list_models("rnnpool_face_*"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--breakdown", action="store_true", help="time the parts of a real step")
    ap.add_argument("--ab", action="store_true", help="old vs new code of the parts, interleaved")
    ap.add_argument("--data", default=None, help="WIDER-format root (default: a synthetic set)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.breakdown or args.ab:
        root = _faces(args.data)
        models = args.models if args.models != list_models("rnnpool_face_*") else [
            "rnnpool_face_m4", "rnnpool_face_quant"]
        batch = args.batch if args.batch != 4 else 8
        print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, data {root}")
        for line in describe_cpu_use(torch.get_num_threads()).splitlines():
            print(f"# {line}")
        if args.breakdown:
            breakdown(models, root, batch, args.rounds)
        if args.ab:
            ab(models, root, batch, args.rounds)
        return
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
