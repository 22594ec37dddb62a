"""The README's examples must keep working.

* Every ```` ```python ```` block of README.md is executed, each in a fresh namespace with a
  temporary folder as the working directory. A block whose first line is exactly
  ``# not run`` (for code that needs a GPU or data that does not exist offline) is skipped,
  with that reason; prefer making a block runnable.
* Every ``rnnpool ...`` command line of README.md's ```` ```bash ```` blocks must be accepted by
  the command-line parser (options and sub-commands exist; nothing is run). Optional parts
  written as ``[--opt X]`` are parsed with the option present, ``A|B`` takes ``A``; lines with
  a ``...`` placeholder are skipped.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = "# not run"

_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def _blocks(lang: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of README.md's fenced blocks in ``lang``."""
    text = README.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(2))
        for m in _FENCE.finditer(text)
        if m.group(1) == lang
    ]


_PYTHON = _blocks("python")


def test_readme_has_python_examples():
    assert _PYTHON, "README.md has no ```python block: the fence or this test is broken"


@pytest.mark.parametrize("code", [c for _, c in _PYTHON],
                         ids=[f"README.md:{n}" for n, _ in _PYTHON])
def test_readme_python_block_runs(code, tmp_path, monkeypatch):
    if code.splitlines()[0].strip() == NOT_RUN:
        pytest.skip(f"marked {NOT_RUN!r}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})


def _commands() -> list[tuple[int, list[str]]]:
    out = []
    for start, code in _blocks("bash"):
        for i, line in enumerate(code.splitlines()):
            for part in line.split("#", 1)[0].split("&&"):
                words = shlex.split(part.strip())
                if words[:1] != ["rnnpool"] or "..." in part:
                    continue
                words = [w.strip("[]").split("|")[0] for w in words[1:]]
                out.append((start + 1 + i, [w for w in words if w]))
    return out


_COMMANDS = _commands()


def test_readme_shows_rnnpool_commands():
    assert len(_COMMANDS) >= 10, _COMMANDS


@pytest.mark.parametrize("argv", [a for _, a in _COMMANDS],
                         ids=[f"README.md:{n}" for n, _ in _COMMANDS])
def test_readme_command_line_parses(argv):
    from rnnpool.cli import build_parser

    build_parser().parse_args(argv)  # argparse exits (SystemExit) on an unknown option
