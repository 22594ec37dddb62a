"""The compiled projection backward (rnnpool.nn._native.project_backward) and the map
projection (pixel_projection) against einsum in float64, and the map-to-rows copy (pixel_rows)
and the rows-to-map reorder (place_rows, take_rows) against torch's indexing and permute, at
sizes that hit the register-transposed or register-tiled paths and the scalar tails
(everything else)."""

import pytest
import torch

from rnnpool.nn import _native

pytestmark = pytest.mark.skipif(not _native.native_available(), reason="no compiled kernel")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rows,c", [(37, 3), (64, 8), (40, 16), (19, 20), (5, 1), (8, 4)])
@pytest.mark.parametrize("k", [5, 8, 16])
def test_project_backward_matches_einsum(dtype, rows, c, k):
    torch.manual_seed(0)
    x, w, dy = (torch.randn(rows, c, dtype=dtype), torch.randn(k, c, dtype=dtype),
                torch.randn(rows, k, dtype=dtype))
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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,c,h,w", [(2, 4, 4, 6), (3, 8, 5, 5), (1, 3, 8, 8), (2, 12, 3, 7),
                                     (2, 5, 4, 4)])
def test_project_backward_of_a_map_matches_einsum(dtype, n, c, h, w):
    """x (N, C, H, W) whose rows are its pixels: dx comes back as a map. H*W = 24 and 25 put
    blocks of 8 pixels across two maps."""
    torch.manual_seed(0)
    x, wt = torch.randn(n, c, h, w, dtype=dtype), torch.randn(16, c, dtype=dtype)
    dy = torch.randn(n * h * w, 16, dtype=dtype)
    rows64 = x.double().permute(0, 2, 3, 1).reshape(-1, c)
    want_dx = torch.einsum("pk,kc->pc", dy.double(), wt.double())
    want_dx = want_dx.view(n, h, w, c).permute(0, 3, 1, 2)
    want_dw = torch.einsum("pk,pc->kc", dy.double(), rows64)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    dx, dw, _ = _native.project_backward(dy, x, wt)
    assert dx.shape == x.shape and dx.is_contiguous()
    for g, r in ((dx, want_dx), (dw, want_dw)):
        assert (g.double() - r).abs().max() <= tol * max(1.0, r.abs().max())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(2, 4, 4, 6), (3, 8, 5, 5), (1, 3, 3, 3), (2, 12, 4, 4),
                                   (1, 13, 8, 3), (2, 1, 2, 9)])
def test_pixel_rows_is_a_permute_and_a_zero_row(dtype, shape):
    x = torch.randn(*shape, dtype=dtype)
    rows = _native.pixel_rows(x)
    want = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, shape[1]), x.new_zeros(1, shape[1])])
    assert torch.equal(rows, want)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape,k", [((2, 32, 4, 6), 16), ((1, 9, 5, 5), 8), ((2, 3, 3, 3), 24),
                                     ((1, 12, 4, 2), 5), ((2, 16, 7, 1), 12)])
def test_pixel_projection_matches_einsum(dtype, shape, k):
    """Register tiles of 16 and 8 outputs (4 for float64) over 6 pixels, and the scalar tails:
    pixel counts that are not multiples of 6, and output counts that tiles do not cover."""
    torch.manual_seed(0)
    x, w = torch.randn(*shape, dtype=dtype), torch.randn(k, shape[1], dtype=dtype)
    want = torch.einsum("nchw,kc->nhwk", x.double(), w.double()).reshape(-1, k)
    want = torch.cat([want, want.new_zeros(1, k)])
    got = _native.pixel_projection(x, w)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert got.dtype == dtype and got.shape == want.shape
    assert (got.double() - want).abs().max() <= tol * max(1.0, want.abs().max())


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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("slabs,h,plane", [(3, 16, 20), (2, 8, 8), (4, 12, 5), (1, 3, 17)])
def test_place_rows_is_a_gather_and_a_transpose_and_take_rows_its_inverse(dtype, slabs, h,
                                                                          plane):
    """Register-transposed blocks of 8 cells and 8 units, and the scalar tails (plane not a
    multiple of 8, units not a multiple of 8)."""
    torch.manual_seed(0)
    rows = torch.randn(slabs * plane, h, dtype=dtype)
    order = torch.randperm(slabs * plane)
    placed = _native.place_rows(rows, order, plane)
    assert torch.equal(placed, rows[order].view(slabs, plane, h).transpose(1, 2))
    assert torch.equal(_native.take_rows(placed, order), rows)


def test_place_rows_rejects_an_order_outside_the_rows():
    rows, order = torch.randn(12, 4), torch.arange(12)
    order[5] = 12
    with pytest.raises(RuntimeError, match="order entry lies outside"):
        _native.place_rows(rows, order, 6)
    with pytest.raises(ValueError, match="do not match"):
        _native.place_rows(rows, order[:-1], 6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,c,h,w", [(2, 32, 4, 6), (1, 9, 4, 4), (3, 5, 5, 5), (1, 12, 8, 8),
                                     (2, 1, 3, 7)])
@pytest.mark.parametrize("k", [16, 8, 5])
def test_project_backward_of_a_map_dx_alone_matches_einsum(dtype, n, c, h, w, k):
    """dx alone has its own kernel for float32 (tiles of 6 channels x 16 pixels, then channel
    and pixel tails; gradients of 8 or 16 units), the shared loop otherwise."""
    torch.manual_seed(0)
    x, wt = torch.randn(n, c, h, w, dtype=dtype), torch.randn(k, c, dtype=dtype)
    dy = torch.randn(n * h * w, k, dtype=dtype)
    want = torch.einsum("pk,kc->pc", dy.double(), wt.double()).view(n, h, w, c).permute(0, 3, 1, 2)
    dx, dw, db = _native.project_backward(dy, x, wt, need_dx=True, need_dw=False)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert dw is None and db is None and dx.shape == x.shape and dx.dtype == dtype
    assert (dx.double() - want).abs().max() <= tol * max(1.0, want.abs().max())
