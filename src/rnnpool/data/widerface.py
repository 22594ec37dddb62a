"""WIDER FACE (Yang et al., CVPR 2016) in its official layout.

The loader reads the layout the dataset ships in::

    root/
      WIDER_train/images/<event>/<image>.jpg
      WIDER_val/images/<event>/<image>.jpg
      WIDER_test/images/<event>/<image>.jpg
      wider_face_split/wider_face_train_bbx_gt.txt
      wider_face_split/wider_face_val_bbx_gt.txt
      wider_face_split/wider_face_test_filelist.txt

An annotation file repeats three blocks per image: the image path relative to ``images/``, the
face count, then one line per face ``x y w h blur expression illumination invalid occlusion pose``
(an image with 0 faces still has one all-zero face line). ``(x, y)`` is the top-left corner in
pixels and ``(w, h)`` the size, so the face covers ``[x, x + w) x [y, y + h)``; the loader turns it
into the xyxy box ``(x, y, x + w, y + h)``, the format of :mod:`rnnpool.detection.boxes`.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .imagefolder import image_size

__all__ = [
    "WIDER_FIELDS",
    "WiderAnnotationError",
    "parse_wider_annotations",
    "list_split_images",
    "split_image_dir",
    "DropCounts",
    "filter_wider_faces",
    "WiderFaceDetection",
]

logger = logging.getLogger(__name__)

#: Column names of a face line in ``wider_face_*_bbx_gt.txt``.
WIDER_FIELDS = (
    "x",
    "y",
    "w",
    "h",
    "blur",
    "expression",
    "illumination",
    "invalid",
    "occlusion",
    "pose",
)

_SPLITS = ("train", "val", "test")
PathLike = Union[str, os.PathLike]


class WiderAnnotationError(ValueError):
    """A malformed WIDER FACE annotation file; the message names the file and the line."""


def parse_wider_annotations(path: PathLike) -> List[Tuple[str, np.ndarray]]:
    """Parse a ``wider_face_{train,val}_bbx_gt.txt`` file.

    Args:
        path: the annotation file.

    Returns:
        One ``(image_relpath, faces)`` per image, in file order. ``image_relpath`` is
        ``"<event>/<image>.jpg"`` (relative to ``WIDER_<split>/images``) and ``faces`` is a
        ``float64`` ``ndarray[M, 10]`` with the columns of :data:`WIDER_FIELDS` (``M = 0`` for an
        image with no faces: its all-zero placeholder line is consumed, not returned).

    Raises:
        WiderAnnotationError: a malformed line (a count that is not a non-negative integer, a
            face line without 10 finite numbers, a file that ends inside an image's block, bytes
            that are not UTF-8), naming the file and the 1-based line number; or a file without
            any image.
        FileNotFoundError: the file does not exist.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp(); p = os.path.join(d, "gt.txt")
        >>> _ = open(p, "w").write("0--A/a.jpg\\n1\\n10 20 30 40 0 0 0 0 0 0\\n"
        ...                        "0--A/b.jpg\\n0\\n0 0 0 0 0 0 0 0 0 0\\n")
        >>> [(name, faces.shape) for name, faces in parse_wider_annotations(p)]
        [('0--A/a.jpg', (1, 10)), ('0--A/b.jpg', (0, 10))]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WIDER FACE annotation file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # "-sig": a byte order mark is not part of a path
    except UnicodeDecodeError as e:
        lineno = data[: e.start].count(b"\n") + 1
        raise WiderAnnotationError(
            f"{path}, line {lineno}: not UTF-8 text (byte {data[e.start]:#04x})"
        ) from None
    lines = [line.strip() for line in io.StringIO(text, newline=None)]  # as open() splits
    out: List[Tuple[str, np.ndarray]] = []
    i, n = 0, len(lines)

    def fail(lineno: int, msg: str) -> WiderAnnotationError:
        return WiderAnnotationError(f"{path}, line {lineno}: {msg}")

    def face_line(k: int) -> Optional[np.ndarray]:
        parts = lines[k].split()
        if len(parts) != 10:
            return None
        try:
            row = np.array([float(p) for p in parts], dtype=np.float64)
        except ValueError:
            return None
        if not np.isfinite(row).all():  # "nan" / "inf" parse as floats
            raise fail(k + 1, f"a face value is not finite: {lines[k]!r}")
        return row

    while i < n:
        if not lines[i]:  # blank lines between blocks (e.g. a trailing newline) are harmless
            i += 1
            continue
        name = lines[i]
        if not name.lower().endswith((".jpg", ".jpeg", ".png")):
            raise fail(i + 1, f"expected an image path ending in .jpg, got {name!r}")
        if i + 1 >= n:
            raise fail(i + 1, f"file ends after image path {name!r}; expected a face count")
        try:
            count = int(lines[i + 1])
        except ValueError:
            raise fail(
                i + 2, f"expected the face count of {name!r}, got {lines[i + 1]!r}"
            ) from None
        if count < 0:
            raise fail(i + 2, f"negative face count {count} for {name!r}")
        i += 2
        if count == 0:
            # The official files put one all-zero line after a zero count; accept its absence.
            # Any other line is left for the next block (a real face there is an error).
            row = face_line(i) if i < n and lines[i] else None
            if row is not None and not row.any():
                i += 1
            out.append((name, np.zeros((0, 10), dtype=np.float64)))
            continue
        rows = []
        for k in range(i, i + count):
            if k >= n:
                raise fail(n, f"file ends after {k - i} of {count} face lines of {name!r}")
            row = face_line(k)
            if row is None:
                raise fail(
                    k + 1,
                    f"expected 10 numbers 'x y w h blur expression illumination invalid "
                    f"occlusion pose' for a face of {name!r}, got {lines[k]!r}",
                )
            rows.append(row)
        out.append((name, np.stack(rows)))
        i += count
    if not out:
        raise WiderAnnotationError(f"{path}: no image in the file (empty or truncated?)")
    return out


def split_image_dir(root: PathLike, split: str) -> Path:
    """``root/WIDER_<split>/images``, the folder image paths are relative to."""
    _check_split(split, _SPLITS)
    return Path(root) / f"WIDER_{split}" / "images"


def list_split_images(root: PathLike, split: str = "val") -> List[str]:
    """Image paths (``"<event>/<image>.jpg"``, relative to :func:`split_image_dir`) of a split.

    ``"train"`` and ``"val"`` list the images of the annotation file, ``"test"`` those of
    ``wider_face_split/wider_face_test_filelist.txt`` (one path per line), in file order.

    Raises:
        FileNotFoundError: the annotation or list file is missing.
    """
    _check_split(split, _SPLITS)
    split_dir = Path(root) / "wider_face_split"
    if split == "test":
        path = split_dir / "wider_face_test_filelist.txt"
        if not path.is_file():
            raise FileNotFoundError(f"WIDER FACE test list not found: {path}")
        with open(path, "r", encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    return [
        name for name, _ in parse_wider_annotations(split_dir / f"wider_face_{split}_bbx_gt.txt")
    ]


@dataclass
class DropCounts:
    """How many annotated faces a loader dropped, by reason (a face counts under its first
    reason, checked in this order)."""

    nonpositive_size: int = 0  #: ``w <= 0`` or ``h <= 0``
    invalid_flag: int = 0  #: the annotation's ``invalid`` column is 1
    out_of_image: int = 0  #: no overlap with the image
    too_small: int = 0  #: ``min(w, h) < min_size`` after clipping to the image
    clipped: int = field(default=0)  #: kept, but partly outside the image and clipped to it

    @property
    def total(self) -> int:
        """Faces dropped for any reason (``clipped`` faces are kept and not counted)."""
        return self.nonpositive_size + self.invalid_flag + self.out_of_image + self.too_small

    def __iadd__(self, other: "DropCounts") -> "DropCounts":
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self


def filter_wider_faces(
    faces: np.ndarray, width: float, height: float, min_size: float = 0.0
) -> Tuple[np.ndarray, DropCounts]:
    """Turn annotation rows into valid xyxy boxes inside an image.

    Drops faces with ``w <= 0`` or ``h <= 0``, with the ``invalid`` flag set, entirely outside
    the ``width x height`` image, or (after clipping to the image) smaller than ``min_size`` in
    width or height; clips the rest to the image.

    Args:
        faces: ``ndarray[M, 10]`` rows of :func:`parse_wider_annotations` (``ndarray[M, 4]``
            ``x y w h`` is accepted too; it has no ``invalid`` column).
        width, height: the image size in pixels.
        min_size: the smallest kept face side in pixels.

    Returns:
        ``(boxes, counts)``: ``float32 ndarray[K, 4]`` xyxy and the :class:`DropCounts`.

    Raises:
        ValueError: a face with a non-finite ``x``, ``y``, ``w`` or ``h`` (named by row).

    Example:
        >>> rows = np.array([[10, 10, 20, 20, 0, 0, 0, 0, 0, 0],   # kept
        ...                  [10, 10, 0, 20, 0, 0, 0, 0, 0, 0],    # zero width
        ...                  [50, 50, 20, 20, 0, 0, 0, 1, 0, 0],   # invalid flag
        ...                  [90, 90, 20, 20, 0, 0, 0, 0, 0, 0]])  # clipped to 90..100
        >>> boxes, counts = filter_wider_faces(rows, 100, 100)
        >>> boxes.tolist(), counts.total, counts.clipped
        ([[10.0, 10.0, 30.0, 30.0], [90.0, 90.0, 100.0, 100.0]], 2, 1)
    """
    faces = np.asarray(faces, dtype=np.float64)
    if faces.size == 0:
        faces = faces.reshape(0, 10)
    if faces.ndim != 2 or faces.shape[1] not in (4, 10):
        raise ValueError(f"faces must be ndarray[M, 10] or ndarray[M, 4], got shape {faces.shape}")
    if not np.isfinite(faces[:, :4]).all():  # a NaN box would pass every test below
        rows = np.nonzero(~np.isfinite(faces[:, :4]).all(axis=1))[0]
        raise ValueError(f"faces {rows.tolist()} have non-finite x, y, w or h")
    counts = DropCounts()
    x, y, w, h = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3]
    keep = np.ones(len(faces), dtype=bool)
    bad = (w <= 0) | (h <= 0)
    counts.nonpositive_size = int(bad.sum())
    keep &= ~bad
    if faces.shape[1] >= 8:
        bad = keep & (faces[:, 7] != 0)
        counts.invalid_flag = int(bad.sum())
        keep &= ~bad
    x1, y1, x2, y2 = x, y, x + w, y + h
    cx1, cy1 = np.clip(x1, 0, width), np.clip(y1, 0, height)
    cx2, cy2 = np.clip(x2, 0, width), np.clip(y2, 0, height)
    bad = keep & ((cx2 <= cx1) | (cy2 <= cy1))
    counts.out_of_image = int(bad.sum())
    keep &= ~bad
    bad = keep & (np.minimum(cx2 - cx1, cy2 - cy1) < min_size)
    counts.too_small = int(bad.sum())
    keep &= ~bad
    moved = (cx1 != x1) | (cy1 != y1) | (cx2 != x2) | (cy2 != y2)
    counts.clipped = int((keep & moved).sum())
    boxes = np.stack([cx1, cy1, cx2, cy2], axis=1)[keep].astype(np.float32)
    return boxes.reshape(-1, 4), counts


Transform = Callable[[Image.Image, np.ndarray], Tuple[Tensor, Tensor]]


class WiderFaceDetection(torch.utils.data.Dataset):
    """WIDER FACE face detection data set (train or val split) in the official layout.

    Each item is ``(image, target)``: ``image`` is a ``FloatTensor[C, H, W]`` in ``[0, 1]`` and
    ``target`` a dict with ``boxes`` (``FloatTensor[M, 4]``, xyxy, absolute pixels of the
    returned image) and ``labels`` (``LongTensor[M]`` of ones). Images without faces give
    ``M = 0``.

    Faces that cannot be used are dropped when the data set is built, never silently: those
    with ``w <= 0`` or ``h <= 0``, with the ``invalid`` flag, entirely outside the image, or
    smaller than ``min_size``; faces partly outside are clipped. The counts are in
    :attr:`dropped` (a :class:`DropCounts`) and are logged as a warning. Checking "outside the
    image" reads each image's header once (no pixel decoding).

    Args:
        root: the folder holding ``WIDER_<split>/`` and ``wider_face_split/``.
        split: ``"train"`` or ``"val"`` (the test split has no boxes: see
            :func:`list_split_images`).
        transform: ``(PIL.Image, boxes ndarray[M, 4] xyxy) -> (image tensor, boxes tensor)``,
            e.g. :func:`rnnpool.data.detection_transforms.train_transform`. ``None`` returns the
            whole image as a tensor.
        min_size: the smallest kept face side in pixels (``0`` keeps every valid face).

    Attributes:
        image_paths: absolute image paths, one per item.
        names: ``"<event>/<image>.jpg"`` per item.
        annotations: the raw ``ndarray[M, 10]`` rows per item.
        boxes: the kept ``float32 ndarray[K, 4]`` xyxy boxes per item (original image pixels).
        dropped: the :class:`DropCounts` over the split.

    Example:
        >>> from rnnpool.data.synthetic_faces import make_faces
        >>> import tempfile
        >>> root = make_faces(tempfile.mkdtemp(), num_train=3, num_val=1, seed=0)
        >>> ds = WiderFaceDetection(root, "train")
        >>> image, target = ds[0]
        >>> image.shape[0], image.dtype, target["boxes"].shape[1], target["labels"].dtype
        (3, torch.float32, 4, torch.int64)
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        transform: Optional[Transform] = None,
        min_size: float = 0.0,
    ) -> None:
        _check_split(split, ("train", "val"))
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {min_size}")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.min_size = float(min_size)
        image_dir = split_image_dir(root, split)
        if not image_dir.is_dir():
            raise FileNotFoundError(f"WIDER FACE image folder not found: {image_dir}")
        records = parse_wider_annotations(
            self.root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        )
        self.names: List[str] = [name for name, _ in records]
        self.annotations: List[np.ndarray] = [faces for _, faces in records]
        self.image_paths: List[Path] = [image_dir / name for name in self.names]
        self.boxes: List[np.ndarray] = []
        self.dropped = DropCounts()
        for path, faces in zip(self.image_paths, self.annotations):
            if not path.is_file():
                raise FileNotFoundError(
                    f"WIDER FACE image listed in the annotations not found: {path}"
                )
            width, height = image_size(path)
            boxes, counts = filter_wider_faces(faces, width, height, self.min_size)
            self.boxes.append(boxes)
            self.dropped += counts
        if self.dropped.total or self.dropped.clipped:
            logger.warning(
                "WIDER FACE %s: dropped %d of %d faces (%s); clipped %d to the image",
                split,
                self.dropped.total,
                sum(len(a) for a in self.annotations),
                ", ".join(
                    f"{k}={getattr(self.dropped, k)}"
                    for k in ("nonpositive_size", "invalid_flag", "out_of_image", "too_small")
                ),
                self.dropped.clipped,
            )

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> Tuple[Tensor, Dict[str, Tensor]]:
        from .detection_transforms import load_rgb, pil_to_tensor

        image = load_rgb(self.image_paths[index])
        boxes = self.boxes[index]
        if self.transform is None:
            tensor, out_boxes = pil_to_tensor(image), torch.from_numpy(boxes.copy())
        else:
            tensor, out_boxes = self.transform(image, boxes.copy())
        out_boxes = torch.as_tensor(out_boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.ones(len(out_boxes), dtype=torch.int64)
        return tensor, {"boxes": out_boxes, "labels": labels}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"images={len(self)}, faces={sum(len(b) for b in self.boxes)}, "
            f"dropped={self.dropped.total})"
        )


def _check_split(split: str, allowed: Tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")
