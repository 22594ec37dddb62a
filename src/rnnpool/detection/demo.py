"""The face-detection demo: synthetic faces -> a few minutes of CPU training -> AP -> boxes on
photos."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["DEMO_PHOTOS", "face_demo"]

#: Real photographs with faces that ship offline (Debian opencv-doc), used for the drawing step.
DEMO_PHOTOS = (
    "/usr/share/doc/opencv-doc/examples/data/messi5.jpg",
    "/usr/share/doc/opencv-doc/examples/data/basketball1.png",
)


def face_demo(
    workdir: str | os.PathLike,
    minutes: float = 3.0,
    model: str = "rnnpool_face_m4",
    model_args: dict[str, Any] | None = None,
    num_train: int = 300,
    num_val: int = 50,
    crop: int = 160,
    batch_size: int = 8,
    lr: float | None = None,
    seed: int = 0,
    photos: Sequence[str] | None = None,
    draw_thresh: float = 0.3,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a small RNNPool face detector on the synthetic face set and show what it finds.

    1. builds the synthetic WIDER-format set (:func:`rnnpool.data.synthetic_faces.make_faces`,
       640x480 images) in ``workdir/faces-<num_train>-<num_val>-seed<seed>`` (reused if present:
       the name holds what the set depends on, so a quick run's set is never reused by a full
       one);
    2. trains ``model`` for about ``minutes`` of wall time with the shared loop
       (:func:`rnnpool.train.fit`: SGD, warm-up + cosine, S3FD loss) on ``crop x crop`` crops;
    3. writes official-format predictions for the val split (``workdir/pred``) and reports the
       WIDER-protocol AP (easy / medium / hard of the synthetic set) with
       :func:`rnnpool.detection.evaluation.widerface_evaluate`;
    4. draws the detections (score >= ``draw_thresh``) on real photos (``messi5.jpg``,
       ``basketball1.png`` from opencv-doc, or ``skimage``'s astronaut) into
       ``workdir/detections``.

    ``lr`` defaults to SPEC §5's 0.01 scaled linearly from batch 32 to ``batch_size``.
    ``model_args`` go to ``create_model`` and into the checkpoint (so that it rebuilds), e.g.
    ``{"gate": "hard_sigmoid", "update": "hard_tanh"}`` for a model to be deployed in int8.

    Returns:
        a dict with ``model``, ``params``, ``train_images``, ``train_seconds``, ``ap``
        (``{"easy", "medium", "hard"}``), ``checkpoint``, ``data`` (the face set), ``pred_dir``
        and ``images`` (paths of the drawn photos); also written to ``workdir/face_demo.json``.
    """
    from PIL import Image

    from ..data.detection_transforms import detection_collate
    from ..data.synthetic_faces import make_faces
    from ..models import create_model
    from ..train import TrainConfig, fit
    from .commands import (
        _save_image_atomic,
        build_train_set,
        detection_loss_fn,
        draw_detections,
        predict_widerface,
    )
    from .evaluation import WIDER_SETTINGS, widerface_evaluate
    from .predict import FacePredictor

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"faces-{num_train}-{num_val}-seed{seed}"
    if not (data / "wider_face_split" / "wider_face_val.mat").is_file():
        make_faces(data, num_train=num_train, num_val=num_val, seed=seed)

    torch.manual_seed(seed)
    model_args = dict(model_args or {})
    net = create_model(model, **model_args)
    cfg = net.config
    train_set = build_train_set(
        "widerface", str(data), crop, cfg.in_chans == 1, anchors=cfg.anchor_sizes
    )
    loss_fn = detection_loss_fn()

    # Measure a few steps to turn the time budget into a number of epochs.
    probe = [train_set[i % len(train_set)] for i in range(batch_size)]
    batch = detection_collate(probe)
    opt = torch.optim.SGD(net.parameters(), lr=1e-6)
    step_times = []
    for _ in range(3):  # the first step also pays for one-time set-up: not counted
        t0 = time.perf_counter()
        loss, _ = loss_fn(net, batch, torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step_times.append(time.perf_counter() - t0)
    t_model = sum(step_times[1:]) / len(step_times[1:])
    t0 = time.perf_counter()
    for i in range(batch_size):
        train_set[i]
    t_data = time.perf_counter() - t0
    step_s = t_model + t_data
    steps_per_epoch = len(train_set) // batch_size
    epochs = max(1, int(minutes * 60 / (step_s * steps_per_epoch)))
    torch.manual_seed(seed)
    net = create_model(model, **model_args)

    lr = 0.01 * batch_size / 32 if lr is None else lr
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup_epochs=min(1.0, epochs / 5),
        weight_decay=5e-4,
        seed=seed,
        out_dir=str(work / "run"),
        metric="train_loss",
        metric_mode="min",
        progress=progress,
        device="cpu",
    )
    t0 = time.perf_counter()
    result = fit(
        net,
        train_set,
        loss_fn,
        config,
        collate_fn=detection_collate,
        model_name=model,
        model_args=model_args,
        extra={"task": "face_detection", "dataset": "synthetic", "train_size": crop},
    )
    train_seconds = time.perf_counter() - t0

    predictor = FacePredictor(net.eval(), score_thresh=0.05)
    pred_dir = work / "pred"
    predict_widerface(predictor, str(data), str(pred_dir), "val", progress=progress)
    res = widerface_evaluate(pred_dir, data / "wider_face_split")
    ap = {s: float(res[s]) for s in WIDER_SETTINGS}

    drawn = []
    photos = list(photos) if photos is not None else [p for p in DEMO_PHOTOS if os.path.isfile(p)]
    images = []
    for p in photos:
        with Image.open(p) as im:
            images.append((Path(p).name, im.convert("RGB")))
    if not images:
        from skimage import data as skdata

        images.append(("astronaut.png", Image.fromarray(skdata.astronaut())))
    shown = FacePredictor(net, score_thresh=draw_thresh)
    for name, im in images:
        boxes, scores = shown(im)
        drawn.append(
            str(_save_image_atomic(draw_detections(im, boxes, scores), work / "detections" / name))
        )

    summary = {
        "model": model,
        "params": sum(p.numel() for p in net.parameters()),
        "epochs": epochs,
        "lr": lr,
        "crop": crop,
        "batch_size": batch_size,
        "train_images": round(
            sum(r["train_images_per_s"] * r["epoch_time_s"] for r in result["history"])
        ),
        "train_seconds": round(train_seconds, 1),
        "ap": ap,
        "checkpoint": str(work / "run" / "last.pt"),
        "data": str(data),
        "pred_dir": str(pred_dir),
        "images": drawn,
    }
    tmp = work / "face_demo.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, work / "face_demo.json")
    return summary
