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


# ---- properties against references written with Python integers (gemmlowp / TFLite semantics)

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rnnpool.quant.fixedpoint import INT32_MAX, INT32_MIN, doubling_high_mul  # noqa: E402

_I32 = st.integers(INT32_MIN, INT32_MAX)


def _srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul: nudge, then C++ truncating division."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    v = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    return abs(v) >> 31 if v >= 0 else -(abs(v) >> 31)


def _rdbpot(x: int, e: int) -> int:
    """``x / 2**e`` rounded half away from zero (gemmlowp RoundingDivideByPOT)."""
    return _round_half_away(Fraction(x, 1 << e))


def _tflite_quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier with exact rationals: ``|real| = q * 2**shift``, q in
    [0.5, 1), ``round(q * 2**31)`` half away from zero."""
    fr = Fraction(real)
    shift = 0
    while abs(fr) >= 2**shift:
        shift += 1
    while abs(fr) < Fraction(2) ** (shift - 1):
        shift -= 1
    q = _round_half_away(fr / Fraction(2) ** shift * 2**31)
    if abs(q) == 2**31:
        q //= 2
        shift += 1
    return (0, 0) if shift < -31 else (q, shift)


@settings(max_examples=400, deadline=None)
@given(_I32, _I32)
@example(INT32_MIN, INT32_MIN)
@example(INT32_MIN, INT32_MAX)
@example(INT32_MAX, INT32_MAX)
@example(-(1 << 30), 1)  # product -0.5 * 2**31: a negative tie
@example(-3, 1 << 30)
@example(3, 1 << 30)
def test_doubling_high_mul_is_gemmlowp(a, b):
    assert int(doubling_high_mul(a, b)) == _srdhm(a, b)


@settings(max_examples=400, deadline=None)
@given(_I32, st.integers(0, 31))
@example(-5, 1)
@example(-6, 2)  # -1.5: half away from zero -> -2
@example(INT32_MIN, 31)
@example(INT32_MAX, 31)
@example(-(1 << 30), 31)  # exactly -0.5
@example(1 << 30, 31)
@example(INT32_MIN, 0)
def test_rounding_divide_by_pot_is_exact(x, e):
    assert int(rounding_divide_by_pot(x, e)) == _rdbpot(x, e)


@settings(max_examples=400, deadline=None)
@given(_I32, st.integers(1 << 30, (1 << 31) - 1), st.booleans(), st.integers(-31, 30))
@example(INT32_MIN, (1 << 31) - 1, False, 30)
@example(INT32_MAX, (1 << 31) - 1, True, 30)
@example(INT32_MIN, 1 << 30, True, -31)
@example(-(1 << 30), 1 << 30, False, -31)
def test_requantize_is_tflite_multiply_by_quantized_multiplier(acc, m, neg, shift):
    m = -m if neg else m
    x = min(max(acc * 2 ** max(shift, 0), INT32_MIN), INT32_MAX)
    want = _rdbpot(_srdhm(x, m), max(-shift, 0))
    assert int(requantize(acc, m, shift)) == want
    assert INT32_MIN <= want <= INT32_MAX


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**40), 2**40), st.integers(0, 24))
def test_rshift_round_is_floor_of_half_up(v, n):
    want = v if n == 0 else int((Fraction(v, 2**n) + Fraction(1, 2)).__floor__())
    assert int(rshift_round(v, n)) == want


_REALS = st.floats(2.0**-40, 2.0**29.99, allow_nan=False, allow_infinity=False)


@settings(max_examples=400, deadline=None)
@given(_REALS, st.booleans())
@example(2.0**-32, False)  # smallest representable: (2**30, -31)
@example(2.0**-33, False)  # below: zero
@example(0.5 + 2.0**-32, False)  # q * 2**31 = 2**30 + 0.5: a tie, rounds away from zero
@example(0.5 + 3 * 2.0**-32, True)
@example(1.0 - 2.0**-33, False)  # rounds up to 2**31 -> (2**30, shift + 1)
@example(2.0**29.99, True)
def test_quantize_multiplier_is_tflite(real, neg):
    real = -real if neg else real
    m, s = quantize_multiplier(real)
    assert (m, s) == _tflite_quantize_multiplier(real)
    if m:
        assert 2**30 <= abs(m) < 2**31 and -31 <= s <= 30


def test_quantize_multiplier_ties_round_away_from_zero():
    # Python's round() would give 2**30 (half to even); TFLite's std::round gives 2**30 + 1
    assert quantize_multiplier(0.5 + 2.0**-32) == (2**30 + 1, 0)
    assert quantize_multiplier(-(0.5 + 2.0**-32)) == (-(2**30 + 1), 0)
    assert quantize_multiplier(2.0**-33) == (0, 0)
    with pytest.raises(ValueError, match="too large"):
        quantize_multiplier(2.0**30)
    with pytest.raises(ValueError, match="non-finite"):
        quantize_multiplier(float("nan"))
