"""Face-detector AP of the int8 model versus the float model, by the WIDER protocol.

The int8 model is the quantized graph run by the numpy integer reference
(:func:`rnnpool.quant.reference.run`), which the generated C reproduces bit for bit (checked by
``mcu-report``); :class:`Int8Detector` puts it behind the float model's interface so that both go
through the same :class:`~rnnpool.detection.predict.FacePredictor` (resize, normalisation,
softmax, decode, NMS), the same submission writer and the same evaluator
(:func:`~rnnpool.detection.evaluation.widerface_evaluate`).

Example::

    calib = face_calibration(model, "faces/", n=32)        # train images, model input size
    g, _ = quantize_for_mcu(model, (1, 240, 320), calib)
    res = detector_ap_float_vs_int8(model, g, "faces/", "ap_work/")
    print(res["float"], res["int8"])                        # {"easy": .., "medium": .., ...}
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["Int8Detector", "detector_ap_float_vs_int8", "face_calibration"]


class Int8Detector(nn.Module):
    """A quantized S3FD graph behind its float model's interface (``config``, ``anchors``).

    ``forward(x)`` quantizes each normalised image of ``x`` (N, C, H, W) to the graph's int8
    input, runs the integer reference and returns the dequantized ``(cls_logits,
    bbox_regression)``, shaped as the float model's outputs.
    """

    def __init__(self, model: nn.Module, g) -> None:
        super().__init__()
        if not hasattr(model, "config") or not hasattr(model, "anchors"):
            raise TypeError(f"Int8Detector needs an S3FD face model, got {type(model).__name__}")
        if len(g.outputs) != 2:
            raise ValueError(f"expected a detector graph with 2 outputs, got {len(g.outputs)}")
        self.float_model = model
        self.graph = g
        self.config = model.config

    def anchors(self, image_hw, device=None, dtype=None) -> Tensor:
        return self.float_model.anchors(image_hw, device=device, dtype=dtype)

    @torch.no_grad()
    def forward(self, x: Tensor):
        from ..quant import reference

        t_in = self.graph.tensor(self.graph.inputs[0])
        if tuple(x.shape[1:]) != (t_in.shape[2], t_in.shape[0], t_in.shape[1]):
            raise ValueError(f"the int8 graph takes (N, {t_in.shape[2]}, {t_in.shape[0]}, "
                             f"{t_in.shape[1]}) inputs, got {tuple(x.shape)}")
        cls, reg = [], []
        for im in x.cpu():
            env = reference.run(self.graph, reference.quantize_input(im, t_in))
            c, r = (torch.from_numpy(env[n]).float() for n in self.graph.outputs)
            cls.append(c.reshape(1, -1, 2))
            reg.append(r.reshape(1, -1, 4))
        return torch.cat(cls), torch.cat(reg)


def face_calibration(model: nn.Module, root, n: int = 32, split: str = "train") -> Tensor:
    """The first ``n`` images of a WIDER-format ``split``, resized to the model's
    ``config.input_size`` and normalised exactly as :class:`FacePredictor` does:
    ``(n, C, H, W)``."""
    import torch.nn.functional as F

    from ..data.detection_transforms import load_rgb
    from ..data.widerface import list_split_images, split_image_dir
    from ..detection.predict import prepare_batch, to_image_tensor

    names = list_split_images(root, split)[:n]
    if not names:
        raise FileNotFoundError(f"no {split} images in {root}")
    h, w = model.config.input_size
    xs = []
    for rel in names:
        t = to_image_tensor(load_rgb(split_image_dir(root, split) / rel))[None]
        shrink = h < t.shape[-2] and w < t.shape[-1]
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False,
                          antialias=shrink)
        xs.append(prepare_batch(t.clamp(0, 1), model.config))
    return torch.cat(xs)


def detector_ap_float_vs_int8(model: nn.Module, g, root, workdir, split: str = "val",
                              limit: int | None = None, score_thresh: float = 0.05,
                              pre_nms_top_k: int = 750) -> dict[str, object]:
    """WIDER easy / medium / hard AP of the float model and of its int8 graph ``g`` on a split.

    Both run at the model's ``config.input_size`` through the same predictor, with the same
    thresholds, and are scored by the same evaluator. ``pre_nms_top_k`` (750 rather than the
    predictor's 5000) bounds the quadratic NMS of a briefly trained model with thousands of
    low-score candidates; it applies to both.

    Args:
        model: the float S3FD model (eval mode).
        g: its quantized graph (:func:`~rnnpool.quant.ptq.quantize_model`).
        root: a WIDER-format data folder (``wider_face_split/``, ``WIDER_<split>/``).
        workdir: where the two submission folders go (``pred_float/``, ``pred_int8/``).
        split: the split evaluated.
        limit: evaluate only the first ``limit`` images (the others count as empty for both).
        score_thresh: detection score threshold of the predictor.
        pre_nms_top_k: highest-scoring anchors kept before NMS.

    Returns:
        ``{"float": {"easy", "medium", "hard"}, "int8": {...}, "images": n, "seconds": {"float",
        "int8"}}``.
    """
    from ..detection.commands import predict_widerface
    from ..detection.evaluation import WIDER_SETTINGS, widerface_evaluate
    from ..detection.predict import FacePredictor

    work = Path(workdir)
    size = tuple(model.config.input_size)
    out: dict[str, object] = {"seconds": {}}
    for name, net in (("float", model.eval()), ("int8", Int8Detector(model.eval(), g))):
        pred = work / f"pred_{name}"
        t0 = time.perf_counter()
        with torch.no_grad():
            predictor = FacePredictor(net, size=size, score_thresh=score_thresh,
                                      pre_nms_top_k=pre_nms_top_k)
            n = predict_widerface(predictor, str(root), str(pred), split, progress=False,
                                  limit=limit)
        res = widerface_evaluate(pred, Path(root) / "wider_face_split",
                                 missing="error" if limit is None else "empty")
        out[name] = {s: float(res[s]) for s in WIDER_SETTINGS}
        out["seconds"][name] = round(time.perf_counter() - t0, 1)
        out["images"] = n
    return out
