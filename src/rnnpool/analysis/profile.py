"""Per-layer profile of a model: output shapes, activation memory, MAdds, parameters, peak RAM."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .._io import atomic_save_figure
from ._trace import _ChannelMismatch, trace_model
from .memory import chain_from_trace, prop1_bound, standard_memory

__all__ = [
    "LayerStat", "Profile", "profile_model", "compare", "format_bytes", "plot_memory",
    "parse_input_size", "first_layer_channels",
]

SizeLike = Union[int, Sequence[int], str]


def format_bytes(n: float) -> str:
    """Binary units as the paper prints them: MB (2 decimals) above 240 KB, else KB (one decimal).

    >>> format_bytes(250_880), format_bytes(230_400)
    ('0.24 MB', '225.0 KB')
    """
    if n >= 2**20 or n > 240 * 1024:
        return f"{n / 2**20:.2f} MB"
    return f"{n / 1024:.1f} KB"


@dataclass
class LayerStat:
    """One row of a :class:`Profile`.

    Attributes:
        name: module path or op name.
        kind: node kind (see :class:`rnnpool.analysis._trace.Node`).
        out_shape: output shape (batch 1).
        act_bytes: bytes of the output map when held whole (0 when computed on demand).
        madds: multiply-adds (RNNPool by the paper's formula).
        executed_madds: multiply-adds as executed (RNNPool's shared overlapping work).
        params: parameters of the layer.
        mem_bytes: memory this layer needs under the standard convention, including maps
            live across it.
    """

    name: str
    kind: str
    out_shape: tuple[int, ...]
    act_bytes: int
    madds: int
    executed_madds: int
    params: int
    mem_bytes: int


@dataclass
class Profile:
    """Parameters, MAdds and peak RAM of a model at one input size.

    Attributes:
        model_name: a label.
        input_size: ``(C, H, W)``.
        bytes_per_activation: 4 (fp32) or 1 (int8).
        layers: per-layer :class:`LayerStat` (element-wise / view ops left out).
        params: total parameters.
        madds: total multiply-adds, RNNPool by the paper's formula (SPEC §2).
        executed_madds: total with RNNPool's overlap sharing (what the fast path executes).
        peak_bytes: peak RAM under the standard (layer-by-layer) convention.
        peak_layer: the layer where it occurs.
        prop1_bytes: the no-recompute lower bound of Proposition 1/2 for the convolutional
            stages (:func:`~rnnpool.analysis.memory.prop1_bound` over the spatial layers).
        notes: ``"layer: op"`` for ops that read weights but whose multiply-adds are not
            known (missing from ``madds``; :func:`profile_model` warns about them).
    """

    model_name: str
    input_size: tuple[int, int, int]
    bytes_per_activation: int
    layers: list[LayerStat] = field(default_factory=list)
    params: int = 0
    madds: int = 0
    executed_madds: int = 0
    peak_bytes: int = 0
    peak_layer: str = ""
    prop1_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line of totals in the paper's precision."""
        return (
            f"{self.model_name} @ {self.input_size[1]}x{self.input_size[2]}: "
            f"params {self.params / 1e6:.1f} M, MAdds {self.madds / 1e9:.2f} G "
            f"(executed {self.executed_madds / 1e9:.2f} G), peak RAM "
            f"{format_bytes(self.peak_bytes)} ({self.bytes_per_activation} B/act, at "
            f"{self.peak_layer})"
            + (f"; MAdds of {len(self.notes)} op(s) not counted: {', '.join(self.notes)}"
               if self.notes else "")
        )

    def table(self) -> str:
        """The per-layer table and the totals, as text."""
        head = f"{'#':>3}  {'layer':<28} {'kind':<9} {'output':<18} {'act KB':>9} " \
               f"{'MAdds M':>9} {'params':>9} {'mem KB':>9}"
        lines = [head, "-" * len(head)]
        peak_idx = max(range(len(self.layers)), key=lambda i: self.layers[i].mem_bytes,
                       default=-1)
        for i, r in enumerate(self.layers):
            # batch 1; an op's rows (a matmul's 64 x 16) are not a batch
            dims = r.out_shape[1:] if r.out_shape[:1] == (1,) else r.out_shape
            shape = "x".join(str(s) for s in dims) or "-"
            act = f"{r.act_bytes / 1024:.1f}" if r.act_bytes else "stream"
            mark = " <- peak" if i == peak_idx else ""
            lines.append(
                f"{i:>3}  {r.name[:28]:<28} {r.kind:<9} {shape[:18]:<18} {act:>9} "
                f"{r.madds / 1e6:>9.2f} {r.params:>9,} {r.mem_bytes / 1024:>9.1f}{mark}"
            )
        lines.append("-" * len(head))
        lines += [
            f"params          {self.params / 1e6:.1f} M ({self.params:,})",
            f"MAdds           {self.madds / 1e9:.2f} G ({self.madds:,}; RNNPool by the paper's "
            f"formula)",
            f"executed MAdds  {self.executed_madds / 1e9:.2f} G ({self.executed_madds:,}; "
            f"RNNPool sharing overlapping rows/columns)",
            f"peak RAM        {format_bytes(self.peak_bytes)} ({self.peak_bytes:,} B at "
            f"{self.bytes_per_activation} B/activation, standard convention, at "
            f"{self.peak_layer})",
            f"no-recompute bound (Prop. 1/2, conv stages)  {format_bytes(self.prop1_bytes)}",
        ]
        lines += [f"MAdds not counted (op not recognised)  {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_input_size(size: SizeLike) -> tuple[int, int]:
    """``224`` / ``(480, 640)`` / ``"480x640"`` -> ``(H, W)``."""
    if isinstance(size, str):
        parts = size.lower().replace(",", "x").split("x")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"input size must be N or HxW, got {size!r}") from None
        size = vals
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"input size must be N or HxW with positive sizes, got {size!r}")
    return size  # type: ignore[return-value]


def first_layer_channels(model: nn.Module) -> Optional[int]:
    """The input channels of ``model``'s first registered layer that declares them (a conv's or
    RNNPool's ``in_channels``, a linear layer's ``in_features``), or None: a guess, as the
    first registered layer need not be the first one run."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) or hasattr(m, "in_channels"):
            c = getattr(m, "in_channels", None) or getattr(m, "in_features", None)
            if isinstance(c, int):
                return c
    return None


def _zeros_like_model_input(model: nn.Module, c: int, h: int, w: int) -> torch.Tensor:
    """A zero ``(1, c, h, w)`` input on the device and in the floating dtype of the model's
    first parameter (or buffer): a GPU or float64 model refused a CPU float32 example."""
    first = next((t for t in (*model.parameters(), *model.buffers())
                  if t.dtype.is_floating_point), None)
    if first is None:
        return torch.zeros(1, c, h, w)
    return torch.zeros(1, c, h, w, device=first.device, dtype=first.dtype)


def profile_model(
    model: Union[nn.Module, str],
    input_size: SizeLike = 224,
    bytes_per_activation: int = 4,
    num_classes: Optional[int] = None,
    in_chans: Optional[int] = None,
    name: Optional[str] = None,
) -> Profile:
    """Trace one forward pass of ``model`` and count parameters, MAdds and peak RAM.

    Args:
        model: a module, or a registered model name (built with ``num_classes`` if given).
        input_size: ``N`` or ``(H, W)`` or ``"HxW"``.
        bytes_per_activation: 4 (fp32) or 1 (int8).
        num_classes: classifier size when ``model`` is a name.
        in_chans: input channels (default: what the first layer run reads).
        name: label for the tables (default: the registered name or class name).

    Returns:
        a :class:`Profile`.

    Example::

        >>> p = profile_model("mobilenetv2_rnnpool", 224, 4, num_classes=10)
        >>> f"{p.peak_bytes / 2**20:.2f} MB", f"{p.executed_madds / 1e9:.2f} G"
        ('0.24 MB', '0.23 G')
    """
    if bytes_per_activation not in (1, 2, 4):
        raise ValueError(f"bytes_per_activation must be 1, 2 or 4, got {bytes_per_activation}")
    if in_chans is not None and in_chans < 1:  # else 0 falls back to the model's own silently
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    if isinstance(model, str):
        from ..models import create_model

        label = name or model
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        model = create_model(model, **kwargs)
    else:
        label = name or type(model).__name__
    h, w = parse_input_size(input_size)
    c = in_chans or first_layer_channels(model) or 3
    try:
        trace = trace_model(model, _zeros_like_model_input(model, c, h, w))
    except _ChannelMismatch as e:
        # the guess (first registered layer) is not the first layer run: take what it reads
        if in_chans is not None or not e.reads_input or e.expected == c:
            raise
        c = e.expected
        trace = trace_model(model, _zeros_like_model_input(model, c, h, w))
    mem = standard_memory(trace)
    bpa = bytes_per_activation
    prof = Profile(label, (c, h, w), bpa, params=trace.total_params)
    peak, peak_layer = -1, ""
    for node, lm in zip(trace.nodes, mem):
        prof.madds += node.madds
        prof.executed_madds += node.executed_madds
        if node.kind == "alias":
            continue
        act = sum(trace.numel[v] for v, held in zip(node.outputs, lm.materialised) if held)
        shape = node.out_shapes[0] if node.out_shapes else ()
        prof.layers.append(LayerStat(
            node.name, node.kind, shape, act * bpa, node.madds, node.executed_madds,
            node.params, lm.total * bpa,
        ))
        if lm.total > peak:
            peak, peak_layer = lm.total, node.name
    prof.peak_bytes, prof.peak_layer = max(peak, 0) * bpa, peak_layer
    prof.prop1_bytes = prop1_bound(chain_from_trace(trace)) * bpa
    prof.notes = list(trace.notes)
    if prof.notes:
        warnings.warn(f"{label}: MAdds not counted for {'; '.join(prof.notes)} (ops the "
                      f"profiler does not know; the totals leave them out)", stacklevel=2)
    return prof


def compare(a: Profile, b: Profile) -> str:
    """Two profiles side by side: totals and the ratio ``B / A``."""
    rows = [
        ("input", f"{a.input_size[1]}x{a.input_size[2]}", f"{b.input_size[1]}x{b.input_size[2]}",
         ""),
        ("params", f"{a.params / 1e6:.2f} M", f"{b.params / 1e6:.2f} M",
         _ratio(b.params, a.params)),
        ("MAdds", f"{a.madds / 1e9:.3f} G", f"{b.madds / 1e9:.3f} G", _ratio(b.madds, a.madds)),
        ("executed MAdds", f"{a.executed_madds / 1e9:.3f} G", f"{b.executed_madds / 1e9:.3f} G",
         _ratio(b.executed_madds, a.executed_madds)),
        ("peak RAM", format_bytes(a.peak_bytes), format_bytes(b.peak_bytes),
         _ratio(b.peak_bytes, a.peak_bytes)),
        ("peak at", a.peak_layer, b.peak_layer, ""),
        ("no-recompute bound", format_bytes(a.prop1_bytes), format_bytes(b.prop1_bytes),
         _ratio(b.prop1_bytes, a.prop1_bytes)),
        ("layers", str(len(a.layers)), str(len(b.layers)), ""),
    ]
    wa = max(len(a.model_name), *(len(r[1]) for r in rows))
    wb = max(len(b.model_name), *(len(r[2]) for r in rows))
    out = [f"{'':<20} {a.model_name:<{wa}}  {b.model_name:<{wb}}  B/A"]
    out += [f"{k:<20} {x:<{wa}}  {y:<{wb}}  {r}" for k, x, y, r in rows]
    return "\n".join(out)


def _ratio(b: float, a: float) -> str:
    return f"{b / a:.3f}x" if a else "-"


def plot_memory(profiles: Sequence[Profile], path: str) -> None:
    """Draw the per-layer memory (standard convention) of each profile, peaks marked, to
    ``path`` (PNG via matplotlib's Agg backend)."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for p in profiles:
        ys = [r.mem_bytes / 1024 for r in p.layers]
        line, = ax.plot(range(len(ys)), ys, marker=".", label=p.model_name)
        if ys:
            i = max(range(len(ys)), key=ys.__getitem__)
            ax.scatter([i], [ys[i]], s=80, color=line.get_color(), zorder=3)
            ax.annotate(f"peak {format_bytes(p.peak_bytes)}\n{p.layers[i].name}", (i, ys[i]),
                        textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("layer (execution order)")
    ax.set_ylabel(f"memory (KB, {profiles[0].bytes_per_activation} B/activation)")
    ax.set_title("Per-layer activation memory, standard (layer-by-layer) convention")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
