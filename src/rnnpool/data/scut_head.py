"""SCUT-HEAD Part B (Peng et al., 2018): 2,405 images, 43,940 annotated heads, VOC-style XML.

Layout read by :class:`ScutHeadDetection`::

    root/
      JPEGImages/<id>.jpg
      Annotations/<id>.xml   # <annotation><size>..</size><object><name>person</name>
                             #   <bndbox><xmin/><ymin/><xmax/><ymax/></bndbox></object>...

VOC boxes are 1-based inclusive pixel indices, so ``xmin..xmax`` becomes the continuous xyxy box
``(xmin - 1, ymin - 1, xmax, ymax)`` (the convention of :mod:`rnnpool.detection.boxes`). The
data set ships no train/val split usable here; SPEC §5 uses a random 80/20 split, drawn with a
seeded permutation of the sorted annotation ids (deterministic for a given ``seed``).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .imagefolder import image_size
from .widerface import DropCounts, filter_wider_faces

__all__ = ["VocAnnotationError", "parse_voc_xml", "split_ids", "ScutHeadDetection"]

logger = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


class VocAnnotationError(ValueError):
    """A malformed VOC XML annotation; the message names the file."""


def parse_voc_xml(path: PathLike) -> Tuple[np.ndarray, List[str]]:
    """Read the objects of a VOC XML file.

    Returns:
        ``(boxes, names)``: ``float64 ndarray[M, 4]`` continuous xyxy boxes
        (``xmin - 1, ymin - 1, xmax, ymax``) and the ``<name>`` of each object.

    Raises:
        VocAnnotationError: unparsable XML, or an object without a finite numeric ``bndbox``;
            the message names the file (and the object's position).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.xml")
        >>> _ = open(p, "w").write("<annotation><object><name>person</name><bndbox><xmin>11</xmin>"
        ...                        "<ymin>21</ymin><xmax>30</xmax><ymax>40</ymax></bndbox>"
        ...                        "</object></annotation>")
        >>> parse_voc_xml(p)
        (array([[10., 20., 30., 40.]]), ['person'])
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise VocAnnotationError(f"{path}: malformed XML ({e})") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    boxes, names = [], []
    for k, obj in enumerate(root.iter("object")):
        bnd = obj.find("bndbox")
        if bnd is None:
            raise VocAnnotationError(f"{path}: object {k + 1} has no <bndbox>")
        vals = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            node = bnd.find(tag)
            try:
                value = float(node.text)  # type: ignore[union-attr,arg-type]
                if not np.isfinite(value):  # "nan" / "inf" parse as floats
                    raise ValueError
                vals.append(value)
            except (AttributeError, TypeError, ValueError):
                text = None if node is None else node.text
                raise VocAnnotationError(
                    f"{path}: object {k + 1} has a missing, non-numeric or non-finite "
                    f"<{tag}> ({text!r})"
                ) from None
        xmin, ymin, xmax, ymax = vals
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
        name = obj.findtext("name")
        names.append(name.strip() if name else "")
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), names


def split_ids(ids: List[str], split: str, seed: int = 0, train_fraction: float = 0.8) -> List[str]:
    """The ids of ``split`` (``"train"``, ``"val"`` or ``"all"``) of a seeded random split.

    The ids are sorted, permuted with ``numpy.random.default_rng(seed)``, and the first
    ``round(train_fraction * N)`` form the training split.

    >>> ids = [str(i) for i in range(10)]
    >>> sorted(split_ids(ids, "train") + split_ids(ids, "val")) == sorted(ids)
    True
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    ids = sorted(ids)
    if split == "all":
        return ids
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_train = int(round(train_fraction * len(ids)))
    chosen = perm[:n_train] if split == "train" else perm[n_train:]
    return [ids[i] for i in sorted(chosen)]


Transform = Callable[[Image.Image, np.ndarray], Tuple[Tensor, Tensor]]


class ScutHeadDetection(torch.utils.data.Dataset):
    """SCUT-HEAD Part B head detection (VOC layout), split 80/20 at random.

    Items are ``(image FloatTensor[C, H, W] in [0, 1], {"boxes": FloatTensor[M, 4] xyxy pixels
    of the returned image, "labels": LongTensor[M] of ones})``, as for
    :class:`rnnpool.data.widerface.WiderFaceDetection`. Boxes with no area or outside the
    image are dropped, boxes partly outside are clipped; the counts are in :attr:`dropped` and
    logged as a warning.

    Args:
        root: the folder holding ``JPEGImages/`` and ``Annotations/``.
        split: ``"train"`` (80 %), ``"val"`` (20 %) or ``"all"``.
        transform: ``(PIL.Image, boxes ndarray[M, 4]) -> (tensor, boxes tensor)``.
        seed: the seed of the random split.

    Attributes:
        ids: the image ids of the split; ``image_paths``, ``boxes`` (kept ``float32
        ndarray[K, 4]`` per image), ``dropped`` (:class:`~rnnpool.data.widerface.DropCounts`).
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        transform: Optional[Transform] = None,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        ann_dir, img_dir = self.root / "Annotations", self.root / "JPEGImages"
        for d in (ann_dir, img_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"SCUT-HEAD folder not found: {d}")
        all_ids = [p.stem for p in ann_dir.glob("*.xml")]
        if not all_ids:
            raise FileNotFoundError(f"no .xml annotations in {ann_dir}")
        self.split, self.seed, self.transform = split, seed, transform
        self.ids = split_ids(all_ids, split, seed)
        self.image_paths: List[Path] = []
        self.boxes: List[np.ndarray] = []
        self.dropped = DropCounts()
        n_objects = 0
        for id_ in self.ids:
            path = img_dir / f"{id_}.jpg"
            if not path.is_file():
                raise FileNotFoundError(
                    f"SCUT-HEAD image for {ann_dir / (id_ + '.xml')} not found: {path}"
                )
            xyxy, _ = parse_voc_xml(ann_dir / f"{id_}.xml")
            n_objects += len(xyxy)
            width, height = image_size(path)
            xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
            boxes, counts = filter_wider_faces(xywh, width, height)
            self.image_paths.append(path)
            self.boxes.append(boxes)
            self.dropped += counts
        if self.dropped.total or self.dropped.clipped:
            logger.warning(
                "SCUT-HEAD %s: dropped %d of %d boxes (nonpositive_size=%d, out_of_image=%d); "
                "clipped %d to the image",
                split,
                self.dropped.total,
                n_objects,
                self.dropped.nonpositive_size,
                self.dropped.out_of_image,
                self.dropped.clipped,
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Tuple[Tensor, Dict[str, Tensor]]:
        from .detection_transforms import load_rgb, pil_to_tensor

        image = load_rgb(self.image_paths[index])
        boxes = self.boxes[index].copy()
        if self.transform is None:
            tensor, out = pil_to_tensor(image), torch.from_numpy(boxes)
        else:
            tensor, out = self.transform(image, boxes)
        out = torch.as_tensor(out, dtype=torch.float32).reshape(-1, 4)
        return tensor, {"boxes": out, "labels": torch.ones(len(out), dtype=torch.int64)}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"images={len(self)}, boxes={sum(len(b) for b in self.boxes)})"
        )
