"""Bit-exact Python twins of the C fixed-point helpers in ``deploy/csrc/rnnpool_types.h``.

Every function works element-wise on numpy integer arrays (or Python ints) and reproduces the C
integer semantics exactly: two's-complement ``int32`` values, arithmetic right shifts, the
rounding of each helper, and saturation where the C code saturates.

* :func:`quantize_multiplier`: a real factor ``m`` as ``(multiplier, shift)`` with
  ``m ~= multiplier * 2**(shift - 31)``, ``multiplier`` in ``[2**30, 2**31)`` (negative factors
  give a negative multiplier).
* :func:`requantize` (C ``rnnpool_requantize``): ``acc * m`` rounded, in three steps:
  ``x = sat32(acc << max(shift, 0))``; ``y = (x * multiplier + 2**30) >> 31`` (int64
  product, :func:`doubling_high_mul`); ``rounding_divide_by_pot(y, max(-shift, 0))`` (round
  half away from zero).
* :func:`rshift_round` (C ``rnnpool_rshift_round``): ``(v + 2**(n-1)) >> n`` (round half up),
  used inside the RNN cell.

>>> m, s = quantize_multiplier(0.25)
>>> int(requantize(1000, m, s)), int(requantize(-1002, m, s))
(250, -251)
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "doubling_high_mul",
    "isqrt64",
    "quantize_multiplier",
    "quantize_multipliers",
    "requantize",
    "rounding_divide_by_pot",
    "rshift_round",
    "sat",
]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ArrayLike = Union[int, np.ndarray]


def quantize_multiplier(real: float) -> tuple[int, int]:
    """``real`` as ``(multiplier, shift)``: ``real ~= multiplier * 2**(shift - 31)``.

    ``multiplier = round(q * 2**31)`` (half away from zero, as TFLite) for ``real = q * 2**shift``,
    ``|q|`` in ``[0.5, 1)``; ``|multiplier|`` is in ``[2**30, 2**31)``; ``real == 0`` (or
    ``|real| < 2**-32``) gives
    ``(0, 0)``. Raises ``ValueError`` for factors of ``2**30`` or more (no headroom left).

    >>> quantize_multiplier(0.5)
    (1073741824, 0)
    >>> quantize_multiplier(3.0)
    (1610612736, 2)
    """
    real = float(real)
    if not math.isfinite(real):
        raise ValueError(f"cannot quantize a non-finite multiplier {real}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    # q * 2**31 is exact; round half away from zero like TFLite (Python's round() is half-even)
    scaled = abs(q) * (1 << 31)
    q_fixed = math.floor(scaled) + (scaled - math.floor(scaled) >= 0.5)
    q_fixed = q_fixed if q > 0 else -q_fixed
    if abs(q_fixed) == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"multiplier {real} is too large (>= 2**30) for int32 requantization")
    return q_fixed, shift


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_multiplier` of each element: ``(int32 multipliers, int32 shifts)``."""
    pairs = [quantize_multiplier(r) for r in np.asarray(reals, dtype=np.float64).ravel()]
    mult = np.array([p[0] for p in pairs], dtype=np.int32).reshape(np.shape(reals))
    shift = np.array([p[1] for p in pairs], dtype=np.int32).reshape(np.shape(reals))
    return mult, shift


def sat(v: ArrayLike, bits: int) -> np.ndarray:
    """Saturate to the signed ``bits``-bit range (returns int64)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.asarray(v, dtype=np.int64), lo, hi)


def doubling_high_mul(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """C ``rnnpool_doubling_high_mul`` (gemmlowp ``SaturatingRoundingDoublingHighMul``):
    ``((int64)a * b + 2**30) >> 31``, except ``INT32_MIN * INT32_MIN`` gives ``INT32_MAX``."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    return np.minimum((a * b + (1 << 30)) >> 31, INT32_MAX)


def rounding_divide_by_pot(x: ArrayLike, exponent: ArrayLike) -> np.ndarray:
    """C ``rnnpool_rounding_divide_by_pot``: ``x / 2**exponent`` rounded half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def requantize(acc: ArrayLike, multiplier: ArrayLike, shift: ArrayLike) -> np.ndarray:
    """C ``rnnpool_requantize``: ``acc * multiplier * 2**(shift - 31)``, rounded (int64 result
    holding int32 values). Broadcasts (per-channel parameters along the last axis)."""
    acc = np.asarray(acc, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = sat(acc * (np.int64(1) << left), 32)
    return rounding_divide_by_pot(doubling_high_mul(x, multiplier), right)


def rshift_round(v: ArrayLike, n: int) -> np.ndarray:
    """C ``rnnpool_rshift_round``: ``(v + 2**(n - 1)) >> n`` (``v`` for ``n == 0``)."""
    v = np.asarray(v, dtype=np.int64)
    if n == 0:
        return v
    return (v + (np.int64(1) << (n - 1))) >> n


def isqrt64(v: ArrayLike) -> np.ndarray:
    """``floor(sqrt(v))`` for ``0 <= v < 2**62`` (C ``rnnpool_isqrt64``)."""
    v = np.asarray(v, dtype=np.int64)
    if np.any(v < 0):
        raise ValueError("isqrt64 of a negative value")
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    r = np.where(r * r > v, r - 1, r)
    r = np.where(r * r > v, r - 1, r)
    r = np.where((r + 1) * (r + 1) <= v, r + 1, r)
    return r
