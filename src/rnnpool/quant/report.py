"""Accuracy report of a quantized graph against its float model.

* :func:`layer_errors`: for every int8 tensor of the graph, the dequantized integer-reference
  values against the float model's activation at the same point (``g.meta["float_node"]``):
  max / mean absolute error, the float range, and the SNR in dB
  (``10 log10(sum f^2 / sum (f - q)^2)``), accumulated over a set of inputs. Errors accumulate
  through the network (each layer sees the integer inputs), which is what deployment sees.
* :func:`output_agreement`: per graph output the max / mean abs error and, for ``(1, K)``
  outputs (classifier logits), the top-1 agreement between float and integer.
* :func:`accuracy`: float and integer top-1 accuracy on a labelled set.
* :func:`format_layer_errors`: a markdown table.

Example::

    >>> from torch import nn
    >>> from rnnpool.quant.ptq import quantize_model
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    >>> x = torch.randn(16, 1, 8, 8)
    >>> g = quantize_model(m, x)
    >>> rows = layer_errors(m, g, x[:4])
    >>> [r["tensor"] for r in rows], all(r["snr_db"] > 25 for r in rows)
    (['input_1', '_1', '_2'], True)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from . import ir
from . import reference as R
from .ptq import _Recorder, float_model_on_cpu, trace

__all__ = ["accuracy", "format_layer_errors", "layer_errors", "output_agreement"]


def _float_acts(gm, x: Tensor) -> dict:
    keep: dict = {}
    with torch.no_grad():
        _Recorder(gm, {}, keep).run(x)
    return keep


def _hwc(t: Tensor) -> np.ndarray:
    a = t[0].detach().double().numpy()
    return a.transpose(1, 2, 0) if a.ndim == 3 else a.reshape(1, 1, -1)


def _images(images) -> list:
    """``(1, C, H, W)`` CPU float32 images of an ``(N, C, H, W)`` tensor or a list."""
    if isinstance(images, Tensor):
        images = [images[i:i + 1] for i in range(images.shape[0])]
    return [(x if x.dim() == 4 else x[None]).detach().to("cpu", torch.float32) for x in images]


@torch.no_grad()
def layer_errors(model: nn.Module, g: ir.QGraph, images) -> list[dict]:
    """Per int8 tensor: ``{"tensor", "op", "shape", "max_abs", "mean_abs", "float_range",
    "snr_db"}`` over ``images`` (``(N, C, H, W)`` tensor or a list of ``(1, C, H, W)``)."""
    imgs = _images(images)
    gm = trace(float_model_on_cpu(model), imgs[0] if imgs else None)
    producer = {name: op for op in g.ops for name in op.outputs}
    for op in g.ops:
        for sub in getattr(op, "sub_ops", []):
            producer.setdefault(sub.output, sub)
    acc: dict = {}
    for x in imgs:
        acts = _float_acts(gm, x)
        env = R.run(g, R.quantize_input(x, g.tensor(g.inputs[0])))
        for name, q in env.items():
            t = g.tensor(name)
            node = g.meta.get("float_node", {}).get(name)
            if t.dtype != "int8" or node not in acts:
                continue
            f = _hwc(acts[node])
            d = R.dequantize(q, t).astype(np.float64)
            if f.shape != d.shape:
                continue
            a = acc.setdefault(name, {"max_abs": 0.0, "sum_abs": 0.0, "n": 0, "sig": 0.0,
                                      "noise": 0.0, "lo": math.inf, "hi": -math.inf})
            err = d - f
            a["max_abs"] = max(a["max_abs"], float(np.abs(err).max()))
            a["sum_abs"] += float(np.abs(err).sum())
            a["n"] += err.size
            a["sig"] += float((f * f).sum())
            a["noise"] += float((err * err).sum())
            a["lo"], a["hi"] = min(a["lo"], float(f.min())), max(a["hi"], float(f.max()))
    rows = []
    for name in g.tensors:
        if name not in acc:
            continue
        a = acc[name]
        op = producer.get(name)
        rows.append({
            "tensor": name,
            "op": op.kind if op is not None else "input",
            "shape": tuple(g.tensor(name).shape),
            "max_abs": a["max_abs"],
            "mean_abs": a["sum_abs"] / max(a["n"], 1),
            "float_range": a["hi"] - a["lo"],
            "scale": g.tensor(name).scale,
            "snr_db": (math.inf if a["noise"] == 0 else -math.inf if a["sig"] == 0
                       else 10 * math.log10(a["sig"] / a["noise"])),
        })
    return rows


@torch.no_grad()
def output_agreement(model: nn.Module, g: ir.QGraph, images) -> dict:
    """Per output: ``max_abs``, ``mean_abs`` (vs the float model) and, for ``(1, K)`` outputs,
    ``top1_agreement``."""
    model = float_model_on_cpu(model)
    res: dict = {}
    for x in _images(images):
        ref = model(x)
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        env = R.run(g, R.quantize_input(x, g.tensor(g.inputs[0])))
        for name, f in zip(g.outputs, ref):
            q = R.in_float_layout(env[name], tuple(f.shape))[0]
            f = f[0].numpy()
            r = res.setdefault(name, {"max_abs": 0.0, "sum_abs": 0.0, "n": 0, "agree": 0,
                                      "count": 0})
            r["max_abs"] = max(r["max_abs"], float(np.abs(q - f).max()))
            r["sum_abs"] += float(np.abs(q - f).sum())
            r["n"] += q.size
            if f.ndim == 1:
                r["agree"] += int(np.argmax(q) == np.argmax(f))
                r["count"] += 1
    out = {}
    for name, r in res.items():
        out[name] = {"max_abs": r["max_abs"], "mean_abs": r["sum_abs"] / max(r["n"], 1)}
        if r["count"]:
            out[name]["top1_agreement"] = r["agree"] / r["count"]
    return out


@torch.no_grad()
def accuracy(model: nn.Module, g: ir.QGraph, images: Tensor, labels: Tensor,
             batch_size: int = 256) -> dict:
    """Top-1 accuracy of the float model and of the integer graph (first output) on a
    labelled set; also their agreement."""
    model = float_model_on_cpu(model)
    images = images.detach().to("cpu", torch.float32)
    f_pred = torch.cat([model(images[i:i + batch_size]).argmax(1)
                        for i in range(0, images.shape[0], batch_size)]).numpy()
    t = g.tensor(g.inputs[0])
    q_pred = np.array([int(np.argmax(R.run(g, R.quantize_input(images[i:i + 1], t))[g.outputs[0]]))
                       for i in range(images.shape[0])])
    y = np.asarray(labels)
    return {"float_top1": float((f_pred == y).mean()), "int8_top1": float((q_pred == y).mean()),
            "agreement": float((f_pred == q_pred).mean()), "n": int(y.size)}


def format_layer_errors(rows: list[dict], title: str | None = None) -> str:
    """Markdown table of :func:`layer_errors` rows."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| tensor | op | shape (HWC) | float range | int8 step | max abs err | mean abs err "
              "| SNR (dB) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['tensor']} | {r['op']} | {'x'.join(map(str, r['shape']))} | "
            f"{r['float_range']:.3g} | {r['scale']:.3g} | {r['max_abs']:.3g} | "
            f"{r['mean_abs']:.3g} | {r['snr_db']:.1f} |")
    return "\n".join(lines)
