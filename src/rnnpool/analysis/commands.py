"""``rnnpool profile``: per-layer memory / MAdds / parameter table of a registered model."""

from __future__ import annotations

import argparse

import torch

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile",
        help="per-layer output shapes, activation memory, MAdds and parameters of a model",
        description="Trace one forward pass of a registered model and print, per layer, the "
        "output shape, activation bytes, MAdds and parameters, with totals and the peak RAM "
        "under the paper's layer-by-layer convention.",
    )
    p.add_argument("model", nargs="?", help="registered model name (see --list)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two models side by side")
    p.add_argument("--input", default="224", help="input size N or HxW (default: 224)")
    p.add_argument("--bytes", type=int, choices=(4, 1), default=4,
                   help="bytes per activation: 4 (fp32) or 1 (int8)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier size (default: the model's own default)")
    p.add_argument("--in-chans", type=int, default=None, help="input channels (default: auto)")
    p.add_argument("--plot", metavar="PNG", help="draw the per-layer memory profile to PNG")
    p.add_argument("--measure", action="store_true",
                   help="also run the model and measure live activation storage (fp32, eager "
                   "PyTorch), with RNNPool run whole and band by band")
    p.add_argument("--list", action="store_true", help="list the registered models")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..cli import CLIError
    from ..models import is_model, list_models
    from ..models._registry import unknown_model_message
    from .profile import compare, format_bytes, plot_memory, profile_model

    if args.list:
        print("\n".join(list_models()))
        return 0
    names = list(args.compare) if args.compare else ([args.model] if args.model else [])
    if not names:
        raise CLIError("give a MODEL or --compare A B (see --list)")
    if args.compare and args.model:
        raise CLIError("give either MODEL or --compare A B, not both")
    for n in names:
        if not is_model(n):
            raise CLIError(unknown_model_message(n))
    try:
        profiles = [
            profile_model(n, args.input, args.bytes, num_classes=args.num_classes,
                          in_chans=args.in_chans)
            for n in names
        ]
    except (RuntimeError, TypeError) as e:
        raise CLIError(f"cannot run {', '.join(names)} at input {args.input}: {e}") from None
    if len(profiles) == 1:
        print(profiles[0].table())
    else:
        print(compare(*profiles))
    if args.measure:
        from ..models import create_model
        from .measure import measure_peak

        for n, prof in zip(names, profiles):
            kw = {} if args.num_classes is None else {"num_classes": args.num_classes}
            model = create_model(n, **kw)
            x = torch.randn(1, *prof.input_size)
            whole = measure_peak(model, x, banded=False)
            banded = measure_peak(model, x, banded=True)
            print(f"{n}: measured activation peak (fp32, eager PyTorch): "
                  f"{format_bytes(whole.peak_bytes)} at {whole.peak_module or '-'}; "
                  f"RNNPool band by band: {format_bytes(banded.peak_bytes)} at "
                  f"{banded.peak_module or '-'}; analytic (standard convention, fp32): "
                  f"{format_bytes(prof.peak_bytes * 4 // prof.bytes_per_activation)}")
    if args.plot:
        plot_memory(profiles, args.plot)
        print(f"memory profile written to {args.plot}")
    return 0
