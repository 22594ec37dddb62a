"""export_onnx and ``rnnpool export-onnx``: onnxruntime must agree with PyTorch."""

import warnings

import numpy as np
import pytest
import torch

from rnnpool.cli import main
from rnnpool.deploy.onnx_export import export_onnx, supported_opsets
from rnnpool.models._pooling import GlobalRNNPool2d
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


def _small(pool: torch.nn.Module) -> torch.nn.Module:
    """Conv -> ``pool``, random weights (``*_raw`` zeta/nu moved off their initial values)."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in pool.named_parameters():
            if name.endswith(("zeta_raw", "nu_raw")):
                p.add_(0.7)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, 1, 1), pool).eval()


def _check_other_batch(model: torch.nn.Module, path, chw, batch: int = 3) -> None:
    """onnxruntime on a fresh batch of another size agrees with PyTorch within 1e-5."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["batch", *chw]  # spatial size fixed by the trace
    x = torch.randn(batch, *chw, generator=torch.Generator().manual_seed(11)) * 2
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name, pool, hw", [
    ("hard-gates", lambda: RNNPool2d(3, 5, 6, 4, 2, gate="hard_sigmoid", update="hard_tanh"),
     (17, 19)),
    ("low-rank", lambda: RNNPool2d(3, 5, 6, 4, 2, 1, w_rank=2, u_rank=3), (16, 16)),
    ("zeta-nu", lambda: RNNPool2d(3, 5, 6, 4, 4, trainable_zeta_nu=True), (16, 16)),
    ("replicate-same-odd", lambda: RNNPool2d(3, 5, 6, 5, 3, "same", "replicate"), (13, 11)),
    ("rect", lambda: RNNPool2d(3, 5, 6, (3, 6), (2, 4), (1, 2)), (15, 26)),
    ("global", lambda: GlobalRNNPool2d(3, 4, 5), (5, 9)),
])
def test_rnnpool_variants_match_pytorch_at_another_batch(tmp_path, name, pool, hw):
    m = _small(pool())
    r = export_onnx(m, (2, *hw), tmp_path / "m.onnx")
    assert r.max_abs_diff < 1e-5, name
    _check_other_batch(m, tmp_path / "m.onnx", (2, *hw))


def test_sweep_indices_are_computed_in_the_graph(tmp_path):
    # Index tensors folded into constants for the traced batch would be wrong at another batch.
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    export_onnx(_small(RNNPool2d(3, 4, 4, 4, 2)), (2, 12, 12), tmp_path / "m.onnx",
                verify=False)
    g = onnx.load(str(tmp_path / "m.onnx")).graph
    consts = [numpy_helper.to_array(t) for t in g.initializer]
    consts += [numpy_helper.to_array(a.t) for n in g.node if n.op_type == "Constant"
               for a in n.attribute if a.name == "value"]
    assert max((c.size for c in consts if c.dtype.kind in "iu"), default=0) <= 8


def test_opsets_at_both_ends_of_the_supported_range(tmp_path):
    # The highest used to be 23 (the dynamo exporter's), above the TorchScript exporter's 20:
    # torch warned that it does not support it and stamped the file with an unchecked opset.
    lo, hi = supported_opsets()
    m = _small(RNNPool2d(3, 4, 4, 4, 2, "same"))
    for opset in (lo, hi):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = export_onnx(m, (2, 9, 11), tmp_path / f"m{opset}.onnx", opset=opset)
        assert not [w for w in caught if "is not supported" in str(w.message)], opset
        assert r.max_abs_diff < 1e-5, opset
        _check_other_batch(m, tmp_path / f"m{opset}.onnx", (2, 9, 11))


def test_opset_below_what_rnnpool_needs_is_refused(tmp_path, capsys):
    # Opset 11 used to be accepted: torch wrote a graph with an int64 Clip, which onnxruntime
    # rejected with a traceback (InvalidGraph); 7-10 dumped the whole graph on stdout first.
    assert supported_opsets()[0] == 12
    with pytest.raises(ValueError, match="opset must be 12 to"):
        export_onnx(_small(RNNPool2d(3, 4, 4, 4, 2)), (2, 8, 8), tmp_path / "m.onnx", opset=11)
    out = tmp_path / "x.onnx"
    for opset in ("9", "11"):
        assert main(["export-onnx", "fmnist_cnn_rnnpool", "--random-init", "--input", "28x28",
                     "--opset", opset, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and "--opset must be 12 to" in lines[0], lines
        assert captured.out == "" and not out.exists()


def test_cli_bad_out_path_fails_before_the_export(tmp_path, capsys, monkeypatch):
    import rnnpool.deploy.onnx_export as oe

    def no_export(*a, **k):
        raise AssertionError("exported before checking --out")

    monkeypatch.setattr(oe, "export_onnx", no_export)
    (tmp_path / "file").write_text("x")
    for out, message in [(tmp_path / "file" / "m.onnx", "is a file, not a folder"),
                         (tmp_path, "is a folder; expected a .onnx file path")]:
        assert main(["export-onnx", "fmnist_cnn_rnnpool", "--random-init", "--input", "28x28",
                     "--out", str(out)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "--out" in lines[0] and message in lines[0], lines


def test_a_model_whose_first_layer_is_linear_exports_from_the_cli(tmp_path):
    # fmnist_probe_avg (global pool, then Linear(1, 10)) declares its channels only through
    # in_features: "cannot tell the model's input channels", even with --input.
    out = tmp_path / "probe.onnx"
    assert main(["export-onnx", "fmnist_probe_avg", "--random-init", "--input", "28x28",
                 "--out", str(out)]) == 0
    import onnx

    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1:] == [1, 28, 28]
