"""A stand-in for CUDA tensors on CPU-only machines, for tests of code that must move GPU
tensors to the CPU before NumPy or before mixing them with CPU tensors."""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_leaves, tree_map


class OnGPU(torch.Tensor):
    """Holds a CPU tensor but reports ``device == cuda:0``, as a CUDA tensor would: it has no
    NumPy view, an op that mixes it with a (non-scalar) CPU tensor raises, and only a copy to
    the CPU (``.cpu()``, ``.to("cpu")``, ``torch.as_tensor(..., device="cpu")``) gives a plain
    tensor back. Ops that need a CUDA device guard (indexing, sorting) raise too: code that
    moves its inputs to the CPU first never reaches them."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> OnGPU:
        r = torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls, elem.shape, strides=elem.stride(), dtype=elem.dtype,
            device=torch.device("cuda", 0))
        r.elem = elem
        return r

    def __repr__(self) -> str:  # type: ignore[override]
        return f"OnGPU({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if any(type(a) is torch.Tensor and a.dim() > 0 for a in tree_leaves((args, kwargs))):
            raise RuntimeError(f"{func}: Expected all tensors to be on the same device, but "
                               "found at least two devices, cuda:0 and cpu!")
        dev = kwargs.get("device")
        to_cpu = (func is torch.ops.aten._to_copy.default and dev is not None
                  and torch.device(dev).type == "cpu")
        if dev is not None and torch.device(dev).type == "cuda":
            kwargs = dict(kwargs, device=torch.device("cpu"))
        out = func(*tree_map(lambda a: a.elem if isinstance(a, OnGPU) else a, args),
                   **tree_map(lambda a: a.elem if isinstance(a, OnGPU) else a, kwargs))
        if to_cpu:
            return out
        return tree_map(lambda a: OnGPU(a) if type(a) is torch.Tensor else a, out)

