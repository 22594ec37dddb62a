"""export_onnx and ``rnnpool export-onnx``: onnxruntime must agree with PyTorch."""

import numpy as np
import pytest
import torch

from rnnpool.cli import main
from rnnpool.deploy.onnx_export import export_onnx
from rnnpool.nn import RNNPool2d

ort = pytest.importorskip("onnxruntime")


def test_export_file_matches_pytorch_on_a_fresh_input(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, 2, 1), torch.nn.ReLU6(),
                            RNNPool2d(4, 8, 8, 4, 4, padding="same", gate="hard_sigmoid",
                                      update="hard_tanh"),
                            torch.nn.Conv2d(32, 6, 1)).eval()
    r = export_onnx(m, (1, 24, 32), tmp_path / "m.onnx")
    assert r.max_abs_diff < 1e-5 and r.output_shapes == [(1, 6, 3, 4)]
    # Independent check with a different input and batch 2 (dynamic batch axis).
    x = torch.randn(2, 1, 24, 32)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, m(x).numpy(), atol=1e-5)


def test_bad_input_shape():
    with pytest.raises(ValueError, match="C, H, W"):
        export_onnx(torch.nn.Identity(), (1, 0, 4), "unused.onnx")


def test_cli_export_face_m4_small_input(tmp_path, capsys):
    rc = main(["export-onnx", "rnnpool_face_m4", "--random-init", "--input", "64x48",
               "--out", str(tmp_path / "f.onnx")])
    assert rc == 0 and (tmp_path / "f.onnx").is_file()
    out = capsys.readouterr().out
    assert "cls_logits (1, 120, 2)" in out  # 2 * 8*6 + 2 * 4*3 anchors
    diff = float(out.split("max abs diff")[1])
    assert diff < 1e-4


def test_cli_errors(tmp_path, capsys):
    assert main(["export-onnx", "rnnpool_face_m4", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "WEIGHTS is required" in capsys.readouterr().err
    assert main(["export-onnx", "rnnpool_face_m4", "--random-init", "--input", "64by48",
                 "--out", str(tmp_path / "x.onnx")]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["export-onnx", "rnnpool_face_m4", str(tmp_path / "missing.pt"),
                 "--out", str(tmp_path / "x.onnx")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_corrupt_weights_opset_and_model_args_are_one_line_errors(tmp_path, capsys):
    # Each used to end in a traceback (EOFError, PytorchStreamReader RuntimeError, "Unsupported
    # onnx_opset_version", TypeError), or (--model-arg with a training checkpoint) was ignored.
    from rnnpool.models import create_model
    from rnnpool.train import save_checkpoint

    ckpt = tmp_path / "m.pt"
    save_checkpoint({"model": create_model("fmnist_cnn_rnnpool").state_dict(),
                     "model_name": "fmnist_cnn_rnnpool", "model_args": {}}, ckpt)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "half.pt").write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    out = tmp_path / "x.onnx"
    base = ["export-onnx", "fmnist_cnn_rnnpool"]
    for args, message in [
        ([str(tmp_path / "empty.pt")], "empty.pt: not a readable torch checkpoint"),
        ([str(tmp_path / "half.pt")], "half.pt: not a readable torch checkpoint"),
        ([str(ckpt), "--opset", "0"], "--opset must be "),
        ([str(ckpt), "--opset", "99"], "got 99"),
        (["--random-init", "--model-arg", "bogus=1"], "model fmnist_cnn_rnnpool: "),
        ([str(ckpt), "--model-arg", "num_classes=3"], "--model-arg does not apply"),
    ]:
        assert main(base + args + ["--input", "28x28", "--out", str(out)]) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rnnpool export-onnx: error: "), lines
        assert message in lines[0], lines
        assert not out.exists()
