"""Generated C (host build with ASan/UBSan, and Cortex-M4 in QEMU) must reproduce the numpy
integer reference bit for bit."""

import numpy as np
import pytest
import torch
from torch import nn

from rnnpool.deploy import codegen, mcu, runner
from rnnpool.deploy.decode import decode_sources
from rnnpool.deploy.planner import peak_live_bytes
from rnnpool.models._blocks import ConvBNAct, InvertedResidual
from rnnpool.nn import RNNPool2d
from rnnpool.quant import reference
from rnnpool.quant.ptq import quantize_model

from ..quant._models import randomize_bn


class ConvNet(nn.Module):
    """conv s2 -> MBConv (residual) -> MBConv s2 (t=1) -> global pool -> Linear: no RNNPool."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBNAct(1, 8, 3, 2)
        self.b1 = InvertedResidual(8, 8, 1, 2)
        self.b2 = InvertedResidual(8, 16, 2, 1)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.avg(self.b2(self.b1(self.stem(x)))), 1))


class TinyDetector(nn.Module):
    """conv -> RNNPool -> MBConv -> two heads (cls, box) over two sources, S3FD-style outputs."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBNAct(1, 4, 3, 2)
        self.pool = RNNPool2d(4, 8, 8, 4, 2, padding="same", gate="hard_sigmoid",
                              update="hard_tanh")
        self.b1 = InvertedResidual(32, 16, 1, 2)
        self.b2 = InvertedResidual(16, 16, 2, 2)
        self.cls = nn.ModuleList([nn.Conv2d(16, 2, 3, padding=1) for _ in range(2)])
        self.reg = nn.ModuleList([nn.Conv2d(16, 4, 3, padding=1) for _ in range(2)])

    def forward(self, x):
        f1 = self.b1(self.pool(self.stem(x)))
        f2 = self.b2(f1)
        n = x.shape[0]
        cls = [c(f).permute(0, 2, 3, 1).reshape(n, -1, 2) for c, f in zip(self.cls, (f1, f2))]
        reg = [r(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for r, f in zip(self.reg, (f1, f2))]
        return torch.cat(cls, 1), torch.cat(reg, 1)


def _graph(model_cls, hw, seed=0):
    torch.manual_seed(seed)
    model = randomize_bn(model_cls(), seed)
    calib = torch.randn(16, 1, *hw)
    return quantize_model(model, calib), calib


def _inputs(g, calib, n_random):
    t = g.tensor(g.inputs[0])
    xs = [reference.quantize_input(c, t) for c in calib[:4]]
    rng = np.random.default_rng(0)
    xs += [rng.integers(-128, 128, t.shape, dtype=np.int8) for _ in range(n_random)]
    xs.append(np.full(t.shape, -128, np.int8))
    xs.append(np.full(t.shape, 127, np.int8))
    return xs


def _needs_kernels(g):
    have = {p.stem for p in codegen.kernel_sources()}
    need = {"rnnpool": "rnnpool_rnnpool_s8", "mbconv": "rnnpool_mbconv_s8"}
    missing = [need[op.kind] for op in g.ops if op.kind in need and need[op.kind] not in have]
    if missing:
        pytest.skip(f"kernels not written yet: {sorted(set(missing))}")


DETECTOR_SPEC = {"strides": (4, 8), "sizes": (8.0, 16.0)}
MODELS = {"convnet": (ConvNet, (20, 24)), "detector": (TinyDetector, (24, 32))}


def _decode_spec(name):
    from rnnpool.deploy.decode import DecodeSpec

    return DecodeSpec(**DETECTOR_SPEC) if name == "detector" else None


@pytest.fixture(scope="module", params=sorted(MODELS))
def generated(request, tmp_path_factory):
    cls, hw = MODELS[request.param]
    g, calib = _graph(cls, hw)
    _needs_kernels(g)
    # Few boxes: the kept list is truncated, so order and ties matter in the comparisons.
    m = codegen.generate_c(g, tmp_path_factory.mktemp(request.param) / "c",
                           decode=_decode_spec(request.param), max_boxes=6)
    return request.param, g, calib, m


def test_plan_is_valid_and_tight(generated):
    name, g, _, m = generated
    bufs = m.plan.buffers
    assert m.arena_bytes >= peak_live_bytes(bufs)
    assert m.arena_bytes <= peak_live_bytes(bufs, alignment=4) + 4 * len(bufs)
    # The input is a band of rows in the arena (its consumer, the stem, is streamed).
    sizes = {b.name: b.size for b in bufs}
    row = m.input_bytes // g.tensor(m.input_name).shape[0]
    assert sizes[m.input_name] == m.input_arena_bytes == 3 * row  # 3x3 stride-2 stem
    assert m.units[0].ops[0].kind == "input_rows" and m.units[0].streamed
    # A detector's head maps are planned in the arena (decoded on the fly); other outputs not.
    if name == "detector":
        assert set(m.output_names) <= set(sizes) and m.output_arena_bytes == m.output_bytes
    else:
        assert not set(sizes) & set(m.output_names) and m.output_arena_bytes == 0


def _check_rows(m, g, xs, outs, rows, boxes, name):
    """Both APIs bit-exact: outputs == reference; row API == whole-buffer API."""
    assert len(rows) == len(outs) == len(xs)
    for i, (x, o) in enumerate(zip(xs, outs)):
        ref = reference.run(g, x)
        for n in m.output_names:
            np.testing.assert_array_equal(o[n], ref[n], err_msg=f"{name}: {n}")
            if m.decode is None:
                np.testing.assert_array_equal(rows[i][n], ref[n], err_msg=f"{name} rows: {n}")
        if m.decode is not None:
            np.testing.assert_array_equal(rows[i], boxes[i], err_msg=f"{name}: image {i}")


def test_host_build_bit_exact_with_sanitizers(generated, tmp_path):
    name, g, calib, m = generated
    exe = runner.build_model_host(m, tmp_path, sanitize=True)
    xs = _inputs(g, calib, n_random=10)
    outs = runner.run_model_host(exe, m, xs)
    boxes = runner.read_boxes(tmp_path, len(xs), m.max_boxes) if m.decode is not None else []
    _check_rows(m, g, xs, outs, runner.read_rows(m, tmp_path, len(xs)), boxes, name)
    if m.decode is not None:  # the comparison is not vacuous: lists are full and truncated
        assert sum(len(b) == m.max_boxes for b in boxes) >= len(xs) // 2


def test_streamed_decode_equals_whole_decode_of_reference_maps(generated, tmp_path):
    """detect_rows's boxes = rnnpool_model_decode of the maps of the numpy integer reference
    (written as a fake model output and decoded by the C function), with K = 1, 6 and all."""
    _, g, calib, m = generated
    if m.decode is None:
        pytest.skip("no decode")
    xs = _inputs(g, calib, n_random=4)
    n_cells = sum(int(np.prod(g.tensor(c).shape[:2])) for c, _, _ in decode_sources(g, m.decode))
    for k in (1, 6, n_cells):
        mk = codegen.generate_c(g, tmp_path / f"c{k}", decode=m.decode, max_boxes=k)
        exe = runner.build_model_host(mk, tmp_path / f"h{k}", sanitize=True)
        outs = runner.run_model_host(exe, mk, xs)
        want = runner.read_boxes(exe.parent, len(xs), k)
        got = runner.read_rows(mk, exe.parent, len(xs))
        for i, x in enumerate(xs):
            ref = reference.run(g, x)
            for n in mk.output_names:
                np.testing.assert_array_equal(outs[i][n], ref[n])
            np.testing.assert_array_equal(got[i], want[i], err_msg=f"K={k} image {i}")
            assert len(got[i]) <= k and np.all(np.diff(got[i][:, 4]) <= 0)
            ties = np.diff(got[i][:, 4]) == 0  # equal logits keep anchor order
            assert np.all(np.diff(got[i][:, 5])[ties] > 0)


@pytest.mark.skipif(mcu.find_toolchain() is None, reason="Cortex-M4 toolchain absent")
def test_cortex_m4_bit_exact_in_qemu(generated, tmp_path):
    name, g, calib, m = generated
    fw = runner.build_model_m4(m, tmp_path, ram_budget=64 * 1024, stack_bytes=2048)
    assert fw.static_ram_bytes >= m.arena_bytes
    # Static RAM: the arena, the box list / classifier output, and little else (the frame and
    # the whole-buffer API's maps are in PSRAM).
    result = m.max_boxes * 24 if m.decode is not None else m.output_bytes
    assert m.arena_bytes + result <= fw.static_ram_bytes <= m.arena_bytes + result + 64
    xs = _inputs(g, calib, n_random=2)
    r = runner.run_model_m4(fw, m, xs, timeout=120)
    _check_rows(m, g, xs, r.outputs, r.rows, r.boxes, name)
    assert len(r.instructions) == len(xs) and min(r.instructions) > 1000
    assert len(r.rows_instructions) == len(xs) and min(r.rows_instructions) > 1000
    assert 0 < r.stack_used < 2048


@pytest.mark.skipif(mcu.find_toolchain() is None, reason="Cortex-M4 toolchain absent")
def test_ram_budget_too_small_fails_to_link(generated, tmp_path):
    _, _, _, m = generated
    with pytest.raises(mcu.MCUError, match="does not fit the RAM budget"):
        runner.build_model_m4(m, tmp_path, ram_budget=m.arena_bytes + 512, stack_bytes=1024)


def test_generated_c_has_no_float_and_const_weights(generated):
    _, _, _, m = generated
    text = "\n".join(p.read_text() for p in m.files if p.suffix == ".c")
    assert "float" not in text and "double" not in text
    assert "malloc" not in text
    assert text.count("static uint8_t arena[") == 1
    weights = next(p for p in m.files if p.name == "model_weights.c").read_text()
    decls = [ln for ln in weights.splitlines() if ln.endswith("= {") or " = {" in ln]
    assert decls and all(ln.startswith("const ") for ln in decls)
    # Warning-free C99 (streamed groups include a residual add in both models).
    import subprocess

    d = m.files[0].parent
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                    f"-I{codegen.CSRC}", f"-I{d}", "-fsyntax-only", str(d / "model.c"),
                    str(d / "model_weights.c")], check=True, capture_output=True)


def test_mcu_report_refuses_more_test_images_than_calibration_images(tmp_path):
    from rnnpool.deploy.report import mcu_report

    model = randomize_bn(ConvNet())
    with pytest.raises(ValueError, match="1 to the 4 calibration images .* got 6"):
        mcu_report(model, (1, 20, 24), calib_count=4, n_images=6, workdir=tmp_path)
    assert not (tmp_path / "c").exists()  # refused before generating anything


@pytest.mark.skipif(mcu.find_toolchain() is None, reason="Cortex-M4 toolchain absent")
def test_mcu_report_on_a_small_model(tmp_path):
    from rnnpool.deploy.report import mcu_report

    torch.manual_seed(0)
    model = randomize_bn(ConvNet())
    rep = mcu_report(model, (1, 20, 24), model_name="convnet", calib_count=8,
                     ram_budget=32 * 1024, stack_bytes=2048, n_images=2, profile=True,
                     workdir=tmp_path)
    assert rep.bit_exact
    assert rep.static_ram_bytes >= rep.arena_bytes > 0
    assert 0 < rep.stack_bytes < 2048 and rep.total_ram_bytes <= 32 * 1024
    # The per-unit profile adds up to the per-image count (marks between units only).
    assert abs(sum(n for _, n in rep.profile) - rep.instructions[0]) < 200
    # Dequantized int8 logits stay close to the float model's.
    assert rep.max_abs_err["output_0"] < 0.1 * rep.float_range["output_0"] + 1e-3
    assert rep.rows_bit_exact and len(rep.rows_instructions) == 2
    # The classifier's row API: input band + activations in the arena, outputs in RAM.
    assert rep.input_rows_bytes == 3 * 24 and rep.result_bytes == 10
    text = rep.format()
    assert "bit-exact vs integer reference: Cortex-M4 yes" in text
    assert "row API (outputs == reference): Cortex-M4 yes" in text


def test_cli_export_c_compiles_standalone(tmp_path, capsys):
    import subprocess

    from rnnpool.cli import main

    out = tmp_path / "c"
    assert main(["export-c", "fmnist_cnn_rnnpool", "--random-init", "--input", "28x28",
                 "--calib-count", "4", "--out", str(out), "--with-kernels"]) == 0
    assert "arena" in capsys.readouterr().out
    text = (out / "model.h").read_text()
    assert "#define RNNPOOL_MODEL_ARENA_BYTES" in text and "RNNPOOL_MODEL_INPUT_BYTES 784" in text
    # Generated files: warning-free C99; kernels (another module's code): compile.
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{out}",
                    "-c", *map(str, out.glob("*.c"))], cwd=tmp_path, check=True,
                   capture_output=True)
    subprocess.run(["gcc", "-std=c99", f"-I{out}", "-c",
                    *map(str, (out / "kernels").glob("*.c"))], cwd=tmp_path, check=True,
                   capture_output=True)


def test_fixed_point_decode_matches_float_box_coder(tmp_path):
    from rnnpool.deploy.decode import DecodeSpec
    from rnnpool.deploy.report import dequantize_outputs
    from rnnpool.detection.anchors import AnchorGenerator
    from rnnpool.detection.coder import BoxCoder

    g, calib = _graph(TinyDetector, (24, 32))
    _needs_kernels(g)
    spec = DecodeSpec(**DETECTOR_SPEC)
    m = codegen.generate_c(g, tmp_path / "c", decode=spec)
    exe = runner.build_model_host(m, tmp_path / "host")
    xs = _inputs(g, calib, n_random=3)
    outs, boxes = runner.run_model_host_boxes(exe, m, xs)
    anchors = AnchorGenerator(spec.strides, spec.sizes)((24, 32), dtype=torch.float64)
    coder = BoxCoder(spec.variances, spec.clip)
    checked = 0
    for o, b in zip(outs, boxes):
        deq = dequantize_outputs(m, o)
        cls = torch.from_numpy(deq["output_0"][0]).double()
        reg = torch.from_numpy(deq["output_1"][0]).double()
        logit = (cls[:, 1] - cls[:, 0]).numpy()
        want = coder.decode(reg, anchors).numpy()
        # Every cell with logit >= 0 (up to rounding) is reported, highest first.
        assert set(b[:, 5]) <= set(np.flatnonzero(logit >= -1 / 256))
        assert set(np.flatnonzero(logit > 1 / 256)) <= set(b[:, 5])
        assert np.all(np.diff(b[:, 4]) <= 0)
        np.testing.assert_allclose(b[:, 4] / 256, logit[b[:, 5]], atol=1.5 / 256)
        np.testing.assert_allclose(b[:, :4] / 256, want[b[:, 5]], atol=0.02)
        checked += len(b)
    assert checked > 20
    if mcu.find_toolchain() is not None:  # the same on the Cortex-M4
        fw = runner.build_model_m4(m, tmp_path / "m4", ram_budget=64 * 1024, stack_bytes=2048)
        r = runner.run_model_m4(fw, m, xs[:2])
        for want_b, got_b in zip(boxes[:2], r.boxes):
            np.testing.assert_array_equal(got_b, want_b)
        assert min(r.decode_instructions) > 0


@pytest.mark.parametrize("kernel,rows,stream", [("map", 1, True), ("map", 3, True),
                                               ("patch", 1, True), ("row", 1, False)])
def test_streamed_rnnpool_kernel_variants_bit_exact(tmp_path, kernel, rows, stream):
    from rnnpool.deploy.decode import DecodeSpec

    g, calib = _graph(TinyDetector, (24, 32))
    _needs_kernels(g)
    m = codegen.generate_c(g, tmp_path / "c", rnnpool_kernel=kernel, rnnpool_rows=rows,
                           stream=stream, decode=DecodeSpec(**DETECTOR_SPEC), max_boxes=5)
    streamed_pool = any(u.streamed and any(o.kind == "rnnpool" for o in u.ops) for u in m.units)
    assert streamed_pool == stream
    if not stream:  # layer by layer: the whole input is read into the arena first
        assert m.units[0].ops[0].kind == "input_rows" and not m.units[0].streamed
        assert m.input_arena_bytes == m.input_bytes
    exe = runner.build_model_host(m, tmp_path / "h")
    xs = _inputs(g, calib, n_random=2)
    outs = runner.run_model_host(exe, m, xs)
    _check_rows(m, g, xs, outs, runner.read_rows(m, exe.parent, len(xs)),
                runner.read_boxes(exe.parent, len(xs), m.max_boxes), "detector")


class SkipsRows(nn.Module):
    """RNNPool read by a 1x1 stride-2 convolution: only every other RNNPool row is read."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, 1, 1), nn.ReLU6())
        self.pool = RNNPool2d(4, 4, 4, 4, 2, padding="same", gate="hard_sigmoid",
                              update="hard_tanh")
        self.head = nn.Sequential(nn.Conv2d(16, 8, 1, stride=2), nn.ReLU(),
                                  nn.Conv2d(8, 4, 3, padding=1))

    def forward(self, x):
        return self.head(self.pool(self.stem(x)))


def test_row_kernel_falls_back_when_the_reader_skips_rows(tmp_path):
    # The incremental row kernel completes RNNPool rows in order only; a reader that skips rows
    # used to stop the build with an AssertionError. That RNNPool now runs the map kernel.
    g, calib = _graph(SkipsRows, (16, 16))
    _needs_kernels(g)
    m = codegen.generate_c(g, tmp_path / "c", rnnpool_kernel="row")
    pool = next(op for op in g.ops if op.kind == "rnnpool")
    assert any(u.streamed and pool in u.ops for u in m.units)
    assert "rnnpool_rnnpool_s8_row" not in (tmp_path / "c" / "model.c").read_text()
    exe = runner.build_model_host(m, tmp_path / "h", sanitize=True)
    xs = _inputs(g, calib, n_random=3)
    outs = runner.run_model_host(exe, m, xs)
    _check_rows(m, g, xs, outs, runner.read_rows(m, exe.parent, len(xs)), [], "skips rows")


def test_bad_max_boxes_is_a_clear_error(tmp_path, capsys):
    from rnnpool.cli import main

    g, _ = _graph(TinyDetector, (24, 32))
    with pytest.raises(ValueError, match="max_boxes must be >= 1"):
        codegen.build_model(g, decode=_decode_spec("detector"), max_boxes=0)
    assert main(["export-c", "rnnpool_face_m4", "--random-init", "--calib-count", "2",
                 "--max-boxes", "0", "--out", str(tmp_path / "c")]) == 2
    assert "max_boxes must be >= 1" in capsys.readouterr().err


def test_output_folder_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    g, _ = _graph(ConvNet, (20, 24))
    target = tmp_path / "out.txt"
    target.write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        codegen.generate_c(g, target)
    assert target.read_text() == "keep me"


def test_export_c_to_an_unwritable_place_is_a_clear_error(tmp_path, capsys):
    from rnnpool.cli import main

    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "c"  # under a file: no folder can be made there
    assert main(["export-c", "fmnist_cnn_rnnpool", "--random-init", "--input", "28x28",
                 "--calib-count", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnpool export-c: error:") and "Not a directory" in err
    assert str(out) in err  # refused before quantizing (no PTQ warnings before it)
    assert main(["export-c", "fmnist_cnn_rnnpool", "--random-init", "--input", "28x28",
                 "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_files_of_two_exports_do_not_compile_together(tmp_path):
    # generate_c writes its four files one by one (each atomically): an export interrupted
    # midway, or one file copied from another export, leaves a set that would compile into a
    # model with another model's weights or arena plan. The files check each other's export id.
    import shutil
    import subprocess

    def compile_set(d):
        return subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", f"-I{codegen.CSRC}",
                               f"-I{d}", "-fsyntax-only", str(d / "model.c"),
                               str(d / "model_weights.c")], capture_output=True, text=True)

    a, b = tmp_path / "a", tmp_path / "b"
    codegen.generate_c(_graph(ConvNet, (20, 24), seed=0)[0], a)
    codegen.generate_c(_graph(ConvNet, (20, 24), seed=1)[0], b)
    assert compile_set(a).returncode == 0 and compile_set(b).returncode == 0
    names = sorted(p.name for p in a.iterdir())
    assert names == ["model.c", "model.h", "model_weights.c", "model_weights.h"]
    for stale in names:
        mixed = tmp_path / f"mixed_{stale}"
        shutil.copytree(a, mixed)
        shutil.copy(b / stale, mixed / stale)
        p = compile_set(mixed)
        assert p.returncode != 0 and "different exports" in p.stderr, stale
    # The same model exported twice is the same set: the id depends on the contents only.
    codegen.generate_c(_graph(ConvNet, (20, 24), seed=0)[0], tmp_path / "a2")
    assert all((a / n).read_text() == (tmp_path / "a2" / n).read_text() for n in names)


@pytest.mark.parametrize("extra, message", [
    (["--calib-count", "-1"], "--calib-count must be >= 1, got -1"),  # was a torch traceback
    (["--calib-count", "0"], "--calib-count must be >= 1, got 0"),  # was "set is empty", late
    (["--rnnpool-rows", "0"], "--rnnpool-rows must be >= 1, got 0"),  # was accepted
    (["--rnnpool-kernel", "map", "--rnnpool-rows", "-1"], "--rnnpool-rows must be >= 1"),
])
def test_export_c_count_options_below_one_fail_before_any_output(tmp_path, capsys, extra,
                                                                  message):
    from rnnpool.cli import main

    out = tmp_path / "c"
    assert main(["export-c", "fmnist_cnn_rnnpool", "--random-init", "--input", "28x28",
                 "--out", str(out), *extra]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"rnnpool export-c: error: {message}"
                                                            + ("" if "got" in message else
                                                               ", got -1")]
    assert not out.exists()  # the output folder used to be made before quantizing


@pytest.mark.parametrize("name", ["rnnpool_face_m4", "fmnist_cnn_rnnpool",
                                  "vww_mobilenetv2_rnnpool"])
def test_random_init_gives_every_rnnpool_cell_the_integer_kernels_gates(name):
    # Models without cell options (the classifiers) kept soft sigmoid / tanh cells.
    from rnnpool.deploy.commands import load_model
    from rnnpool.nn import FastGRNNCell

    cells = [m for m in load_model(name, None, random_init=True).modules()
             if isinstance(m, FastGRNNCell)]
    assert cells and all((c.gate, c.update) == ("hard_sigmoid", "hard_tanh") for c in cells)


def test_weights_of_another_model_name_the_keys_that_do_not_fit(tmp_path):
    # The message kept only torch's first line, "Error(s) in loading state_dict for SmallCNN:".
    from rnnpool import create_model
    from rnnpool.deploy.commands import load_model

    path = tmp_path / "other.pt"
    torch.save(create_model("fmnist_cnn_maxpool").state_dict(), path)
    with pytest.raises(ValueError, match=r"weights do not fit fmnist_cnn_rnnpool: .*pool\.") as e:
        load_model("fmnist_cnn_rnnpool", str(path))
    assert "\n" not in str(e.value)
