"""The model registry: ``@register_model`` entrypoints, ``create_model`` and ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Dict, List

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "is_model"]

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name. Names must be unique."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model {name!r} is already registered by {_MODELS[name].__module__}")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> List[str]:
    """Sorted names of registered models matching the shell-style ``pattern``."""
    _import_families()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    _import_families()
    return name in _MODELS


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Keyword arguments go to the entrypoint; an unknown one raises ``TypeError``.

    >>> m = create_model("mobilenetv2_rnnpool", num_classes=10)
    >>> sum(p.numel() for p in m.parameters()) > 0
    True
    """
    _import_families()
    if name not in _MODELS:
        raise ValueError(unknown_model_message(name))
    return _MODELS[name](**kwargs)


def unknown_model_message(name: str) -> str:
    """The error for an unregistered ``name``: the registered names close to it (same family
    prefix, or similar spelling ignoring case), or all of them when none is."""
    _import_families()
    key = name.lower()
    close = {n for n in _MODELS if key.split("_")[0] in n}
    close.update(difflib.get_close_matches(key, list(_MODELS), n=5, cutoff=0.6))
    return f"unknown model {name!r}; known models: {', '.join(sorted(close or _MODELS))}"


def _import_families() -> None:
    # Importing the family modules runs their @register_model decorators.
    from . import _families  # noqa: F401
