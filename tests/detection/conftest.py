import pytest
import torch

from ._gpu_like import OnGPU


@pytest.fixture
def on_gpu(monkeypatch):
    """``on_gpu(t)``: ``t`` as an :class:`OnGPU` tensor, which reports itself on CUDA (torch's
    CUDA initialisation, which a CPU-only build refuses, is skipped meanwhile)."""
    monkeypatch.setattr(torch.cuda, "_lazy_init", lambda: None)
    return OnGPU
