"""``rnnpool make-faces``: write the synthetic WIDER-FACE-format set
(:mod:`rnnpool.data.synthetic_faces`)."""

from __future__ import annotations

import argparse
import os

__all__ = ["register"]


def _size(text: str):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 640x480, got {text!r}"
        ) from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return w, h


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "make-faces",
        help="write a synthetic WIDER-FACE-format face set from offline images",
        description=(
            "Paste the 100 real faces of skimage's lfw_subset onto people-free photographs "
            "(opencv-doc, scikit-image) and write WIDER_{train,val}/images, "
            "wider_face_split/*_bbx_gt.txt and the val evaluation .mat files."
        ),
    )
    p.add_argument("dir", help="output folder (the data set root)")
    p.add_argument("--train", type=int, default=200, help="training images (default 200)")
    p.add_argument("--val", type=int, default=50, help="validation images (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--size", type=_size, default=(640, 480), help="image size WxH (default 640x480)"
    )
    p.add_argument("--min-face", type=int, default=12, help="smallest face side in px (default 12)")
    p.add_argument(
        "--max-face", type=int, default=120, help="largest face side in px (default 120)"
    )
    p.add_argument("--max-faces-per-image", type=int, default=8, help="default 8")
    p.add_argument(
        "--scene-dir",
        default=None,
        help="opencv-doc example images (default /usr/share/doc/opencv-doc/examples/data)",
    )
    p.add_argument(
        "--no-holdout",
        action="store_true",
        help="draw val from the same faces and photographs as train (default: disjoint)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from ..cli import CLIError
    from .synthetic_faces import OPENCV_DOC_DIR, make_faces

    # Checked here, before any file is written, naming the option.
    if args.scene_dir is not None and not os.path.isdir(args.scene_dir):
        # the default folder may be missing (a warning); one the user names must exist
        raise CLIError(f"--scene-dir {args.scene_dir} is not a folder")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if args.min_face < 1:
        raise CLIError(f"--min-face must be >= 1, got {args.min_face}")
    if args.min_face > args.max_face:
        raise CLIError(f"--min-face ({args.min_face}) must be <= --max-face ({args.max_face})")
    root = make_faces(
        args.dir,
        num_train=args.train,
        num_val=args.val,
        seed=args.seed,
        image_size=args.size,
        face_range=(args.min_face, args.max_face),
        max_faces_per_image=args.max_faces_per_image,
        scene_dir=args.scene_dir or OPENCV_DOC_DIR,
        holdout=not args.no_holdout,
    )
    stats = json.loads((root / "synthetic_faces.json").read_text())["splits"]
    for split, s in stats.items():
        print(
            f"{split}: {s['images']} images, {s['faces']} faces "
            f"({s['images_without_faces']} images without faces)"
        )
    print(
        f"wrote {root}; evaluate with: rnnpool widerface-eval --pred PRED "
        f"--gt {root / 'wider_face_split'}"
    )
    return 0
