"""Face prediction on images of any size: input conversion, normalisation, model, post-processing.

:class:`FacePredictor` is the one inference path used by ``rnnpool detect``,
``rnnpool widerface-predict``, test-time augmentation (:mod:`rnnpool.detection.tta`) and the
evaluation code. :func:`prepare_batch` is the training-side twin: it converts and normalises a
batch of ``[0, 1]`` images exactly as the predictor does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from .postprocess import postprocess_detections

__all__ = ["LUMA", "FacePredictor", "prepare_batch", "to_image_tensor", "unwrap"]

#: ITU-R BT.601 luma weights (RGB -> monochrome for the QVGA / M4 models).
LUMA = (0.299, 0.587, 0.114)

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, Tensor]  # noqa: UP007


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper."""
    return getattr(model, "module", model)


def to_image_tensor(image: ImageInput) -> Tensor:
    """A path, ``PIL.Image``, ``uint8``/float ``ndarray[H, W(, C)]`` or ``Tensor[C, H, W]`` in
    ``[0, 1]`` -> ``FloatTensor[C, H, W]`` in ``[0, 1]`` (``C`` = 1 or 3)."""
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"image not found: {image}")
        try:
            with Image.open(image) as im:
                image = im.convert("L" if im.mode in ("L", "I;16", "I", "F") else "RGB")
        except OSError as e:
            raise ValueError(f"{image}: not a readable image ({e})") from None
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image = np.asarray(image)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ValueError(f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got {arr.shape}")
        arr = arr[:, :, :3]
        t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)
        return t.float() / 255.0 if arr.dtype == np.uint8 else t.float()
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(
                f"image tensor must be [C, H, W] with C = 1 or 3, got {tuple(image.shape)}"
            )
        return image.float()
    raise TypeError(f"unsupported image type {type(image).__name__}")


def prepare_batch(images: Tensor, config: Any) -> Tensor:
    """Match a ``[0, 1]`` batch ``Tensor[B, C, H, W]`` to a face model's input: RGB -> luma for
    monochrome models (or grey -> 3 channels), then ``(x - input_mean) / input_std``."""
    c = images.shape[1]
    if config.in_chans == 1 and c == 3:
        w = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        images = (images * w).sum(1, keepdim=True)
    elif config.in_chans == 3 and c == 1:
        images = images.expand(-1, 3, -1, -1)
    elif c != config.in_chans:
        raise ValueError(f"model takes {config.in_chans} channels, got images of {c}")
    mean = torch.tensor(config.input_mean, dtype=images.dtype, device=images.device).view(
        1, -1, 1, 1
    )
    std = torch.tensor(config.input_std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


class FacePredictor:
    """Detect faces in one image at a time with a face model from :mod:`rnnpool.models.s3fd`.

    The image is converted to the model's channels, resized (``size``), normalised with the
    model's ``input_mean`` / ``input_std``, run through the model, post-processed
    (:func:`~rnnpool.detection.postprocess.postprocess_detections`) and the boxes are mapped back
    to the original image's pixels.

    Args:
        model: an :class:`~rnnpool.models.s3fd.S3FD` model (put in eval mode here).
        size: ``None`` keeps the image size; a float ``< 10`` scales it by that factor; an int
            resizes so that the longer side has that many pixels; a pair ``(H, W)`` resizes to
            exactly that. Default ``"auto"``: RGB models keep the size but shrink so that
            ``H * W <= max_pixels``; monochrome (QVGA) models fit the image inside their
            ``input_size`` (320x240 landscape or 240x320 portrait) keeping its aspect ratio.
        score_thresh, nms_thresh, max_detections, pre_nms_top_k: see
            :func:`~rnnpool.detection.postprocess.postprocess_detections` (S3FD: 0.3, 750).
        max_pixels: the pixel budget of ``size="auto"``. Default: 1700 * 1200 (S3FD's test rule).
        device: where the model runs. Default: the model's device.

    Example::

        >>> from rnnpool.models import create_model
        >>> pred = FacePredictor(create_model("rnnpool_face_m4"), score_thresh=0.99)
        >>> boxes, scores = pred(torch.rand(3, 120, 200))  # untrained: nothing this confident
        >>> boxes.shape, pred.input_hw((120, 200))
        (torch.Size([0, 4]), (192, 320))
    """

    def __init__(
        self,
        model: nn.Module,
        size: str | None | float | tuple[int, int] = "auto",
        score_thresh: float = 0.05,
        nms_thresh: float = 0.3,
        max_detections: int = 750,
        pre_nms_top_k: int = 5000,
        max_pixels: int = 1700 * 1200,
        device: str | torch.device | None = None,
    ) -> None:
        model = unwrap(model)
        if not hasattr(model, "config") or not hasattr(model, "anchors"):
            raise TypeError(f"FacePredictor needs a face model (S3FD), got {type(model).__name__}")
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.size, self.max_pixels = size, int(max_pixels)
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.max_detections, self.pre_nms_top_k = int(max_detections), int(pre_nms_top_k)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, model_name: str | None = None, **kwargs: Any
    ) -> FacePredictor:
        """Build from a training checkpoint (or a plain state dict together with ``model_name``)."""
        from ..models import create_model
        from ..train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        state = ckpt.get("model", ckpt)
        name = model_name or ckpt.get("model_name")
        if not name:
            raise ValueError(f"{path}: no model name stored; pass --model")
        args = (ckpt.get("model_args") or {}) if name == ckpt.get("model_name") else {}
        model = create_model(name, **args)
        if not hasattr(model, "config") or not hasattr(model, "anchors"):
            task = (ckpt.get("extra") or {}).get("task")
            raise ValueError(
                f"{path}: {name} is not a face detector"
                + (f" (a {task} checkpoint)" if task else "")
                + "; give a checkpoint of an rnnpool_face_* model"
            )
        try:  # sparsity masks in the state dict are recreated by FastGRNNCell itself
            model.load_state_dict(state)
        except RuntimeError as e:
            first = " ".join(str(e).strip().splitlines()[:2])
            raise ValueError(f"{path}: weights do not fit {name}: {first}") from None
        return cls(model, **kwargs)

    def input_hw(self, image_hw: Sequence[int]) -> tuple[int, int]:
        """The ``(H, W)`` the model sees for an image of ``image_hw``."""
        h, w = int(image_hw[0]), int(image_hw[1])
        size = self.size
        if size == "auto":
            if self.config.in_chans == 1:
                th, tw = self.config.input_size
                if h > w:
                    th, tw = tw, th
                s = min(th / h, tw / w)
            else:
                s = min(1.0, math.sqrt(self.max_pixels / (h * w)))
            return max(1, round(h * s)), max(1, round(w * s))
        if size is None:
            return h, w
        if isinstance(size, (tuple, list)):
            return int(size[0]), int(size[1])
        if isinstance(size, float) and size < 10:
            return max(1, round(h * size)), max(1, round(w * size))
        s = int(size) / max(h, w)
        return max(1, round(h * s)), max(1, round(w * s))

    @torch.no_grad()
    def raw(
        self, image: Tensor, input_hw: tuple[int, int], flip: bool = False
    ) -> list[tuple[Tensor, Tensor]]:
        """Detections for a ``[0, 1]`` ``Tensor[C, H, W]`` run at ``input_hw`` (optionally
        mirrored), in original image pixels: ``(boxes, scores)``."""
        h, w = image.shape[-2:]
        x = image.to(self.device)[None]
        if (h, w) != tuple(input_hw):
            shrink = input_hw[0] < h and input_hw[1] < w
            x = F.interpolate(
                x, size=tuple(input_hw), mode="bilinear", align_corners=False, antialias=shrink
            )
        if flip:
            x = x.flip(-1)
        x = prepare_batch(x.clamp(0, 1), self.config)
        cls, reg = self.model(x)
        boxes, scores = postprocess_detections(
            cls,
            reg,
            self.model.anchors(input_hw),
            image_hw=input_hw,
            score_thresh=self.score_thresh,
            nms_thresh=self.nms_thresh,
            pre_nms_top_k=self.pre_nms_top_k,
            max_detections=self.max_detections,
        )[0]
        if flip:
            boxes = torch.stack(
                [input_hw[1] - boxes[:, 2], boxes[:, 1], input_hw[1] - boxes[:, 0], boxes[:, 3]], 1
            )
        scale = torch.tensor([w / input_hw[1], h / input_hw[0]] * 2, device=boxes.device)
        return boxes * scale, scores

    def __call__(self, image: ImageInput) -> tuple[Tensor, Tensor]:
        """Faces in ``image``: ``(boxes Tensor[K, 4] xyxy in the image's pixels, scores Tensor[K])``
        sorted by decreasing score (on the CPU)."""
        t = to_image_tensor(image)
        boxes, scores = self.raw(t, self.input_hw(t.shape[-2:]))
        return boxes.cpu(), scores.cpu()
