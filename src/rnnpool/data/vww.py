"""Visual Wake Words (person / no person) built from COCO annotations.

Label rule (Chowdhery et al. 2019, SPEC §4): an image is labelled 1 ("person") when at least one
``person`` annotation covers MORE than ``threshold = 0.005`` (0.5 %) of the image area
``width * height``, else 0. What "covers" means differs between the paper's prose ("bounding
box area") and TensorFlow's reference builder (``build_visualwakewords_data_lib.py``), which
divides the annotation's COCO ``area`` field (the segmentation mask area) by the image area.
``area="segmentation"`` (default) follows the reference builder; ``area="bbox"`` uses the box
``w * h``. Crowd annotations count, as in the reference builder. The ``person`` category id is
looked up by name. One difference from the builder remains, by choice (SPEC §4 says "more
than"): an area of *exactly* 0.5 % gives 0 here, while the builder (``ratio < threshold`` is
"small") gives 1; only such exact ties can label differently from the published data set.
Images without annotations are labelled 0; a repeated image id is an error.

Splits: training uses COCO train + val minus the ~8k "minival" images; evaluation uses minival.
The minival id list (``mscoco_minival_ids.txt`` of the TensorFlow object-detection repository,
one image id per line) is not shipped and cannot be downloaded here: pass it as a file. Without
it, :func:`make_vww` falls back to train2014 for training and val2014 for evaluation (and says
so in ``vww_info.json``).

Output of :func:`make_vww` (``rnnpool make-vww --coco DIR --out OUT``): ``OUT/train.txt`` and
``OUT/val.txt``, one ``<image path relative to DIR> <label>`` line per image, and
``OUT/vww_info.json`` (COCO folder, threshold, area rule, split source, counts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple, Union

from torch import Tensor
from torch.utils.data import Dataset

from .._io import atomic_write_text
from .imagefolder import load_rgb

__all__ = ["vww_labels", "read_id_list", "make_vww", "VisualWakeWords", "VWW_THRESHOLD"]

VWW_THRESHOLD = 0.005
PathLike = Union[str, os.PathLike]


def _load_coco(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a COCO instances file (a JSON {type(data).__name__}, "
                         "not an object)")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path}: not a COCO instances file (no {key!r} list)")
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: {key!r} is not a list")
    return data


def _entry(source: str, what: str, k: int, entry, keys: Tuple[str, ...]) -> dict:
    """``entry`` (#``k`` of a COCO list), checked to be an object holding ``keys``."""
    if not isinstance(entry, dict):
        raise ValueError(f"{source}: {what} #{k} is not a JSON object")
    for key in keys:
        if key not in entry:
            raise ValueError(f"{source}: {what} #{k} (id {entry.get('id')}) has no {key!r}")
    return entry


def _int(source: str, what: str, k: int, entry: dict, key: str) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{source}: {what} #{k} (id {entry.get('id')}): {key!r} must be an "
                         f"integer, got {value!r}")
    return int(value)


def _size(source: str, k: int, ann: dict, key: str, value) -> float:
    """An annotation's area or box side: a finite number >= 0."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 <= value < float("inf")):
        raise ValueError(f"{source}: annotation #{k} (id {ann.get('id')}): {key!r} must be a "
                         f"number >= 0, got {value!r}")
    return float(value)


def vww_labels(coco: dict, threshold: float = VWW_THRESHOLD, area: str = "segmentation",
               category: str = "person", source: str = "annotations") -> Dict[int, int]:
    """Image id -> VWW label for one COCO instances dict.

    Args:
        coco: the parsed ``instances_*.json``.
        threshold: an object counts when its area / image area is strictly above this.
        area: ``"segmentation"`` (the annotation's ``area`` field, as the reference builder) or
            ``"bbox"`` (``w * h`` of its ``bbox``).
        category: the foreground category name.
        source: name used in error messages (the file).

    >>> coco = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"},
    ...                    {"id": 2, "width": 100, "height": 100, "file_name": "b.jpg"}],
    ...         "categories": [{"id": 1, "name": "person"}],
    ...         "annotations": [
    ...             {"image_id": 1, "category_id": 1, "area": 60, "bbox": [0, 0, 5, 10]},
    ...             {"image_id": 2, "category_id": 1, "area": 40, "bbox": [0, 0, 8, 8]}]}
    >>> vww_labels(coco), vww_labels(coco, area="bbox")
    ({1: 1, 2: 0}, {1: 0, 2: 1})
    """
    if area not in ("segmentation", "bbox"):
        raise ValueError(f"area must be 'segmentation' or 'bbox', got {area!r}")
    if not 0 <= threshold < 1:  # a fraction of the image (0.005), not a percentage
        raise ValueError(f"threshold must be a fraction of the image area in [0, 1), got "
                         f"{threshold}")
    cat_ids = set()
    for k, c in enumerate(coco["categories"]):
        cid = _int(source, "category", k, _entry(source, "category", k, c, ("id",)), "id")
        if c.get("name") == category:
            cat_ids.add(cid)
    if not cat_ids:
        raise ValueError(f"{source}: no category named {category!r}")
    sizes: Dict[int, float] = {}
    first: Dict[int, int] = {}  # image id -> index of its entry in "images"
    for k, img in enumerate(coco["images"]):
        iid = _int(source, "image", k, _entry(source, "image", k, img, ("id",)), "id")
        if iid in first:  # else the later entry's size silently replaced the earlier one's
            raise ValueError(f"{source}: image #{k} repeats the id {iid} of image #{first[iid]}")
        first[iid] = k
        w, h = img.get("width"), img.get("height")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                   for v in (w, h)):
            raise ValueError(f"{source}: image id {iid} has no valid width/height")
        sizes[iid] = float(w) * float(h)
    labels = {i: 0 for i in sizes}
    for k, ann in enumerate(coco["annotations"]):
        _entry(source, "annotation", k, ann, ("image_id", "category_id"))
        if _int(source, "annotation", k, ann, "category_id") not in cat_ids:
            continue
        iid = _int(source, "annotation", k, ann, "image_id")
        if iid not in sizes:
            raise ValueError(f"{source}: annotation #{k} (id {ann.get('id')}) refers to unknown "
                             f"image id {iid}")
        if area == "bbox":
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise ValueError(f"{source}: annotation #{k} (id {ann.get('id')}) has no bbox")
            a = _size(source, k, ann, "bbox", bbox[2]) * _size(source, k, ann, "bbox", bbox[3])
        else:
            if "area" not in ann:
                raise ValueError(f"{source}: annotation #{k} (id {ann.get('id')}) has no area")
            a = _size(source, k, ann, "area", ann["area"])
        if a / sizes[iid] > threshold:
            labels[iid] = 1
    return labels


def read_id_list(path: PathLike) -> Set[int]:
    """Image ids, one integer per line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"id list not found: {path}")
    ids: Set[int] = set()
    with open(path) as f:
        for n, line in enumerate(f, 1):
            s = line.split("#", 1)[0].strip()
            if not s:
                continue
            try:
                ids.add(int(s))
            except ValueError:
                raise ValueError(f"{path}, line {n}: expected an image id, got {s!r}") from None
    if not ids:
        raise ValueError(f"{path}: no image ids")
    return ids


def make_vww(coco_dir: PathLike, out_dir: PathLike, minival_ids: Optional[PathLike] = None,
             year: str = "2014", threshold: float = VWW_THRESHOLD,
             area: str = "segmentation") -> dict:
    """Write the Visual Wake Words label lists for a COCO folder.

    Args:
        coco_dir: COCO root with ``annotations/instances_{train,val}<year>.json`` and the
            image folders ``train<year>/``, ``val<year>/``.
        out_dir: where ``train.txt``, ``val.txt`` and ``vww_info.json`` go.
        minival_ids: file with the minival image ids (see the module docstring); ``None``
            gives the train / val fallback.
        year: COCO release (``"2014"``, the paper's; ``"2017"`` also works).
        threshold, area: see :func:`vww_labels`.

    Returns:
        the info dict also written to ``vww_info.json``.
    """
    coco_dir, out_dir = Path(coco_dir), Path(out_dir)
    entries: Dict[int, Tuple[str, int, str]] = {}  # id -> (relative path, label, coco split)
    for split in ("train", "val"):
        ann = coco_dir / "annotations" / f"instances_{split}{year}.json"
        data = _load_coco(ann)
        labels = vww_labels(data, threshold, area, source=str(ann))
        for k, img in enumerate(data["images"]):
            _entry(str(ann), "image", k, img, ("file_name",))
            iid = int(img["id"])
            if iid in entries:  # (a repeat inside one file is refused by vww_labels)
                raise ValueError(f"{ann}: image id {iid} (image #{k}) also appears in "
                                 f"instances_{entries[iid][2]}{year}.json")
            entries[iid] = (f"{split}{year}/{img['file_name']}", labels[iid], split)
    if minival_ids is not None:
        mini = read_id_list(minival_ids)
        unknown = sorted(mini - set(entries))
        if len(unknown) == len(mini):
            raise ValueError(f"{minival_ids}: none of its {len(mini)} ids is a COCO {year} image")
        val_ids = sorted(i for i in entries if i in mini)
        train_ids = sorted(i for i in entries if i not in mini)
        split_rule = f"train = train{year} + val{year} minus minival; val = minival ({minival_ids})"
    else:
        unknown = []
        val_ids = sorted(i for i, e in entries.items() if e[2] == "val")
        train_ids = sorted(i for i, e in entries.items() if e[2] == "train")
        split_rule = (f"no minival id list given: train = train{year}, val = val{year} "
                      "(NOT the paper's split)")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, ids in (("train", train_ids), ("val", val_ids)):
        lines = [f"{entries[i][0]} {entries[i][1]}\n" for i in ids]
        atomic_write_text(out_dir / f"{name}.txt", "".join(lines))
        pos = sum(entries[i][1] for i in ids)
        counts[name] = {"images": len(ids), "person": pos, "no_person": len(ids) - pos}
    info = {"coco_dir": str(coco_dir.resolve()), "year": year, "threshold": threshold,
            "area": area, "split": split_rule, "counts": counts,
            "minival_ids_not_in_coco": len(unknown)}
    atomic_write_text(out_dir / "vww_info.json", json.dumps(info, indent=2) + "\n")
    return info


class VisualWakeWords(Dataset):
    """The images listed by :func:`make_vww`: ``(transform(image), label)``, label 1 = person.

    Args:
        root: the output folder of :func:`make_vww` (holding ``vww_info.json``).
        split: ``"train"`` or ``"val"``.
        transform: applied to the RGB ``PIL.Image``.
        coco_dir: COCO folder (default: the one recorded in ``vww_info.json``).
        limit: keep only the first ``limit`` images.
    """

    classes = ("no_person", "person")

    def __init__(self, root: PathLike, split: str = "train", transform: Optional[Callable] = None,
                 coco_dir: Optional[PathLike] = None, limit: Optional[int] = None):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        root = Path(root)
        info_path = root / "vww_info.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"{root}: no vww_info.json (run `rnnpool make-vww` first)")
        try:
            info = json.loads(info_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{info_path}: not a JSON file ({e})") from None
        if not coco_dir and not (isinstance(info, dict) and info.get("coco_dir")):
            raise ValueError(f"{info_path}: no 'coco_dir' (or pass coco_dir)")
        self.coco_dir = Path(coco_dir or info["coco_dir"])
        self.samples: List[Tuple[str, int]] = []
        list_path = root / f"{split}.txt"
        with open(list_path) as f:
            for n, line in enumerate(f, 1):
                parts = line.rsplit(None, 1)
                if len(parts) != 2 or parts[1] not in ("0", "1"):
                    raise ValueError(f"{list_path}, line {n}: expected '<image path> <0|1>'")
                self.samples.append((parts[0], int(parts[1])))
        if limit is not None:
            self.samples = self.samples[:limit]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Tuple[Tensor, int]:
        rel, label = self.samples[i]
        img = load_rgb(str(self.coco_dir / rel))
        return (self.transform(img) if self.transform is not None else img), label
