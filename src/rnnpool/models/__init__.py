"""Model zoo: every classification, Visual Wake Words and face-detection model of the paper."""

from ._registry import create_model, is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "register_model"]
