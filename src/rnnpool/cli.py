"""The ``rnnpool`` command line.

Each subcommand lives beside the code it drives, in a module with
``register(subparsers) -> None`` that adds its parser and sets ``func`` (called with the parsed
``argparse.Namespace``, returning an exit code). Add the module to ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

COMMAND_MODULES = [
    "rnnpool.demo",
    "rnnpool.models.commands",
    "rnnpool.detection.eval_commands",
    "rnnpool.data.commands",
    "rnnpool.deploy.commands",
    "rnnpool.detection.commands",
    "rnnpool.train.commands",
    "rnnpool.analysis.commands",
]


class CLIError(Exception):
    """An error to show the user as one line, without a traceback."""


def parse_device(name: str, option: str = "--device"):
    """``torch.device`` of a ``--device`` value (see :func:`rnnpool.train.loop.resolve_device`);
    a value that cannot run here is a :class:`CLIError` naming ``option`` (not a traceback from
    ``torch.device`` or ``.to()`` once the work has started)."""
    from .train.loop import resolve_device

    try:
        return resolve_device(name, option=option)
    except ValueError as e:
        raise CLIError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnpool",
        description="RNNPool: efficient non-linear pooling for RAM-constrained vision.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from . import __version__

    return f"rnnpool {__version__}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly
        # Point stdout at /dev/null so that Python's flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a process killed by SIGPIPE (128 + 13)
    # OSError: a missing input, an output path that cannot be written, a full disk.
    except (CLIError, ValueError, OSError) as e:
        print(f"rnnpool {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: outputs are written atomically, training resumes
        print(f"rnnpool {args.command}: interrupted", file=sys.stderr)
        return 130  # the shell's code for SIGINT (128 + 2)


if __name__ == "__main__":
    sys.exit(main())
