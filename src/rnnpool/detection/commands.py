"""``rnnpool train-detector``, ``rnnpool detect`` and ``rnnpool widerface-predict``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._io import atomic_output

__all__ = [
    "M4_SPARSITY",
    "build_train_set",
    "detection_loss_fn",
    "draw_detections",
    "make_ap_evaluator",
    "predict_widerface",
    "reapply_sparsity",
    "register",
    "sparsify_rnnpool",
]

#: SPEC §5, RNNPool-Face-M4: fraction of non-zero entries (RNN1 W, everything else).
M4_SPARSITY = (0.5, 0.3)

#: TrainConfig defaults of SPEC §5 for face detectors.
DETECTOR_DEFAULTS = {
    "epochs": 300,
    "batch_size": 32,
    "lr": 0.01,
    "warmup_epochs": 5.0,
    "weight_decay": 5e-4,
    "metric": "val_ap",
    "out_dir": "runs/face",
}


# ----------------------------------------------------------------------------- training parts
def detection_loss_fn(criterion: Callable | None = None) -> Callable:
    """``loss_fn(model, batch, device)`` for :func:`rnnpool.train.fit`: ``batch`` is
    ``(images [B, C, H, W] in [0, 1], targets)`` from ``detection_collate``; images are converted
    and normalised with :func:`~rnnpool.detection.predict.prepare_batch`, anchors come from the
    model and the loss is :class:`~rnnpool.detection.loss.MultiBoxLoss`.

    Under ``DistributedDataParallel`` (``model`` wrapped by :func:`~rnnpool.train.fit` when run
    by torchrun) the loss is divided by the positive anchors of all processes instead of this
    process's own, so that the averaged gradient is the one of a single process with the global
    batch (``logs`` averaged over the processes likewise). ``criterion`` must return a loss
    divided by ``max(P, 1)`` and ``logs["num_pos"]`` = ``P`` / images, as ``MultiBoxLoss``."""
    from torch.nn.parallel import DistributedDataParallel

    from .loss import MultiBoxLoss
    from .predict import prepare_batch, unwrap

    criterion = criterion or MultiBoxLoss()

    def loss_fn(
        model: nn.Module, batch: Any, device: torch.device
    ) -> tuple[Tensor, dict[str, float]]:
        images, targets = batch
        m = unwrap(model)
        x = prepare_batch(images.to(device, non_blocking=True), m.config)
        cls, reg = model(x)
        anchors = m.anchors(tuple(x.shape[-2:]), device=device, dtype=torch.float32)
        loss, logs = criterion(cls, reg, anchors, [t["boxes"].to(device) for t in targets])
        if isinstance(model, DistributedDataParallel):
            loss, logs = _normalise_over_ranks(loss, logs, len(targets), model, device)
        return loss, logs

    return loss_fn


def _normalise_over_ranks(
    loss: Tensor, logs: dict[str, float], batch_size: int, model: Any, device: torch.device
) -> tuple[Tensor, dict[str, float]]:
    """Rescale a loss divided by this rank's ``max(P_r, 1)`` to ``W / max(sum_r P_r, 1)``: DDP's
    mean over the ``W`` ranks then gives ``sum_r S_r / max(sum_r P_r, 1)``."""
    import torch.distributed as dist

    if "num_pos" not in logs:
        raise ValueError(
            "the detection criterion's logs have no 'num_pos' (positives per image): needed to "
            "normalise the loss over the processes of a distributed run"
        )
    group = model.process_group
    world = dist.get_world_size(group)
    num_pos = round(logs["num_pos"] * batch_size)  # exact: an integer count divided by B
    total = torch.tensor([float(num_pos)], dtype=torch.float64, device=device)
    dist.all_reduce(total, group=group)
    scale = max(num_pos, 1) * world / max(float(total.item()), 1.0)
    logs = {k: (v * scale if k in ("loss_cls", "loss_box") else v) for k, v in logs.items()}
    return loss * scale, logs


def make_ap_evaluator(val_set: Any, max_images: int | None = None, **predictor_kw: Any) -> Callable:
    """``evaluate(model, device) -> {"val_ap": AP}``: VOC AP at IoU 0.5
    (:func:`rnnpool.detection.evaluation.detection_ap`) of :class:`FacePredictor` detections
    on the first ``max_images`` items of ``val_set`` (items as the data sets return them with
    ``transform=None``: the whole image and its boxes)."""
    from .evaluation import detection_ap
    from .predict import FacePredictor

    n = len(val_set) if max_images is None else min(len(val_set), max_images)

    def evaluate(model: nn.Module, device: torch.device) -> dict[str, float]:
        pred = FacePredictor(model, device=device, **predictor_kw)
        preds, gts = [], []
        for i in range(n):
            image, target = val_set[i]
            preds.append(pred(image))
            gts.append(target["boxes"])
        return {"val_ap": float(detection_ap(preds, gts))}

    return evaluate


def _pools(model: nn.Module) -> list[nn.Module]:
    from ..nn import RNNPool2d

    return [m for m in model.modules() if isinstance(m, RNNPool2d)]


def sparsify_rnnpool(
    model: nn.Module, keep_w1: float = M4_SPARSITY[0], keep_other: float = M4_SPARSITY[1]
) -> int:
    """Hard-threshold every RNNPool2d in ``model``: RNN1's ``W`` keeps ``keep_w1`` of its entries,
    RNN1's ``U`` and RNN2's ``W``, ``U`` keep ``keep_other`` (SPEC §5, M4: 50 % / 30 %).
    Returns the number of RNNPool layers sparsified."""
    pools = _pools(model)
    for p in pools:
        p.rnn1.sparsify_(keep_w1, keep_other)
        p.rnn2.sparsify_(keep_other, keep_other)
    return len(pools)


def reapply_sparsity(model: nn.Module) -> None:
    """``after_step`` hook: zero the pruned RNNPool entries again after an optimizer step."""
    for p in _pools(model):
        p.rnn1.apply_sparsity_()
        p.rnn2.apply_sparsity_()


def build_train_set(
    dataset: str,
    root: str,
    size: int,
    grayscale: bool,
    split: str = "train",
    anchors: Sequence[float] | None = None,
) -> Any:
    """The training set of ``dataset`` (``"widerface"`` or ``"scut"``) with the SPEC §5
    augmentation at ``size x size``; ``anchors`` (the model's anchor sizes in input pixels)
    steer data-anchor-sampling."""
    from ..data.detection_transforms import train_transform

    kw = {} if anchors is None else {"anchors": tuple(float(a) for a in anchors)}
    t = train_transform(size=size, grayscale=grayscale, **kw)
    return _dataset(dataset, root, split, t)


def _dataset(dataset: str, root: str, split: str, transform: Any) -> Any:
    if dataset == "widerface":
        from ..data.widerface import WiderFaceDetection

        return WiderFaceDetection(root, split, transform=transform)
    if dataset == "scut":
        try:
            from ..data.scut_head import ScutHeadDetection
        except ImportError as e:
            raise ValueError(f"SCUT-HEAD loader unavailable: {e}") from None
        return ScutHeadDetection(root, split, transform)
    raise ValueError(f"--dataset must be 'widerface' or 'scut', got {dataset!r}")


# ----------------------------------------------------------------------------- drawing
def draw_detections(image: Any, boxes: Tensor, scores: Tensor, color: str = "lime") -> Any:
    """Draw boxes and scores on a copy of a ``PIL.Image`` (RGB) and return it."""
    from PIL import ImageDraw

    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    lw = max(1, round(max(out.size) / 300))
    for (x1, y1, x2, y2), s in zip(boxes.tolist(), scores.tolist()):
        d.rectangle([x1, y1, x2, y2], outline=color, width=lw)
        label = f"{s:.2f}"
        ty = y1 - 11 if y1 >= 11 else y2 + 1
        d.rectangle([x1, ty, x1 + 6 * len(label) + 2, ty + 10], fill=color)
        d.text((x1 + 1, ty), label, fill="black")
    return out


def _save_image_atomic(image: Any, path: Path) -> Path:
    from PIL import Image

    ext = path.suffix.lower()
    if (
        ext not in Image.registered_extensions()
        or Image.registered_extensions()[ext] not in Image.SAVE
    ):
        path = path.with_suffix(".png")
    fmt = Image.registered_extensions()[path.suffix.lower()]
    with atomic_output(path) as tmp:
        image.save(tmp, format=fmt)
    return path


# ----------------------------------------------------------------------------- prediction
def predict_widerface(
    predictor: Any,
    root: str,
    pred_dir: str,
    split: str = "val",
    tta: bool = False,
    progress: bool = True,
    limit: int | None = None,
) -> int:
    """Write the official submission files (``<pred_dir>/<event>/<image>.txt``, boxes by
    decreasing score) for every image of a WIDER-format ``split``; returns the image count."""
    from ..data.detection_transforms import load_rgb
    from ..data.widerface import list_split_images, split_image_dir
    from .evaluation import write_wider_prediction
    from .tta import tta_predict

    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")  # [:-1] would drop an image
    names = list_split_images(root, split)[:limit]
    image_dir = split_image_dir(root, split)
    for rel in names:  # before writing anything: no half-written prediction folder
        if not (image_dir / rel).is_file():
            raise FileNotFoundError(
                f"image listed for split {split!r} not found: {image_dir / rel}"
            )
    it = names
    if progress:
        from tqdm import tqdm

        it = tqdm(names, desc=f"widerface-predict {split}", unit="img")
    for rel in it:
        image = load_rgb(image_dir / rel)
        boxes, scores = tta_predict(predictor, image) if tta else predictor(image)
        order = torch.sort(scores, descending=True, stable=True).indices
        write_wider_prediction(pred_dir, rel, boxes[order], scores[order])
    return len(names)


def _predictor(args: argparse.Namespace, **kw: Any):
    from ..cli import parse_device
    from .predict import FacePredictor

    if not 0 <= args.thresh <= 1:  # scores are probabilities; also catches nan
        raise ValueError(f"--thresh must be in [0, 1], got {args.thresh}")
    size = _parse_size(args.size)
    device = parse_device(args.device)
    return FacePredictor.from_checkpoint(args.weights, args.model, size=size, device=device, **kw)


def _parse_size(text: str | None) -> Any:
    if text is None or text == "auto":
        return "auto"
    if text == "native":
        return None
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x")
            size = (int(h), int(w))
        else:
            size = float(text) if "." in text else int(text)
    except ValueError:
        raise ValueError(
            f"--size must be 'auto', 'native', a scale like 0.5, a long side like 640 "
            f"or WxH like 320x240, got {text!r}"
        ) from None
    if min(size if isinstance(size, tuple) else (size,)) <= 0:
        raise ValueError(f"--size must be positive, got {text!r}")
    return size


# ----------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> None:
    from ..train.config import add_config_arguments

    p = subparsers.add_parser(
        "train-detector",
        help="train an RNNPool face (or head) detector",
        description="Train a face model (rnnpool_face_*) on WIDER FACE or SCUT-HEAD with the S3FD "
        "loss; SGD with warm-up + cosine (SPEC §5 defaults). Multi-GPU: torchrun "
        "--nproc_per_node=N -m rnnpool.cli train-detector ...",
    )
    p.add_argument(
        "--model",
        required=True,
        help="model name (see `rnnpool list-models`), e.g. rnnpool_face_quant",
    )
    p.add_argument("--data", required=True, help="data set root")
    p.add_argument("--dataset", default="widerface", choices=("widerface", "scut"))
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="training crop side (default: the model's, 640 or 320)",
    )
    p.add_argument(
        "--init", default=None, help="start from the weights of this checkpoint (fine-tuning)"
    )
    p.add_argument(
        "--sparsity",
        action="store_true",
        help="prune RNNPool matrices (RNN1 W to 50%% non-zero, the others 30%%) and keep "
        "them pruned after every step (M4 fine-tune)",
    )
    p.add_argument(
        "--eval-images",
        type=int,
        default=100,
        help="val images for the per-epoch AP (0: no evaluation; best.pt then tracks train loss)",
    )
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra model keyword argument, e.g. gate=hard_sigmoid (repeatable)",
    )
    add_config_arguments(p, DETECTOR_DEFAULTS)
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "detect",
        help="draw detected faces on images",
        description="Detect faces and save each image with boxes and scores drawn.",
    )
    p.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    p.add_argument("--weights", required=True, help="checkpoint (from train-detector)")
    p.add_argument(
        "--model", default=None, help="model name (default: the one stored in the checkpoint)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--thresh", type=float, default=0.5, help="score threshold (default 0.5)")
    p.add_argument(
        "--size",
        default="auto",
        help="inference size: auto, native, a scale (0.5), a long side (640) or WxH",
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_detect)

    p = subparsers.add_parser(
        "widerface-predict",
        help="write WIDER FACE submission files",
        description="Run a face model on a WIDER-format split and write one "
        "<event>/<image>.txt per image (official format, sorted by score).",
    )
    p.add_argument("--weights", required=True)
    p.add_argument(
        "--model", default=None, help="model name (default: the one stored in the checkpoint)"
    )
    p.add_argument(
        "--data", required=True, help="WIDER FACE root (WIDER_<split>/, wider_face_split/)"
    )
    p.add_argument("--out", required=True, help="prediction folder")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument(
        "--tta", action="store_true", help="multi-scale (0.5, 1, 1.5) + flip with box voting"
    )
    p.add_argument("--thresh", type=float, default=0.05, help="score threshold (default 0.05)")
    p.add_argument("--size", default="auto", help="as for detect")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument(
        "--eval", action="store_true", help="then print the WIDER AP (needs the val .mat files)"
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_widerface_predict)


def _train(args: argparse.Namespace) -> int:
    from ..cli import parse_device
    from ..data.detection_transforms import detection_collate
    from ..models import is_model
    from ..train import config as train_config
    from ..train import fit
    from ..train.checkpoint import load_checkpoint
    from ..train.commands import create_model_from_args, parse_model_args
    from ..train.distributed import launched_as_main

    if not is_model(args.model) or not args.model.startswith("rnnpool_face"):
        raise ValueError(f"--model must be a face model (rnnpool_face_*), got {args.model!r}")
    # Before any work: 0 would silently mean the default size, -1 no evaluation.
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be >= 1, got {args.size}")
    if args.eval_images < 0:
        raise ValueError(f"--eval-images must be >= 0, got {args.eval_images}")
    parse_device(args.device)  # else a traceback from torch.device once training starts
    model_args = parse_model_args(args.model_arg)
    torch.manual_seed(args.seed)  # fit() seeds after the model exists: seed its initial weights
    model = create_model_from_args(args.model, model_args)
    if args.init and not args.resume:  # a resumed run's weights come from its checkpoint
        state = load_checkpoint(args.init)
        state = state.get("model", state)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(
                f"{args.init}: weights do not fit {args.model}: {str(e).strip().splitlines()[0]}"
            ) from None
    if args.sparsity:
        n = sparsify_rnnpool(model)
        if n == 0:
            raise ValueError(f"--sparsity: {args.model} has no RNNPool layer")
    cfg = model.config
    size = args.size or cfg.train_size
    train_set = build_train_set(
        args.dataset, args.data, size, cfg.in_chans == 1, anchors=cfg.anchor_sizes
    )
    evaluate = None
    overrides: dict[str, Any] = {}
    if args.eval_images > 0:
        val_set = _dataset(args.dataset, args.data, "val", None)
        evaluate = make_ap_evaluator(
            val_set, args.eval_images, score_thresh=0.05, pre_nms_top_k=1000
        )
    elif args.metric == "val_ap":
        overrides = {"metric": "train_loss", "metric_mode": "min"}
    config = train_config.config_from_args(args, **overrides)
    result = fit(
        model,
        train_set,
        detection_loss_fn(),
        config,
        collate_fn=detection_collate,
        evaluate=evaluate,
        after_step=reapply_sparsity if args.sparsity else None,
        model_name=args.model,
        model_args=model_args,
        extra={
            "task": "face_detection",
            "dataset": args.dataset,
            "train_size": size,
            "sparsity": M4_SPARSITY if args.sparsity else None,
            "eval_images": args.eval_images,
        },
    )
    best = result["best_metric"]
    if launched_as_main():  # under torchrun only rank 0 talks
        print(
            f"done: best {config.metric} = {best if best is None else round(best, 4)}; "
            f"checkpoints in {config.out_dir}"
        )
    return 0


def _detect(args: argparse.Namespace) -> int:
    from PIL import Image

    from .predict import to_image_tensor

    pred = _predictor(args, score_thresh=args.thresh)
    out_dir = Path(args.out)
    seen: dict[str, str] = {}
    for path in args.images:  # before writing anything: no half-done output folder
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image not found: {path}")
        try:
            Image.open(path).close()  # reads the header only
        except OSError as e:
            raise ValueError(f"{path}: not a readable image ({e})") from None
        name = Path(path).name
        if name in seen:  # the second drawing would replace the first
            raise ValueError(f"{seen[name]} and {path} would both be saved as {out_dir / name}")
        seen[name] = path
    for path in args.images:
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except OSError as e:
            raise ValueError(f"{path}: not a readable image ({e})") from None
        boxes, scores = pred(to_image_tensor(image))
        saved = _save_image_atomic(draw_detections(image, boxes, scores), out_dir / Path(path).name)
        print(f"{path}: {len(boxes)} face(s) -> {saved}")
    return 0


def _widerface_predict(args: argparse.Namespace) -> int:
    pred = _predictor(args, score_thresh=args.thresh)
    t0 = time.perf_counter()
    n = predict_widerface(
        pred,
        args.data,
        args.out,
        args.split,
        tta=args.tta,
        progress=sys.stderr.isatty(),
        limit=args.limit,
    )
    print(
        f"wrote {n} prediction files to {args.out} ({time.perf_counter() - t0:.1f} s"
        f"{', TTA' if args.tta else ''})"
    )
    if args.eval:
        from .evaluation import WIDER_SETTINGS, widerface_evaluate

        res = widerface_evaluate(
            args.out,
            Path(args.data) / "wider_face_split",
            missing="empty" if args.limit else "error",
        )
        print("AP " + "  ".join(f"{s} {res[s]:.4f}" for s in WIDER_SETTINGS))
    return 0
