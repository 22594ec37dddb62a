"""Joint image + box transforms for face and head detection (SPEC §5).

Every transform takes a ``PIL.Image`` and ``boxes`` (``ndarray[M, 4]`` xyxy, absolute pixels)
and returns ``(image, boxes)``: a ``FloatTensor[C, H, W]`` in ``[0, 1]`` (``C = 1`` for the
monochrome QVGA path) and ``FloatTensor[K, 4]`` xyxy boxes in pixels of the returned image.

Coordinates are continuous: pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``, so a box
``(x1, y1, x2, y2)`` covers ``x2 - x1`` pixels across. Resizing by ``s`` maps ``x -> s * x``,
cropping at ``x0`` maps ``x -> x - x0`` and a horizontal flip of a ``W``-wide image maps
``x -> W - x``; the image resampling uses the same (half-pixel-centre) convention, so boxes stay
on their pixels.

Training augmentation (:class:`TrainTransform`), as in S3FD / PyramidBox:

1. photometric distortion (SSD): random brightness, contrast, saturation and hue jitter;
2. with probability ``p_anchor_sampling`` *data-anchor-sampling* (PyramidBox): pick a face of
   size ``s_face = sqrt(w h)``, find the nearest anchor ``s_i`` of ``anchors``, draw a target
   anchor index uniformly from ``0 .. min(i + 1, len(anchors) - 1)``, a target size uniformly in
   ``[s_t / 2, 2 s_t]``, rescale the image so the face has that size and take a ``size x size``
   window that contains the face (padding with the mean colour where the window leaves the
   image); otherwise an SSD/S3FD-style square crop of ``[0.3, 1]`` of the short side;
3. boxes whose centre leaves the window are dropped (*centre rule*), the others clipped to it;
   boxes smaller than ``min_face_size`` output pixels are dropped;
4. horizontal flip with probability ``p_flip``; 5. optional conversion to one luma channel.

Randomness comes from a ``numpy.random.Generator``: pass ``rng=`` for reproducible draws; by
default a generator is seeded from torch's RNG, so ``torch.manual_seed`` and the per-worker
seeds of ``DataLoader`` apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .imagefolder import load_rgb  # re-exported: the one image reader of the data loaders

__all__ = [
    "load_rgb",
    "pil_to_tensor",
    "photometric_distort",
    "warp_window",
    "window_boxes",
    "hflip",
    "to_luma",
    "data_anchor_window",
    "ssd_crop_window",
    "TrainTransform",
    "EvalTransform",
    "train_transform",
    "eval_transform",
    "detection_collate",
]

#: Fill colour (RGB in [0, 1], the ImageNet mean) for window areas outside the image.
FILL_RGB = (0.485, 0.456, 0.406)
#: ITU-R BT.601 luma weights used for the monochrome path.
LUMA = (0.299, 0.587, 0.114)
_DEFAULT_ANCHORS = (16.0, 32.0, 64.0, 128.0, 256.0, 512.0)

ImageLike = Union[Image.Image, np.ndarray]


def _to_float_array(image: ImageLike) -> np.ndarray:
    """PIL image or uint8/float HWC array -> float32 ``ndarray[H, W, C]`` in [0, 1]."""
    if isinstance(image, Image.Image):
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        arr = np.asarray(image, dtype=np.float32) / 255.0
    else:
        arr = np.asarray(image)
        arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(
            f"expected an image of shape (H, W), (H, W, 1) or (H, W, 3), got {arr.shape}"
        )
    return arr


def _to_tensor(arr: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))


def pil_to_tensor(image: ImageLike) -> Tensor:
    """``PIL.Image`` (RGB or L) or uint8 ``ndarray[H, W(, C)]`` -> ``FloatTensor[C, H, W]`` in
    [0, 1].

    >>> pil_to_tensor(Image.new("RGB", (4, 2), (255, 0, 51))).shape
    torch.Size([3, 2, 4])
    """
    return _to_tensor(_to_float_array(image))


def _channels(arr: np.ndarray, grayscale: bool) -> np.ndarray:
    """One luma channel if ``grayscale``, else three (a one-channel image is repeated)."""
    if grayscale:
        return to_luma(arr)
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr


def to_luma(arr: np.ndarray) -> np.ndarray:
    """``ndarray[H, W, 3]`` RGB -> ``ndarray[H, W, 1]`` BT.601 luma
    (``0.299 R + 0.587 G + 0.114 B``)."""
    if arr.shape[2] == 1:
        return arr
    return (arr @ np.asarray(LUMA, dtype=arr.dtype))[:, :, None]


def photometric_distort(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SSD photometric distortion of a float RGB ``ndarray[H, W, 3]`` in [0, 1].

    Each with probability 1/2: brightness ``+ U(-32, 32) / 255``; contrast ``* U(0.5, 1.5)``
    (before or after the colour steps, at random); saturation ``* U(0.5, 1.5)`` and hue
    ``+ U(-18, 18)`` degrees in HSV. The result is clipped to [0, 1]. A one-channel image gets
    only brightness and contrast.
    """
    # Every step works in place on one copy (plus the HSV image): a new full-size array per
    # step cost more in page faults than the arithmetic itself. Same values as out-of-place.
    out = arr.astype(np.float32, copy=True)
    if rng.random() < 0.5:
        out += rng.uniform(-32, 32) / 255.0
    contrast_first = rng.random() < 0.5

    def contrast(x: np.ndarray) -> None:
        if rng.random() < 0.5:
            x *= rng.uniform(0.5, 1.5)

    if contrast_first:
        contrast(out)
    if out.shape[2] == 3:
        do_sat, do_hue = rng.random() < 0.5, rng.random() < 0.5
        if do_sat or do_hue:
            hsv = cv2.cvtColor(np.clip(out, 0, 1, out=out), cv2.COLOR_RGB2HSV)  # H in [0, 360)
            if do_sat:
                sat = hsv[:, :, 1]
                sat *= rng.uniform(0.5, 1.5)
                np.clip(sat, 0, 1, out=sat)
            if do_hue:
                # hue in [-18, 378): one wrap gives np.mod(hue, 360.0) bit for bit (x - 360 is
                # exact there) at a tenth of its cost
                hue = hsv[:, :, 0]
                hue += rng.uniform(-18, 18)
                np.subtract(hue, 360.0, out=hue, where=hue >= 360.0)
                np.add(hue, 360.0, out=hue, where=hue < 0)
            cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=out)
    if not contrast_first:
        contrast(out)
    return np.clip(out, 0.0, 1.0, out=out)


def warp_window(
    arr: np.ndarray,
    window: Sequence[float],
    out_hw: Tuple[int, int],
    fill: Sequence[float] = FILL_RGB,
) -> np.ndarray:
    """Resample the window ``(x0, y0, x1, y1)`` (continuous pixels, may leave the image) of
    ``arr[H, W, C]`` to ``out_hw``; outside the image the window is filled with ``fill``.

    The output pixel ``(u, v)`` samples the input at ``x = x0 + (u + 0.5) / sx - 0.5`` (``sx =
    out_w / (x1 - x0)``), i.e. boxes map by ``x -> (x - x0) * sx`` (:func:`window_boxes`).
    Shrinking by more than 2 first area-averages the image.
    """
    x0, y0, x1, y1 = (float(v) for v in window)
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty window {window}")
    h, w = arr.shape[:2]
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    if min(sx, sy) < 0.5:  # anti-alias large shrinks; the exact ratios keep boxes aligned
        nw, nh = max(1, round(w * min(1.0, 2 * sx))), max(1, round(h * min(1.0, 2 * sy)))
        arr = cv2.resize(arr, (nw, nh), interpolation=cv2.INTER_AREA)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        rx, ry = nw / w, nh / h
        x0, x1, y0, y1 = x0 * rx, x1 * rx, y0 * ry, y1 * ry
        sx, sy = sx / rx, sy / ry
    c = arr.shape[2]
    fill_v = (
        tuple(float(v) for v in fill)[:c] if c == len(tuple(fill)) else (float(np.mean(fill)),) * c
    )
    m = np.array(
        [[sx, 0.0, sx * (0.5 - x0) - 0.5], [0.0, sy, sy * (0.5 - y0) - 0.5]], dtype=np.float64
    )
    out = cv2.warpAffine(
        arr,
        m,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill_v + (0.0,) * (4 - c),
    )
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def window_boxes(
    boxes: np.ndarray,
    window: Sequence[float],
    out_hw: Tuple[int, int],
    min_size: float = 0.0,
    centre_rule: bool = True,
) -> np.ndarray:
    """Map xyxy boxes into a window resampled to ``out_hw`` (see :func:`warp_window`).

    With ``centre_rule``, boxes whose centre is outside the window are dropped. The rest are
    clipped to the window, scaled, and dropped if a side is ``<= 0`` or ``< min_size`` output
    pixels.

    Returns:
        ``float32 ndarray[K, 4]``.

    >>> window_boxes(np.array([[10., 10., 30., 20.], [0., 0., 4., 4.]]), (5, 5, 45, 45), (80, 80))
    array([[10., 10., 50., 30.]], dtype=float32)
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in window)
    out_h, out_w = float(out_hw[0]), float(out_hw[1])
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    keep = np.ones(len(boxes), dtype=bool)
    if centre_rule:
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        keep &= (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    b = boxes.copy()
    # Clip again after scaling (rounding must not leave [0, out]); test the sizes of the
    # float32 boxes actually returned, so no zero-width box survives the cast.
    b[:, 0::2] = np.clip((np.clip(b[:, 0::2], x0, x1) - x0) * sx, 0.0, out_w)
    b[:, 1::2] = np.clip((np.clip(b[:, 1::2], y0, y1) - y0) * sy, 0.0, out_h)
    b = b.astype(np.float32)
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    keep &= (bw > 0) & (bh > 0) & (bw >= min_size) & (bh >= min_size)
    return b[keep].reshape(-1, 4)


def hflip(arr: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror ``arr[H, W, C]`` left-right and its xyxy boxes (``x -> W - x``)."""
    w = arr.shape[1]
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, [0, 2]] = w - b[:, [2, 0]]
    if arr.ndim == 3 and arr.size and arr.shape[2] <= 4:  # cv2.flip: ~15x numpy's reversed copy
        return cv2.flip(np.ascontiguousarray(arr), 1).reshape(arr.shape), b
    return np.ascontiguousarray(arr[:, ::-1]), b


def _above(c: float, side: float) -> float:
    """The smallest float ``t`` with ``t + side > c`` (as computed), so ``[t, t + side)`` holds
    ``c``."""
    t = float(np.nextafter(c - side, np.inf))
    while t + side <= c:
        t = float(np.nextafter(t, np.inf))
    return t


def data_anchor_window(
    boxes: np.ndarray,
    image_hw: Tuple[int, int],
    size: int,
    anchors: Sequence[float],
    rng: np.random.Generator,
) -> Tuple[float, float, float, float]:
    """Data-anchor-sampling (PyramidBox): the window (original pixels) of a ``size x size``
    crop after rescaling the image so that a random face matches a random smaller-or-similar
    anchor (see the module docstring). The face is drawn among the boxes of positive width
    and height; a face larger than the window keeps its centre inside it.

    Raises:
        ValueError: no box has positive width and height.
    """
    h, w = image_hw
    anchors = np.asarray(anchors, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    faces = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    if len(faces) == 0:
        raise ValueError("data-anchor-sampling needs a box of positive width and height")
    face = faces[rng.integers(len(faces))]
    s_face = float(np.sqrt((face[2] - face[0]) * (face[3] - face[1])))
    i_anchor = int(np.argmin(np.abs(anchors - s_face)))
    i_target = int(rng.integers(0, min(i_anchor + 1, len(anchors) - 1) + 1))
    s_target = rng.uniform(anchors[i_target] / 2, anchors[i_target] * 2)
    scale = s_target / s_face
    side = size / scale  # the window side in original pixels

    def pick(lo_face: float, hi_face: float, extent: float) -> float:
        # window start t: contains the face (t <= lo_face, t + side >= hi_face) and stays in
        # the image when it fits (0 <= t <= extent - side), or covers it when it does not.
        # A face longer than the window: the window lies inside it and keeps its centre c
        # (t <= c < t + side), else the centre rule would drop the sampled face.
        img_lo, img_hi = (0.0, extent - side) if extent >= side else (extent - side, 0.0)
        lo, hi = max(hi_face - side, img_lo), min(lo_face, img_hi)
        if lo > hi:  # cannot satisfy both: keep the face
            lo, hi = min(hi_face - side, lo_face), max(hi_face - side, lo_face)
            if hi_face - lo_face > side:
                c = (lo_face + hi_face) / 2
                lo, hi = max(lo, _above(c, side)), min(hi, c)
        return float(rng.uniform(lo, hi)) if hi > lo else float(lo)

    x0 = pick(face[0], face[2], w)
    y0 = pick(face[1], face[3], h)
    return x0, y0, x0 + side, y0 + side


def ssd_crop_window(
    boxes: np.ndarray,
    image_hw: Tuple[int, int],
    rng: np.random.Generator,
    min_scale: float = 0.3,
    max_trials: int = 50,
) -> Tuple[float, float, float, float]:
    """S3FD-style crop: a square of side ``U(min_scale, 1) * min(H, W)`` at a random place in
    the image, redrawn (up to ``max_trials`` times) until it holds the centre of at least one
    box when there are boxes. If no trial does, the last square is moved (uniformly among the
    placements inside the image) to hold the centre of a random box whose centre is in the
    image, so a face is never lost to an unlucky draw (S3FD's loader redraws instead)."""
    h, w = image_hw
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    window = (0.0, 0.0, float(w), float(h))
    side = float(min(h, w))
    for _ in range(max_trials):
        side = rng.uniform(min_scale, 1.0) * min(h, w)
        x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
        window = (x0, y0, x0 + side, y0 + side)
        if len(boxes) == 0 or np.any((cx >= x0) & (cx < x0 + side) & (cy >= y0) & (cy < y0 + side)):
            return window
    inside = np.nonzero((cx >= 0) & (cx < w) & (cy >= 0) & (cy < h))[0]
    if len(inside) == 0:
        return window
    k = inside[rng.integers(len(inside))]

    def place(c: float, extent: float) -> float:
        # t in (c - side, c] and [0, extent - side]: the window holds c and stays in the image.
        lo, hi = max(0.0, _above(c, side)), min(c, extent - side)
        return float(rng.uniform(lo, hi)) if hi > lo else float(lo)

    x0, y0 = place(cx[k], w), place(cy[k], h)
    return x0, y0, x0 + side, y0 + side


def _rng_from_torch() -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


@dataclass
class TrainTransform:
    """Training augmentation for S3FD-style detectors (see the module docstring).

    Args:
        size: the square output side (640; 320 for the QVGA/monochrome models).
        grayscale: return one luma channel instead of RGB.
        anchors: anchor sizes for data-anchor-sampling (default ``16 .. 512`` scaled by
            ``size / 640``).
        p_anchor_sampling: probability of data-anchor-sampling (else an SSD crop).
        p_flip: probability of a horizontal flip.
        photometric: apply :func:`photometric_distort`.
        min_face_size: drop boxes smaller than this many output pixels.

    Shape:
        - Input: ``PIL.Image`` and ``ndarray[M, 4]`` xyxy boxes.
        - Output: ``FloatTensor[C, size, size]`` (``C = 1`` if grayscale else 3) and
          ``FloatTensor[K, 4]``.

    Example:
        >>> t = TrainTransform(size=64)
        >>> img, boxes = t(Image.new("RGB", (100, 80)), np.array([[10., 10., 40., 40.]]),
        ...                rng=np.random.default_rng(0))
        >>> img.shape, boxes.shape[1]
        (torch.Size([3, 64, 64]), 4)
    """

    size: int = 640
    grayscale: bool = False
    anchors: Optional[Tuple[float, ...]] = None
    p_anchor_sampling: float = 0.5
    p_flip: float = 0.5
    photometric: bool = True
    min_face_size: float = 1.0

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"size must be positive, got {self.size}")
        if self.anchors is None:
            self.anchors = tuple(a * self.size / 640 for a in _DEFAULT_ANCHORS)

    def __call__(
        self, image: ImageLike, boxes: np.ndarray, rng: Optional[np.random.Generator] = None
    ) -> Tuple[Tensor, Tensor]:
        rng = _rng_from_torch() if rng is None else rng
        arr = _to_float_array(image)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if self.photometric:
            arr = photometric_distort(arr, rng)
        hw = arr.shape[:2]
        has_face = bool(np.any((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])))
        if has_face and rng.random() < self.p_anchor_sampling:
            window = data_anchor_window(boxes, hw, self.size, self.anchors, rng)
        else:
            window = ssd_crop_window(boxes, hw, rng)
        out_hw = (self.size, self.size)
        arr = warp_window(arr, window, out_hw)
        boxes = window_boxes(boxes, window, out_hw, min_size=self.min_face_size)
        if rng.random() < self.p_flip:
            arr, boxes = hflip(arr, boxes)
        return _to_tensor(_channels(arr, self.grayscale)), torch.from_numpy(boxes)


@dataclass
class EvalTransform:
    """Deterministic evaluation transform: optional resize and grayscale conversion.

    Args:
        size: ``None`` keeps the image size; an int resizes to ``size x size``; a pair
            ``(height, width)`` resizes to that size. Boxes scale with the image.
        grayscale: return one luma channel.

    Example:
        >>> img, boxes = EvalTransform(size=(50, 100))(Image.new("RGB", (200, 100)),
        ...                                            np.array([[20., 10., 60., 50.]]))
        >>> img.shape, boxes.tolist()
        (torch.Size([3, 50, 100]), [[10.0, 5.0, 30.0, 25.0]])
    """

    size: Optional[Union[int, Tuple[int, int]]] = None
    grayscale: bool = False

    def __call__(self, image: ImageLike, boxes: np.ndarray) -> Tuple[Tensor, Tensor]:
        arr = _to_float_array(image)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
        if self.size is not None:
            out_h, out_w = (self.size, self.size) if isinstance(self.size, int) else self.size
            h, w = arr.shape[:2]
            if (out_h, out_w) != (h, w):
                shrink = out_h < h and out_w < w
                arr = cv2.resize(
                    arr,
                    (int(out_w), int(out_h)),
                    interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
                )
                if arr.ndim == 2:
                    arr = arr[:, :, None]
                boxes[:, 0::2] *= out_w / w
                boxes[:, 1::2] *= out_h / h
        return _to_tensor(_channels(arr, self.grayscale)), torch.from_numpy(boxes)


def train_transform(size: int = 640, grayscale: bool = False, **kwargs) -> TrainTransform:
    """The training augmentation of SPEC §5 (``size=320, grayscale=True`` for QVGA models);
    keyword arguments go to :class:`TrainTransform`."""
    return TrainTransform(size=size, grayscale=grayscale, **kwargs)


def eval_transform(
    size: Optional[Union[int, Tuple[int, int]]] = None, grayscale: bool = False
) -> EvalTransform:
    """The evaluation transform (:class:`EvalTransform`)."""
    return EvalTransform(size=size, grayscale=grayscale)


def detection_collate(
    batch: Sequence[Tuple[Tensor, Dict[str, Tensor]]],
) -> Tuple[Tensor, List[Dict[str, Tensor]]]:
    """Collate ``(image, target)`` items: ``(Tensor[B, C, H, W], list of B targets)``.

    Raises:
        ValueError: the images differ in size (use a transform with a fixed ``size``).

    >>> imgs, targets = detection_collate(
    ...     [(torch.zeros(3, 4, 4), {"boxes": torch.zeros(0, 4)})] * 2)
    >>> imgs.shape, len(targets)
    (torch.Size([2, 3, 4, 4]), 2)
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    images = [item[0] for item in batch]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) != 1:
        raise ValueError(
            f"images in a batch must share one shape, got {sorted(shapes)}; "
            "use a transform with a fixed size"
        )
    return torch.stack(images), [item[1] for item in batch]
