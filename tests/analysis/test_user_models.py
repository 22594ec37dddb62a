"""profile_model on user-style models the zoo does not contain, against hand counts.

Every expected number is derived by hand from the layer shapes (SPEC §2): MAdds of a conv =
H_out * W_out * C_out * (C_in / groups) * kh * kw, of a linear = rows * in * out; memory of a
layer = input + output (1x1 conv: max(input, output); RNNPool fed by convs: output + one
patch), plus maps live across it; a model output that nothing reads streams out (0 B).
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnpool.analysis import profile_model
from rnnpool.cli import main
from rnnpool.nn import RNNPool2d


def _rows(p):
    return {r.name: r for r in p.layers}


# ---- what works: plain, functional, nested, grouped, RNNPool geometry -------------------------
def test_plain_sequential_with_identity_dropout_flatten():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Identity(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(16 * 8 * 8, 10),
    )
    p = profile_model(model, 16, 4)
    assert p.madds == 16 * 16 * 8 * 3 * 9 + 8 * 8 * 16 * 8 * 9 + 1024 * 10
    assert p.params == (8 * 27 + 8) + 16 * 72 + 2 * 16 + (1024 * 10 + 10)
    m = {r.name: r.mem_bytes // 4 for r in p.layers}
    assert m == {"0": 768 + 2048, "3": 2048 + 512, "4": 512 + 1024, "9": 1024}
    assert p.peak_bytes == (768 + 2048) * 4 and p.peak_layer == "0"


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        a = F.relu(self.c1(x))                                   # 8x16x16
        up = F.interpolate(F.avg_pool2d(a, 2), scale_factor=2)   # 8x8x8 -> 8x16x16
        s = torch.add(a, self.c2(up))                            # 8x16x16
        t = s + a
        t.relu_()
        return self.fc(torch.cat([t, s], 1).mean((2, 3)))


def test_functional_ops_between_modules():
    p = profile_model(Functional(), 16, 4)
    assert p.madds == 16 * 16 * 8 * 3 * 9 + 16 * 16 * 8 * 8 * 9 + 16 * 4
    mem = [(r.name, r.mem_bytes // 4) for r in p.layers]
    a, img = 2048, 768
    assert mem == [
        ("c1", img + a),
        ("avg_pool2d", a + 512),
        ("upsample_nearest2d", 512 + a + a),      # a is live (read by the add)
        ("c2", a + a + a),                        # up -> c2 out, a live
        ("add", a + a + a),                       # a + c2 out -> s
        ("add", a + a + a),                       # s + a -> t
        ("cat", 2 * a + 4096),                    # t, s -> 16x16x16
        ("mean", 4096 + 16),
        ("fc", 16),
    ]


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.d = nn.ModuleDict({
            "a": nn.Sequential(nn.Conv2d(3, 4, 3, padding=1),
                               nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4, bias=False))),
            "b": nn.Conv2d(4, 8, 3, groups=2, bias=False),
        })
        self.up = nn.ModuleList([nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1)])

    def forward(self, x):
        x = self.d["b"](self.d["a"](x))
        for m in self.up:
            x = m(x)
        return x


def test_nested_containers_depthwise_grouped_upsample():
    p = profile_model(Nested(), 16, 4)
    dw = 14 * 14 * 4 * 1 * 9          # depthwise: C_in / groups = 1
    grouped = 12 * 12 * 8 * 2 * 9     # groups 2: C_in / groups = 2
    assert p.madds == 16 * 16 * 4 * 3 * 9 + dw + grouped + 24 * 24 * 2 * 8
    assert p.params == (4 * 27 + 4) + 4 * 9 + 8 * 2 * 9 + (8 * 2 + 2)
    m = {r.name: r.mem_bytes // 4 for r in p.layers}
    assert m == {"d.a.0": 768 + 1024, "d.a.1.1": 1024 + 784, "d.b": 784 + 1152,
                 "up.0": 1152 + 4608, "up.1": 4608}  # up.1's output is the model output


def test_rnnpool_rectangular_kernel_stride_and_padding():
    # SPEC §1: per r x c patch, RNN1 2 r c h1 (k + h1), RNN2 2 (r + c) h2 (h1 + h2)
    pool = RNNPool2d(4, 6, 5, (4, 2), (2, 1), padding=(1, 0))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), pool, nn.Conv2d(20, 8, 3))
    p = profile_model(model, (12, 10), 4)
    r, c, k, h1, h2 = 4, 2, 4, 6, 5
    ho, wo = (12 + 2 - 4) // 2 + 1, (10 - 2) // 1 + 1  # 6 x 9
    per_patch = 2 * r * c * h1 * (k + h1) + 2 * (r + c) * h2 * (h1 + h2)
    assert p.madds == 12 * 10 * 4 * 27 + per_patch * ho * wo + 4 * 7 * 8 * 20 * 9
    assert p.params == 112 + (h1 * (k + h1) + 2 * h1 + h2 * (h1 + h2) + 2 * h2) + 1448
    rows = _rows(p)
    assert rows["0"].act_bytes == 0  # computed patch by patch
    assert rows["1"].mem_bytes == (20 * ho * wo + r * c * k) * 4  # output + one patch


# ---- defects found by the audit ------------------------------------------------------------------
class FunctionalMaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        return self.fc(self.c2(F.max_pool2d(F.relu(self.c1(x)), 2)).flatten(1))


def test_functional_max_pool_counts_its_values_not_its_indices():
    # F.max_pool2d runs max_pool2d_with_indices; the int64 indices were counted as a map
    p = profile_model(FunctionalMaxPool(), 16, 4)
    m = {r.name: r.mem_bytes // 4 for r in p.layers}
    assert m == {"c1": 768 + 2048, "max_pool2d_with_indices": 2048 + 512, "c2": 512 + 256,
                 "fc": 256}
    assert _rows(p)["max_pool2d_with_indices"].act_bytes == 512 * 4


class SharedConv(nn.Module):
    """The shared conv is registered before the stem: registration order != execution order."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.stem = nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.c(self.c(self.stem(x))).amax((2, 3)))


def test_weight_sharing_and_input_channels_in_execution_order():
    # in_chans was taken from the first *registered* conv (8) and the trace failed
    p = profile_model(SharedConv(), 16, 4)
    assert p.input_size == (3, 16, 16)
    assert p.params == 8 * 8 * 9 + (3 * 8 + 8) + (8 * 2 + 2)           # shared conv once
    assert p.madds == 16 * 16 * 8 * 3 + 2 * (16 * 16 * 8 * 8 * 9) + 8 * 2  # run twice
    assert [r.name for r in p.layers] == ["stem", "c", "c", "amax", "fc"]
    assert p.peak_bytes == (2048 + 2048) * 4 and p.peak_layer == "c"


def test_input_too_small_is_a_clear_error_naming_the_layer():
    model = nn.Sequential(nn.Conv2d(3, 8, 5), nn.Conv2d(8, 8, 5))
    with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
        model(torch.zeros(1, 3, 6, 6))  # what eager PyTorch says
    with pytest.raises(RuntimeError, match=r"Kernel size can't be greater.*layer '1'"):
        profile_model(model, 6)


class ReturnsAReadMap(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16 * 16, 2)

    def forward(self, x):
        y = self.c1(x)
        return y, self.fc(self.c2(y).flatten(1))


def test_a_returned_map_that_a_later_layer_reads_is_counted():
    # Returning y as well used to make it "stream out": the profile dropped from 16 KB to 11 KB
    p = profile_model(ReturnsAReadMap(), 16, 4)
    m = {r.name: r.mem_bytes // 4 for r in p.layers}
    assert m == {"c1": 768 + 2048, "c2": 2048 + 2048, "fc": 2048}
    assert p.peak_bytes == 4096 * 4 and p.peak_layer == "c2"
    dict_out = profile_model(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)), 16, 4)
    assert dict_out.peak_bytes == 768 * 4  # an output nothing reads still streams out


class Tokens(nn.Module):
    """Functional matmuls whose leading dimension is not the batch (ViT-style)."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 2, 2)
        self.w = nn.Parameter(torch.randn(8, 16))
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)            # 1 x 64 x 8
        h = t @ self.w                                          # 1 x 64 x 16 (mm on 64 x 8)
        q = h.view(1, 64, 2, 8).transpose(1, 2)                 # 1 x 2 x 64 x 8
        s = q @ q.transpose(-1, -2)                             # 1 x 2 x 64 x 64 (bmm)
        return self.fc(s.mean((2, 3)))


def test_functional_matmul_maps_are_counted_whole():
    # a map's size was its numel divided by its first dimension (64 rows, 2 heads), not by
    # the batch
    p = profile_model(Tokens(), 16, 4)
    assert p.madds == 64 * 8 * 3 * 4 + 64 * 8 * 16 + 2 * 64 * 64 * 8 + 2 * 3
    m = {r.name: r.mem_bytes // 4 for r in p.layers}
    assert m == {"patch": 768 + 512, "mm": 512 + 1024, "bmm": 1024 + 8192,
                 "mean": 8192 + 2, "fc": 2}
    assert p.peak_bytes == (1024 + 8192) * 4 and p.peak_layer == "bmm"
    assert " 64x16 " in p.table()  # the matmul's rows are not a batch


class Attention(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, 4)  # 16x16 -> 16 tokens of 8
        self.layer = layer

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        if isinstance(self.layer, nn.MultiheadAttention):
            return self.layer(t, t, t)[0]
        return self.layer(t)


L_, E_, H_ = 16, 8, 2
PATCH = 16 * 8 * 3 * 16
MHA = 3 * L_ * E_ * E_ + 2 * H_ * L_ * L_ * (E_ // H_) + L_ * E_ * E_  # proj, QK^T, AV, out


def test_multihead_attention_madds_are_counted():
    # the fused fast path (_native_multi_head_attention) counted 0 MAdds
    p = profile_model(Attention(nn.MultiheadAttention(E_, H_, batch_first=True)), 16, 4)
    assert p.madds == PATCH + MHA
    assert torch.backends.mha.get_fastpath_enabled()  # switched off for the trace only
    assert p.params == (8 * 48 + 8) + (3 * E_ * E_ + 3 * E_) + (E_ * E_ + E_)


def test_transformer_encoder_layer_madds_are_counted():
    layer = nn.TransformerEncoderLayer(E_, H_, 16, batch_first=True)
    p = profile_model(Attention(layer), 16, 4)
    assert p.madds == PATCH + MHA + L_ * E_ * 16 + L_ * 16 * E_


class LSTMOnColumns(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, 4)
        self.rnn = nn.LSTM(8, 16, **kw)

    def forward(self, x):
        return self.rnn(self.patch(x).flatten(2).permute(2, 0, 1))[0]  # T=16, N=1, C=8


def test_lstm_madds_with_projections():
    p = profile_model(LSTMOnColumns(), 16)
    assert p.madds == PATCH + 16 * 4 * 16 * (8 + 16)
    # proj_size 4: gates 4 h (in + p), projection h p; layer 2 reads 2 p
    p = profile_model(LSTMOnColumns(proj_size=4, num_layers=2, bidirectional=True), 16)
    per_step = 4 * 16 * (8 + 4) + 16 * 4
    assert p.madds == PATCH + 2 * 2 * 16 * per_step


class WithBilinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.bl = nn.Bilinear(8, 8, 2)

    def forward(self, x):
        v = self.c(x).mean((2, 3))
        return self.bl(v, v)


def test_an_op_whose_madds_are_not_counted_is_named():
    with pytest.warns(UserWarning, match=r"bl.*_trilinear"):
        p = profile_model(WithBilinear(), 16, 4)
    assert p.madds == 16 * 16 * 8 * 27  # the conv; Bilinear's are not known
    assert any("bl" in n and "_trilinear" in n for n in p.notes)
    assert "_trilinear" in p.table()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert profile_model(Functional(), 16, 4).notes == []


# ---- CLI -----------------------------------------------------------------------------------------
def test_cli_measure_and_bad_bytes(capsys):
    assert main(["profile", "fmnist_cnn_rnnpool", "--input", "28x28", "--bytes", "1",
                 "--measure"]) == 0
    out = capsys.readouterr().out
    assert "measured activation peak" in out and "analytic" in out
    with pytest.raises(SystemExit) as e:
        main(["profile", "mobilenetv2", "--bytes", "2"])
    assert e.value.code == 2
    assert "invalid choice: 2" in capsys.readouterr().err
