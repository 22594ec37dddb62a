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
