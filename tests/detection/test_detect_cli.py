import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.cli import main
from rnnpool.models import create_model
from rnnpool.train import save_checkpoint


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory):
    from rnnpool.data.synthetic_faces import make_faces

    return make_faces(
        tmp_path_factory.mktemp("faces"),
        num_train=4,
        num_val=3,
        image_size=(96, 64),
        face_range=(12, 30),
        seed=1,
    )


@pytest.fixture(scope="module")
def m4_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "m4.pt"
    save_checkpoint(
        {
            "model": create_model("rnnpool_face_m4").state_dict(),
            "model_name": "rnnpool_face_m4",
            "model_args": {},
        },
        path,
    )
    return path


def test_detect_draws_and_saves(tmp_path, m4_ckpt, capsys):
    arr = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.bmp")
    Image.fromarray(arr[:, :, 0]).save(tmp_path / "b.png")
    out = tmp_path / "out"
    rc = main(
        [
            "detect",
            str(tmp_path / "a.bmp"),
            str(tmp_path / "b.png"),
            "--weights",
            str(m4_ckpt),
            "--out",
            str(out),
            "--thresh",
            "0.0",
            "--size",
            "native",
        ]
    )
    assert rc == 0
    for name in ("a.bmp", "b.png"):
        with Image.open(out / name) as im:
            assert im.size == (70, 50) and im.mode == "RGB"
            drawn = np.asarray(im)
        assert (drawn != arr).any()  # boxes were drawn (threshold 0 keeps every detection)
    assert "face(s)" in capsys.readouterr().out


def test_detect_errors(tmp_path, m4_ckpt, capsys):
    assert (
        main(
            [
                "detect",
                str(tmp_path / "nope.jpg"),
                "--weights",
                str(m4_ckpt),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "image not found" in capsys.readouterr().err
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert (
        main(
            ["detect", str(tmp_path / "bad.jpg"), "--weights", str(m4_ckpt), "--out", str(tmp_path)]
        )
        == 2
    )
    assert "not a readable image" in capsys.readouterr().err


@pytest.mark.parametrize("tta", [False, True])
def test_widerface_predict_writes_official_format(tmp_path, faces_root, m4_ckpt, tta, capsys):
    from rnnpool.data.widerface import list_split_images

    pred = tmp_path / "pred"
    args = [
        "widerface-predict",
        "--weights",
        str(m4_ckpt),
        "--data",
        str(faces_root),
        "--out",
        str(pred),
        "--thresh",
        "0.3",
        "--size",
        "native",
        "--eval",
    ] + (["--tta", "--limit", "1"] if tta else [])
    assert main(args) == 0
    names = list_split_images(faces_root, "val")[: 1 if tta else None]
    for rel in names:
        lines = (pred / rel).with_suffix(".txt").read_text().splitlines()
        assert lines[0] == rel.split("/")[-1][:-4]
        n = int(lines[1])
        rows = [list(map(float, line.split())) for line in lines[2:]]
        assert len(rows) == n > 0
        assert all(len(r) == 5 and r[2] >= 0 and r[3] >= 0 for r in rows)
        scores = [r[4] for r in rows]
        assert scores == sorted(scores, reverse=True)
    assert "AP easy" in capsys.readouterr().out


def test_train_detector_sparsity_and_resume(tmp_path, faces_root):
    out = tmp_path / "run"
    base = [
        "train-detector",
        "--model",
        "rnnpool_face_m4",
        "--data",
        str(faces_root),
        "--size",
        "64",
        "--batch-size",
        "2",
        "--max-steps-per-epoch",
        "1",
        "--eval-images",
        "1",
        "--out-dir",
        str(out),
        "--no-progress",
        "--sparsity",
        "--model-arg",
        "gate=hard_sigmoid",
    ]
    assert main(base + ["--epochs", "1"]) == 0
    assert main(base + ["--epochs", "2", "--resume", "--eval-images", "0"]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["model_name"] == "rnnpool_face_m4"
    assert ckpt["model_args"] == {"gate": "hard_sigmoid"}
    assert "val_ap" in ckpt["history"][0]
    from rnnpool.train import load_model_from_checkpoint

    model = load_model_from_checkpoint(out / "last.pt")
    pool = model.backbone.layers[1]
    assert pool.rnn1.gate == "hard_sigmoid"
    w1, u1, w2 = pool.rnn1.weight_ih, pool.rnn1.weight_hh, pool.rnn2.weight_ih
    # pruned entries stay zero after the optimizer steps (masks re-applied after each step)
    assert abs((w1 != 0).float().mean().item() - 0.5) < 0.01
    assert abs((u1 != 0).float().mean().item() - 0.3) < 0.01
    assert abs((w2 != 0).float().mean().item() - 0.3) < 0.01



def test_train_detector_resume_with_other_settings_warns(tmp_path, faces_root, capsys):
    # --eval-images (val_ap, hence best.pt), --size and --sparsity change the run; a resume
    # that changed them continued silently (without --sparsity the masks stopped being applied).
    base = ["train-detector", "--model", "rnnpool_face_m4", "--data", str(faces_root),
            "--batch-size", "2", "--max-steps-per-epoch", "1", "--no-progress",
            "--out-dir", str(tmp_path / "run")]
    assert main(base + ["--epochs", "1", "--size", "64", "--eval-images", "1",
                        "--sparsity"]) == 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["extra"][
        "eval_images"] == 1
    capsys.readouterr()
    assert main(base + ["--epochs", "1", "--size", "96", "--eval-images", "2", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "eval_images 1 -> 2" in err and "train_size 64 -> 96" in err
    assert "sparsity (0.5, 0.3) -> None" in err

def test_train_detector_with_the_same_seed_is_reproducible(tmp_path, faces_root):
    # The reference is a second, identical run from another process RNG state: --seed must fix
    # the initial weights too, not only what fit() draws.
    states = []
    for run in ("a", "b"):
        torch.manual_seed(1000 + ord(run))
        assert main(["train-detector", "--model", "rnnpool_face_m4", "--data", str(faces_root),
                     "--size", "64", "--batch-size", "2", "--max-steps-per-epoch", "1",
                     "--eval-images", "0", "--epochs", "1", "--seed", "3", "--no-progress",
                     "--out-dir", str(tmp_path / run)]) == 0
        states.append(torch.load(tmp_path / run / "last.pt", weights_only=False)["model"])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_train_detector_resume_does_not_need_the_init_file(tmp_path, faces_root, m4_ckpt):
    # The resumed checkpoint replaces the weights: reading --init again was wasted, and failed
    # once the fine-tuning start file had been moved or deleted.
    init = tmp_path / "init.pt"
    init.write_bytes(m4_ckpt.read_bytes())
    base = ["train-detector", "--model", "rnnpool_face_m4", "--data", str(faces_root),
            "--batch-size", "2", "--max-steps-per-epoch", "1", "--no-progress", "--size", "64",
            "--eval-images", "0", "--init", str(init), "--out-dir", str(tmp_path / "run")]
    assert main(base + ["--epochs", "1"]) == 0
    init.unlink()
    assert main(base + ["--epochs", "2", "--resume"]) == 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["epoch"] == 2


def test_train_detector_only_rank_0_prints_the_summary(tmp_path, faces_root, capsys,
                                                       monkeypatch):
    # Under torchrun only rank 0 logs (docs/experiments.md); the other ranks used to print
    # their own summary line beside rank 0's (once "done: best val_ap = None").
    import rnnpool.train

    monkeypatch.setattr(rnnpool.train, "fit", lambda *a, **k: {"best_metric": None})
    monkeypatch.setenv("RANK", "1")
    args = ["train-detector", "--model", "rnnpool_face_m4", "--data", str(faces_root),
            "--eval-images", "0", "--out-dir", str(tmp_path / "run")]
    assert main(args) == 0
    assert "done:" not in capsys.readouterr().out
    monkeypatch.setenv("RANK", "0")
    assert main(args) == 0
    assert "done: best train_loss = None" in capsys.readouterr().out


def test_train_detector_bad_model(tmp_path, faces_root, capsys):
    assert (
        main(["train-detector", "--model", "mobilenetv2_rnnpool", "--data", str(faces_root)]) == 2
    )
    assert "face model" in capsys.readouterr().err


def test_scut_head_training_batch(tmp_path):
    """The SCUT-HEAD path: VOC XML -> augmented crops -> S3FD loss with positives."""
    from rnnpool.data.detection_transforms import detection_collate
    from rnnpool.detection.commands import build_train_set, detection_loss_fn

    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((60, 80, 3)) * 255).astype(np.uint8)).save(
            tmp_path / "JPEGImages" / f"{i}.jpg"
        )
        (tmp_path / "Annotations" / f"{i}.xml").write_text(
            "<annotation><size><width>80</width><height>60</height><depth>3</depth></size>"
            "<object><name>person</name><bndbox><xmin>11</xmin><ymin>11</ymin>"
            "<xmax>30</xmax><ymax>32</ymax></bndbox></object></annotation>"
        )
    model = create_model("rnnpool_face_m4")
    ds = build_train_set("scut", str(tmp_path), 64, True, anchors=model.config.anchor_sizes)
    images, targets = detection_collate([ds[i] for i in range(len(ds))])
    assert images.shape[1:] == (1, 64, 64)
    loss, logs = detection_loss_fn()(model, (images, targets), torch.device("cpu"))
    assert torch.isfinite(loss) and logs["num_pos"] > 0


def _one_error_line(capsys, command):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rnnpool {command}: error: "), lines
    return lines[0]


def test_detect_and_widerface_predict_refuse_a_classification_checkpoint(
    tmp_path, faces_root, capsys
):
    # Used to end in "TypeError: FacePredictor needs a face model (S3FD)" with a traceback.
    ckpt = tmp_path / "cls.pt"
    save_checkpoint({"model": create_model("fmnist_probe_avg").state_dict(),
                     "model_name": "fmnist_probe_avg", "model_args": {},
                     "extra": {"task": "classification"}}, ckpt)
    image = next((faces_root / "WIDER_val" / "images").rglob("*.jpg"))
    assert main(["detect", str(image), "--weights", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    assert "fmnist_probe_avg is not a face detector" in _one_error_line(capsys, "detect")
    assert main(["widerface-predict", "--weights", str(ckpt), "--data", str(faces_root),
                 "--out", str(tmp_path / "p")]) == 2
    assert "is not a face detector" in _one_error_line(capsys, "widerface-predict")
    assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists()


@pytest.mark.parametrize("option, value", [
    ("--size", "0"), ("--size", "-5"), ("--size", "0.0"), ("--size", "-0.5"),  # were accepted
    ("--size", "0x10"),  # traceback from F.interpolate
    ("--thresh", "-1"), ("--thresh", "2"), ("--thresh", "nan"),  # were accepted
    ("--device", "bogus"), ("--device", "cuda:x"),  # tracebacks from torch.device
])
def test_detect_bad_options_are_one_line_errors(tmp_path, faces_root, m4_ckpt, capsys,
                                                option, value):
    image = next((faces_root / "WIDER_val" / "images").rglob("*.jpg"))
    out = tmp_path / "o"
    assert main(["detect", str(image), "--weights", str(m4_ckpt), "--out", str(out),
                 f"{option}={value}"]) == 2
    assert f"error: {option} must be" in _one_error_line(capsys, "detect")
    assert not out.exists()


def test_detect_checks_every_image_before_writing_any(tmp_path, faces_root, m4_ckpt, capsys):
    # The first image used to be drawn and saved before the second was found missing.
    image = next((faces_root / "WIDER_val" / "images").rglob("*.jpg"))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    out = tmp_path / "o"
    for other, message in ((tmp_path / "nope.jpg", "image not found"),
                           (tmp_path / "bad.jpg", "not a readable image")):
        assert main(["detect", str(image), str(other), "--weights", str(m4_ckpt),
                     "--out", str(out)]) == 2
        assert message in _one_error_line(capsys, "detect")
        assert not out.exists()
    # Two images of the same name: the second drawing silently replaced the first.
    (tmp_path / "b").mkdir()
    twin = tmp_path / "b" / image.name
    twin.write_bytes(image.read_bytes())
    assert main(["detect", str(image), str(twin), "--weights", str(m4_ckpt), "--out",
                 str(out)]) == 2
    assert f"would both be saved as {out / image.name}" in _one_error_line(capsys, "detect")
    assert not out.exists()


def test_widerface_predict_negative_limit_and_missing_image(tmp_path, faces_root, m4_ckpt,
                                                           capsys):
    import shutil

    pred = tmp_path / "pred"
    # --limit -1 used to drop the last image silently ([:-1]).
    assert main(["widerface-predict", "--weights", str(m4_ckpt), "--data", str(faces_root),
                 "--out", str(pred), "--limit", "-1"]) == 2
    assert "limit must be >= 0, got -1" in _one_error_line(capsys, "widerface-predict")
    # An image missing from the folder used to stop the run with part of the files written.
    root = tmp_path / "faces"
    shutil.copytree(faces_root, root)
    images = sorted((root / "WIDER_val" / "images").rglob("*.jpg"))
    images[-1].unlink()
    assert main(["widerface-predict", "--weights", str(m4_ckpt), "--data", str(root),
                 "--out", str(pred)]) == 2
    assert "image listed for split 'val' not found" in _one_error_line(capsys,
                                                                        "widerface-predict")
    assert not pred.exists()


@pytest.mark.parametrize("extra, message", [
    (["--size", "0"], "--size must be >= 1, got 0"),  # 0 silently meant the model's default
    (["--eval-images", "-1"], "--eval-images must be >= 0, got -1"),  # silently meant 0
    (["--model-arg", "bogus=1"], "model rnnpool_face_m4: "),  # TypeError traceback
    (["--device", "bogus"], "--device must be"),  # RuntimeError traceback from the loop
])
def test_train_detector_bad_options_fail_before_training(tmp_path, faces_root, capsys,
                                                         extra, message):
    out = tmp_path / "run"
    assert main(["train-detector", "--model", "rnnpool_face_m4", "--data", str(faces_root),
                 "--epochs", "1", "--batch-size", "2", "--no-progress", "--out-dir", str(out),
                 *extra]) == 2
    assert message in _one_error_line(capsys, "train-detector")
    assert not out.exists()
