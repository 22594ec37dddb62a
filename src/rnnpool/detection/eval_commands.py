"""``rnnpool widerface-eval``: AP of a WIDER FACE submission folder by the official protocol."""

from __future__ import annotations

import argparse
import json

from .._io import atomic_write_text

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "widerface-eval",
        help="WIDER FACE easy/medium/hard AP of a prediction folder (official protocol)",
        description=(
            "Evaluate <event>/<image>.txt prediction files ('left top width height score' lines) "
            "against the official ground truth wider_face_val.mat and "
            "wider_{easy,medium,hard}_val.mat."
        ),
    )
    p.add_argument("--pred", required=True, help="prediction folder (<event>/<image>.txt files)")
    p.add_argument("--gt", required=True, help="folder with wider_face_val.mat and wider_*_val.mat")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default 0.5)")
    p.add_argument(
        "--max-faces",
        type=int,
        default=None,
        help="evaluate only images with at most this many faces (the paper uses 3)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="count a missing prediction file as an image without detections",
    )
    p.add_argument("--plot", default=None, help="write the PR curves to this image file")
    p.add_argument("--json", default=None, help="write the APs and counts to this JSON file")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from .evaluation import WIDER_SETTINGS, plot_pr_curves, widerface_evaluate

    result = widerface_evaluate(
        args.pred,
        args.gt,
        iou_thresh=args.iou,
        max_faces=args.max_faces,
        missing="empty" if args.allow_missing else "error",
    )
    subset = f" (images with <= {args.max_faces} faces)" if args.max_faces is not None else ""
    print(
        f"WIDER FACE AP @ IoU {args.iou}{subset}, {result['num_images']} images, "
        f"{result['num_detections']} detections"
    )
    for s in WIDER_SETTINGS:
        print(f"  {s:<6} AP {result[s]:.4f}  ({result['num_faces'][s]} faces)")
    if result["missing"]:
        print(
            f"  {len(result['missing'])} prediction file(s) missing, counted as empty "
            f"(first: {result['missing'][0]})"
        )
    if args.plot:
        print(f"PR curves written to {plot_pr_curves(result, args.plot)}")
    if args.json:
        summary = {
            k: result[k]
            for k in (
                *WIDER_SETTINGS,
                "num_faces",
                "num_images",
                "num_detections",
                "missing",
                "iou_thresh",
                "max_faces",
            )
        }
        atomic_write_text(args.json, json.dumps(summary, indent=2))
    return 0
