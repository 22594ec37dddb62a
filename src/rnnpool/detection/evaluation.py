"""Detection evaluation: the official WIDER FACE protocol and VOC-style AP (SCUT-HEAD).

WIDER FACE protocol (Yang et al. 2016, the official MATLAB ``eval_tools`` and its public Python
port), as implemented by :func:`widerface_evaluate`:

- Ground truth: ``wider_face_val.mat`` (``event_list``, ``file_list``, ``face_bbx_list``: faces as
  ``left top width height``) and ``wider_{easy,medium,hard}_val.mat`` (``gt_list``: per image,
  the 1-based indices of the faces *kept* in that setting; every other face is *ignored*).
- Scores are min-max normalised over all evaluated detections.
- Each image's detections, sorted by decreasing score, are taken in turn; a detection is
  assigned to the face of highest IoU (over all faces, matched or not). If that IoU is
  ``>= iou_thresh``: on an ignored face the detection counts as neither a true nor a false
  positive; on a kept face, the face becomes recalled (a second detection of a recalled face is a
  false positive). Otherwise it is a false positive.
- IoU uses the official inclusive-pixel convention (a box ``x, w`` covers pixels ``x .. x + w``,
  so its width is ``w + 1``).
- For 1000 thresholds ``1 - k / 1000`` (``k = 1..1000``) the detections with normalised score
  ``>= threshold`` give ``precision = recalled / counted detections`` and ``recall = recalled /
  kept faces``, summed over images; AP is the VOC all-point area under the precision envelope.
- As in the official code, images with no annotated face, or with no detection, contribute only
  their kept-face count (detections on face-free images are not false positives).

Submission format (one file per image): ``<pred_dir>/<event>/<image>.txt`` holding the image name,
the number of boxes, then one ``left top width height score`` line per box. This implementation
sorts boxes by score itself (the public port silently assumes sorted files).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .._io import atomic_output, atomic_save_figure, atomic_write_text
from .boxes import box_iou

__all__ = [
    "WIDER_SETTINGS",
    "WiderGroundTruth",
    "load_wider_ground_truth",
    "save_wider_ground_truth",
    "read_wider_prediction",
    "write_wider_prediction",
    "widerface_evaluate",
    "voc_ap",
    "plot_pr_curves",
    "detection_ap",
]

WIDER_SETTINGS = ("easy", "medium", "hard")
#: Number of score thresholds of the official PR curve.
NUM_THRESHOLDS = 1000
PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------- ground truth


@dataclass
class WiderGroundTruth:
    """WIDER FACE evaluation ground truth.

    Attributes:
        events: event names, e.g. ``"0--Parade"``.
        files: per event, the image names without extension.
        boxes: per event, per image, ``float64 ndarray[M, 4]`` faces as ``left top width height``.
        keep: per setting name, per event, per image, ``int64 ndarray[K]`` of **0-based** indices
            of the faces kept in that setting.
    """

    events: List[str]
    files: List[List[str]]
    boxes: List[List[np.ndarray]]
    keep: Dict[str, List[List[np.ndarray]]]

    def images(self):
        """Yield ``(event_index, image_index, event, name)`` over all images."""
        for i, event in enumerate(self.events):
            for j, name in enumerate(self.files[i]):
                yield i, j, event, name


def _cells(x) -> list:
    """A MATLAB cell array as loaded by scipy (object ndarray of any shape) -> flat list."""
    arr = np.asarray(x, dtype=object) if not isinstance(x, np.ndarray) else x
    if arr.dtype != object:
        return [arr]
    return list(arr.reshape(-1, order="F"))


def _string(x) -> str:
    a = np.asarray(x)
    while a.dtype == object and a.size:
        a = np.asarray(a.reshape(-1)[0])
    if a.size == 0:
        return ""
    if (
        a.dtype.kind == "U"
        and a.ndim
        and a.size > 1
        and all(len(str(c)) == 1 for c in a.reshape(-1))
    ):
        return "".join(a.reshape(-1, order="F"))  # char array loaded without chars_as_strings
    return str(a.reshape(-1)[0])


def _loadmat(path: Path, keys: Sequence[str]) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise FileNotFoundError(f"WIDER FACE ground-truth file not found: {path}")
    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises several types for corrupt files
        raise ValueError(f"cannot read MATLAB file {path}: {e}") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise ValueError(
            f"{path} lacks the variable(s) {missing}; "
            f"has {sorted(k for k in mat if not k.startswith('__'))}"
        )
    return mat


def load_wider_ground_truth(
    gt_dir: PathLike, settings: Sequence[str] = WIDER_SETTINGS
) -> WiderGroundTruth:
    """Read ``wider_face_val.mat`` and ``wider_<setting>_val.mat`` from ``gt_dir``.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file lacks a variable or its cell arrays disagree in size (the message
            names the file and the event).
    """
    gt_dir = Path(gt_dir)
    main_path = gt_dir / "wider_face_val.mat"
    mat = _loadmat(main_path, ("event_list", "file_list", "face_bbx_list"))
    events = [_string(e) for e in _cells(mat["event_list"])]
    file_cells = _cells(mat["file_list"])
    box_cells = _cells(mat["face_bbx_list"])
    if not (len(events) == len(file_cells) == len(box_cells)):
        raise ValueError(
            f"{main_path}: event_list, file_list and face_bbx_list have {len(events)}, "
            f"{len(file_cells)} and {len(box_cells)} entries"
        )
    files, boxes = [], []
    for event, fc, bc in zip(events, file_cells, box_cells):
        names = [_string(f) for f in _cells(fc)]
        bxs = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in _cells(bc)]
        if len(names) != len(bxs):
            raise ValueError(
                f"{main_path}: event {event!r} has {len(names)} files but {len(bxs)} box lists"
            )
        files.append(names)
        boxes.append(bxs)
    keep: Dict[str, List[List[np.ndarray]]] = {}
    for setting in settings:
        path = gt_dir / f"wider_{setting}_val.mat"
        gt_cells = _cells(_loadmat(path, ("gt_list",))["gt_list"])
        if len(gt_cells) != len(events):
            raise ValueError(
                f"{path}: gt_list has {len(gt_cells)} events, {main_path} has {len(events)}"
            )
        per_event = []
        for i, ec in enumerate(gt_cells):
            lists = _cells(ec)
            if len(lists) != len(files[i]):
                raise ValueError(
                    f"{path}: event {events[i]!r} has {len(lists)} keep lists "
                    f"for {len(files[i])} images"
                )
            ev = []
            for j, k in enumerate(lists):
                idx = np.asarray(k, dtype=np.float64).reshape(-1).astype(np.int64) - 1
                if idx.size and (idx.min() < 0 or idx.max() >= len(boxes[i][j])):
                    raise ValueError(
                        f"{path}: image {events[i]}/{files[i][j]} keeps face indices "
                        f"{(idx + 1).tolist()} but has {len(boxes[i][j])} faces"
                    )
                ev.append(idx)
            per_event.append(ev)
        keep[setting] = per_event
    return WiderGroundTruth(events, files, boxes, keep)


def _cell_column(items: Sequence) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def save_wider_ground_truth(gt_dir: PathLike, gt: WiderGroundTruth) -> None:
    """Write ``gt`` as ``wider_face_val.mat`` and ``wider_<setting>_val.mat`` in the official
    structure (``Nx1`` cell arrays of ``n_ix1`` cells; boxes ``Mx4`` double, ``gt_list``
    ``Kx1`` double 1-based indices). Files are written atomically."""
    from scipy.io import savemat

    gt_dir = Path(gt_dir)
    gt_dir.mkdir(parents=True, exist_ok=True)
    event_list = _cell_column(list(gt.events))
    file_list = _cell_column([_cell_column(list(names)) for names in gt.files])
    face_bbx_list = _cell_column(
        [
            _cell_column([np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in ev])
            for ev in gt.boxes
        ]
    )
    common = {"event_list": event_list, "file_list": file_list}

    def write(name: str, data: dict) -> None:
        with atomic_output(gt_dir / name) as tmp:
            savemat(tmp, data, do_compression=True)

    write("wider_face_val.mat", {**common, "face_bbx_list": face_bbx_list})
    for setting, per_event in gt.keep.items():
        gt_list = _cell_column(
            [
                _cell_column([(np.asarray(k, dtype=np.float64).reshape(-1, 1) + 1) for k in ev])
                for ev in per_event
            ]
        )
        write(f"wider_{setting}_val.mat", {**common, "gt_list": gt_list})


# --------------------------------------------------------------------------- predictions


def read_wider_prediction(path: PathLike) -> np.ndarray:
    """Read one submission file -> ``float64 ndarray[N, 5]`` (``left top width height score``).

    Raises:
        ValueError: a malformed file, naming it and the line.
    """
    path = Path(path)
    with open(path, "r", encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) < 2:
        raise ValueError(
            f"{path}: expected an image name line and a box count line, got {len(lines)} line(s)"
        )
    try:
        value = float(lines[1])  # "2" or "2.0"; "2.7" is not a count
    except ValueError:
        value = math.nan
    if not value.is_integer():
        raise ValueError(f"{path}, line 2: expected the number of boxes, got {lines[1]!r}")
    count = int(value)
    if count < 0 or len(lines) - 2 != count:
        raise ValueError(
            f"{path}, line 2: announces {count} boxes but {len(lines) - 2} box lines follow"
        )
    rows = None
    if count:
        try:  # fast path: numpy's C parser
            parsed = np.loadtxt(lines[2 : 2 + count], dtype=np.float64, ndmin=2)
            rows = parsed if parsed.shape == (count, 5) else None
        except ValueError:
            rows = None
    else:
        rows = np.zeros((0, 5), dtype=np.float64)
    if rows is None:  # slow path: find the bad line
        rows = np.zeros((count, 5), dtype=np.float64)
        for k, line in enumerate(lines[2 : 2 + count]):
            parts = line.split()
            try:
                if len(parts) < 5:
                    raise ValueError
                rows[k] = [float(v) for v in parts[:5]]
            except ValueError:
                raise ValueError(
                    f"{path}, line {3 + k}: expected 'left top width height score', "
                    f"got {lines[2 + k]!r}"
                ) from None
    if not np.all(np.isfinite(rows)):
        raise ValueError(f"{path}: non-finite box or score values")
    return rows


def write_wider_prediction(
    pred_dir: PathLike,
    image_relpath: str,
    boxes: Union[Tensor, np.ndarray],
    scores: Union[Tensor, np.ndarray],
) -> Path:
    """Write one submission file ``<pred_dir>/<event>/<image>.txt`` (atomically).

    Args:
        pred_dir: the submission folder.
        image_relpath: ``"<event>/<image>.jpg"`` (as listed by the annotation files).
        boxes: ``[N, 4]`` xyxy in original image pixels (written as ``left top width height``).
        scores: ``[N]`` confidences.

    Returns:
        The path written.
    """
    # device="cpu": GPU tensors (a predictor's raw output) have no NumPy view.
    boxes = np.asarray(torch.as_tensor(boxes, dtype=torch.float64, device="cpu").reshape(-1, 4))
    scores = np.asarray(torch.as_tensor(scores, dtype=torch.float64, device="cpu").reshape(-1))
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    rel = Path(image_relpath)
    out = Path(pred_dir) / rel.parent / (rel.stem + ".txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [rel.stem, str(len(boxes))]
    for (x1, y1, x2, y2), s in zip(boxes, scores):
        lines.append(f"{x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f} {s:.6f}")
    return atomic_write_text(out, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- protocol


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP: area under the monotone (non-increasing) envelope of precision
    (``nan`` precisions count as 0).

    Args:
        recall: ``ndarray[K]``, non-decreasing.
        precision: ``ndarray[K]``.

    >>> voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    0.8333333333333333
    """
    mrec = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.nan_to_num(np.asarray(precision, dtype=np.float64)), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _inclusive_iou(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """IoU of ``left top width height`` boxes with the official ``+1`` pixel convention."""

    def xyxy_plus_one(b: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.ascontiguousarray(b[:, :4], dtype=np.float64))
        return torch.stack([t[:, 0], t[:, 1], t[:, 0] + t[:, 2] + 1, t[:, 1] + t[:, 3] + 1], 1)

    return box_iou(xyxy_plus_one(pred_xywh), xyxy_plus_one(gt_xywh)).numpy()


def _image_match(
    pred: np.ndarray, gt: np.ndarray, iou_thresh: float
) -> Tuple[np.ndarray, np.ndarray]:
    """For each detection (``pred[N, 5]``), its highest-IoU face among ``gt[M, 4]`` (xywh; the
    first one on ties, like the official code) and whether that IoU is ``>= iou_thresh``."""
    iou = _inclusive_iou(pred, gt)
    best = iou.argmax(axis=1)
    return best, iou[np.arange(len(pred)), best] >= iou_thresh


def _image_eval(
    best: np.ndarray, matched: np.ndarray, keep: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """One image, detections sorted by decreasing score, ``keep[M]`` bool per face.

    Returns ``(recalled[N], counted[N])``: the number of kept faces recalled by detections
    ``0..h``, and whether detection ``h`` counts as a proposal (False when matched to an
    ignored face). Equivalent to the official loop: a kept face is recalled by its first
    matching detection; later matches of it stay counted (false positives).
    """
    on_kept = matched & keep[best]
    counted = ~(matched & ~keep[best])
    first_hit = np.zeros(len(best), dtype=bool)
    if on_kept.any():
        hits = np.nonzero(on_kept)[0]
        _, first = np.unique(best[hits], return_index=True)
        first_hit[hits[first]] = True
    return np.cumsum(first_hit), counted


def _thresholds() -> np.ndarray:
    return 1 - np.arange(1, NUM_THRESHOLDS + 1) / NUM_THRESHOLDS


def _image_pr(n_above: np.ndarray, recalled: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """``ndarray[1000, 2]``: (counted detections, recalled faces) at each threshold, given the
    number of (sorted) detections whose normalised score passes each threshold."""
    out = np.zeros((NUM_THRESHOLDS, 2))
    has = n_above > 0
    last = n_above[has] - 1
    out[has, 0] = np.cumsum(counted)[last]
    out[has, 1] = recalled[last]
    return out


def widerface_evaluate(
    pred_dir: PathLike,
    gt_dir: PathLike,
    iou_thresh: float = 0.5,
    max_faces: Optional[int] = None,
    missing: str = "error",
    settings: Sequence[str] = WIDER_SETTINGS,
) -> Dict[str, object]:
    """WIDER FACE AP by the official protocol (see the module docstring).

    Args:
        pred_dir: the submission folder (``<event>/<image>.txt`` files).
        gt_dir: the folder with ``wider_face_val.mat`` and ``wider_<setting>_val.mat``.
        iou_thresh: the IoU a detection needs to match a face.
        max_faces: evaluate only images with at most this many annotated faces (the paper's
            ``<= 3`` faces subset); ``None`` evaluates all images.
        missing: ``"error"`` raises on a missing prediction file; ``"empty"`` treats it as an
            image without detections.
        settings: the settings to evaluate (each needs ``wider_<setting>_val.mat``).

    Returns:
        A dict with one AP per setting (``"easy"``, ``"medium"``, ``"hard"``), and
        ``"curves"`` (per setting, ``{"precision": ndarray[1000], "recall": ndarray[1000]}``
        from the highest threshold to the lowest; precision is ``nan`` where no detection
        passes the threshold),
        ``"num_faces"`` (kept faces per setting), ``"num_images"``, ``"num_detections"`` and
        ``"missing"`` (the image paths treated as empty).

    Raises:
        FileNotFoundError: a ground-truth file, or (with ``missing="error"``) a prediction file,
            is missing; the message names it.
        ValueError: a malformed file.
    """
    if missing not in ("error", "empty"):
        raise ValueError(f"missing must be 'error' or 'empty', got {missing!r}")
    if max_faces is not None and max_faces < 0:
        raise ValueError(f"max_faces must be >= 0, got {max_faces}")
    if not 0 < iou_thresh <= 1:  # also catches nan
        raise ValueError(f"iou_thresh must be in (0, 1], got {iou_thresh}")
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    gt = load_wider_ground_truth(gt_dir, settings)

    images = []  # (i, j, sorted predictions)
    missing_files: List[str] = []
    for i, j, event, name in gt.images():
        if max_faces is not None and len(gt.boxes[i][j]) > max_faces:
            continue
        path = pred_dir / event / f"{name}.txt"
        if path.is_file():
            pred = read_wider_prediction(path)
        elif missing == "empty":
            missing_files.append(f"{event}/{name}.txt")
            pred = np.zeros((0, 5))
        else:
            raise FileNotFoundError(
                f"prediction file not found: {path} (every ground-truth image needs one; "
                "use missing='empty' / --allow-missing to count it as no detections)"
            )
        order = np.argsort(-pred[:, 4], kind="stable")
        images.append((i, j, pred[order]))

    all_scores = np.concatenate([p[:, 4] for _, _, p in images]) if images else np.zeros(0)
    lo, hi = (all_scores.min(), all_scores.max()) if all_scores.size else (0.0, 1.0)

    def normalise(s: np.ndarray) -> np.ndarray:
        # Official: (s - min) / (max - min). All-equal scores (undefined there) become 1.
        return (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)

    # Matching does not depend on the setting: do it once per image.
    matches = []
    for i, j, pred in images:
        gt_boxes = gt.boxes[i][j]
        if len(gt_boxes) == 0 or len(pred) == 0:
            matches.append(None)
        else:
            best, matched = _image_match(pred, gt_boxes, iou_thresh)
            n_above = np.searchsorted(-normalise(pred[:, 4]), -_thresholds(), side="right")
            matches.append((best, matched, n_above))

    result: Dict[str, object] = {}
    curves: Dict[str, Dict[str, np.ndarray]] = {}
    num_faces: Dict[str, int] = {}
    for setting in settings:
        pr = np.zeros((NUM_THRESHOLDS, 2))
        count_face = 0
        for (i, j, _), match in zip(images, matches):
            kept_idx = gt.keep[setting][i][j]
            count_face += len(kept_idx)
            if match is None:
                continue
            best, matched, n_above = match
            keep = np.zeros(len(gt.boxes[i][j]), dtype=bool)
            keep[kept_idx] = True
            recalled, counted = _image_eval(best, matched, keep)
            pr += _image_pr(n_above, recalled, counted)
        with np.errstate(invalid="ignore", divide="ignore"):
            # nan where no detection passes the threshold (skipped by voc_ap and the plots)
            precision = np.where(pr[:, 0] > 0, pr[:, 1] / np.maximum(pr[:, 0], 1), np.nan)
            recall = pr[:, 1] / count_face if count_face else np.zeros(NUM_THRESHOLDS)
        result[setting] = voc_ap(recall, precision) if count_face else float("nan")
        curves[setting] = {"precision": precision, "recall": recall}
        num_faces[setting] = count_face
    result["curves"] = curves
    result["num_faces"] = num_faces
    result["num_images"] = len(images)
    result["num_detections"] = int(all_scores.size)
    result["missing"] = missing_files
    result["iou_thresh"] = iou_thresh
    result["max_faces"] = max_faces
    return result


def plot_pr_curves(
    results: Union[Mapping[str, object], Mapping[str, Mapping[str, object]]],
    path: PathLike,
    title: Optional[str] = None,
) -> Path:
    """Plot precision-recall curves to an image file (matplotlib, Agg backend).

    Args:
        results: a :func:`widerface_evaluate` result (one curve per setting), or a mapping
            ``label -> result`` to overlay several methods (one panel per setting).
        path: the output image (``.png``, ``.pdf`` ...), written atomically.
        title: an optional figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "curves" in results:
        results = {"": results}
    settings = [s for s in WIDER_SETTINGS if any(s in r["curves"] for r in results.values())]
    settings += sorted({s for r in results.values() for s in r["curves"]} - set(settings))
    fig, axes = plt.subplots(1, len(settings), figsize=(4 * len(settings), 4), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for label, r in results.items():
            if setting not in r["curves"]:
                continue
            c = r["curves"][setting]
            name = f"{label} " if label else ""
            ax.plot(c["recall"], c["precision"], label=f"{name}AP {r[setting]:.3f}")
        ax.set_title(setting)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_save_figure(fig, path)
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------- VOC-style AP


def _as_pred(p) -> Tuple[Tensor, Tensor]:
    if isinstance(p, Mapping):
        boxes, scores = p["boxes"], p["scores"]
    else:
        boxes, scores = p
    # On the CPU: the matching below is NumPy (GPU tensors have no NumPy view).
    boxes = torch.as_tensor(boxes, dtype=torch.float64, device="cpu").reshape(-1, 4)
    scores = torch.as_tensor(scores, dtype=torch.float64, device="cpu").reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"a prediction has {len(boxes)} boxes but {len(scores)} scores")
    return boxes, scores


def detection_ap(
    predictions: Sequence,
    ground_truths: Sequence,
    iou: float = 0.5,
) -> float:
    """VOC-style AP (all-point interpolation) for one class, e.g. SCUT-HEAD heads.

    All detections of all images are ranked by score (ties keep input order). Each is assigned
    to the ground-truth box of highest IoU in its image; it is a true positive if that IoU is
    ``>= iou`` and the box is not yet matched, else a false positive. Boxes are continuous xyxy
    (IoU of :func:`rnnpool.detection.boxes.box_iou`, no ``+1``). The PASCAL VOC devkit differs
    in two details: it adds 1 to widths and heights (pixel-index boxes) and needs IoU ``> 0.5``.

    Args:
        predictions: per image, ``(boxes [N, 4] xyxy, scores [N])`` or a dict with ``"boxes"``
            and ``"scores"``.
        ground_truths: per image, ``boxes [M, 4]`` xyxy or a dict with ``"boxes"``.
        iou: the matching threshold.

    Returns:
        The AP, or ``nan`` when there is no ground-truth box.

    Example:
        >>> gt = [torch.tensor([[0., 0., 10., 10.]]), torch.tensor([[0., 0., 10., 10.]])]
        >>> pred = [(torch.tensor([[0., 0., 10., 10.], [50., 50., 60., 60.]]),
        ...          torch.tensor([0.9, 0.8])),
        ...         (torch.zeros(0, 4), torch.zeros(0))]
        >>> detection_ap(pred, gt)  # recall 1/2 at precision 1
        0.5
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(
            f"{len(predictions)} prediction entries but {len(ground_truths)} ground truths"
        )
    scores_all, tp_all = [], []
    npos = 0
    for p, g in zip(predictions, ground_truths):
        boxes, scores = _as_pred(p)
        gt = torch.as_tensor(
            g["boxes"] if isinstance(g, Mapping) else g, dtype=torch.float64, device="cpu"
        ).reshape(-1, 4)
        npos += len(gt)
        order = torch.sort(scores, descending=True, stable=True).indices
        boxes, scores = boxes[order], scores[order]
        tp = np.zeros(len(boxes), dtype=bool)
        if len(gt) and len(boxes):
            ious = box_iou(boxes, gt).numpy()
            best = ious.argmax(axis=1)
            ok = ious[np.arange(len(boxes)), best] >= iou
            taken = np.zeros(len(gt), dtype=bool)
            for k in np.nonzero(ok)[0]:
                if not taken[best[k]]:
                    taken[best[k]] = True
                    tp[k] = True
        scores_all.append(scores.numpy())
        tp_all.append(tp)
    if npos == 0:
        return float("nan")
    scores = np.concatenate(scores_all) if scores_all else np.zeros(0)
    tp = np.concatenate(tp_all) if tp_all else np.zeros(0, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    recall = ctp / npos
    precision = ctp / np.maximum(ctp + cfp, 1)
    return voc_ap(recall, precision)
