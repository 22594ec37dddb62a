"""Operators: :class:`RNNPool2d` and its recurrent unit :class:`FastGRNNCell`."""

from . import functional
from .convert import convert_reference_state_dict, load_reference_state_dict
from .fastgrnn import FastGRNNCell
from .renet import ReNet2d
from .rnnpool import RNNPool2d, rnnpool2d_macs, rnnpool2d_num_params

__all__ = [
    "FastGRNNCell",
    "RNNPool2d",
    "ReNet2d",
    "functional",
    "rnnpool2d_macs",
    "rnnpool2d_num_params",
    "convert_reference_state_dict",
    "load_reference_state_dict",
]
