"""Parameters, MAdds and peak RAM of any model, counted the RNNPool paper's way (SPEC §2).

:func:`profile_model` traces one forward pass (forward hooks + a ``TorchDispatchMode``) and
applies the standard layer-by-layer memory convention (:mod:`rnnpool.analysis.memory`);
:func:`measure_peak` measures live activation storage while running a model, optionally with
RNNPool computed band by band.
"""

from ._trace import Node, Trace, trace_model
from .measure import MeasuredPeak, banded_rnnpool, measure_peak
from .memory import ChainLayer, LayerMemory, chain_from_trace, prop1_bound, standard_memory
from .profile import (
    LayerStat,
    Profile,
    compare,
    format_bytes,
    parse_input_size,
    plot_memory,
    profile_model,
)

__all__ = [
    "ChainLayer",
    "LayerMemory",
    "LayerStat",
    "MeasuredPeak",
    "Node",
    "Profile",
    "Trace",
    "banded_rnnpool",
    "chain_from_trace",
    "compare",
    "format_bytes",
    "measure_peak",
    "parse_input_size",
    "plot_memory",
    "profile_model",
    "prop1_bound",
    "standard_memory",
    "trace_model",
]
