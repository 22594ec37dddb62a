"""A synthetic face detection set in the WIDER FACE format, built from images that ship offline.

WIDER FACE cannot be downloaded on the project's machines, so :func:`make_faces` builds a small
stand-in with exact boxes *by construction*:

- **Faces**: the 100 real face crops of ``skimage.data.lfw_subset()`` (the first 100 of its 200
  25x25 grayscale images; the other 100 are non-faces and are not used). Each pasted face is a
  whole 25x25 crop resized (bicubic) to a random square side, log-uniform in
  ``[min_face, max_face]`` (12..120 px by default), turned into RGB with a random per-channel
  gain in ``[0.7, 1.0]`` (a tint, never clipping) and pasted opaquely.
- **Backgrounds**: photographs without people: :data:`OPENCV_SCENES` from the Debian
  ``opencv-doc`` package (``/usr/share/doc/opencv-doc/examples/data``) and :data:`SKIMAGE_SCENES`
  from scikit-image. Images with people, faces, face-like drawings or animal faces (``messi5``,
  ``basketball*``, ``left*``/``right*`` chessboards held by a person, ``graf*``, ``baboon``,
  ``chicky_512``, ``HappyFish``, ``Blender_Suzanne*``, ``astronaut``, ``camera``, ``chelsea``)
  are left out. Each image is a random crop (a 4:3 window of 50..100 % of the largest one, random
  mirror) resized to ``image_size`` (640x480 by default).
- **Splits**: with ``holdout=True`` (the default) val is disjoint from train: val images use
  the faces 80..99 and every fifth photograph (``k % 5 == 4`` in the scene order), train images
  the faces 0..79 and the other photographs, so val AP measures generalisation to unseen
  identities and backgrounds.
- **Layout**: each image has 0 faces with probability ``p_empty`` (default 0.1), else
  ``1..max_faces_per_image`` faces at random places, never overlapping (rejection sampling), and
  fully inside the image. Event folders are ``<k>--<scene name>``: the images of an event share a
  background photograph.
- **Files**: ``WIDER_{train,val}/images/<event>/<event>_<n>.jpg`` (JPEG, quality 95),
  ``wider_face_split/wider_face_{train,val}_bbx_gt.txt`` (the official annotation format; all
  attribute columns 0) and, for the val split, the evaluation ground truth in the official
  structure in ``wider_face_split/``: ``wider_face_val.mat`` and
  ``wider_{easy,medium,hard}_val.mat``. ``synthetic_faces.json`` records the parameters, the
  scenes and the counts.

Difficulty settings (synthetic, by face size, as WIDER's are roughly by size): *hard* keeps every
face, *medium* faces of side ``>= 20`` px and *easy* faces of side ``>= 40`` px
(:data:`SETTING_MIN_SIZE`); the other faces of an image are "ignore" in that setting.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .._io import atomic_output, atomic_write_text

__all__ = [
    "OPENCV_DOC_DIR",
    "OPENCV_SCENES",
    "SKIMAGE_SCENES",
    "SETTING_MIN_SIZE",
    "lfw_faces",
    "load_scenes",
    "render_image",
    "make_faces",
]

logger = logging.getLogger(__name__)

OPENCV_DOC_DIR = "/usr/share/doc/opencv-doc/examples/data"
#: Photographs without people from Debian's opencv-doc (checked by eye).
OPENCV_SCENES = (
    "fruits.jpg",
    "home.jpg",
    "building.jpg",
    "butterfly.jpg",
    "apple.jpg",
    "orange.jpg",
    "aero1.jpg",
    "aero3.jpg",
    "starry_night.jpg",
    "board.jpg",
    "blox.jpg",
    "aloeL.jpg",
    "leuvenA.jpg",
    "leuvenB.jpg",
    "box_in_scene.png",
    "smarties.png",
    "sudoku.png",
    "stuff.jpg",
    "rubberwhale1.png",
    "licenseplate_motion.jpg",
)
#: scikit-image images without people that load offline.
SKIMAGE_SCENES = (
    "coffee",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "coins",
)
#: Smallest face side (px) kept in each evaluation setting of the synthetic set.
SETTING_MIN_SIZE = {"easy": 40, "medium": 20, "hard": 0}

PathLike = Union[str, os.PathLike]


def lfw_faces() -> np.ndarray:
    """The 100 real faces of ``skimage.data.lfw_subset()``: ``uint8 ndarray[100, 25, 25]``."""
    from skimage.data import lfw_subset

    faces = lfw_subset()[:100]
    return np.clip(np.round(faces * 255), 0, 255).astype(np.uint8)


def load_scenes(scene_dir: Optional[PathLike] = OPENCV_DOC_DIR) -> List[Tuple[str, np.ndarray]]:
    """The background photographs as ``(name, uint8 ndarray[H, W, 3])``, in a fixed order.

    Scenes of :data:`OPENCV_SCENES` missing from ``scene_dir`` (or all of them when
    ``scene_dir`` is ``None``) are skipped with a warning; :data:`SKIMAGE_SCENES` always load.
    """
    import skimage.data

    scenes: List[Tuple[str, np.ndarray]] = []
    missing = []
    for name in OPENCV_SCENES if scene_dir is not None else ():
        path = Path(scene_dir) / name
        if not path.is_file():
            missing.append(name)
            continue
        with Image.open(path) as im:
            scenes.append((Path(name).stem, np.asarray(im.convert("RGB"))))
    if scene_dir is not None and missing:
        logger.warning(
            "synthetic faces: %d opencv-doc scenes not found in %s (%s); "
            "install the Debian package opencv-doc",
            len(missing),
            scene_dir,
            ", ".join(missing),
        )
    for name in SKIMAGE_SCENES:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        scenes.append((name, np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)))
    return scenes


def _background(scene: np.ndarray, size: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random 4:3 (``size`` aspect) crop of 50..100 % of the largest one, resized to ``size``
    (``(width, height)``), randomly mirrored."""
    h, w = scene.shape[:2]
    out_w, out_h = size
    aspect = out_w / out_h
    cw_max = min(w, h * aspect)
    cw = cw_max * rng.uniform(0.5, 1.0)
    ch = cw / aspect
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    crop = Image.fromarray(scene).resize(
        (out_w, out_h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch)
    )
    arr = np.asarray(crop)
    return np.ascontiguousarray(arr[:, ::-1]) if rng.random() < 0.5 else arr.copy()


def render_image(
    scene: np.ndarray,
    faces: np.ndarray,
    rng: np.random.Generator,
    image_size: Tuple[int, int] = (640, 480),
    face_range: Tuple[int, int] = (12, 120),
    max_faces_per_image: int = 8,
    p_empty: float = 0.1,
) -> Tuple[np.ndarray, np.ndarray, List[Dict[str, object]]]:
    """Render one synthetic image.

    Args:
        scene: background photograph ``uint8 ndarray[H, W, 3]``.
        faces: ``uint8 ndarray[F, h, w]`` grayscale face crops (:func:`lfw_faces`).
        rng: the random generator.
        image_size: ``(width, height)``.
        face_range: ``(min, max)`` face side in pixels (log-uniform).
        max_faces_per_image: the most faces in one image.
        p_empty: probability of an image without faces.

    Returns:
        ``(image uint8 ndarray[H, W, 3], boxes int64 ndarray[M, 4] as x y w h, info)`` where
        ``info[k]`` holds the face index and the RGB gains of face ``k``. Face ``k`` covers
        exactly ``image[y:y + h, x:x + w]``.
    """
    width, height = image_size
    lo, hi = face_range
    hi = min(hi, width, height)
    if not 1 <= lo <= hi:
        raise ValueError(f"face_range {face_range} does not fit a {width}x{height} image")
    image = _background(scene, image_size, rng)
    n = 0 if rng.random() < p_empty else int(rng.integers(1, max_faces_per_image + 1))
    boxes: List[Tuple[int, int, int, int]] = []
    info: List[Dict[str, object]] = []
    for _ in range(n):
        side = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        for _attempt in range(30):
            x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            if all(
                x + side <= bx or bx + bw <= x or y + side <= by or by + bh <= y
                for bx, by, bw, bh in boxes
            ):
                break
        else:
            continue  # no free place for a face of this size: fewer faces in this image
        idx = int(rng.integers(len(faces)))
        gains = rng.uniform(0.7, 1.0, size=3)
        face = np.asarray(
            Image.fromarray(faces[idx]).resize((side, side), Image.BICUBIC), np.float32
        )
        rgb = np.clip(np.round(face[:, :, None] * gains[None, None, :]), 0, 255).astype(np.uint8)
        image[y : y + side, x : x + side] = rgb
        boxes.append((x, y, side, side))
        info.append({"face": idx, "gains": gains.tolist()})
    return image, np.asarray(boxes, dtype=np.int64).reshape(-1, 4), info


def _annotation_text(records: Sequence[Tuple[str, np.ndarray]]) -> str:
    lines = []
    for name, boxes in records:
        lines += [name, str(len(boxes))]
        if len(boxes) == 0:
            lines.append("0 0 0 0 0 0 0 0 0 0")
        for x, y, w, h in boxes.tolist():
            lines.append(f"{x} {y} {w} {h} 0 0 0 0 0 0")
    return "\n".join(lines) + "\n"


def make_faces(
    out_dir: PathLike,
    num_train: int = 200,
    num_val: int = 50,
    seed: int = 0,
    image_size: Tuple[int, int] = (640, 480),
    face_range: Tuple[int, int] = (12, 120),
    max_faces_per_image: int = 8,
    p_empty: float = 0.1,
    scene_dir: Optional[PathLike] = OPENCV_DOC_DIR,
    quality: int = 95,
    holdout: bool = True,
) -> Path:
    """Write a synthetic WIDER-FACE-format data set (see the module docstring).

    Args:
        out_dir: the data set root (created; existing files of the same names are replaced).
        num_train, num_val: images per split.
        seed: the random seed; the same arguments give the same files.
        image_size: ``(width, height)`` of every image.
        face_range: ``(min, max)`` face side in pixels.
        max_faces_per_image: the most faces in one image.
        p_empty: probability of an image without faces.
        scene_dir: the opencv-doc example folder (``None``: scikit-image scenes only).
        quality: JPEG quality.
        holdout: keep val disjoint from train: val uses LFW faces 80..99 and every fifth
            background photograph, train faces 0..79 and the other photographs. ``False``
            draws both splits from all faces and photographs.

    Returns:
        ``out_dir`` as a ``Path``; evaluate with ``gt_dir = out_dir / "wider_face_split"``.

    Example:
        >>> import tempfile
        >>> root = make_faces(tempfile.mkdtemp(), num_train=2, num_val=2, image_size=(160, 120),
        ...                   face_range=(12, 40))
        >>> sorted(p.name for p in (root / "wider_face_split").iterdir())[:3]
        ['wider_easy_val.mat', 'wider_face_train_bbx_gt.txt', 'wider_face_val.mat']
    """
    from ..detection.evaluation import WiderGroundTruth, save_wider_ground_truth

    if num_train < 0 or num_val < 0:
        raise ValueError(f"image counts must be >= 0, got train={num_train}, val={num_val}")
    if max_faces_per_image < 1:  # else numpy's bare "low >= high" from the face-count draw
        raise ValueError(f"max_faces_per_image must be >= 1, got {max_faces_per_image}")
    out = Path(out_dir)
    faces = lfw_faces()
    scenes = load_scenes(scene_dir)
    events = [f"{k}--{name}" for k, (name, _) in enumerate(scenes)]
    rng = np.random.default_rng(seed)
    all_scenes = list(range(len(scenes)))
    if holdout:  # val: unseen identities (LFW faces 80..99) on unseen photographs (every 5th)
        val_scenes = [k for k in all_scenes if k % 5 == 4]
        split_scenes = {"train": [k for k in all_scenes if k % 5 != 4], "val": val_scenes}
        split_faces = {"train": faces[:80], "val": faces[80:]}
    else:
        split_scenes = {"train": all_scenes, "val": all_scenes}
        split_faces = {"train": faces, "val": faces}
    stats: Dict[str, Dict[str, int]] = {}
    for split, count in (("train", num_train), ("val", num_val)):
        records: List[Tuple[str, np.ndarray]] = []
        per_event: Dict[str, List[Tuple[str, np.ndarray]]] = {}
        for n in range(count):
            k = split_scenes[split][int(rng.integers(len(split_scenes[split])))]
            image, boxes, _ = render_image(
                scenes[k][1],
                split_faces[split],
                rng,
                image_size,
                face_range,
                max_faces_per_image,
                p_empty,
            )
            event = events[k]
            stem = f"{event.split('--', 1)[0]}_{scenes[k][0]}_{split}_{n}"
            rel = f"{event}/{stem}.jpg"
            path = out / f"WIDER_{split}" / "images" / rel
            with atomic_output(path) as tmp:
                Image.fromarray(image).save(tmp, format="JPEG", quality=quality)
            records.append((rel, boxes))
            per_event.setdefault(event, []).append((stem, boxes))
        atomic_write_text(
            out / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt", _annotation_text(records)
        )
        stats[split] = {
            "images": count,
            "faces": int(sum(len(b) for _, b in records)),
            "images_without_faces": int(sum(len(b) == 0 for _, b in records)),
        }
        if split == "val":
            ev_names = [e for e in events if e in per_event]
            keep = {
                s: [
                    [np.nonzero(np.minimum(b[:, 2], b[:, 3]) >= m)[0] for _, b in per_event[e]]
                    for e in ev_names
                ]
                for s, m in SETTING_MIN_SIZE.items()
            }
            gt = WiderGroundTruth(
                events=ev_names,
                files=[[stem for stem, _ in per_event[e]] for e in ev_names],
                boxes=[[b.astype(np.float64) for _, b in per_event[e]] for e in ev_names],
                keep=keep,
            )
            save_wider_ground_truth(out / "wider_face_split", gt)
            stats[split].update(
                {
                    f"{s}_faces": int(sum(len(k) for ev in keep[s] for k in ev))
                    for s in SETTING_MIN_SIZE
                }
            )
    manifest = {
        "description": "Synthetic WIDER-FACE-format set: skimage lfw_subset faces pasted on "
        "people-free photographs (rnnpool.data.synthetic_faces)",
        "seed": seed,
        "image_size": list(image_size),
        "face_range": list(face_range),
        "max_faces_per_image": max_faces_per_image,
        "p_empty": p_empty,
        "jpeg_quality": quality,
        "setting_min_face_size": SETTING_MIN_SIZE,
        "holdout": holdout,
        "val_scenes": [events[k] for k in split_scenes["val"]],
        "scenes": events,
        "splits": stats,
    }
    atomic_write_text(out / "synthetic_faces.json", json.dumps(manifest, indent=2) + "\n")
    return out
