"""``rnnpool export-onnx``, ``rnnpool export-c`` and ``rnnpool mcu-report``.

MODEL is a registered model name (``rnnpool list-models``); WEIGHTS a checkpoint written by
``rnnpool train`` (or a plain state dict of MODEL). ``--random-init`` builds MODEL with seeded
random weights instead (useful for RAM/instruction figures, which do not depend on the weights).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Optional, Tuple

__all__ = ["register", "load_model", "parse_size", "model_input_chw", "calibration_images"]


def parse_size(text: str) -> Tuple[int, int]:
    """``"320x240"`` (width x height) -> ``(H, W)`` = ``(240, 320)``."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise ValueError(f"--input must look like WIDTHxHEIGHT (e.g. 320x240), got {text!r}")
    return int(m.group(2)), int(m.group(1))


def load_model(name: str, weights: Optional[str], random_init: bool = False,
               model_args: Optional[dict] = None, seed: int = 0):
    """A float model in eval mode: from a checkpoint, a state dict, or seeded random weights.

    With ``random_init``, RNNPool models get hard sigmoid / tanh gates (the integer kernels'
    nonlinearities) unless ``model_args`` says otherwise.
    """
    import torch

    from ..models import list_models
    from ..models._pooling import use_cell_activations
    from ..nn import FastGRNNCell
    from ..train.commands import create_model_from_args

    if name not in list_models():
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(list_models())}")
    if random_init:
        if weights:
            raise ValueError("give WEIGHTS or --random-init, not both")
        torch.manual_seed(seed)
        kwargs = dict(model_args or {})
        model = create_model_from_args(name, kwargs)
        cells = any(isinstance(m, FastGRNNCell) for m in model.modules())
        if cells and not {"gate", "update"} & kwargs.keys():
            use_cell_activations(model, "hard_sigmoid", "hard_tanh")
        return model.eval()
    if not weights:
        raise ValueError("WEIGHTS is required (a checkpoint path), or pass --random-init")
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    from ..train.checkpoint import load_checkpoint, load_weights

    obj = load_checkpoint(path)  # a corrupt or empty file: one line naming it
    if "model_name" in obj:
        from ..train.checkpoint import load_model_from_checkpoint

        if obj["model_name"] != name:
            raise ValueError(f"{path} holds {obj['model_name']!r}, not {name!r}")
        if model_args:  # the checkpoint rebuilds its model from its own arguments
            raise ValueError(f"--model-arg does not apply to {path}: it records its model's "
                             f"arguments ({obj.get('model_args') or {}})")
        return load_model_from_checkpoint(path).eval()
    state = obj.get("model", obj)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a checkpoint or a state dict")
    model = create_model_from_args(name, model_args or {})
    load_weights(model, state, f"{path}: weights do not fit {name}")
    return model.eval()


def model_input_chw(model, size: Optional[str]) -> Tuple[int, int, int]:
    """``(C, H, W)`` from ``--input WxH`` or the model's ``config`` (``in_chans``,
    ``input_size``)."""
    from ..analysis.profile import first_layer_channels

    cfg = getattr(model, "config", None)
    c = (getattr(cfg, "in_chans", None) or getattr(model, "in_chans", None)
         or first_layer_channels(model))
    if c is None:
        raise ValueError("cannot tell the model's input channels")
    if size:
        h, w = parse_size(size)
    elif cfg is not None and getattr(cfg, "input_size", None):
        h, w = cfg.input_size
    elif getattr(model, "input_size", None):
        h, w = model.input_size[-2:]
    else:
        raise ValueError("the model has no default input size: pass --input WIDTHxHEIGHT")
    return int(c), int(h), int(w)


def calibration_images(spec: str, chw: Tuple[int, int, int], n: int = 16, seed: int = 0):
    """Calibration batch ``(N, C, H, W)`` for PTQ.

    Args:
        spec: ``"fashion-mnist"`` (the first n training images, normalised as in training),
            ``"synthetic"`` (seeded smooth random images with the model's input statistics: a
            stand-in for RAM/instruction figures, not for accuracy) or a folder of images
            (resized to ``H x W``, converted to the model's channels, scaled to ``[0, 1]``
            and normalised like the training data when the model's config gives mean / std).
        chw: model input shape.
        n: number of images (folder: at most n).
    """
    import numpy as np
    import torch

    c, h, w = chw
    if spec in ("fashion-mnist", "fmnist"):
        from ..data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD, FashionMNIST

        ds = FashionMNIST(split="train", limit=n)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        if (c, h, w) != tuple(x.shape[1:]):
            raise ValueError(f"Fashion-MNIST images are {tuple(x.shape[1:])}, "
                             f"the model takes {chw}")
        mean = torch.tensor(FASHION_MNIST_MEAN).view(1, -1, 1, 1)
        std = torch.tensor(FASHION_MNIST_STD).view(1, -1, 1, 1)
        return (x - mean) / std
    if spec == "synthetic":
        g = torch.Generator().manual_seed(seed)
        low = torch.rand(n, c, max(h // 8, 1), max(w // 8, 1), generator=g)
        x = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear",
                                            align_corners=False)
        x = x + 0.05 * torch.randn(n, c, h, w, generator=g)
        return (x - 0.45) / 0.226
    folder = Path(spec)
    if not folder.is_dir():
        raise FileNotFoundError(f"--calib must be 'synthetic' or a folder of images: {folder}")
    from PIL import Image

    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm"))[:n]
    if not files:
        raise FileNotFoundError(f"no images (.jpg/.png/.bmp/.pgm) in {folder}")
    imgs = []
    for f in files:
        im = Image.open(f).convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
        a = np.asarray(im, dtype=np.float32) / 255.0
        imgs.append(a[None] if c == 1 else a.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(imgs))
    return x


def _normalise(model, x):
    import torch

    cfg = getattr(model, "config", None)
    mean, std = getattr(cfg, "input_mean", None), getattr(cfg, "input_std", None)
    if mean is None or std is None:
        return x
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _add_model_args(p: argparse.ArgumentParser, need_out: bool = False) -> None:
    p.add_argument("model", help="registered model name (e.g. rnnpool_face_m4)")
    p.add_argument("weights", nargs="?", default=None, help="checkpoint or state dict (.pt)")
    p.add_argument("--random-init", action="store_true",
                   help="use seeded random weights instead of WEIGHTS")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="extra create_model keyword (repeatable)")
    p.add_argument("--input", default=None, metavar="WxH",
                   help="input size, width x height (default: the model's own)")


def _add_quant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calib", default="synthetic", metavar="DIR|synthetic|fashion-mnist",
                   help="calibration images for PTQ (default: synthetic)")
    p.add_argument("--calib-count", type=int, default=16, help="calibration images (default 16)")


def _add_codegen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-stream", action="store_true",
                   help="hold every feature map whole (no row streaming): more RAM")
    p.add_argument("--rnnpool-kernel", choices=["row", "patch", "map"], default="row",
                   help="streamed RNNPool: incremental row kernel (default; fewest instructions, "
                        "scratch ~ map width), one patch per call (least RAM), or the map kernel "
                        "on row slices")
    p.add_argument("--rnnpool-rows", type=int, default=1, metavar="N",
                   help="with --rnnpool-kernel map: output rows per call (more rows share more "
                        "work between overlapping patches, larger bands; default 1)")
    p.add_argument("--max-boxes", type=int, default=100, metavar="K",
                   help="detectors: boxes kept by the decode (top K by logit; 24 B each, in RAM; "
                        "default 100)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="export a model to ONNX and check it with onnxruntime")
    _add_model_args(p)
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(func=_export_onnx)

    p = sub.add_parser("export-c", help="quantize a model to int8 and generate C for an MCU")
    _add_model_args(p)
    _add_quant_args(p)
    p.add_argument("--out", required=True, help="output folder for the C files")
    _add_codegen_args(p)
    p.add_argument("--with-kernels", action="store_true",
                   help="also copy the kernel sources and headers into --out")
    p.set_defaults(func=_export_c)

    p = sub.add_parser("mcu-report", help="RAM, flash, stack and instructions on an emulated "
                                          "Cortex-M4, and agreement with the float model")
    _add_model_args(p)
    _add_quant_args(p)
    p.add_argument("--ram-budget", type=int, default=128 * 1024, help="bytes (default 131072)")
    p.add_argument("--stack", type=int, default=4096, help="stack bytes reserved (default 4096)")
    p.add_argument("--images", type=int, default=1, help="test images run in the emulator")
    p.add_argument("--workdir", default=None, help="keep build files here (default: temp)")
    p.add_argument("--timeout", type=float, default=1200.0, help="emulator timeout, seconds")
    p.add_argument("--profile", action="store_true", help="instructions per layer / group")
    p.add_argument("--host-check", action="store_true",
                   help="also build for the host with ASan/UBSan and compare bit for bit")
    _add_codegen_args(p)
    p.set_defaults(func=_mcu_report)


def _load(args):
    from ..train.commands import parse_model_args

    for opt in ("calib_count", "rnnpool_rows"):  # checked before the model is built
        if getattr(args, opt, 1) < 1:
            raise ValueError(f"--{opt.replace('_', '-')} must be >= 1, got {getattr(args, opt)}")
    model = load_model(args.model, args.weights, args.random_init,
                       parse_model_args(args.model_arg or []))
    return model, model_input_chw(model, args.input)


def _export_onnx(args: argparse.Namespace) -> int:
    import os

    from .onnx_export import export_onnx, supported_opsets

    lo, hi = supported_opsets()
    if not lo <= args.opset <= hi:  # else torch's graph dump on stdout, or an invalid graph
        raise ValueError(f"--opset must be {lo} to {hi} (RNNPool2d needs {lo}; the highest this "
                         f"PyTorch's ONNX exporter writes), got {args.opset}")
    # Checked before the export, which takes seconds to minutes for the larger models.
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; expected a .onnx file path")
    folder = next(p for p in out.absolute().parents if p.exists())
    if not folder.is_dir():
        raise ValueError(f"--out {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: folder {folder} is not writable")
    model, chw = _load(args)
    r = export_onnx(model, chw, args.out, opset=args.opset)
    print(f"wrote {r.path} ({r.nbytes / 1024:.1f} KiB), input (N, {chw[0]}, {chw[1]}, {chw[2]}), "
          f"outputs {', '.join(f'{n} {s}' for n, s in zip(r.output_names, r.output_shapes))}")
    print(f"onnxruntime vs PyTorch: max abs diff {r.max_abs_diff:.3g}")
    return 0


def quantize_for_mcu(model, chw, calib="synthetic", calib_count: int = 16):
    """PTQ of a float model for the C flow.

    Args:
        calib: a :func:`calibration_images` spec (``calib_count`` images), or an already
            normalised batch ``(N, C, H, W)`` (used whole).

    Returns:
        ``(QGraph, calibration batch)``.
    """
    import torch

    from ..quant.ptq import quantize_model

    if isinstance(calib, str):
        x = calibration_images(calib, chw, n=calib_count)
        if calib not in ("synthetic", "fashion-mnist", "fmnist"):
            x = _normalise(model, x)
    else:
        x = torch.as_tensor(calib, dtype=torch.float32)
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(chw) or len(x) == 0:
            raise ValueError(f"calibration batch must be (N, {', '.join(map(str, chw))}), "
                             f"got {tuple(x.shape)}")
    g = quantize_model(model, x)
    g.meta.setdefault("model", getattr(model, "__class__").__name__)
    return g, x


def _export_c(args: argparse.Namespace) -> int:
    import shutil

    from .codegen import CSRC, KERNEL_DIR, generate_c, kernel_sources, output_folder

    model, chw = _load(args)
    output_folder(args.out).mkdir(parents=True, exist_ok=True)  # before quantizing: fail fast
    g, _ = quantize_for_mcu(model, chw, args.calib, args.calib_count)
    g.meta["model"] = args.model
    from .decode import DecodeSpec

    m = generate_c(g, args.out, stream=not args.no_stream,
                   rnnpool_kernel=args.rnnpool_kernel, rnnpool_rows=args.rnnpool_rows,
                   decode=DecodeSpec.from_model(model), max_boxes=args.max_boxes)
    if args.with_kernels:
        (Path(args.out) / "kernels").mkdir(exist_ok=True)
        for f in [*kernel_sources(), *KERNEL_DIR.glob("*.h")]:
            shutil.copy2(f, Path(args.out) / "kernels" / f.name)
        for f in CSRC.glob("rnnpool_*.h"):
            shutil.copy2(f, Path(args.out) / f.name)
    print(f"wrote {', '.join(p.name for p in m.files)} to {args.out}")
    print(f"arena {m.arena_bytes} B (input rows {m.input_arena_bytes} B"
          + (f", head maps {m.output_arena_bytes} B" if m.decode else "")
          + f"), input {m.input_bytes} B, outputs {m.output_bytes} B "
          f"({len(m.output_names)} int8 maps)"
          + (f", with the fixed-point box decode (rnnpool_model_decode, "
             f"rnnpool_model_detect_rows; {m.max_boxes} boxes)" if m.decode else ""))
    return 0


def _mcu_report(args: argparse.Namespace) -> int:
    from ..cli import CLIError
    from .mcu import MCUError, find_toolchain
    from .report import mcu_report

    if find_toolchain() is None:
        raise CLIError("the Cortex-M4 toolchain is missing: install gcc-arm-none-eabi, "
                       "libnewlib-arm-none-eabi and qemu-system-arm")
    model, chw = _load(args)
    try:
        rep = _run_report(args, model, chw, mcu_report)
    except MCUError as e:
        raise CLIError(str(e)) from None
    print(rep.format())
    return 0


def _run_report(args, model, chw, mcu_report):
    return mcu_report(model, chw, model_name=args.model, calib=args.calib,
                     calib_count=args.calib_count, ram_budget=args.ram_budget,
                     stack_bytes=args.stack, n_images=args.images, workdir=args.workdir,
                     timeout=args.timeout, check_host=args.host_check,
                     stream=not args.no_stream, rnnpool_kernel=args.rnnpool_kernel,
                     rnnpool_rows=args.rnnpool_rows, profile=args.profile,
                     max_boxes=args.max_boxes)
