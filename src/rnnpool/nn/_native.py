"""The compiled CPU kernels of RNNPool2d (``csrc/``), built on first use.

``scan.cpp`` fuses each FastGRNN sweep into one pass over its state (recurrent products, gates
and update in registers, OpenMP over sweeps); a forward for training saves every step's
pre-activation, from which the backward recomputes the states and gates with the activations
alone. It takes the cell as written and runs the paper's cell in its all-sigmoid form (see
:class:`rnnpool.nn.functional._CellMatrices`). ``project.cpp`` serves the projections that the
scan kernel does as it reads raw inputs of few channels: it turns an ``(N, C, H, W)`` map into
the pixel rows the scan reads, and runs the projections' backward (tall and thin products that
BLAS libraries run far below the machine's multiply-add rate) straight from and into the map's
own layout. It also projects maps of more channels into rows for the scan (``pixel_projection``)
and returns their gradient as a map, and reorders RNN2's result rows into the NCHW output and
back (``place_rows``, ``take_rows``). Both are plain C++ without torch headers, compiled once
per machine into one library with the host ``g++``, in the user cache
(``$XDG_CACHE_HOME/rnnpool`` or ``~/.cache/rnnpool``, which keeps the :data:`KEPT_BUILDS` most
recently used builds), and loaded with :mod:`ctypes`. When no compiler is available the operator
runs its pure-torch path (same numbers, slower) and :func:`native_status` says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .._cache import cache_dir

__all__ = ["ScanState", "native_available", "native_status", "pixel_projection", "pixel_rows",
           "place_rows", "project_backward", "scan", "scan_backward", "take_rows"]

_CSRC = Path(__file__).with_name("csrc")
_SOURCES = [_CSRC / "scan.cpp", _CSRC / "project.cpp"]
_HEADERS = [_CSRC / "simd.h"]
# Fast math, but NaN and inf keep their meaning: a NaN input must reach the output, as in torch.
_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", "-fopenmp", "-fPIC",
          "-std=c++17"]
# Linked apart, without -ffast-math: with it GCC links crtfastmath.o, whose constructor switches
# the loading thread to flushing subnormal numbers to zero, for all the process's code after it.
_LINK_FLAGS = ["-shared", "-fopenmp"]
GATE_CODES = {"sigmoid": 0, "hard_sigmoid": 1}
UPDATE_CODES = {"tanh": 0, "hard_tanh": 1}
_CTYPES = {torch.float32: ctypes.c_float, torch.float64: ctypes.c_double}
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
MAX_HIDDEN = 512  # kMaxH in scan.cpp
KEPT_BUILDS = 8  # builds kept in the cache (other versions of the sources, other CPUs)


def _cpu_key() -> str:
    """What ``-march=native`` depends on: the machine and its CPU flags."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line
                    break
    except OSError:
        pass
    return platform.machine() + flags


def prune_builds(folder: Path, keep: int = KEPT_BUILDS) -> list[Path]:
    """Delete all but the ``keep`` most recently used kernel builds in ``folder`` (including
    those named as earlier versions named them, ``scan-*.so``; never a build in progress) and
    return what was deleted. A process that has one of them loaded keeps its mapping."""
    builds = [*folder.glob("kernels-*.so"), *folder.glob("scan-*.so")]

    def last_used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # deleted meanwhile by another process
            return 0.0

    deleted = []
    for old in sorted(builds, key=last_used, reverse=True)[keep:]:
        try:
            old.unlink()
            deleted.append(old)
        except OSError:
            pass
    return deleted


@functools.lru_cache(maxsize=None)
def _load() -> tuple[Optional[ctypes.CDLL], str]:
    """Compile (once, cached on disk) and load the kernel; ``(None, reason)`` if impossible."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        return None, "no C++ compiler (g++) on PATH"
    src = b"".join(f.read_bytes() for f in [*_SOURCES, *_HEADERS])
    key = hashlib.sha256("\0".join([cxx, *_FLAGS, *_LINK_FLAGS, _cpu_key()]).encode()
                         + src).hexdigest()[:20]
    folder = cache_dir() / "native"
    lib = folder / f"kernels-{key}.so"
    if not lib.exists():
        print(f"rnnpool: building the compiled RNNPool2d kernel into {folder} (once per machine, "
              "about a minute)", file=sys.stderr, flush=True)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                objs = [str(Path(tmp) / (f.stem + ".o")) for f in _SOURCES]
                for cmd in ([cxx, *_FLAGS, "-c", str(f), "-o", o] for f, o in zip(_SOURCES, objs)):
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    if p.returncode != 0:
                        return None, f"compiling {_CSRC} failed:\n{p.stderr.strip()}"
                out = str(Path(tmp) / lib.name)
                p = subprocess.run([cxx, *_LINK_FLAGS, *objs, "-o", out], capture_output=True,
                                   text=True)
                if p.returncode != 0:
                    return None, f"linking {_CSRC} failed:\n{p.stderr.strip()}"
                os.replace(out, lib)  # atomic: concurrent builders each write their own file
        except OSError as e:
            return None, f"cannot build the kernel in {folder}: {e}"
        prune_builds(folder)
    else:
        try:
            os.utime(lib)  # used now: what prune_builds keeps are the recently used builds
        except OSError:
            pass
    try:
        dll = ctypes.CDLL(str(lib))
    except OSError as e:
        return None, f"cannot load {lib}: {e}"
    ptr, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for dtype, suffix in _SUFFIX.items():
        scalar = _CTYPES[dtype]
        # src, nfam, idx[], steps[], B[], H, u, bias_gate, bias_update, wt, C, gate, update,
        # sigmoid_form, zeta, nu
        common = [ptr, c_int, ptr, ptr, ptr, i64, ptr, ptr, ptr, ptr, i64, c_int, c_int, c_int,
                  scalar, scalar]
        fwd = getattr(dll, f"rnnpool_scan_forward_{suffix}")
        # groups[], ngroups[] (or null when nothing is saved), out, pre, threads
        fwd.argtypes, fwd.restype = [*common, ptr, ptr, ptr, ptr, c_int], c_int
        bwd = getattr(dll, f"rnnpool_scan_backward_{suffix}")
        # groups[], ngroups[], rows, gout, dsrc, dparams, dzeta_nu, grad_zeta_nu, skip_row,
        # pre, threads
        bwd.argtypes = [*common, ptr, ptr, i64, ptr, ptr, ptr, ptr, c_int, i64, ptr, c_int]
        bwd.restype = c_int
        size = getattr(dll, f"rnnpool_scan_saved_size_{suffix}")
        # nfam, steps[], B[], groups[], ngroups[], H
        size.argtypes, size.restype = [c_int, ptr, ptr, ptr, ptr, i64], i64
        pb = getattr(dll, f"rnnpool_project_backward_{suffix}")
        # dy, x, P, C, hw, w, H, dx, dw, db, threads
        pb.argtypes = [ptr, ptr, i64, i64, i64, ptr, i64, ptr, ptr, ptr, c_int]
        pb.restype = c_int
        pr = getattr(dll, f"rnnpool_pixel_rows_{suffix}")
        # x, N, C, hw, out, threads
        pr.argtypes, pr.restype = [ptr, i64, i64, i64, ptr, c_int], c_int
        pp = getattr(dll, f"rnnpool_pixel_projection_{suffix}")
        # x, N, C, hw, wt, K, out, threads
        pp.argtypes, pp.restype = [ptr, i64, i64, i64, ptr, i64, ptr, c_int], c_int
        place = getattr(dll, f"rnnpool_place_rows_{suffix}")
        # take, rows, order, S, H, plane, map, threads
        place.argtypes, place.restype = [c_int, ptr, ptr, i64, i64, i64, ptr, c_int], c_int
    return dll, f"loaded {lib}"


def native_status() -> str:
    """Where the compiled kernel was loaded from, or why the torch path is used instead."""
    return _load()[1]


def native_available() -> bool:
    """True when the compiled kernel is built and loaded."""
    return _load()[0] is not None


def unsupported(x: Tensor, hidden: int, gate: str, update: str) -> Optional[str]:
    """Why :func:`scan` cannot run sweeps of ``hidden`` units on tensors like ``x``, or None
    when it can (CPU, float32/float64, known activations, ``hidden`` at most
    :data:`MAX_HIDDEN`, the kernel built)."""
    if not native_available():
        return f"the compiled kernel is unavailable ({native_status()})"
    if x.device.type != "cpu" or x.dtype not in _CTYPES:
        return f"it needs a float32/float64 CPU input, got {x.dtype} on {x.device}"
    if not 0 < hidden <= MAX_HIDDEN:
        return f"it runs hidden sizes up to {MAX_HIDDEN}, got {hidden}"
    if gate not in GATE_CODES or update not in UPDATE_CODES:
        return f"it does not know the activations {gate!r} / {update!r}"
    return None


def _scalar(v: Union[Tensor, float]) -> float:
    return float(v.detach()) if isinstance(v, Tensor) else float(v)


class _Call:
    """The arguments shared by the forward and backward entry points, kept alive with it."""

    def __init__(self, src: Tensor, idx: Sequence[Tensor], u: Tensor, bias_gate: Tensor,
                 bias_update: Tensor, w: Optional[Tensor], gate: str, update: str,
                 sigmoid_form: bool, zeta, nu) -> None:
        scalar = _CTYPES[src.dtype]
        self.dll = _load()[0]
        self.suffix = _SUFFIX[src.dtype]
        self.hidden = u.shape[0]
        self.channels = 0 if w is None else w.shape[1]
        self.src = src.contiguous()  # the rows the kernel reads
        wt = src.new_zeros(1) if w is None else w.t().contiguous()
        self.keep = [self.src, u.contiguous(), bias_gate.contiguous(), bias_update.contiguous(),
                     wt]
        self.idx = [i.contiguous() for i in idx]
        n = len(self.idx)
        self.steps = (ctypes.c_int64 * n)(*[i.shape[0] for i in self.idx])
        self.sweeps = (ctypes.c_int64 * n)(*[i.shape[1] for i in self.idx])
        self.idx_ptrs = (ctypes.c_void_p * n)(*[i.data_ptr() for i in self.idx])
        s, *tensors = [t.data_ptr() for t in self.keep]  # u, bias_gate, bias_update, wt
        self.args = [s, n, self.idx_ptrs, self.steps, self.sweeps, self.hidden, *tensors,
                     self.channels, GATE_CODES[gate], UPDATE_CODES[update], int(sigmoid_form),
                     scalar(_scalar(zeta)), scalar(_scalar(nu))]

    def forward(self, out: Tensor, groups: Optional[Sequence[Tensor]] = None
                ) -> Optional[Tensor]:
        """Fill ``out``. With the families' ``groups`` (as :meth:`backward` will get them), also
        return every step's pre-activation, which :meth:`backward` needs."""
        pre = offsets = counts = None
        if groups is not None:
            offsets, counts = _groups(groups)
            size = getattr(self.dll, f"rnnpool_scan_saved_size_{self.suffix}")(
                len(self.idx), self.steps, self.sweeps, offsets, counts, self.hidden)
            _check(min(size, 0))
            pre = out.new_empty(size)
        fn = getattr(self.dll, f"rnnpool_scan_forward_{self.suffix}")
        _check(fn(*self.args, offsets, counts, out.data_ptr(), _ptr(pre),
                  torch.get_num_threads()))
        return pre

    def backward(self, groups: Sequence[Tensor], gout: Tensor, dsrc: Tensor, grad_zeta_nu: bool,
                 skip_row: int, pre: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Fill ``dsrc`` (``(P, H)``: the gradient of the projected rows, zero at row
        ``skip_row``); return ``dU, dbias_gate, dbias_update`` and ``(dzeta, dnu)`` in float64.
        ``pre``: what :meth:`forward` saved with the same ``groups``."""
        fn = getattr(self.dll, f"rnnpool_scan_backward_{self.suffix}")
        offsets, counts = _groups(groups)
        h = self.hidden
        dparams = dsrc.new_zeros(h * h + 2 * h)
        dzn = torch.zeros(2, dtype=torch.float64)
        _check(fn(*self.args, offsets, counts, dsrc.shape[0], gout.data_ptr(), dsrc.data_ptr(),
                  dparams.data_ptr(), dzn.data_ptr(), int(grad_zeta_nu), skip_row, pre.data_ptr(),
                  torch.get_num_threads()))
        du, dbz, dbh = dparams.split([h * h, h, h])
        return du.view(h, h), dbz, dbh, dzn


def _ptr(t: Optional[Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _groups(groups: Sequence[Tensor]) -> tuple[ctypes.Array, ctypes.Array]:
    """The kernel's groups[] and ngroups[] for the families' offset tensors."""
    n = len(groups)
    return ((ctypes.c_void_p * n)(*[g.data_ptr() for g in groups]),
            (ctypes.c_int64 * n)(*[g.numel() - 1 for g in groups]))


def pixel_rows(x: Tensor) -> Tensor:
    """``(N, C, H, W)`` -> ``(N*H*W + 1, C)``: the pixels ``(i, y, x)`` as rows, then a zero
    row (what the sweeps read in the padding). Not differentiable: :func:`scan` takes the map
    itself and returns its gradient in the map's layout. CPU, float32 or float64."""
    if x.dim() != 4:
        raise ValueError(f"pixel_rows expects an (N, C, H, W) map, got {tuple(x.shape)}")
    n, c, h, w = x.shape
    x = x.detach().contiguous()
    out = x.new_empty(n * h * w + 1, c)
    fn = getattr(_load()[0], f"rnnpool_pixel_rows_{_SUFFIX[x.dtype]}")
    _check(fn(x.data_ptr(), n, c, h * w, out.data_ptr(), torch.get_num_threads()))
    return out


def pixel_projection(x: Tensor, w: Tensor) -> Tensor:
    """``(N, C, H, W)``, ``(K, C)`` -> ``(N*H*W + 1, K)``: ``w`` times each pixel ``(i, y, x)``,
    then a zero row. Not differentiable (:func:`project_backward` with the map is its
    backward). CPU, float32 or float64, both of one dtype."""
    if x.dim() != 4 or w.dim() != 2 or w.shape[1] != x.shape[1] or w.dtype != x.dtype:
        raise ValueError(f"pixel_projection: x {tuple(x.shape)} {x.dtype} and w "
                         f"{tuple(w.shape)} {w.dtype} do not match")
    n, c, h, wd = x.shape
    x, wt = x.detach().contiguous(), w.detach().t().contiguous()
    out = x.new_empty(n * h * wd + 1, w.shape[0])
    fn = getattr(_load()[0], f"rnnpool_pixel_projection_{_SUFFIX[x.dtype]}")
    _check(fn(x.data_ptr(), n, c, h * wd, wt.data_ptr(), w.shape[0], out.data_ptr(),
              torch.get_num_threads()))
    return out


def _place(take: bool, rows: Tensor, order: Tensor, map_: Tensor) -> None:
    s, h, plane = map_.shape
    if (rows.dim() != 2 or rows.shape != (s * plane, h) or order.shape != (s * plane,)
            or order.dtype != torch.int64 or rows.dtype != map_.dtype or rows.dtype not in _CTYPES):
        raise ValueError(f"rows {tuple(rows.shape)} {rows.dtype}, order {tuple(order.shape)} "
                         f"{order.dtype} and map {tuple(map_.shape)} {map_.dtype} do not match")
    fn = getattr(_load()[0], f"rnnpool_place_rows_{_SUFFIX[rows.dtype]}")
    _check(fn(int(take), rows.data_ptr(), order.data_ptr(), s, h, plane, map_.data_ptr(),
              torch.get_num_threads()))


def place_rows(rows: Tensor, order: Tensor, plane: int) -> Tensor:
    """``(S * plane, H)`` rows -> ``(S, H, plane)`` map whose cell ``q`` of slab ``s`` is row
    ``order[s * plane + q]``: ``rows[order].view(S, plane, H).transpose(1, 2)``, in one pass.
    ``order`` is a permutation (int64); :func:`take_rows` is the inverse. Not differentiable."""
    rows, order = rows.detach().contiguous(), order.contiguous()
    out = rows.new_empty(rows.shape[0] // plane, rows.shape[1], plane)
    _place(False, rows, order, out)
    return out


def take_rows(map_: Tensor, order: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """The inverse of :func:`place_rows`: ``(S, H, plane)`` -> ``(S * plane, H)``, into
    ``out`` (contiguous, that shape and dtype) when given."""
    map_, order = map_.detach().contiguous(), order.contiguous()
    if map_.dim() != 3:
        raise ValueError(f"take_rows expects an (S, H, plane) map, got {tuple(map_.shape)}")
    shape = (map_.shape[0] * map_.shape[2], map_.shape[1])
    if out is None:
        out = map_.new_empty(shape)
    elif out.shape != shape or not out.is_contiguous():
        raise ValueError(f"take_rows: out must be a contiguous {shape} tensor, got "
                         f"{tuple(out.shape)}")
    _place(True, out, order, map_)
    return out


def project_backward(dy: Tensor, x: Tensor, w: Tensor, need_dx: bool = True,
                     need_dw: bool = True, need_db: bool = False
                     ) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients of the projection ``x W^T + b`` of ``(P, C)`` rows (``w`` ``(K, C)``) for
    ``dy`` ``(P, K)``: ``dx = dy W``, ``dW = dy^T x`` and ``db``, each only when asked for.
    ``x`` may also be an ``(N, C, H, W)`` map whose rows are its pixels ``(i, y, x)`` (then
    ``P = N*H*W`` and ``dx`` is a map too). ``dW`` and ``db`` are summed in a fixed order,
    whatever the number of threads. CPU tensors, float32 or float64, all of one dtype."""
    x, w, dy = x.contiguous(), w.contiguous(), dy.contiguous()
    hw = x.shape[2] * x.shape[3] if x.dim() == 4 else 0
    rows = x.shape[0] * hw if hw else x.shape[0]
    if (x.dim() not in (2, 4) or w.dim() != 2 or w.shape[1] != x.shape[1]
            or dy.shape != (rows, w.shape[0]) or not dy.dtype == x.dtype == w.dtype):
        raise ValueError(f"project_backward: x {tuple(x.shape)} {x.dtype}, w {tuple(w.shape)} "
                         f"{w.dtype} and dy {tuple(dy.shape)} {dy.dtype} do not match")
    dx = torch.empty_like(x) if need_dx else None
    dw = torch.zeros_like(w) if need_dw else None
    db = w.new_zeros(w.shape[0]) if need_db else None
    fn = getattr(_load()[0], f"rnnpool_project_backward_{_SUFFIX[x.dtype]}")
    _check(fn(dy.data_ptr(), x.data_ptr(), rows, x.shape[1], hw, w.data_ptr(), w.shape[0],
              _ptr(dx), _ptr(dw), _ptr(db), torch.get_num_threads()))
    return dx, dw, db


_STATUS = {-1: "unknown activation", -2: "bad sizes",
           -3: "group offsets must run from 0 to the family's sweep count without decreasing",
           -4: "an order entry lies outside the rows"}


def _check(rc: int) -> None:
    if rc != 0:
        raise RuntimeError(f"rnnpool native scan kernel: {_STATUS.get(rc, 'failed')} (status {rc})")


class ScanState:
    """What :func:`scan_backward` needs from a :func:`scan` that saved for it: the call's
    arguments, the pre-activations and the families' groups."""

    __slots__ = ("call", "pre", "groups", "src", "w", "skip_row", "zeta", "nu")

    def __init__(self, call: _Call, pre: Tensor, groups: list[Tensor], src: Tensor,
                 w: Optional[Tensor], skip_row: int, zeta, nu) -> None:
        self.call, self.pre, self.groups, self.src, self.w = call, pre, groups, src, w
        self.skip_row, self.zeta, self.nu = skip_row, zeta, nu


def scan(src: Tensor, families: Sequence[tuple[Tensor, Optional[Tensor]]], u: Tensor,
         bias_gate: Tensor, bias_update: Tensor, gate: str, update: str,
         zeta: Union[Tensor, float] = 1.0, nu: Union[Tensor, float] = 0.0,
         sigmoid_form: bool = False, w: Optional[Tensor] = None, skip_row: Optional[int] = None,
         save: bool = False) -> tuple[Tensor, Optional[ScanState]]:
    """Final states of families of FastGRNN sweeps from a zero state, computed by the compiled
    kernel.

    Step ``t`` of sweep ``b`` of a family reads the projected input row
    ``x = src[idx[t, b]]`` (or ``w src[idx[t, b]]`` when ``w`` is given) and computes
    ``a = x + u h``, ``z = gate(a + bias_gate)``, ``c = update(a + bias_update)``,
    ``h' = z h + (zeta (1 - z) + nu) c``. Not differentiable: with ``save``, it also returns
    the state from which :func:`scan_backward` computes the gradients (every step's
    pre-activation: ``T * H`` values per sweep); :func:`rnnpool.nn.functional.rnnpool2d`
    calls both from one autograd node.

    Args:
        src: ``(P, H)`` float32 or float64 CPU tensor of projected inputs, or ``(P, C)`` raw
            inputs when ``w`` is given, or, with ``w``, an ``(N, C, H, W)`` map: its rows are
            its pixels ``(i, y, x)`` in that order, then one zero row (row ``N*H*W``, which
            is the ``skip_row``), and its gradient is a map.
        families: ``(idx, groups)`` pairs: ``idx`` is ``(T, B)`` int64 row indices into
            ``src``; ``groups`` is an int64 tensor of offsets ``0 = g_0 <= ... <= g_G = B``
            cutting the sweeps into runs. The backward adds input gradients into ``src``'s
            gradient without atomics, one thread per run, so sweeps of different runs must
            never read the same row (families run one after the other and may share rows).
            None: one run (one thread).
        u: ``(H, H)`` recurrent matrix ``U``.
        bias_gate, bias_update: ``(H,)`` the cell's ``b_z`` and ``b_h``.
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        update: ``"tanh"`` or ``"hard_tanh"``.
        zeta, nu: the cell's scalars (tensors get gradients from :func:`scan_backward`).
        sigmoid_form: run the paper's cell (``"sigmoid"``, ``"tanh"``, ``zeta = 1``,
            ``nu = 0``, all fixed) in the all-sigmoid form of
            :func:`rnnpool.nn.functional._cell_matrices` (faster; same values up to rounding).
        w: ``(H, C)`` input matrix: the kernel projects each row as it reads it, so no
            ``(P, H)`` map is written. Pays when ``C`` is small: each row is projected once
            per sweep that reads it.
        skip_row: a row that sweeps of any run may read (a padding row shared by all): its
            gradient is not computed (left at zero), so it needs no owner.
        save: keep what :func:`scan_backward` needs.

    Returns:
        ``(sum of B, H)``: ``h_T`` of every sweep, families in order; and the
        :class:`ScanState` for :func:`scan_backward` (None unless ``save``).
    """
    hidden = u.shape[0]
    reason = unsupported(src, hidden, gate, update)
    if reason:
        raise RuntimeError(f"the native scan cannot run this case: {reason}")
    if sigmoid_form and (gate, update) != ("sigmoid", "tanh"):
        raise ValueError(f"sigmoid_form is for the sigmoid / tanh cell, not {gate} / {update}")
    cell = {"u": u, "bias_gate": bias_gate, "bias_update": bias_update, "w": w}
    wrong = {k: t.dtype for k, t in cell.items() if t is not None and t.dtype != src.dtype}
    if wrong:  # the kernel reads every array as src's type
        raise ValueError(f"scan: src is {src.dtype} but {wrong} (all must be one dtype)")
    idx, groups = [], []
    for i, g in families:
        b = i.shape[1] if i.dim() == 2 else -1
        if g is None:
            g = torch.tensor([0, b])
        g = g.to(torch.int64).contiguous()
        if i.dim() != 2 or i.dtype != torch.int64 or g.dim() != 1 or g.numel() < 1:
            raise ValueError(f"each family needs (T, B) int64 indices and offsets 0 ... B, got "
                             f"{tuple(i.shape)} {i.dtype} and {tuple(g.shape)}")
        idx.append(i)
        groups.append(g)  # the kernel checks the offsets (status -3)
    if src.dim() == 4:
        if w is None or (skip_row is not None and skip_row != src[:, 0].numel()):
            raise ValueError("an (N, C, H, W) src needs w, and its skip_row is its zero row "
                             f"{src[:, 0].numel()}")
        skip_row = src[:, 0].numel()
    width = src.shape[1] if w is None else w.shape[0]
    if (width != hidden or src.dim() not in (2, 4)
            or (w is not None and (w.dim() != 2 or w.shape[1] != src.shape[1]))):
        raise ValueError(f"src must be (P, {hidden}), or (P, C) or (N, C, H, W) with w "
                         f"(H, C) = {(hidden, src.shape[1])}; got src {tuple(src.shape)} and w "
                         f"{None if w is None else tuple(w.shape)}")
    rows = pixel_rows(src) if src.dim() == 4 else src
    call = _Call(rows, idx, u, bias_gate, bias_update, w, gate, update, sigmoid_form, zeta, nu)
    out = src.new_empty(sum(i.shape[1] for i in idx), hidden)
    pre = call.forward(out, groups if save else None)
    if not save:
        return out, None
    skip = -1 if skip_row is None else int(skip_row)
    return out, ScanState(call, pre, groups, src, w, skip, zeta, nu)


def scan_backward(state: ScanState, gout: Tensor, need_src: bool = True, need_w: bool = True,
                  reuse_src: bool = False
                  ) -> tuple[Optional[Tensor], Tensor, Tensor, Optional[Tensor], Tensor,
                             Optional[Tensor], Optional[Tensor]]:
    """Gradients of the :func:`scan` that returned ``state``, for ``gout`` ``(sum of B, H)``:
    ``(dsrc, dbias_gate, dbias_update, dw, du, dzeta, dnu)``. ``dsrc`` (when ``need_src``) has
    ``src``'s shape (a map's gradient is a map); ``dw`` is None without ``w`` or ``need_w``;
    ``dzeta`` and ``dnu`` are None unless ``zeta`` and ``nu`` were tensors. ``reuse_src``
    (projected rows only, no ``w``): write ``dsrc`` over the rows the scan read, which the
    backward does not read and the caller no longer needs (no fresh buffer to fault in)."""
    call, src, w, zeta, nu = state.call, state.src, state.w, state.zeta, state.nu
    if reuse_src and w is None:
        dproj = call.src  # (P, H), as the kernel read them
    else:
        dproj = src.new_empty(call.src.shape[0], call.hidden)  # zeroed by the kernel
    grad_zeta_nu = isinstance(zeta, Tensor) or isinstance(nu, Tensor)
    du, dbz, dbh, dzn = call.backward(state.groups, gout.contiguous(), dproj, grad_zeta_nu,
                                      state.skip_row, state.pre)
    dzeta = dzn[0].to(src.dtype) if isinstance(zeta, Tensor) else None
    dnu = dzn[1].to(src.dtype) if isinstance(nu, Tensor) else None
    if w is None:
        dsrc, dw = (dproj if need_src else None), None
    else:  # the projection the kernel ran as it read the rows (a map's: not its zero row)
        used = dproj[:-1] if src.dim() == 4 else dproj
        dsrc, dw, _ = project_backward(used, src, w, need_src, need_w)
    return dsrc, dbz, dbh, dw, du, dzeta, dnu
