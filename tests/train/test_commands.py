import os

import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.cli import main
from rnnpool.data.fashion_mnist import FASHION_MNIST_ROOT
from rnnpool.data.imagefolder import IMAGENET10_WNIDS
from rnnpool.train import demo_step, load_checkpoint, load_model_from_checkpoint
from rnnpool.weights import weights_path

HAVE_FMNIST = os.path.isdir(FASHION_MNIST_ROOT)


def _fake_imagenet10(root):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for w in IMAGENET10_WNIDS:
            d = root / split / w
            d.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(d / "a.png")


def test_train_then_evaluate_on_an_imagenet10_folder(tmp_path, capsys):
    _fake_imagenet10(tmp_path / "in")
    out = tmp_path / "run"
    rc = main(["train", "--model", "fmnist_probe_avg", "--data", str(tmp_path / "in"),
               "--imagenet10", "--image-size", "16", "--model-arg", "in_chans=3", "--epochs", "2",
               "--batch-size", "4", "--no-progress", "--out-dir", str(out)])
    assert rc == 0
    assert "10 classes" in capsys.readouterr().out
    assert (out / "metrics.csv").read_text().count("\n") == 3
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["model_args"] == {"num_classes": 10, "in_chans": 3}
    assert ckpt["extra"]["data"]["classes"] == list(IMAGENET10_WNIDS)
    assert ckpt["config"]["lr"] == 0.05 and ckpt["config"]["weight_decay"] == 4e-5
    model = load_model_from_checkpoint(out / "best.pt")
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert main(["evaluate", str(out / "best.pt"), "--confusion"]) == 0
    text = capsys.readouterr().out
    assert "(10 images): top-1" in text and "n02690373" in text


def test_evaluate_uses_the_checkpoints_classes(tmp_path, capsys):
    # The labels are the training classes in the checkpoint, not the sorted folders of val/:
    # a stray folder in val/ used to shift every label (wrong accuracy or an IndexError).
    rng = np.random.default_rng(0)
    colours = {"cat": (255, 0, 0), "dog": (0, 255, 0), "fox": (0, 0, 255)}
    for split in ("train", "val"):
        for c, col in colours.items():
            d = tmp_path / "data" / split / c
            d.mkdir(parents=True)
            for i in range(8):
                a = np.clip(np.array(col)[None, None] + rng.integers(-20, 20, (20, 20, 3)), 0, 255)
                Image.fromarray(a.astype(np.uint8)).save(d / f"{i}.png")
    out = tmp_path / "run"
    assert main(["train", "--model", "fmnist_probe_avg", "--data", str(tmp_path / "data"),
                 "--image-size", "16", "--model-arg", "in_chans=3", "--epochs", "15",
                 "--batch-size", "8", "--lr", "0.2", "--no-progress", "--no-augment",
                 "--out-dir", str(out)]) == 0
    best = load_checkpoint(out / "best.pt")
    acc = best["best_metric"]
    assert acc >= 0.9  # distinct colours: the check below is not vacuous
    capsys.readouterr()
    assert main(["evaluate", str(out / "best.pt")]) == 0
    first = capsys.readouterr().out
    assert f"top-1 {100 * acc:.2f} %" in first
    (tmp_path / "data" / "val" / "aaa_backup").mkdir()  # sorts before the classes
    assert main(["evaluate", str(out / "best.pt"), "--confusion"]) == 0
    assert f"top-1 {100 * acc:.2f} %" in capsys.readouterr().out


def test_unknown_model_and_missing_data_are_one_line_errors(tmp_path, capsys):
    assert main(["train", "--model", "no_such_model", "--data", "fashion-mnist"]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    assert main(["train", "--model", "fmnist_probe_avg", "--data", str(tmp_path / "x")]) == 2
    assert "data folder not found" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_FMNIST, reason="dataset-fashion-mnist missing")
def test_train_fashion_mnist_quick(tmp_path):
    rc = main(["train", "--model", "fmnist_probe_max", "--data", "fashion-mnist",
               "--train-limit", "64", "--val-limit", "32", "--epochs", "1", "--batch-size", "32",
               "--no-progress", "--out-dir", str(tmp_path)])
    assert rc == 0
    h = load_checkpoint(tmp_path / "last.pt")["history"]
    assert len(h) == 1 and 0.0 <= h[0]["val_acc"] <= 1.0


def test_shipped_weights_are_small_and_load():
    path = weights_path()
    assert path.stat().st_size <= 1 << 20
    ckpt = load_checkpoint(path)
    assert "optimizer" not in ckpt and ckpt["model_name"] == "fmnist_cnn_rnnpool_hard"
    model = load_model_from_checkpoint(path)
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.skipif(not HAVE_FMNIST, reason="dataset-fashion-mnist missing")
def test_demo_step_gives_a_trained_accuracy(capsys):
    r = demo_step(limit=200)
    assert r["n"] == 200 and r["acc"] > 0.8  # the full test set gives 90.1 %
    assert "top-1" in capsys.readouterr().out


def test_train_with_the_same_seed_is_reproducible(tmp_path):
    # The reference is a second, identical run: --seed must fix the model's initial weights
    # too (they used to come from the unseeded global RNG, so no two runs matched).
    _fake_imagenet10(tmp_path / "in")
    states = []
    for run in ("a", "b"):
        torch.manual_seed(len(run) * 1000 + ord(run))  # different process RNG state per run
        assert main(["train", "--model", "fmnist_probe_avg", "--data", str(tmp_path / "in"),
                     "--imagenet10", "--image-size", "16", "--model-arg", "in_chans=3",
                     "--epochs", "1", "--batch-size", "4", "--no-progress", "--seed", "5",
                     "--out-dir", str(tmp_path / run)]) == 0
        states.append(load_checkpoint(tmp_path / run / "last.pt")["model"])
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


@pytest.mark.parametrize("extra, message", [
    (["--eval-batch-size", "0"], "--eval-batch-size must be >= 1"),
    (["--train-limit", "-1"], "train_limit must be >= 0"),
    (["--val-limit", "-1"], "val_limit must be >= 0"),
    (["--image-size", "0"], "image_size must be >= 1"),
    (["--warmup-epochs", "-1"], "warmup_epochs must be >= 0"),
    # These three were accepted (scale) or failed with a traceback (IndexError in the loss
    # after training began; RuntimeError from torch.device).
    (["--scale", "2", "1"], "scale must be 0 < MIN <= MAX <= 1"),
    (["--model-arg", "num_classes=3"], "--model-arg num_classes must be >= 10 (the data's "
                                       "classes)"),
    (["--device", "bogus"], "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
])
def test_out_of_range_arguments_fail_before_training(tmp_path, capsys, extra, message):
    # Each used to train (silently dropping images or with a wrong lr schedule) or to fail
    # after the first epoch, some with a traceback from inside torch.
    _fake_imagenet10(tmp_path / "in")
    out = tmp_path / "run"
    rc = main(["train", "--model", "fmnist_probe_avg", "--data", str(tmp_path / "in"),
               "--imagenet10", "--image-size", "16", "--model-arg", "in_chans=3", "--epochs",
               "1", "--batch-size", "4", "--no-progress", "--out-dir", str(out)] + extra)
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rnnpool train: error: {message}, got ")
    assert not out.exists()


def test_evaluate_negative_limit_is_an_error(tmp_path, capsys):
    _fake_imagenet10(tmp_path / "in")
    out = tmp_path / "run"
    assert main(["train", "--model", "fmnist_probe_avg", "--data", str(tmp_path / "in"),
                 "--imagenet10", "--image-size", "16", "--model-arg", "in_chans=3", "--epochs",
                 "1", "--batch-size", "4", "--no-progress", "--out-dir", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out / "last.pt"), "--limit", "-1"]) == 2  # was: 9 of 10 images
    assert "val_limit must be >= 0, got -1" in capsys.readouterr().err


def test_resize_smaller_than_the_crop_is_refused_before_training(tmp_path, capsys):
    # Evaluation resizes to --resize-size, then crops --image-size: it failed after an epoch.
    _fake_imagenet10(tmp_path / "in")
    out = tmp_path / "run"
    rc = main(["train", "--model", "fmnist_probe_avg", "--data", str(tmp_path / "in"),
               "--imagenet10", "--image-size", "16", "--resize-size", "12", "--model-arg",
               "in_chans=3", "--epochs", "1", "--batch-size", "4", "--no-progress",
               "--out-dir", str(out)])
    assert rc == 2 and not out.exists()
    assert "resize_size must be >= image_size (16), got 12" in capsys.readouterr().err


def test_resume_with_other_data_settings_warns(tmp_path, capsys):
    # --image-size, --train-limit, --no-augment, ... are not TrainConfig fields: a resume that
    # changed them used to continue silently with other data than the checkpoint's run.
    _fake_imagenet10(tmp_path / "in")
    args = ["train", "--model", "fmnist_probe_avg", "--data", str(tmp_path / "in"),
            "--imagenet10", "--image-size", "16", "--model-arg", "in_chans=3", "--batch-size",
            "4", "--no-progress", "--out-dir", str(tmp_path / "run")]
    assert main(args + ["--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "epochs 1 -> 2" in err and "data." not in err  # the same data: no warning about it
    assert main(args + ["--epochs", "3", "--resume", "--no-augment", "--val-limit", "5"]) == 0
    err = capsys.readouterr().err
    assert "data.augment True -> False" in err and "data.val_limit None -> 5" in err


def test_evaluate_refuses_a_detector_checkpoint_and_a_bad_device(tmp_path, capsys):
    # A face-detector checkpoint ran the detector on the images: AttributeError traceback.
    from rnnpool.models import create_model
    from rnnpool.train import save_checkpoint

    _fake_imagenet10(tmp_path / "in")
    ckpt = tmp_path / "face.pt"
    save_checkpoint({"model": create_model("rnnpool_face_m4").state_dict(),
                     "model_name": "rnnpool_face_m4", "model_args": {},
                     "extra": {"task": "face_detection"}}, ckpt)
    assert main(["evaluate", str(ckpt), "--data", str(tmp_path / "in"), "--limit", "2"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"rnnpool evaluate: error: {ckpt}: a face_detection checkpoint "
                     "(rnnpool_face_m4); evaluate takes classification checkpoints (face "
                     "detectors: rnnpool widerface-predict --eval)"]
    assert main(["evaluate", "--device", "bogus"]) == 2  # was a torch.device traceback
    assert capsys.readouterr().err.strip().splitlines() == [
        "rnnpool evaluate: error: --device must be 'auto', 'cpu', 'cuda' or 'cuda:N', "
        "got 'bogus'"]


def test_train_summary_is_printed_by_rank_0_only(tmp_path, capsys, monkeypatch):
    # fit() returns the same best metric on every rank; under torchrun rank 1 printed a second
    # "best val_acc" line (after a resume, a stale one: 0.3950 beside rank 0's 0.6500).
    import rnnpool.train.loop

    _fake_imagenet10(tmp_path / "in")
    monkeypatch.setattr(rnnpool.train.loop, "fit", lambda *a, **k: {"best_metric": 0.65})
    args = ["train", "--model", "fmnist_probe_avg", "--data", str(tmp_path / "in"),
            "--imagenet10", "--image-size", "16", "--model-arg", "in_chans=3",
            "--out-dir", str(tmp_path / "run")]
    monkeypatch.setenv("RANK", "1")
    assert main(args) == 0
    assert "best" not in capsys.readouterr().out
    monkeypatch.setenv("RANK", "0")
    assert main(args) == 0
    assert "best val_acc: 0.6500" in capsys.readouterr().out


def _three_class_folder(root, per_class=(5, 4, 4)):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for c, n in zip(("a", "b", "c"), per_class):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (18, 22, 3), dtype=np.uint8)).save(
                    d / f"{i}.png")


def test_evaluate_counts_every_image_once_with_a_ragged_last_batch(tmp_path, capsys):
    # 13 val images in batches of 4 (4 + 4 + 4 + 1): the independent count is a loop over the
    # image files, one forward pass each, with the label taken from the folder name.
    from rnnpool.data.transforms import CenterCrop, Compose, Normalize, Resize, ToTensor

    _three_class_folder(tmp_path / "d")
    out = tmp_path / "run"
    assert main(["train", "--model", "fmnist_probe_avg", "--data", str(tmp_path / "d"),
                 "--image-size", "16", "--model-arg", "in_chans=3", "--epochs", "2",
                 "--batch-size", "4", "--no-progress", "--out-dir", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out / "best.pt"), "--batch-size", "4", "--confusion"]) == 0
    text = capsys.readouterr().out
    model = load_model_from_checkpoint(out / "best.pt").eval()
    tf = Compose([ToTensor(), Resize(16 * 256 // 224), CenterCrop(16),
                  Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    files = sorted((tmp_path / "d" / "val").glob("*/*.png"))
    correct = 0
    with torch.no_grad():
        for f in files:
            pred = int(model(tf(Image.open(f).convert("RGB"))[None]).argmax(1))
            correct += pred == "abc".index(f.parent.name)
    assert len(files) == 13
    assert f"(13 images): top-1 {100 * correct / 13:.2f} %" in text
    rows = [r for r in (line.split() for line in text.splitlines())
            if r[:1] in (["a"], ["b"], ["c"])]
    assert [int(r[2]) for r in rows] == [5, 4, 4]  # each class's images counted once
    assert sum(int(r[3 + k]) for k, r in enumerate(rows)) == correct


def test_evaluate_confusion_with_more_outputs_than_classes(tmp_path, capsys):
    # --model-arg num_classes=5 on 3 classes: --confusion used to fail with an IndexError.
    _three_class_folder(tmp_path / "d", (2, 2, 2))
    out = tmp_path / "run"
    assert main(["train", "--model", "fmnist_probe_avg", "--data", str(tmp_path / "d"),
                 "--image-size", "16", "--model-arg", "in_chans=3", "--model-arg",
                 "num_classes=5", "--epochs", "1", "--batch-size", "4", "--no-progress",
                 "--out-dir", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out / "best.pt"), "--confusion"]) == 0
    text = capsys.readouterr().out
    assert "(6 images)" in text and "output 3" in text and "output 4" in text
