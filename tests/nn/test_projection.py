"""The compiled projection backward (rnnpool.nn._native.project_backward) against einsum in
float64, at sizes that hit the register-transposed paths (multiples of 8 rows and features) and
the scalar tails (everything else)."""

import pytest
import torch

from rnnpool.nn import _native

pytestmark = pytest.mark.skipif(not _native.native_available(), reason="no compiled kernel")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rows,c", [(37, 3), (64, 8), (40, 16), (19, 20), (5, 1), (8, 4)])
@pytest.mark.parametrize("k", [5, 8, 16])
def test_project_backward_matches_einsum(dtype, rows, c, k):
    torch.manual_seed(0)
    x, w, dy = torch.randn(rows, c, dtype=dtype), torch.randn(k, c, dtype=dtype), torch.randn(rows, k, dtype=dtype)
    x64, w64, dy64 = x.double(), w.double(), dy.double()
    want = (torch.einsum("pk,kc->pc", dy64, w64), torch.einsum("pk,pc->kc", dy64, x64), dy64.sum(0))
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    got = _native.project_backward(dy, x, w, True, True, True)
    for g, r in zip(got, want):
        assert g.dtype == dtype and g.shape == r.shape
        assert (g.double() - r).abs().max() <= tol * max(1.0, r.abs().max())
    assert _native.project_backward(dy, x, w, False, False, False) == (None, None, None)
    only_dw = _native.project_backward(dy, x, w, False, True, False)
    assert only_dw[0] is None and torch.equal(only_dw[1], got[1]) and only_dw[2] is None


def test_project_backward_is_deterministic_across_threads():
    x, w, dy = torch.randn(4001, 8), torch.randn(16, 8), torch.randn(4001, 16)
    threads = torch.get_num_threads()
    got = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            got.append(_native.project_backward(dy, x, w, True, True, True))
    finally:
        torch.set_num_threads(threads)
    for other in got[1:]:
        assert all(torch.equal(a, b) for a, b in zip(got[0], other))


def test_project_backward_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        _native.project_backward(torch.randn(10, 3), torch.randn(10, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="do not match"):
        _native.project_backward(torch.randn(10, 3), torch.randn(10, 4), torch.randn(3, 4).double())
