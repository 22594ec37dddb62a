"""RNNPool2d fast path vs the literal per-patch reference, gradients, errors and sizes."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnpool.nn import RNNPool2d, rnnpool2d_macs, rnnpool2d_num_params
from rnnpool.nn._native import native_available
from rnnpool.nn.functional import FastGRNNParams, rnnpool2d_padding

from .reference import rnnpool_reference


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.8)


@st.composite
def configs(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    padding = draw(
        st.one_of(
            st.just("same"),
            st.tuples(
                st.integers(0, kh - 1 if kh > 1 else 0), st.integers(0, kw - 1 if kw > 1 else 0)
            ),
        )
    )
    mode = draw(st.sampled_from(["zeros", "replicate"]))
    h = draw(st.integers(kh, kh + 5))
    w = draw(st.integers(kw, kw + 5))
    c = draw(st.integers(1, 3))
    h1, h2 = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    n = draw(st.integers(1, 2))
    cell = draw(
        st.sampled_from(
            [
                dict(),
                dict(gate="hard_sigmoid", update="hard_tanh"),
                dict(trainable_zeta_nu=True),
                dict(w_rank=2, u_rank=1),
            ]
        )
    )
    seed = draw(st.integers(0, 2**16))
    backend = draw(st.sampled_from(BACKENDS))
    return (n, c, h, w), (kh, kw), (sh, sw), padding, mode, h1, h2, cell, seed, backend


# The compiled kernel is tested wherever it builds (test_native_kernel_builds says when it must).
BACKENDS = ["torch", "native"] if native_available() else ["torch"]


def _build(cfg):
    shape, k, s, padding, mode, h1, h2, cell, seed, backend = cfg
    m = RNNPool2d(shape[1], h1, h2, k, s, padding, mode, backend=backend, **cell).double()
    _randomize(m, seed)
    if cell.get("trainable_zeta_nu"):
        with torch.no_grad():  # keep sigmoid(zeta), sigmoid(nu) away from 1 / 0
            m.rnn1.zeta_raw.fill_(0.7), m.rnn1.nu_raw.fill_(-0.4)
            m.rnn2.zeta_raw.fill_(1.1), m.rnn2.nu_raw.fill_(-1.3)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.double)
    pads = rnnpool2d_padding(shape[2:], k, s, padding)
    return m, x, pads


@settings(max_examples=60, deadline=None)
@given(configs())
def test_fast_path_matches_literal_reference(cfg):
    m, x, pads = _build(cfg)
    x.requires_grad_(True)
    y = m(x)
    xr = x.detach().clone().requires_grad_(True)
    # The reference reads the same parameter tensors, so gradients flow to them too.
    ref = rnnpool_reference(xr, m.rnn1.params(), m.rnn2.params(), m.kernel_size, m.stride, pads,
                            m.padding_mode)
    assert y.shape == ref.shape
    assert torch.allclose(y, ref, rtol=0, atol=1e-10)

    gy = torch.randn_like(y)
    params = list(m.parameters())
    g_fast = torch.autograd.grad(y, [x] + params, gy, allow_unused=True, materialize_grads=True)
    g_ref = torch.autograd.grad(ref, [xr] + params, gy, allow_unused=True, materialize_grads=True)
    for a, b in zip(g_fast, g_ref):
        assert torch.allclose(a, b, rtol=0, atol=1e-10), (a - b).abs().max()


def test_native_kernel_builds():
    import shutil

    from rnnpool.nn._native import native_status

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the torch path is used")
    assert native_available(), native_status()


def test_loading_the_kernel_keeps_subnormal_numbers():
    # Built with -ffast-math in one command, the library linked crtfastmath.o, whose
    # constructor made the process flush subnormal numbers to zero from then on (numpy's,
    # torch's, every library's). A fresh interpreter, as the kernel is loaded once a process.
    import shutil
    import subprocess
    import sys

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler: no kernel to load")
    code = ("import numpy as np, torch; from rnnpool.nn._native import native_available; "
            "assert native_available(); tiny = np.float32(1e-39); "
            "print(float(tiny * np.float32(1.0)), (torch.tensor([1e-39]) * 1.0).item())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert [float(v) for v in out.stdout.split()] == pytest.approx([1e-39, 1e-39], rel=1e-6)


def test_build_cache_keeps_the_most_recently_used_builds(tmp_path):
    import os

    from rnnpool.nn._native import prune_builds

    names = [f"kernels-{k}.so" for k in range(6)] + ["scan-old.so", "tmpbuilding.so", "notes.txt"]
    for age, name in enumerate(names):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1e9 - 1000 * age, 1e9 - 1000 * age))  # kernels-0 newest
    deleted = prune_builds(tmp_path, keep=3)
    assert sorted(p.name for p in deleted) == ["kernels-3.so", "kernels-4.so", "kernels-5.so",
                                               "scan-old.so"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kernels-0.so", "kernels-1.so", "kernels-2.so", "notes.txt", "tmpbuilding.so"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", [dict(), dict(gate="hard_sigmoid", update="hard_tanh"),
                                  dict(trainable_zeta_nu=True)])
@pytest.mark.parametrize("h1,h2", [(8, 16), (32, 8), (16, 32)])
def test_paper_hidden_sizes_match_reference(backend, cell, h1, h2):
    """The hidden sizes the compiled kernel specialises (8, 16, 32), values and gradients."""
    m = RNNPool2d(3, h1, h2, 4, 2, padding="same", backend=backend, **cell).double()
    _randomize(m, h1 + h2)
    with torch.no_grad():
        for cell_ in (m.rnn1, m.rnn2):
            for p in cell_.parameters():
                p.mul_(0.3)  # keep the gates off saturation so every path carries gradient
        if cell.get("trainable_zeta_nu"):
            m.rnn1.zeta_raw.fill_(0.7), m.rnn2.nu_raw.fill_(-0.4)
    x = torch.randn(2, 3, 9, 7, dtype=torch.double)
    _assert_matches_reference(m, x, rnnpool2d_padding((9, 7), 4, 2, "same"))


def _assert_matches_reference(m, x, pads, mode="zeros"):
    """``m(x)`` and the gradients of ``x`` and every parameter equal the literal reference's."""
    x = x.detach().clone().requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    y = m(x)
    ref = rnnpool_reference(xr, m.rnn1.params(), m.rnn2.params(), m.kernel_size, m.stride, pads,
                            mode)
    assert y.shape == ref.shape
    assert torch.allclose(y, ref, rtol=0, atol=1e-10)
    gy = torch.randn_like(y)
    params = list(m.parameters())
    for a, b in zip(torch.autograd.grad(y, [x] + params, gy),
                    torch.autograd.grad(ref, [xr] + params, gy)):
        assert torch.allclose(a, b, rtol=0, atol=1e-10), (a - b).abs().max()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["zeros", "replicate"])
@pytest.mark.parametrize("channels", [9, 12])
def test_many_channels_and_padding_match_reference(backend, mode, channels):
    """Inputs of more than 8 channels are projected from NCHW in place, and zero padding is a
    row shared by every sweep (the compiled kernel drops its gradient): values and gradients."""
    m = RNNPool2d(channels, 8, 4, (5, 4), (3, 2), padding=(2, 1), padding_mode=mode,
                  backend=backend).double()
    _randomize(m, channels)
    x = torch.randn(2, channels, 11, 9, dtype=torch.double)
    _assert_matches_reference(m, x, rnnpool2d_padding((11, 9), (5, 4), (3, 2), (2, 1)), mode)


@pytest.mark.parametrize("backend", BACKENDS)
def test_paper_layer_shape_matches_reference(backend):
    # MobileNetV2-RNNPool's layer shape at a reduced size: patch 6, stride 4, "same" padding.
    m = RNNPool2d(5, 4, 3, 6, 4, padding="same", backend=backend).double()
    _randomize(m, 3)
    x = torch.randn(1, 5, 16, 12, dtype=torch.double)
    ref = rnnpool_reference(x, m.rnn1.params(), m.rnn2.params(), (6, 6), (4, 4),
                            rnnpool2d_padding((16, 12), 6, 4, "same"))
    y = m(x)
    assert y.shape == (1, 12, 4, 3)
    assert torch.allclose(y, ref, rtol=0, atol=1e-10)


def test_output_channel_order():
    """Each channel group must be the final state of its sweep (checked on a single patch)."""
    m = RNNPool2d(2, 3, 2, (3, 2)).double()
    _randomize(m, 5)
    x = torch.randn(1, 2, 3, 2, dtype=torch.double)
    y = m(x)[0, :, 0, 0]
    p1, p2 = m.rnn1.params(), m.rnn2.params()
    from .reference import run_rnn

    rows = [run_rnn([x[0, :, i, j] for j in range(2)], p1) for i in range(3)]
    cols = [run_rnn([x[0, :, i, j] for i in range(3)], p1) for j in range(2)]
    expected = [run_rnn(rows, p2), run_rnn(rows[::-1], p2),
                run_rnn(cols, p2), run_rnn(cols[::-1], p2)]
    for g, e in enumerate(expected):
        assert torch.allclose(y[2 * g : 2 * g + 2], e, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_float64(backend):
    m = RNNPool2d(2, 3, 2, (3, 2), (2, 1), padding=(1, 0), trainable_zeta_nu=True,
                  backend=backend).double()
    _randomize(m, 7)
    with torch.no_grad():
        m.rnn1.zeta_raw.fill_(0.3), m.rnn2.nu_raw.fill_(-0.5)
    x = torch.randn(1, 2, 5, 4, dtype=torch.double, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]

    def f(x, *params):
        return torch.func.functional_call(m, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_() for p in m.parameters()]))


@pytest.mark.parametrize(
    "hw,k,s,padding,expected",
    [
        ((112, 112), 6, 4, "same", (28, 28)),
        ((112, 112), 6, 4, 0, (27, 27)),
        ((160, 120), 8, 4, "same", (40, 30)),
        ((320, 240), 8, 4, "same", (80, 60)),
        ((7, 9), (3, 2), (2, 3), 1, (4, 4)),
        ((10, 10), 4, 4, 0, (2, 2)),
    ],
)
def test_output_size(hw, k, s, padding, expected):
    m = RNNPool2d(1, 2, 2, k, s, padding)
    assert m.output_size(hw) == expected
    assert m(torch.zeros(1, 1, *hw)).shape[2:] == expected
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (s, s) if isinstance(s, int) else s
    if padding != "same":
        p = padding if isinstance(padding, int) else padding[0]
        assert expected[0] == math.floor((hw[0] + 2 * p - kh) / sh) + 1
        assert expected[1] == math.floor((hw[1] + 2 * p - kw) / sw) + 1
    else:
        assert expected == (math.ceil(hw[0] / sh), math.ceil(hw[1] / sw))


def test_same_padding_is_symmetric_when_even():
    # (r - s) / 2 on each side: output cell centres on the stride grid.
    assert rnnpool2d_padding((112, 112), 6, 4, "same") == (1, 1, 1, 1)
    assert rnnpool2d_padding((160, 120), 8, 4, "same") == (2, 2, 2, 2)


def test_stride_defaults_to_kernel():
    m = RNNPool2d(3, 4, 4, (4, 2))
    assert m.stride == (4, 2)
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 16, 2, 4)


def test_macs_and_params_formula():
    # SPEC §1, square patch: RNN1 2 r^2 h1 (k + h1), RNN2 4 r h2 (h1 + h2), per patch.
    r, k, h1, h2 = 6, 32, 16, 16
    per_patch = 2 * r * r * h1 * (k + h1) + 4 * r * h2 * (h1 + h2)
    assert rnnpool2d_macs(k, h1, h2, r, (28, 28)) == per_patch * 28 * 28
    m = RNNPool2d(k, h1, h2, r, 4, "same")
    assert m.macs((112, 112)) == per_patch * 784
    expected_params = h1 * (k + h1) + 2 * h1 + h2 * (h1 + h2) + 2 * h2
    assert rnnpool2d_num_params(k, h1, h2) == expected_params
    assert m.num_params() == sum(p.numel() for p in m.parameters()) == expected_params
    mt = RNNPool2d(k, h1, h2, r, 4, trainable_zeta_nu=True)
    assert mt.num_params() == expected_params + 4 == rnnpool2d_num_params(k, h1, h2, True)
    # Overlap sharing: the fast path executes fewer MACs than the per-patch formula.
    assert m.executed_macs((112, 112)) < m.macs((112, 112)) / 2


def test_executed_macs_counts_the_work_done():
    """executed_macs equals the FLOPs torch's counter sees in the forward, halved (a FLOP
    counts a multiply and an add separately)."""
    from torch.utils.flop_counter import FlopCounterMode

    # The counter sees torch ops only: the compiled kernel runs the same products out of its view.
    m = RNNPool2d(5, 6, 7, 4, 2, padding="same", backend="torch")
    x = torch.randn(1, 5, 12, 10)
    with FlopCounterMode(display=False) as fc:
        m(x)
    # The gate and the update share W x + U h, so each product runs once: 2 FLOPs per MAC (plus
    # one U h0 matrix-vector product per sweep group for the constant initial state, well under
    # 1 %).
    flops = fc.get_total_flops()
    assert flops == pytest.approx(2 * m.executed_macs((12, 10)), rel=1e-2)
    assert flops >= 2 * m.executed_macs((12, 10))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_channels=0, hidden1=2, hidden2=2, kernel_size=2), "in_channels"),
        (dict(in_channels=2, hidden1=0, hidden2=2, kernel_size=2), "hidden1"),
        (dict(in_channels=2, hidden1=2, hidden2=-1, kernel_size=2), "hidden2"),
        (dict(in_channels=2, hidden1=2, hidden2=2, kernel_size=0), "kernel_size"),
        (dict(in_channels=2, hidden1=2, hidden2=2, kernel_size=2, stride=(1, 0)), "stride"),
        (dict(in_channels=2, hidden1=2, hidden2=2, kernel_size=2, padding=-1), "padding"),
        (dict(in_channels=2, hidden1=2, hidden2=2, kernel_size=2, padding="valid"), "padding"),
        (dict(in_channels=2, hidden1=2, hidden2=2, kernel_size=2, padding_mode="reflect"),
         "padding_mode"),
        (dict(in_channels=2, hidden1=2, hidden2=2, kernel_size=(2, 2, 2)), "kernel_size"),
        (dict(in_channels=2, hidden1=2, hidden2=2, kernel_size=2, gate="relu"), "gate"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RNNPool2d(**kwargs)


def test_sizes_take_numpy_ints_and_name_what_is_not_an_int():
    import numpy as np

    m = RNNPool2d(3, 4, 4, np.int64(2), (np.int32(2), 1))
    assert m(torch.randn(1, 3, 8, 8)).shape == (1, 16, 4, 7)
    for bad in (2.5, "2", True):  # these were "object is not iterable" or a tuple of chars
        with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints"):
            RNNPool2d(3, 4, 4, bad)


def test_forward_errors():
    m = RNNPool2d(3, 4, 4, 4, 2)
    with pytest.raises(ValueError, match="3 input channels, got 2"):
        m(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="4D input"):
        m(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="smaller than kernel_size"):
        m(torch.randn(1, 3, 3, 8))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", [dict(), dict(gate="hard_sigmoid", update="hard_tanh"),
                                  dict(trainable_zeta_nu=True)])
def test_float32_close_to_float64(backend, cell):
    m = RNNPool2d(4, 16, 8, 8, 4, "same", backend=backend, **cell)
    if cell.get("trainable_zeta_nu"):
        with torch.no_grad():  # a cell that is not the paper's: tanh runs as tanh
            m.rnn1.zeta_raw.fill_(0.7), m.rnn2.nu_raw.fill_(-0.4)
    x = torch.randn(2, 4, 32, 24, requires_grad=True)
    y32 = m(x)
    (g32,) = torch.autograd.grad(y32.square().sum(), x)
    x64 = x.detach().double().requires_grad_(True)
    y64 = m.double()(x64)
    (g64,) = torch.autograd.grad(y64.square().sum(), x64)
    assert (y32.double() - y64).abs().max() < 1e-5
    assert (g32.double() - g64).abs().max() < 1e-4 * g64.abs().max()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("update_bias", ["same", "zero"])
def test_float32_saturated_cells_close_to_float64(backend, update_bias):
    """Gate pre-activations near +-40, in float32 against float64. The compiled kernel computes
    the gate and the update from one exponential with the pre-activation clamped to +-30; that
    is exact to e^-30 only while the update's offset is small ("same": b_h = b_z), and with
    b_h = 0 the offset is 80 and the kernel must use two exponentials (the update is then not
    saturated: 2 a - 80 is near 0)."""
    torch.manual_seed(1)
    m = RNNPool2d(3, 8, 8, 4, 2, "same", backend=backend)
    with torch.no_grad():
        for cell in (m.rnn1, m.rnn2):
            cell.bias_gate.copy_(40.0 * torch.tensor([1.0, -1.0]).repeat(4))
            cell.bias_update.copy_(cell.bias_gate if update_bias == "same" else 0.0)
    x = torch.randn(2, 3, 12, 10)
    y32 = m(x)
    y64 = m.double()(x.double())
    # Float32 rounds a pre-activation near 40 by up to 40 * 2^-24 = 2.4e-6, doubled in the
    # update; clamping where it is not exact would be off by up to 0.5.
    assert (y32.double() - y64).abs().max() < 5e-5
    if update_bias == "zero":  # the update is in its sensitive range somewhere
        assert ((y64.abs() > 0.05) & (y64.abs() < 0.95)).any()


@pytest.mark.skipif(not native_available(), reason="no compiled kernel")
def test_native_propagates_nan_like_torch():
    """A NaN pixel reaches exactly the outputs and gradients it reaches in torch ops (the kernel
    is built with fast math, but without assuming finite values)."""
    m = RNNPool2d(4, 8, 8, 4, 2, backend="native")
    x = torch.randn(2, 4, 10, 9)
    x[1, 2, 3, 4] = float("nan")
    nans = {}
    for backend in ("native", "torch"):
        m.backend = backend
        xb = x.clone().requires_grad_(True)
        y = m(xb)
        (g,) = torch.autograd.grad(y.nan_to_num().sum(), xb)
        nans[backend] = (torch.isnan(y), torch.isnan(g))
    assert nans["native"][0].any() and not nans["native"][0].all()
    assert all(torch.equal(a, b) for a, b in zip(nans["native"], nans["torch"]))


@pytest.mark.skipif(not native_available(), reason="no compiled kernel")
def test_native_backward_is_deterministic_across_threads():
    """Parameter gradients are summed in a fixed order, whatever the threads do."""
    m = RNNPool2d(3, 8, 8, 6, 4, "same", backend="native")
    x = torch.randn(2, 3, 40, 36, requires_grad=True)
    grads = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 2, 3):
            torch.set_num_threads(n)
            grads.append(torch.autograd.grad(m(x).sum(), [x, *m.parameters()]))
    finally:
        torch.set_num_threads(threads)
    for other in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], other))


def test_batch_independence():
    m = RNNPool2d(3, 4, 4, 4, 2)
    x = torch.randn(3, 3, 10, 10)
    full = m(x)
    for i in range(3):
        assert torch.allclose(m(x[i : i + 1]), full[i : i + 1], atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_after_inference_mode(backend):
    """Index tensors cached under inference_mode must still be usable by autograd."""
    m = RNNPool2d(3, 4, 4, 4, 2, backend=backend)
    x = torch.randn(1, 3, 13, 11)  # a geometry no other test uses, so the cache starts here
    with torch.inference_mode():
        m(x)
    m(x.requires_grad_()).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_twice_through_a_retained_graph(backend):
    """What the forward keeps for the backward survives a first backward unchanged."""
    m = RNNPool2d(3, 8, 8, 6, 4, "same", backend=backend)
    x = torch.randn(2, 3, 17, 15, requires_grad=True)
    y = m(x)
    gy = torch.randn_like(y)
    first = torch.autograd.grad(y, [x, *m.parameters()], gy, retain_graph=True)
    second = torch.autograd.grad(y, [x, *m.parameters()], gy)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward_is_refused(backend):
    """The hand-written backwards treat saved activations as constants: no silent 2nd order."""
    m = RNNPool2d(3, 4, 4, 4, 2, backend=backend).double()
    x = torch.randn(1, 3, 8, 8, dtype=torch.double, requires_grad=True)
    (g,) = torch.autograd.grad(m(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    m = RNNPool2d(3, 4, 4, 4, 2, backend=backend)
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    y = m(x)
    y.sum().backward()
    assert y.shape == (0, 16, 3, 3) and x.grad.shape == x.shape


@pytest.mark.skipif(not native_available(), reason="no compiled kernel")
# Few channels (3 pixel channels, 8 summary channels) are projected in the scan kernel, more
# (9, 16) before it.
@pytest.mark.parametrize("channels,h1", [(3, 16), (9, 8)])
@pytest.mark.parametrize("wanted", ["input", "rnn1", "rnn2", "params", "rnn2 and input"])
def test_native_gradients_of_any_subset_of_inputs(channels, h1, wanted):
    """The compiled path's one autograd node computes only the gradients that are asked for,
    and those equal the torch path's (tested against the literal reference above)."""
    torch.manual_seed(0)
    native = RNNPool2d(channels, h1, 8, 4, 2, "same", backend="native").double()
    torch_ = RNNPool2d(channels, h1, 8, 4, 2, "same", backend="torch").double()
    with torch.no_grad():
        for p in native.parameters():
            p.normal_(0, 0.8)
    torch_.load_state_dict(native.state_dict())
    x = torch.randn(2, channels, 9, 10, dtype=torch.double)
    gy = torch.randn(2, 4 * 8, 5, 5, dtype=torch.double)
    got, want = [], []
    for m, out in ((native, got), (torch_, want)):
        xi = x.clone().requires_grad_("input" in wanted)
        for name, p in m.named_parameters():
            p.requires_grad_(wanted == "params" or name.split(".")[0] in wanted)
        leaves = [t for t in [xi, *m.parameters()] if t.requires_grad]
        out += torch.autograd.grad(m(xi), leaves, gy)
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_changed_in_place_before_the_backward_are_refused(backend):
    """A backward that would read weights changed since the forward fails, as autograd's
    (the cell as written: the torch path runs the paper's cell on a copy, 2 U)."""
    m = RNNPool2d(3, 4, 4, 4, 2, backend=backend, gate="hard_sigmoid", update="hard_tanh")
    y = m(torch.randn(1, 3, 8, 8))
    with torch.no_grad():
        m.rnn2.weight_hh.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("backend", ["auto", "torch", "native"])
def test_input_dtype_must_match_the_parameters(backend):
    # The compiled kernel read float32 parameters as float64 (and the reverse): wrong numbers,
    # no error. Now a mismatch is a clear error on every backend, as in nn.Conv2d.
    if backend == "native" and not native_available():
        pytest.skip("compiled kernel unavailable")
    m = RNNPool2d(3, 4, 4, 4, 2, backend=backend)
    for dtype in (torch.float64, torch.float16, torch.int64):
        with pytest.raises(TypeError, match=f"input dtype {dtype} does not match"):
            m(torch.zeros(1, 3, 8, 8, dtype=dtype))
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    assert m.double()(x).dtype == torch.float64


@pytest.mark.skipif(not native_available(), reason="no compiled kernel")
def test_native_backend_names_what_it_cannot_run():
    wide = RNNPool2d(2, 520, 4, 4, 4, backend="native")
    with pytest.raises(RuntimeError, match="hidden sizes up to 512, got 520"):
        wide(torch.randn(1, 2, 8, 8))
    # bfloat16 layers compute in float32, which the kernel runs
    m = RNNPool2d(2, 4, 4, 4, 4, backend="native").to(torch.bfloat16)
    assert m(torch.randn(1, 2, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_functional_rejects_non_positive_kernel_and_stride():
    # The module checked these, rnnpool2d itself did not: ZeroDivisionError or an arange error.
    from rnnpool.nn.functional import rnnpool2d, rnnpool2d_output_size

    m = RNNPool2d(3, 4, 4, 2)
    x = torch.randn(1, 3, 8, 8)
    p1, p2 = m.rnn1.params(), m.rnn2.params()
    for k, s, name in ((2, 0, "stride"), (0, 1, "kernel_size"), ((-2, 2), 1, "kernel_size"),
                       (2, (1, -1), "stride")):
        with pytest.raises(ValueError, match=f"{name} must be positive"):
            rnnpool2d(x, p1, p2, k, s)
        with pytest.raises(ValueError, match=f"{name} must be positive"):
            rnnpool2d_output_size((8, 8), k, s, "same")


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_functional_rnn2_input_must_be_rnn1_state(backend):
    from rnnpool.nn.functional import rnnpool2d

    a, b = RNNPool2d(3, 4, 4, 2), RNNPool2d(3, 5, 4, 2)
    with pytest.raises(ValueError, match="rnn2 reads 5 features but rnn1 has 4"):
        rnnpool2d(torch.randn(1, 3, 8, 8), a.rnn1.params(), b.rnn2.params(), 2, backend=backend)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_parameters_on_another_device_than_the_input_are_refused(backend):
    # The compiled kernel read the parameters' data pointers whatever their device: parameters
    # off the CPU (here on "meta") with a CPU input crashed the process (segmentation fault).
    m = RNNPool2d(3, 4, 4, 2, backend=backend).to("meta")
    with pytest.raises(RuntimeError, match="input on cpu but its parameters on meta"):
        m(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_autocast_runs_in_the_parameters_dtype(backend, dtype):
    # Under autocast the torch path failed inside its projections (dtype errors), and a
    # bfloat16 input (what autocast's convolutions give) failed on every backend.
    torch.manual_seed(0)
    m = RNNPool2d(3, 4, 5, (3, 2), (2, 1), 1, backend=backend)
    x = torch.randn(2, 3, 7, 6).to(dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    y.sum().backward()
    p1, p2 = (c.params()._replace(**{f: getattr(c.params(), f).double().detach() for f in
                                     ("weight_ih", "weight_hh", "bias_gate", "bias_update")})
              for c in (m.rnn1, m.rnn2))
    ref = rnnpool_reference(x.detach().double(), p1, p2, m.kernel_size, m.stride,
                            (1, 1, 1, 1))
    assert y.dtype == torch.float32 and x.grad.dtype == dtype
    assert (y.double() - ref).abs().max() < 1e-5


@pytest.mark.parametrize("cell", [dict(), dict(gate="hard_sigmoid", update="hard_tanh",
                                             trainable_zeta_nu=True, w_rank=2)])
@pytest.mark.parametrize("padding_mode", ["zeros", "replicate"])
def test_every_tensor_follows_the_inputs_device(monkeypatch, cell, padding_mode):
    # What a GPU runs ("auto" off the CPU is the torch path), checked on "meta": a tensor made
    # on the CPU inside the forward or backward (a missing device=) fails there as on CUDA.
    # The sweep indices (bincount, which "meta" cannot run) are built on the CPU and moved.
    import rnnpool.nn.functional as RF

    build = RF._sweep_indices

    def on_device(*geometry, traced):
        s = build(*geometry[:-1], torch.device("cpu"), traced=traced)
        mv = geometry[-1]
        return RF._Sweeps([(a.to(mv), b.to(mv)) for a, b in s.rnn1],
                          [(a.to(mv), b.to(mv)) for a, b in s.rnn2], s.order.to(mv),
                          s.position.to(mv))

    monkeypatch.setattr(RF, "_sweep_indices", on_device)
    for dtype in (torch.float64, torch.float16):
        m = RNNPool2d(3, 4, 5, 3, 2, "same", padding_mode=padding_mode, **cell)
        m = m.to("meta", dtype)
        x = torch.empty(2, 3, 9, 7, device="meta", dtype=dtype, requires_grad=True)
        y = m(x)
        assert (y.device.type, y.dtype, y.shape) == ("meta", dtype, (2, 20, 5, 4))
        y.sum().backward()
        assert x.grad.device.type == "meta" and x.grad.dtype == dtype
        assert all(p.grad.device.type == "meta" for p in m.parameters())


@pytest.mark.parametrize("rank", [dict(w_rank=2), dict(u_rank=3), dict(w_rank=2, u_rank=3)])
def test_autocast_with_low_rank_cells(rank):
    # Autocast rounded the low-rank products W = W1 W2, U = U1 U2 to bfloat16 (float16 on a
    # GPU under --amp) while the biases stayed float32: the layer refused its own parameters
    # ("input dtype torch.bfloat16 does not match its parameters' torch.bfloat16, float32").
    torch.manual_seed(0)
    m = RNNPool2d(3, 4, 5, 3, 2, "same", **rank)
    x = torch.randn(2, 3, 7, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
        assert m.rnn1.W.dtype == m.rnn1.U.dtype == torch.float32
    y.sum().backward()
    grads = [x.grad] + [p.grad for p in m.parameters()]
    x.grad = None
    m.zero_grad()
    y_plain = m(x)  # the same float32 layer without autocast
    y_plain.sum().backward()
    torch.testing.assert_close(y, y_plain, rtol=0, atol=0)
    for g, g_plain in zip(grads, [x.grad] + [p.grad for p in m.parameters()]):
        torch.testing.assert_close(g, g_plain, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_torch_func_transforms_match_reference(backend):
    # vmap, grad and jacrev failed inside the layer's autograd.Functions ("must override the
    # setup_context staticmethod"): per-sample gradients were impossible.
    m = RNNPool2d(2, 3, 2, (3, 2), (2, 1), padding="same", padding_mode="replicate",
                  trainable_zeta_nu=True, backend=backend).double()
    _randomize(m, 11)
    x = torch.randn(2, 2, 5, 4, dtype=torch.double)
    pads = rnnpool2d_padding((5, 4), (3, 2), (2, 1), "same")

    def ref(t):
        return rnnpool_reference(t, m.rnn1.params(), m.rnn2.params(), (3, 2), (2, 1), pads,
                                 "replicate")

    y = torch.func.vmap(lambda xi: m(xi[None])[0])(x)
    assert torch.allclose(y, ref(x), rtol=0, atol=1e-10)
    params = {k: v.detach() for k, v in m.named_parameters()}

    def loss(p, xi):
        return torch.func.functional_call(m, p, (xi[None],)).square().sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    for i in range(2):
        want = torch.autograd.grad(ref(x[i : i + 1]).square().sum(), list(m.parameters()))
        for name, w in zip(params, want):
            assert torch.allclose(per_sample[name][i], w, rtol=0, atol=1e-10), name
    jac = torch.func.jacrev(m)(x[:1])  # checked through one vector-Jacobian product
    x1 = x[:1].clone().requires_grad_(True)
    r = ref(x1)
    gy = torch.randn_like(r)
    (want,) = torch.autograd.grad(r, x1, gy)
    got = (jac * gy[(...,) + (None,) * 4]).sum(dim=(0, 1, 2, 3))
    assert torch.allclose(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_empty_spatial_input_is_refused(backend, mode):
    # With padding, an input of height or width 0 gave an output computed from the padding
    # alone; its backward then failed inside the compiled kernel's wrapper ("project_backward:
    # ... do not match"). Refused up front, as nn.Conv2d and nn.MaxPool2d do.
    m = RNNPool2d(3, 4, 4, 3, 2, padding=2, padding_mode=mode, backend=backend)
    for shape in ((1, 3, 0, 8), (2, 3, 5, 0), (0, 3, 0, 0)):
        with pytest.raises(ValueError, match="non-empty spatial size"):
            m(torch.randn(shape, requires_grad=True))


def test_sweep_index_cache_is_bounded_in_bytes(monkeypatch):
    # The index tensors of one geometry take ~37 MB for a 1000x750 image; a count-bounded cache
    # (32 geometries) held up to ~1.2 GB when every image had its own size (widerface-predict).
    from rnnpool.nn import functional as RF

    cache = RF._SWEEP_CACHE
    monkeypatch.setattr(cache, "max_bytes", 4 * 2**20)  # each geometry below: 1.3-2.7 MB
    cache.clear()
    layer = RNNPool2d(4, 8, 8, 4, 2, padding="same")
    held = []
    with torch.no_grad():
        for hw in [(100, 80), (96, 120), (128, 128), (60, 200), (90, 90)]:
            layer(torch.randn(2, 4, *hw))
            assert 0 < cache.nbytes <= cache.max_bytes
            misses = cache.misses
            layer(torch.randn(2, 4, *hw))  # the same geometry again: served from the cache
            assert cache.misses == misses
            held.append(len(cache))
    assert max(held) == 2 and held[-1] < 5  # more than one kept, older ones dropped
    cache.clear()


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 2**-8), (torch.float16, 2**-11)])
def test_half_precision_layer_is_exact_up_to_its_output_rounding(dtype, tol):
    # Run in bf16 / fp16 throughout, the torch path's recurrences drifted up to ~0.045 from the
    # exact result for the rounded weights; computed in float32 inside, the output is that
    # result rounded once to the dtype (outputs are in [-1, 1]: half a step <= tol).
    torch.manual_seed(0)
    m = RNNPool2d(4, 8, 8, 6, 4, padding="same")
    _randomize(m, 2)
    m = m.to(dtype)
    x = torch.randn(2, 4, 20, 16).to(dtype)
    y = m(x)
    assert y.dtype == dtype
    ref = rnnpool_reference(x.double(), *(FastGRNNParams(*[
        t.double() if isinstance(t, torch.Tensor) else t for t in r.params()]) for r in
        (m.rnn1, m.rnn2)), (6, 6), (4, 4), rnnpool2d_padding((20, 16), 6, 4, "same"))
    assert (y.double() - ref).abs().max() <= tol
    y.float().sum().backward()
    assert m.rnn1.weight_hh.grad.dtype == dtype and torch.isfinite(m.rnn1.weight_hh.grad).all()
