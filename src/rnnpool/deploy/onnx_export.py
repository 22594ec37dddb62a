"""ONNX export of rnnpool models (including RNNPool2d), checked with onnxruntime.

RNNPool2d exports with the TorchScript-based exporter (``dynamo=False``, opset 12 or later;
default 17): its window gather and the unrolled FastGRNN sweeps become plain
Gather/MatMul/Sigmoid/Tanh nodes, and the sweep indices are computed in the graph from the
batch size, so the batch axis is dynamic. The spatial size is fixed by the trace.

Example:
    >>> import io
    >>> from rnnpool.nn import RNNPool2d
    >>> m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, 2, 1), RNNPool2d(4, 8, 8, 4, 4)).eval()
    >>> r = export_onnx(m, (1, 32, 32), io.BytesIO())
    >>> r.max_abs_diff < 1e-4, r.output_shapes
    (True, [(1, 32, 4, 4)])
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch

from .._io import atomic_write_bytes

__all__ = ["OnnxExportResult", "export_onnx", "supported_opsets"]


@dataclass
class OnnxExportResult:
    """What :func:`export_onnx` produced and measured.

    Attributes:
        path: where the model was written (None for a file object).
        output_names: ONNX output names.
        output_shapes: shapes of the outputs for the check input.
        max_abs_diff: max |onnxruntime - PyTorch| over all outputs (None if not verified).
        nbytes: size of the serialised model.
    """

    path: Union[Path, None]
    output_names: List[str]
    output_shapes: List[tuple]
    max_abs_diff: Union[float, None]
    nbytes: int


def _flatten(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    raise TypeError(f"cannot export a model output of type {type(out).__name__}")


# RNNPool2d's traced sweep indices need ArgSort (TopK, opset 11) and Clip of int64 (opset 12):
# at opset 11 torch wrote a graph that onnxruntime rejects as invalid.
_MIN_OPSET = 12


def supported_opsets() -> Tuple[int, int]:
    """``(lowest, highest)`` ONNX opset :func:`export_onnx` accepts: 12 (what RNNPool2d needs)
    to the highest this PyTorch's TorchScript-based exporter supports (20 in torch 2.13; its
    ``ONNX_MAX_OPSET``, 23, is the dynamo exporter's)."""
    try:
        from torch.onnx import _constants as c

        hi = getattr(c, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None) or c.ONNX_MAX_OPSET
        return max(int(c.ONNX_MIN_OPSET), _MIN_OPSET), int(hi)
    except (ImportError, AttributeError):  # a private module: fall back to a safe range
        return _MIN_OPSET, 17


def export_onnx(model: torch.nn.Module, input_chw: Sequence[int], f, *, opset: int = 17,
                verify: bool = True, seed: int = 0) -> OnnxExportResult:
    """Export ``model`` for one ``(C, H, W)`` input and compare onnxruntime with PyTorch.

    Args:
        model: the model (put in eval mode here).
        input_chw: input shape without the batch axis (the batch axis is dynamic in the file).
        f: output path, or a writable binary file object. Paths are written atomically.
        opset: ONNX opset, in :func:`supported_opsets`.
        verify: run the exported model with onnxruntime on a random input and record the
            largest absolute difference from PyTorch.
        seed: seed of the check input.

    Returns:
        OnnxExportResult.

    Raises:
        ValueError: a bad ``input_chw`` or an ``opset`` outside :func:`supported_opsets`.
    """
    lo, hi = supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or not lo <= opset <= hi:
        raise ValueError(f"opset must be {lo} to {hi}, got {opset!r}")
    if len(input_chw) != 3 or any(int(v) <= 0 for v in input_chw):
        raise ValueError(f"input shape must be (C, H, W) with positive sizes, "
                         f"got {tuple(input_chw)}")
    model = model.eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, *map(int, input_chw), generator=g)
    with torch.no_grad():
        ref = [t.numpy() for t in _flatten(model(x))]
    names = ["output"] if len(ref) == 1 else [f"output{i}" for i in range(len(ref))]
    if hasattr(model, "head") and len(ref) == 2:  # detectors: (cls_logits, bbox_regression)
        names = ["cls_logits", "bbox_regression"]
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks in forward become constants of the trace: expected for a fixed (H, W).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=names,
                              dynamic_axes={"input": {0: "batch"},
                                            **{n: {0: "batch"} for n in names}})
        except RuntimeError as e:  # "Unsupported onnx_opset_version", an op missing in opset
            if "opset" not in str(e):
                raise
            raise ValueError(f"opset {opset}: {str(e).strip().splitlines()[0]}") from None
    data = buf.getvalue()
    diff = None
    if verify:
        import onnxruntime as ort

        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x.numpy()})
        if len(got) != len(ref):
            raise RuntimeError(f"onnxruntime returned {len(got)} outputs, PyTorch {len(ref)}")
        diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
    path = None
    if isinstance(f, (str, os.PathLike)):
        path = atomic_write_bytes(f, data)
    else:
        f.write(data)
    return OnnxExportResult(path=path, output_names=names, output_shapes=[r.shape for r in ref],
                            max_abs_diff=diff, nbytes=len(data))
