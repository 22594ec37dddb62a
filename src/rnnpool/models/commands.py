"""``rnnpool list-models``: the registered model names."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list-models", help="list the registered model names")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern (default: *)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from . import list_models

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no registered model matches {args.pattern!r}")
    print("\n".join(names))
    return 0
