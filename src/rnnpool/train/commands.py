"""CLI: ``rnnpool train``, ``rnnpool evaluate`` and ``rnnpool make-vww``.

Examples::

    rnnpool train --model fmnist_cnn_rnnpool --data fashion-mnist --epochs 10 --out-dir runs/fm
    rnnpool train --model mobilenetv2_rnnpool --data /data/imagenet --imagenet10   # SPEC §3
    torchrun --standalone --nproc_per_node=4 -m rnnpool.cli train --model ... --data ...
    rnnpool evaluate runs/fm/best.pt --confusion
    rnnpool make-vww --coco /data/coco --out /data/vww --minival-ids mscoco_minival_ids.txt
"""

from __future__ import annotations

import argparse
import ast
from typing import Any, Dict, List

__all__ = ["register", "run_train", "run_evaluate", "run_make_vww", "parse_model_args",
           "create_model_from_args"]

# Per-format recipe defaults (SPEC §3 / §4); every value can be overridden by its flag.
_RECIPES: Dict[str, Dict[str, Any]] = {
    "imagenet10": {"epochs": 300, "batch_size": 256, "lr": 0.05},
    "imagefolder": {"epochs": 150, "batch_size": 256, "lr": 0.05},
    "vww": {"epochs": 150, "batch_size": 256, "lr": 0.05},
    # Not from the paper: a short CPU recipe for the 28x28 experiments.
    "fashion-mnist": {"epochs": 10, "batch_size": 128, "lr": 0.05},
}
_PER_DATA = ("epochs", "batch_size", "lr")


def register(sub: argparse._SubParsersAction) -> None:
    from .config import add_config_arguments

    p = sub.add_parser("train", help="train an image classifier (Fashion-MNIST, ImageNet-10, VWW)",
                       description="Train a registered model with the paper's recipe (SGD 0.9, "
                       "wd 4e-5, cosine lr). Defaults of --epochs/--batch-size/--lr depend on "
                       "the data: ImageNet-10 300/256/0.05, other image folders and VWW "
                       "150/256/0.05, Fashion-MNIST 10/128/0.05; --out-dir: runs/MODEL. "
                       "Under torchrun --batch-size is per process (the global batch is "
                       "nproc_per_node times it) and --lr is used as given.")
    p.add_argument("--model", required=True, help="registered model name (rnnpool list-models)")
    _add_data_arguments(p)
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra keyword for create_model (repeatable), e.g. in_chans=1")
    p.add_argument("--eval-batch-size", type=int, default=256)
    add_config_arguments(p, defaults={k: None for k in _PER_DATA} | {"out_dir": None})
    p.set_defaults(func=run_train)

    e = sub.add_parser("evaluate", help="top-1 accuracy of a classification checkpoint",
                       description="Evaluate a checkpoint on the evaluation split of its data "
                       "(default: the data and preprocessing it was trained with). Without a "
                       "checkpoint, the shipped Fashion-MNIST RNNPool model is evaluated.")
    e.add_argument("checkpoint", nargs="?", default=None,
                   help="checkpoint file (default: the shipped fmnist_rnnpool.pt)")
    e.add_argument("--data", default=None, help="data folder or 'fashion-mnist' (default: the "
                   "checkpoint's)")
    e.add_argument("--data-format", default="auto",
                   choices=["auto", "fashion-mnist", "imagefolder", "vww"])
    e.add_argument("--limit", type=int, default=None, help="evaluate only the first N images "
                   "(image folders: the first N of each class)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--workers", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--confusion", action="store_true", help="print per-class accuracy and the "
                   "confusion matrix")
    e.set_defaults(func=run_evaluate)

    v = sub.add_parser("make-vww", help="write Visual Wake Words labels from COCO annotations",
                       description="Label each COCO image 1 if a person covers more than 0.5 % "
                       "of it. Reads DIR/annotations/instances_{train,val}YEAR.json. The minival "
                       "id list (mscoco_minival_ids.txt) is not shipped: pass it with "
                       "--minival-ids; without it train=trainYEAR and val=valYEAR.")
    v.add_argument("--coco", required=True, metavar="DIR", help="COCO root folder")
    v.add_argument("--out", default=None, help="output folder (default: DIR/vww)")
    v.add_argument("--minival-ids", default=None, metavar="FILE",
                   help="file with one minival image id per line")
    v.add_argument("--year", default="2014")
    v.add_argument("--threshold", type=float, default=0.005)
    v.add_argument("--area", default="segmentation", choices=["segmentation", "bbox"],
                   help="object area: COCO 'area' field (reference builder) or bbox w*h")
    v.set_defaults(func=run_make_vww)


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="'fashion-mnist' (the Debian package's files), "
                   "an image folder with train/ and val/, or a make-vww output folder")
    p.add_argument("--data-format", default="auto",
                   choices=["auto", "fashion-mnist", "imagefolder", "vww"])
    p.add_argument("--imagenet10", action="store_true",
                   help="keep only the 10 ImageNet-10 WordNet-id class folders")
    p.add_argument("--image-size", type=int, default=224, help="training/eval crop (default 224)")
    p.add_argument("--resize-size", type=int, default=None,
                   help="eval resize of the shorter side (default floor(image_size*256/224))")
    p.add_argument("--scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="random-resized-crop area range (default 0.08 1; VWW 0.2 1)")
    p.add_argument("--train-limit", type=int, default=None,
                   help="use only the first N training images (image folders: per class)")
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--no-augment", dest="augment", action="store_false")


def parse_model_args(items: List[str]) -> Dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``: values parsed as Python literals if they can
    be, ``true`` / ``false`` in any case as booleans, else kept as strings.

    >>> parse_model_args(["in_chans=1", "pool_layer=maxpool", "scale=(0.5, 1)", "x=false"])
    {'in_chans': 1, 'pool_layer': 'maxpool', 'scale': (0.5, 1), 'x': False}
    """
    out: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--model-arg expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = {"true": True, "false": False}.get(v.strip().lower(), v)
    return out


def create_model_from_args(name: str, model_args: Dict[str, Any]):
    """``create_model(name, **model_args)``, with an argument the model does not take (an
    unknown ``--model-arg``) as a one-line ``ValueError`` instead of ``TypeError``."""
    from ..models import create_model

    try:
        return create_model(name, **model_args)
    except TypeError as e:
        raise ValueError(f"model {name}: {e}") from None


def _spec_from_args(args: argparse.Namespace):
    from ..data.classification import DataSpec, detect_format

    fmt = args.data_format if args.data_format != "auto" else detect_format(args.data)
    return DataSpec(format=fmt, root=args.data, imagenet10=args.imagenet10,
                    image_size=args.image_size, resize_size=args.resize_size,
                    scale=tuple(args.scale) if args.scale else None,
                    train_limit=args.train_limit, val_limit=args.val_limit, augment=args.augment)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from ..cli import parse_device
    from ..data.classification import build_datasets
    from ..models import create_model, is_model
    from .classification import classification_loss, make_evaluate
    from .config import config_from_args
    from .distributed import launched_as_main
    from .loop import fit

    if not is_model(args.model):
        create_model(args.model)  # raises the registry's "unknown model" error
    if args.eval_batch_size < 1:  # else an error only after the first epoch's training
        raise ValueError(f"--eval-batch-size must be >= 1, got {args.eval_batch_size}")
    parse_device(args.device)  # else a traceback from torch.device once training starts
    spec = _spec_from_args(args)
    recipe = _RECIPES["imagenet10" if spec.imagenet10 else spec.format]
    overrides = {k: recipe[k] for k in _PER_DATA if getattr(args, k) is None}
    if args.out_dir is None:
        overrides["out_dir"] = f"runs/{args.model}"
    config = config_from_args(args, **overrides)
    data = build_datasets(spec)
    model_args = {"num_classes": len(spec.classes)}
    if spec.format == "fashion-mnist" and not args.model.startswith("fmnist_"):
        # grey 28x28 input for the zoo models (which default to RGB)
        model_args["in_chans"] = 1
    model_args.update(parse_model_args(args.model_arg))
    n_out = model_args["num_classes"]
    if isinstance(n_out, int) and n_out < len(spec.classes):  # else IndexError in the loss
        raise ValueError(f"--model-arg num_classes must be >= {len(spec.classes)} (the data's "
                         f"classes), got {n_out}")
    # fit() seeds only after the model exists: seed its initial weights here so that --seed
    # makes the whole run reproducible (same on every rank; DDP broadcasts rank 0's anyway).
    torch.manual_seed(config.seed)
    model = create_model_from_args(args.model, model_args)
    if launched_as_main():  # under torchrun only rank 0 talks
        print(f"train {args.model} on {spec.format} ({len(data['train'])} train / "
              f"{len(data['val'])} val images, {len(spec.classes)} classes) -> {config.out_dir}")
    out = fit(model, data["train"], classification_loss, config,
              evaluate=make_evaluate(data["val"], args.eval_batch_size, config.workers),
              model_name=args.model, model_args=model_args,
              extra={"task": "classification", "data": spec.to_dict()})
    if out["best_metric"] is not None and launched_as_main():
        print(f"best {config.metric}: {out['best_metric']:.4f}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..cli import parse_device
    from ..data.classification import DataSpec, build_datasets, detect_format
    from ..weights import weights_path
    from .checkpoint import load_checkpoint, load_model_from_checkpoint
    from .classification import evaluate_classifier, format_confusion

    device = parse_device(args.device)
    path = args.checkpoint or weights_path()
    ckpt = load_checkpoint(path)
    task = (ckpt.get("extra") or {}).get("task")
    name = ckpt.get("model_name") or ""
    if task not in (None, "classification") or name.startswith("rnnpool_face"):
        raise ValueError(f"{path}: a {task or 'face detection'} checkpoint ({name or '?'}); "
                         "evaluate takes classification checkpoints (face detectors: "
                         "rnnpool widerface-predict --eval)")
    saved = ((ckpt.get("extra") or {}).get("data")) or {}
    if not saved and args.data is None:
        raise ValueError(f"{path}: checkpoint records no data set; pass --data")
    spec_d = dict(saved)  # its classes (image folders) fix the labels the model was trained on
    if args.data is not None:
        fmt = args.data_format if args.data_format != "auto" else detect_format(args.data)
        if fmt != spec_d.get("format"):
            spec_d = {"format": fmt}
        spec_d["root"] = args.data
    spec_d["val_limit"] = args.limit
    spec_d["train_limit"] = None
    if "scale" in spec_d and spec_d["scale"] is not None:
        spec_d["scale"] = tuple(spec_d["scale"])
    spec = DataSpec(**spec_d)
    val = build_datasets(spec, splits=("val",))["val"]
    model = load_model_from_checkpoint(path, map_location=device).to(device)
    n_out = (ckpt.get("model_args") or {}).get("num_classes")
    if n_out is not None and len(spec.classes) > n_out:
        raise ValueError(f"{spec.root}: {len(spec.classes)} classes but the model of {path} "
                         f"has {n_out} outputs")
    r = evaluate_classifier(model, val, device, args.batch_size, args.workers, progress=True)
    print(f"{path}: {ckpt.get('model_name')} on {spec.format} ({r['n']} images): "
          f"top-1 {100 * r['acc']:.2f} %, loss {r['loss']:.4f}")
    if args.confusion:
        # a model may have more outputs than the data has classes (--model-arg num_classes):
        # name the extra rows / columns instead of failing on them
        k = len(r["confusion"])
        names = list(spec.classes) + [f"output {i}" for i in range(len(spec.classes), k)]
        print(format_confusion(r["confusion"], names))
    return 0


def run_make_vww(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.vww import make_vww

    out = args.out or str(Path(args.coco) / "vww")
    info = make_vww(args.coco, out, args.minival_ids, args.year, args.threshold, args.area)
    for name, c in info["counts"].items():
        print(f"{name}: {c['images']} images, {c['person']} person / {c['no_person']} no person")
    print(f"split: {info['split']}")
    if info["minival_ids_not_in_coco"]:
        print(f"warning: {info['minival_ids_not_in_coco']} minival ids are not COCO images")
    print(f"wrote {out}/train.txt, {out}/val.txt, {out}/vww_info.json")
    return 0
