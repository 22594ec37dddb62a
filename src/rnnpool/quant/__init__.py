"""Integer quantization for microcontroller deployment.

* :mod:`rnnpool.quant.ir`: the quantized-graph IR (:class:`QGraph` and its ops).
* :mod:`rnnpool.quant.fixedpoint`: bit-exact twins of the C fixed-point helpers.
* :mod:`rnnpool.quant.reference`: the numpy integer interpreter (golden outputs).
"""

from . import fixedpoint, ir, reference
from .fixedpoint import quantize_multiplier, requantize
from .ir import QGraph, QTensor

__all__ = [
    "QGraph",
    "QTensor",
    "fixedpoint",
    "ir",
    "quantize_multiplier",
    "reference",
    "requantize",
]
