"""rnnpool: RNNPool, efficient non-linear pooling for RAM-constrained vision."""

from .models import create_model, list_models
from .nn import FastGRNNCell, RNNPool2d

__version__ = "0.1.0"

__all__ = ["FastGRNNCell", "RNNPool2d", "create_model", "list_models", "__version__"]
