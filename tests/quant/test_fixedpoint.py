"""The fixed-point helpers against exact rational arithmetic and hand-computed values."""

from fractions import Fraction

import numpy as np
import pytest

from rnnpool.quant.fixedpoint import (
    isqrt64,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    rshift_round,
)


def _round_half_away(fr: Fraction) -> int:
    n = abs(fr)
    r = int(n) + (1 if n - int(n) >= Fraction(1, 2) else 0)
    return r if fr >= 0 else -r


@pytest.mark.parametrize(
    "real", [1e-6, 0.0037, 0.25, 0.5, 0.73, 0.999999999, 1.0, 3.0, 1234.5, -0.3]
)
def test_quantize_multiplier_represents_value(real):
    m, s = quantize_multiplier(real)
    assert 2**30 <= abs(m) < 2**31
    assert abs(m * 2.0 ** (s - 31) - real) <= abs(real) * 2**-30


def test_quantize_multiplier_edge_cases():
    assert quantize_multiplier(0.0) == (0, 0)
    with pytest.raises(ValueError, match="too large"):
        quantize_multiplier(2.0**31)


def test_rounding_divide_by_pot_hand_values():
    x = np.array([5, -5, 4, -3, 6, -6, 7, -7])
    assert rounding_divide_by_pot(x, 1).tolist() == [3, -3, 2, -2, 3, -3, 4, -4]
    assert rounding_divide_by_pot(np.array([10, -10, 11, -11]), 2).tolist() == [3, -3, 3, -3]
    assert rshift_round(np.array([5, -5, -6, 6]), 1).tolist() == [3, -2, -3, 3]


def test_requantize_matches_exact_rounding():
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**24), 2**24, 4000)
    reals = np.exp(rng.uniform(np.log(1e-5), np.log(8.0), 4000))
    diffs = []
    for a, r in zip(acc, reals):
        m, s = quantize_multiplier(r)
        exact = _round_half_away(Fraction(int(a)) * m * Fraction(2) ** (s - 31))
        diffs.append(int(requantize(int(a), m, s)) - exact)
    diffs = np.array(diffs)
    assert np.abs(diffs).max() <= 1  # two roundings: at most one step off
    assert (diffs == 0).mean() > 0.95  # double rounding (TFLite-style) is rarely one off


def test_requantize_hand_values_and_saturation():
    m, s = quantize_multiplier(0.5)
    assert requantize(np.array([3, -3, 2, 1]), m, s).tolist() == [2, -1, 1, 1]
    m, s = quantize_multiplier(4.0)  # left shift of 3, saturates to int32 before the multiply
    assert int(requantize(2**30, m, s)) == 2**30  # 2**33 saturated to 2**31 - 1, times 0.5
    assert int(requantize(100, m, s)) == 400


def test_isqrt64():
    v = np.array([0, 1, 2, 3, 4, 15, 16, 17, 2**46 - 1, 2**46, 12345678901])
    assert isqrt64(v).tolist() == [int(__import__("math").isqrt(int(i))) for i in v]
