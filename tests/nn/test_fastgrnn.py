"""FastGRNNCell: the SPEC formula, variants, sparsity, and loading reference-code weights."""

import pytest
import torch

from rnnpool.nn import (
    FastGRNNCell,
    RNNPool2d,
    _native,
    convert_reference_state_dict,
    load_reference_state_dict,
)
from rnnpool.nn._native import native_available
from rnnpool.nn.functional import _cell_matrices, _native_cell, _scan_groups, _SigmoidForm

from .reference import cell_step


def _spec_step(x, h, W, U, bz, bh, zeta, nu, hard=False):
    """The SPEC's cell written with numpy-style float64 math, batch of vectors."""
    pre = x @ W.T + h @ U.T
    if hard:
        z = torch.clamp((pre + bz + 1) / 2, 0, 1)
        c = torch.clamp(pre + bh, -1, 1)
    else:
        z = 1 / (1 + torch.exp(-(pre + bz)))
        c = torch.tanh(pre + bh)
    return z * h + (zeta * (1 - z) + nu) * c


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("zeta_nu", [None, (0.3, -0.2)])
def test_cell_matches_spec(hard, zeta_nu):
    kw = dict(gate="hard_sigmoid", update="hard_tanh") if hard else {}
    cell = FastGRNNCell(5, 4, trainable_zeta_nu=zeta_nu is not None, **kw).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_()
        if zeta_nu:
            cell.zeta_raw.fill_(zeta_nu[0]), cell.nu_raw.fill_(zeta_nu[1])
    x, h = torch.randn(3, 5, dtype=torch.double), torch.randn(3, 4, dtype=torch.double)
    zeta = torch.sigmoid(torch.tensor(zeta_nu[0], dtype=torch.double)) if zeta_nu else 1.0
    nu = torch.sigmoid(torch.tensor(zeta_nu[1], dtype=torch.double)) if zeta_nu else 0.0
    want = _spec_step(x, h, cell.weight_ih, cell.weight_hh, cell.bias_gate, cell.bias_update,
                      zeta, nu, hard)
    assert torch.allclose(cell(x, h), want, atol=1e-12)


def test_default_zeta_nu_is_paper_and_trainable_init_close():
    x = torch.randn(2, 3, dtype=torch.double)
    fixed = FastGRNNCell(3, 4).double()
    trainable = FastGRNNCell(3, 4, trainable_zeta_nu=True).double()
    trainable.load_state_dict({**fixed.state_dict(), "zeta_raw": trainable.zeta_raw.detach(),
                               "nu_raw": trainable.nu_raw.detach()})
    # sigmoid(100) = 1 - 4e-44, sigmoid(-100) = 4e-44: the two forms agree at init.
    assert torch.allclose(fixed(x), trainable(x), atol=1e-30)


@pytest.mark.parametrize("backend", ["torch", "native"])
@pytest.mark.parametrize(
    "kind",
    [dict(), dict(gate="hard_sigmoid"), dict(update="hard_tanh"), dict(trainable_zeta_nu=True)],
)
def test_scan_equals_repeated_cell_steps(kind, backend):
    if backend == "native" and not native_available():
        pytest.skip("no compiled kernel")
    cell = FastGRNNCell(3, 5, **kind).double()
    if kind.get("trainable_zeta_nu"):
        with torch.no_grad():
            cell.zeta_raw.fill_(0.5), cell.nu_raw.fill_(-1.0)
    p = cell.params()
    xs = torch.randn(6, 4, 3, dtype=torch.double)
    h = torch.zeros(4, 5, dtype=torch.double)
    for t in range(6):
        h = torch.stack([cell_step(xs[t, b], h[b], p) for b in range(4)])
    m = _cell_matrices(p)
    proj = xs.reshape(24, 3) @ m.w.t()  # row t * 4 + b holds step t of sweep b
    idx = torch.arange(24).view(6, 4)
    if backend == "native":  # (the kernel adds the bias as it reads a row)
        got = _native.scan(proj, [(idx, None)], **_native_cell(p))[0]
    else:
        got = _scan_groups(proj + m.b, [(idx, None)], p, m)
    assert torch.allclose(got, h, atol=1e-12)


def test_low_rank_effective_matrices():
    cell = FastGRNNCell(6, 4, w_rank=2, u_rank=3)
    assert cell.W.shape == (4, 6) and cell.U.shape == (4, 4)
    assert torch.linalg.matrix_rank(cell.W.detach()) <= 2
    assert cell.num_params() == 4 * 2 + 2 * 6 + 4 * 3 + 3 * 4 + 4 + 4


def test_sparsify_keeps_fraction_and_survives_training_steps():
    torch.manual_seed(0)
    cell = FastGRNNCell(10, 10)
    cell.sparsify_(0.5, 0.3)
    d = cell.density()
    assert d["weight_ih"] == pytest.approx(0.5, abs=0.01)
    assert d["weight_hh"] == pytest.approx(0.3, abs=0.01)
    kept = cell.weight_ih.detach() != 0
    opt = torch.optim.SGD(cell.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        cell(torch.randn(8, 10), torch.randn(8, 10)).pow(2).sum().backward()
        opt.step()
        cell.apply_sparsity_()
    assert torch.equal(cell.weight_ih.detach() != 0, kept)
    # masks travel in the state dict and are recreated on load
    fresh = FastGRNNCell(10, 10)
    fresh.load_state_dict(cell.state_dict())
    assert torch.equal(fresh.mask_weight_ih, cell.mask_weight_ih)


def test_sparsify_rejects_bad_fraction():
    with pytest.raises(ValueError, match="keep fraction"):
        FastGRNNCell(3, 3).sparsify_(0.0, 0.5)


def test_cell_input_errors():
    cell = FastGRNNCell(3, 4)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        cell(torch.randn(2, 5))
    for h in (torch.zeros(4), torch.zeros(3, 4), torch.zeros(2, 5)):  # no silent broadcast
        with pytest.raises(ValueError, match=r"state \(B, 4\) = \(2, 4\)"):
            cell(torch.randn(2, 3), h)
    assert cell(torch.randn(2, 3), torch.zeros(2, 4)).shape == (2, 4)
    with pytest.raises(ValueError, match="hidden_size"):
        FastGRNNCell(3, 0)


def _reference_layout_state_dict(k, h1, h2, w_rank=None, seed=0):
    """A state dict in the reference code's layout (x @ W, biases (1, h), raw zeta/nu (1, 1))."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (i, h) in (("cell_rnn", (k, h1)), ("cell_bidirrnn", (h1, h2))):
        p = f"rnn_model.{name}.cell."
        if w_rank:
            sd[p + "W1"] = torch.randn(i, w_rank, generator=g)
            sd[p + "W2"] = torch.randn(w_rank, h, generator=g)
        else:
            sd[p + "W"] = torch.randn(i, h, generator=g)
        sd[p + "U"] = torch.randn(h, h, generator=g) * 0.5
        sd[p + "bias_gate"] = torch.randn(1, h, generator=g)
        sd[p + "bias_update"] = torch.randn(1, h, generator=g)
        sd[p + "zeta"] = torch.tensor([[0.4]])
        sd[p + "nu"] = torch.tensor([[-2.0]])
    return sd


def _reference_layout_forward(sd, x_patch, prefix="rnn_model."):
    """Algorithm 1 on one patch using the reference layout directly (row vectors, x @ W)."""

    def step(x, h, p):
        W = sd[p + "W"] if p + "W" in sd else sd[p + "W1"] @ sd[p + "W2"]
        pre = x @ W + h @ sd[p + "U"]
        z = torch.sigmoid(pre + sd[p + "bias_gate"][0])
        c = torch.tanh(pre + sd[p + "bias_update"][0])
        return z * h + (
            torch.sigmoid(sd[p + "zeta"][0, 0]) * (1 - z) + torch.sigmoid(sd[p + "nu"][0, 0])
        ) * c

    def run(seq, p):
        h = torch.zeros(sd[p + "U"].shape[0])
        for v in seq:
            h = step(v, h, p)
        return h

    p1, p2 = prefix + "cell_rnn.cell.", prefix + "cell_bidirrnn.cell."
    _, r, c = x_patch.shape
    rows = [run([x_patch[:, i, j] for j in range(c)], p1) for i in range(r)]
    cols = [run([x_patch[:, i, j] for i in range(r)], p1) for j in range(c)]
    return torch.cat([run(rows, p2), run(rows[::-1], p2), run(cols, p2), run(cols[::-1], p2)])


@pytest.mark.parametrize("w_rank", [None, 2])
def test_load_reference_weights(w_rank):
    sd = _reference_layout_state_dict(3, 4, 5, w_rank=w_rank)
    m = RNNPool2d(3, 4, 5, 4, 4, trainable_zeta_nu=True, w_rank=w_rank)
    load_reference_state_dict(m, sd, prefix="rnn_model.")
    x = torch.randn(1, 3, 4, 4)
    assert torch.allclose(m(x)[0, :, 0, 0], _reference_layout_forward(sd, x[0]), atol=1e-5)


def test_reference_weights_into_fixed_zeta_module():
    sd = _reference_layout_state_dict(3, 4, 5)
    with pytest.raises(ValueError, match="trainable_zeta_nu=True"):
        convert_reference_state_dict(sd, "rnn_model.", trainable_zeta_nu=False)
    for k in list(sd):
        if k.endswith("zeta"):
            sd[k] = torch.tensor([[100.0]])
        if k.endswith(".nu"):
            sd[k] = torch.tensor([[-100.0]])
    m = RNNPool2d(3, 4, 5, 2)
    load_reference_state_dict(m, sd, prefix="rnn_model.")
    assert torch.equal(m.rnn1.weight_ih, sd["rnn_model.cell_rnn.cell.W"].t())


def test_reference_converter_names_missing_keys():
    with pytest.raises(KeyError, match="cell_rnn"):
        convert_reference_state_dict({"foo.W": torch.zeros(1)})


def test_sigmoid_form_node_matches_autograd_of_its_torch_ops():
    """The paper's cell's change of variables as one autograd node, against autograd through
    the same torch ops, for every output and for each one alone."""
    torch.manual_seed(0)
    u, bz, bh = (torch.randn(*s, dtype=torch.float64, requires_grad=True)
                 for s in ((6, 6), (6,), (6,)))
    plain = (2.0 * u, bz - u.sum(1), 2.0 * (bh - bz))
    fused = _SigmoidForm.apply(u, bz, bh)
    for a, b in zip(plain, fused):
        assert torch.equal(a, b)
    for pick in ([0, 1, 2], [0], [1], [2]):
        weights = [torch.randn_like(plain[k]) for k in pick]
        want = torch.autograd.grad(sum((plain[k] * w).sum() for k, w in zip(pick, weights)),
                                   (u, bz, bh), retain_graph=True, allow_unused=True)
        got = torch.autograd.grad(sum((fused[k] * w).sum() for k, w in zip(pick, weights)),
                                  (u, bz, bh), retain_graph=True, allow_unused=True)
        for a, b in zip(want, got):
            a = torch.zeros_like(b) if a is None else a
            assert torch.allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.skipif(not native_available(), reason="no compiled kernel")
def test_native_scan_refuses_mixed_dtypes():
    # The kernel reads every array as src's type: float64 cell weights under float32 rows gave
    # wrong numbers before the check.
    p = FastGRNNCell(3, 5).double().params()
    proj = torch.randn(24, 5)
    with pytest.raises(ValueError, match="src is torch.float32 but .*'u': torch.float64"):
        _native.scan(proj, [(torch.arange(24).view(6, 4), None)], **_native_cell(p))


def test_rank_must_be_a_positive_int_not_a_bool():
    # True passed the check (bool is an int) and failed inside torch.empty.
    for name in ("w_rank", "u_rank"):
        with pytest.raises(ValueError, match=f"{name} must be a positive int or None, got True"):
            FastGRNNCell(3, 4, **{name: True})


def test_checkpoint_mask_of_the_wrong_shape_is_refused():
    # A mask was registered with the checkpoint's shape and dtype: a (4,) mask for a (3, 4)
    # matrix loaded without error and apply_sparsity_ broadcast it over every row.
    cell = FastGRNNCell(4, 3)
    cell.sparsify_(0.5, 0.5)
    sd = cell.state_dict()
    sd["mask_weight_ih"] = torch.ones(4, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="size mismatch for mask_weight_ih"):
        FastGRNNCell(4, 3).load_state_dict(sd)
    sd["mask_weight_ih"] = cell.mask_weight_ih.float()  # a float mask is loaded as a bool one
    fresh = FastGRNNCell(4, 3)
    fresh.load_state_dict(sd)
    assert fresh.mask_weight_ih.dtype == torch.bool
    assert torch.equal(fresh.mask_weight_ih, cell.mask_weight_ih)


def test_sparsify_with_a_bad_fraction_changes_nothing():
    # The fractions were checked matrix by matrix: a bad keep_hh left weight_ih's mask behind
    # (in the state dict, and applied by the next apply_sparsity_).
    cell = FastGRNNCell(4, 3)
    with pytest.raises(ValueError, match="keep fraction for weight_hh"):
        cell.sparsify_(0.5, 0.0)
    assert not any(k.startswith("mask_") for k in cell.state_dict())
