"""The analyzer against hand counts, the paper's worked check and a measured run."""

import math

import pytest
import torch
from torch import nn

from rnnpool.analysis import (
    ChainLayer,
    banded_rnnpool,
    compare,
    measure_peak,
    profile_model,
    prop1_bound,
    standard_memory,
    trace_model,
)
from rnnpool.cli import main
from rnnpool.models._blocks import ConvBNAct, InvertedResidual
from rnnpool.models._pooling import GlobalRNNPool2d
from rnnpool.nn import RNNPool2d

from ._prop1_sim import simulate_row_by_row


# ---- the paper's worked check (SPEC §2 / §3) ---------------------------------------------------
@pytest.fixture(scope="module")
def mbv2():
    torch.set_num_threads(1)
    return profile_model("mobilenetv2", 224, 4, num_classes=10)


@pytest.fixture(scope="module")
def mbv2_rnnpool():
    torch.set_num_threads(1)
    return profile_model("mobilenetv2_rnnpool", 224, 4, num_classes=10)


def test_mobilenetv2_paper_numbers(mbv2):
    # Peak at the first MBConv: (112^2 * 32 + 112^2 * 16) * 4 B.
    assert mbv2.peak_bytes == (112 * 112 * 32 + 112 * 112 * 16) * 4 == 2_408_448
    assert mbv2.peak_layer == "blocks.0.0"
    # 2.2969 MiB: the paper prints 2.29 (truncated); rounding gives 2.30.
    assert math.floor(mbv2.peak_bytes / 2**20 * 100) / 100 == 2.29
    assert f"{mbv2.params / 1e6:.1f} M" == "2.2 M"
    assert f"{mbv2.madds / 1e9:.2f} G" == "0.30 G"
    assert mbv2.madds == mbv2.executed_madds  # no RNNPool


def test_mobilenetv2_rnnpool_paper_numbers(mbv2_rnnpool):
    p = mbv2_rnnpool
    assert p.peak_bytes == (28 * 28 * 64 + 14 * 14 * 64) * 4 == 250_880
    assert f"{p.peak_bytes / 2**20:.2f} MB" == "0.24 MB"
    # The paper's 0.23 G matches the executed count (RNNPool's shared overlapping work); the
    # per-patch formula gives 0.27 G (see docs/models.md).
    assert f"{p.executed_madds / 1e9:.2f} G" == "0.23 G"
    assert f"{p.madds / 1e9:.2f} G" == "0.27 G"
    rnnpool = 2 * 36 * 16 * (32 + 16) + 4 * 6 * 16 * (16 + 16)  # per patch, SPEC §1
    pool_row = next(r for r in p.layers if r.kind == "rnnpool")
    assert pool_row.madds == rnnpool * 28 * 28
    assert f"{p.params / 1e6:.1f} M" == "2.2 M"  # the paper prints 2.0 M (see docs/models.md)


def test_mobilenetv2_1000_class_reference():
    # Sandler et al.: MobileNetV2 1.0 at 224 has 3.4 M parameters (3,504,872) and 300 M MAdds.
    p = profile_model("mobilenetv2", 224, 4, num_classes=1000)
    assert p.params == 3_504_872
    assert round(p.madds / 1e6) in (300, 301)


def test_int8_and_compare(mbv2, mbv2_rnnpool):
    p8 = profile_model("mobilenetv2_rnnpool", 224, 1, num_classes=10)
    assert p8.peak_bytes * 4 == mbv2_rnnpool.peak_bytes
    text = compare(mbv2, mbv2_rnnpool)
    assert "2.30 MB" in text and "0.24 MB" in text and "0.104x" in text
    peak_rows = [line for line in mbv2.table().splitlines() if line.endswith("<- peak")]
    assert len(peak_rows) == 1 and "blocks.0.0" in peak_rows[0]


# ---- hand-counted MAdds and memory on tiny models -----------------------------------------------
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = RNNPool2d(8, 4, 4, 4, 2, padding="same")
        self.pw = nn.Conv2d(16, 24, 1)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        x = self.pw(x).mean((2, 3))
        return self.fc(x)


def test_tiny_model_hand_count():
    p = profile_model(Tiny(), 16, 4)
    conv = 8 * 8 * 8 * 3 * 9  # out pixels * C_out * C_in * k^2
    rnnpool = (2 * 16 * 4 * (8 + 4) + 4 * 4 * 4 * (4 + 4)) * 4 * 4  # per patch * 4x4 patches
    pw = 4 * 4 * 24 * 16
    fc = 24 * 5
    assert p.madds == conv + rnnpool + pw + fc
    assert p.params == 3 * 8 * 9 + 16 + (4 * 12 + 8 + 4 * 8 + 8) + (16 * 24 + 24) + (24 * 5 + 5)
    kinds = [r.kind for r in p.layers]
    assert kinds == ["conv", "rnnpool", "conv1x1", "gpool", "linear"]
    mem = {r.kind: r.mem_bytes // 4 for r in p.layers}
    # conv -> RNNPool: computed patch by patch, the image and the 8x8 map are never whole.
    assert p.layers[0].act_bytes == 0
    assert mem["rnnpool"] == 16 * 4 * 4 + 4 * 4 * 8  # output + one 4x4x8 patch
    # the 1x1 conv feeds a global pool: computed on the fly; the pool holds the RNNPool output
    assert mem["gpool"] == 16 * 16 + 24
    assert p.peak_bytes == max(mem.values()) * 4


class ConvsThenWholeMapRNNPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = GlobalRNNPool2d(32, 8, 8)  # one patch: the whole 32x32 map
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.pool(self.c2(self.c1(x))).flatten(1))


def test_whole_map_rnnpool_reads_a_map_made_layer_by_layer():
    # Its one patch is the whole map, so "per patch" holds every map in front whole: each conv
    # needs input + output (SPEC §2), the RNNPool its input (= the patch) + output. It used to
    # count the convs as computed per patch (0 B), a lower peak than the same convs before an
    # average pool.
    p = profile_model(ConvsThenWholeMapRNNPool(), 32, 1)
    mem = {r.name: r.mem_bytes for r in p.layers}
    assert mem["c1"] == 32 * 32 * 3 + 32 * 32 * 16
    assert mem["c2"] == 32 * 32 * 16 + 32 * 32 * 32
    assert mem["pool"] == 32 * 32 * 32 + 4 * 8
    assert p.peak_bytes == mem["c2"] and p.peak_layer == "c2"


class Res(nn.Module):
    block_kind = "residual"

    def __init__(self, c):
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.b(torch.relu(self.a(x))) + x)


class Inc(nn.Module):
    block_kind = "inception"

    def __init__(self, c):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(c, o, 1) for o in (2, 3, 5, 7))
        self.branch_channels = (2, 3, 5, 7)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], 1)


class Dense(nn.Module):
    block_kind = "dense"

    def __init__(self, c):
        super().__init__()
        self.l1 = nn.Conv2d(c, 4, 3, padding=1)
        self.l2 = nn.Conv2d(c + 4, 4, 3, padding=1)

    def forward(self, x):
        y = torch.cat([x, self.l1(x)], 1)
        return torch.cat([y, self.l2(y)], 1)


def test_block_rules_from_structure():
    model = nn.Sequential(
        ConvBNAct(3, 6, 3, 1),            # 3x8x8 -> 6x8x8: in + out
        InvertedResidual(6, 4, 2, 6),     # 6x8x8 -> 4x4x4: in + out
        Res(4),                           # max(in, out)
        Inc(4),                           # in + 3 smallest branches
        Dense(17),                        # out
        nn.Conv2d(25, 2, 3, padding=1),   # (the model output itself streams out)
    )
    trace = trace_model(model, torch.zeros(1, 3, 8, 8))
    nodes = [n for n in trace.nodes if n.kind != "alias"]
    assert [n.kind for n in nodes] == ["conv", "mbconv", "residual", "inception", "dense", "conv"]
    mem = [m.need for m, n in zip(standard_memory(trace), trace.nodes) if n.kind != "alias"]
    assert mem[0] == 3 * 64 + 6 * 64
    assert mem[1] == 6 * 64 + 4 * 16
    assert mem[2] == 4 * 16
    assert mem[3] == 4 * 16 + (2 + 3 + 5) * 16
    assert mem[4] == (17 + 8) * 16


class TwoHeads(nn.Module):
    """A detector-like model: two sources, one head each, outputs concatenated."""

    def __init__(self):
        super().__init__()
        self.s1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.s2 = nn.Conv2d(8, 16, 3, 2, 1)
        self.h1 = nn.Conv2d(8, 4, 3, 1, 1)
        self.h2 = nn.Conv2d(16, 4, 3, 1, 1)

    def forward(self, x):
        a = self.s1(x)
        b = self.s2(a)  # a stays alive until its head runs
        outs = [h(f).permute(0, 2, 3, 1).reshape(x.shape[0], -1, 4)
                for h, f in ((self.h1, a), (self.h2, b))]
        return torch.cat(outs, 1), b.sum()


def test_multi_head_model():
    p = profile_model(TwoHeads(), 32, 1)
    rows = {r.name: r for r in p.layers}
    assert rows["h1"].act_bytes == 0 and rows["h2"].act_bytes == 0  # streamed to the output
    # while s2 runs, its input a (8x16x16) and output b (16x8x8) are held
    assert rows["s2"].mem_bytes == 8 * 16 * 16 + 16 * 8 * 8
    # h1 reads a while b (read later by h2 and the sum) is alive
    assert rows["h1"].mem_bytes == 8 * 16 * 16 + 16 * 8 * 8
    assert p.peak_bytes == max(r.mem_bytes for r in p.layers)


# ---- Proposition 1 against a literal row-by-row simulation --------------------------------------
@pytest.mark.parametrize("in_hw,layers", [
    ((12, 12), [(3, 1, 2), (3, 1, 3), (3, 1, 1)]),
    ((20, 20), [(3, 1, 1), (3, 1, 1), (3, 1, 1), (3, 1, 1)]),
    ((23, 23), [(3, 2, 2), (3, 1, 3), (3, 2, 1)]),
    ((30, 14), [(3, 1, 2), (5, 1, 3), (3, 1, 1)]),
])
def test_prop1_bound_vs_row_by_row(in_hw, layers):
    peak, _, sizes = simulate_row_by_row(in_hw, layers)
    chain = [ChainLayer(k, s, c, sizes[i + 1]) for i, (k, s, c) in enumerate(layers)]
    bound = prop1_bound(chain)
    # the row-by-row schedule computes each node once: it cannot beat the bound, and it keeps
    # at most one more row per layer than the bound's K - s rows
    upper = sum(layers[q][2] * (layers[q + 1][0] - layers[q + 1][1] + 1) * sizes[q + 1][1]
                for q in range(len(layers) - 1))
    assert 0 < bound <= peak <= upper


def test_prop1_stride1_closed_form():
    # SPEC §2: 2 * sum_q c_q k_q min(m - 1, n - 1) for stride 1 ("same" layers of m x n)
    chain = [ChainLayer(5, 1, 4, (9, 7)), ChainLayer(3, 1, 6, (9, 7)), ChainLayer(3, 1, 2, (9, 7))]
    # layer 1 read by a 3x3 (k=1), layer 2 read by a 3x3 (k=1)
    assert prop1_bound(chain) == 2 * (4 * 1 + 6 * 1) * min(9 - 1, 7 - 1)


# ---- measured peaks --------------------------------------------------------------------------
def test_measured_peak_matches_analytic_on_plain_convs():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(32, 8, 3, stride=2, padding=1),
    )
    x = torch.randn(1, 3, 32, 32)
    analytic = profile_model(model, 32, 4)
    measured = measure_peak(model, x)
    assert analytic.peak_bytes == (16 + 32) * 32 * 32 * 4
    # eager PyTorch holds exactly a layer's input and output: agree within 2 %
    assert abs(measured.peak_bytes - analytic.peak_bytes) <= 0.02 * analytic.peak_bytes


def test_banded_rnnpool_never_holds_the_input_map():
    torch.manual_seed(0)
    model = nn.Sequential(
        ConvBNAct(3, 8, 3, 2), RNNPool2d(8, 8, 8, 6, 4, padding="same"),
        nn.Conv2d(32, 16, 3, padding=1),
    ).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ref = model(x)
        with banded_rnnpool(model, x):
            out = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    whole = measure_peak(model, x, banded=False).module_peaks["1"]
    banded = measure_peak(model, x, banded=True)
    pool_peak = banded.module_peaks["1"]
    analytic = profile_model(model, 256, 4)
    rnn_row = next(r for r in analytic.layers if r.kind == "rnnpool")
    # the conv output (8x128x128 floats = 512 KB) is never whole in the banded run
    assert pool_peak < 8 * 128 * 128 * 4
    assert pool_peak < whole / 4
    # analytic: output + one patch; the banded run adds one band's working set on top
    assert rnn_row.mem_bytes == (32 * 32 * 32 + 6 * 6 * 8) * 4
    assert rnn_row.mem_bytes <= pool_peak <= 4 * rnn_row.mem_bytes


@pytest.mark.parametrize("mode", ["zeros", "replicate"])
@pytest.mark.parametrize("band_rows", [1, 3])
def test_banded_rnnpool_pads_like_the_layer(mode, band_rows):
    # "same" padding adds rows above and below the map: the bands at the edges must pad them
    # as the layer does (copies of the edge rows for replicate; they were zeros).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          RNNPool2d(8, 8, 8, 6, 4, padding="same", padding_mode=mode)).eval()
    x = torch.randn(1, 3, 30, 34) + 2
    with torch.no_grad():
        ref = model(x)
        with banded_rnnpool(model, x, band_rows=band_rows):
            out = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_banded_rnnpool_keeps_the_layers_dtype_and_device(mode):
    # The bands were written into torch.empty(...): a CPU float32 map whatever the layer ran
    # in, so a float64 model's output was rounded to float32 (and a GPU model's came back on
    # the CPU, where its next layer refused it; the replicate rows' index was a CPU tensor).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          RNNPool2d(8, 8, 8, 6, 4, padding="same", padding_mode=mode),
                          nn.Conv2d(32, 4, 1)).double().eval()
    x = torch.randn(1, 3, 30, 34, dtype=torch.float64) + 2
    with torch.no_grad():
        ref = model(x)
        with banded_rnnpool(model, x, band_rows=3):
            out = model(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_profile_of_a_model_off_the_cpu_float32_defaults():
    # The trace's example input was torch.zeros(1, C, H, W), CPU float32: a float64 model (or
    # one on the GPU, after training) failed in its first layer ("Input type (float) and bias
    # type (double) should be the same"). The profile depends only on shapes.
    torch.manual_seed(0)
    model = nn.Sequential(ConvBNAct(3, 8, 3, 2), RNNPool2d(8, 8, 8, 6, 4, padding="same"),
                          nn.Conv2d(32, 16, 3, padding=1))
    ref = profile_model(model, 64, 4)
    for dtype in (torch.float64, torch.bfloat16):
        p = profile_model(model.to(dtype), 64, 4)
        assert (p.peak_bytes, p.madds, p.executed_madds, p.params) == (
            ref.peak_bytes, ref.madds, ref.executed_madds, ref.params)
        assert [r.mem_bytes for r in p.layers] == [r.mem_bytes for r in ref.layers]
    assert next(model.parameters()).dtype == torch.bfloat16  # the model itself is untouched


def test_measure_peak_does_not_count_what_layers_cache():
    # RNNPool keeps its sweep indices in a cache across calls; built inside the tracker on a
    # first call they were counted as activations (and the first call measured more).
    from rnnpool.nn import functional as RF

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), RNNPool2d(8, 8, 8, 4, 2)).eval()
    x = torch.randn(1, 3, 40, 40)
    RF._SWEEP_CACHE.clear()
    first = measure_peak(model, x)
    second = measure_peak(model, x)
    assert first.peak_bytes == second.peak_bytes
    assert first.module_peaks == second.module_peaks


# ---- CLI ---------------------------------------------------------------------------------------
def test_cli_profile(tmp_path, capsys):
    png = tmp_path / "mem.png"
    assert main(["profile", "mobilenetv2_rnnpool", "--num-classes", "10", "--input", "64",
                 "--bytes", "1", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "pools.0" in out and "rnnpool" in out and "peak RAM" in out and "<- peak" in out
    assert png.stat().st_size > 1000
    assert main(["profile", "--compare", "vww_mobilenetv2", "vww_mobilenetv2_rnnpool",
                 "--input", "96"]) == 0
    assert "B/A" in capsys.readouterr().out


def test_cli_errors(capsys):
    assert main(["profile", "mobilenetv3"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'mobilenetv3'" in err and "mobilenetv2_rnnpool" in err
    assert main(["profile", "mobilenetv2", "--input", "100"]) == 2
    assert "multiples of its total stride 32" in capsys.readouterr().err
    assert main(["profile", "mobilenetv2", "--input", "abc"]) == 2


class _PixelNorm(nn.Module):
    elementwise = True  # per-pixel: computed on the fly, no memory of its own

    def forward(self, x):
        return x / (x.norm(dim=1, keepdim=True) + 1e-10)


class MiniFaceQuant(nn.Module):
    """Face-Quant's layout in miniature: conv s2, conv, RNNPool, MBConv; a strided head conv
    reads the first (normalised) map, another head reads the MBConv output."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 2, 1)
        self.conv2 = nn.Conv2d(4, 4, 3, 1, 1)
        self.pool = RNNPool2d(4, 8, 8, 8, 4, padding="same")
        self.mb = InvertedResidual(32, 16, 1, 2)
        self.norm = _PixelNorm()
        self.head0 = nn.Conv2d(4, 6, 3, 2, 1)
        self.head1 = nn.Conv2d(16, 6, 3, 1, 1)

    def forward(self, x):
        a = self.conv1(x)
        src = self.mb(self.pool(self.conv2(a)))
        outs = [self.head0(self.norm(a)), self.head1(src)]
        return torch.cat([o.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 6) for o in outs], 1)


def test_face_quant_layout_peak_is_the_first_bottleneck():
    p = profile_model(MiniFaceQuant(), 64, 1)
    # like Face-Quant's 225 KB = (80*60*32 + 80*60*16) B: the 32x32 maps and the image are
    # computed window by window for the RNNPool and the first head, never whole
    assert p.peak_bytes == 8 * 8 * (32 + 16)
    assert p.peak_layer == "mb"
    rows = {r.name: r for r in p.layers}
    assert rows["conv1"].act_bytes == 0 and rows["head0"].act_bytes == 0


def test_prop1_bound_vs_exhaustive_search():
    # every serial order of a 1-channel 6x6 -> 4x4 -> 2x2 chain (3x3 valid convolutions)
    from ._prop1_sim import brute_force_min_peak

    best = brute_force_min_peak((4, 4), (2, 2), 3)
    bound = prop1_bound([ChainLayer(3, 1, 1, (4, 4)), ChainLayer(3, 1, 1, (2, 2))])
    row_by_row, _, _ = simulate_row_by_row((6, 6), [(3, 1, 1), (3, 1, 1)])
    assert bound == 2 * 1 * 1 * (2 - 1)
    assert bound <= best <= row_by_row
    assert best == row_by_row == 11  # the row-by-row schedule is optimal here


# ---- face detector peak; inputs the model cannot run --------------------------------------
def test_face_quant_int8_peak_is_the_papers_225kb():
    # SPEC §5: RNNPool-Face-Quant at 640x480, int8: 225 KB = (80*60*32 + 80*60*16) B, the first
    # bottleneck. Its first head reads the 320x240 map through L2Norm, a per-pixel layer, so
    # that map (and the image) is computed window by window, never whole.
    p = profile_model("rnnpool_face_quant", (480, 640), 1)
    assert p.peak_bytes == 80 * 60 * 32 + 80 * 60 * 16 == 225 * 1024
    assert p.peak_layer == "backbone.layers.3.0"


def test_profile_rejects_inputs_the_model_cannot_run(capsys):
    # the tracer skips convolution arithmetic; it must still refuse what the model refuses
    from rnnpool.models import create_model

    with pytest.raises(RuntimeError):
        create_model("mobilenetv2")(torch.zeros(1, 5, 64, 64))  # eager PyTorch: 3 channels
    with pytest.raises(RuntimeError, match="3 input channels"):
        profile_model("mobilenetv2", 64, in_chans=5)
    with pytest.raises(RuntimeError, match="8 input channels"):  # depthwise: groups = 8
        profile_model(nn.Sequential(nn.Conv2d(4, 6, 1), nn.Conv2d(8, 8, 3, groups=8)), 16)
    p = profile_model(nn.Sequential(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, groups=8)), 16)
    assert p.madds == 16 * 16 * 8 * 4 + 14 * 14 * 8 * 9  # the matching one still runs
    assert main(["profile", "mobilenetv2", "--input", "64", "--in-chans", "5"]) == 2
    assert "3 input channels" in capsys.readouterr().err


@pytest.mark.parametrize("chans", ["0", "-3"])
def test_profile_in_chans_below_one_is_an_error(capsys, chans):
    # 0 was taken as "auto" and profiled the 3-channel model without a word.
    assert main(["profile", "mobilenetv2", "--input", "64", "--in-chans", chans]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"rnnpool profile: error: in_chans must be >= 1, got {chans}"]
