"""Atomic writes of outputs (checkpoints, annotation files, metrics, generated C, submissions,
images, plots): one temporary file in the destination's folder, renamed over it when complete."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Union

__all__ = ["atomic_output", "atomic_save_figure", "atomic_write_bytes", "atomic_write_text",
           "remove_stale_temporaries"]

PathLike = Union[str, os.PathLike]


@contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so that writers that choose the
    format by extension choose the right one) for the caller to write; when the block ends,
    flush it to disk and rename it over ``path``: readers see the old file or the new one,
    never a part. It gets the mode of an ordinary output (0644; ``mkstemp`` makes 0600). If the
    block or the rename fails, the temporary file is removed and the error passes on. Creates
    the folder.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with atomic_output(os.path.join(d, "x.txt")) as tmp:
    ...     _ = tmp.write_text("done")
    >>> os.listdir(d)
    ['x.txt']
    """
    path = Path(path)
    if path.is_dir():  # else the rename fails naming the temporary file
        raise IsADirectoryError(f"{path} is a folder; expected a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp",
                                dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`). Returns ``path``."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically (see
    :func:`atomic_output`). Returns ``path``."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return Path(path)


def atomic_save_figure(fig, path: PathLike, **savefig_kwargs) -> Path:
    """Save a matplotlib figure to ``path`` atomically, in the format its suffix names (PNG
    when it has none: the temporary file's name must not choose it). Returns ``path``."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:].lower() or "png", **savefig_kwargs)
    return path


def remove_stale_temporaries(path: PathLike) -> int:
    """Delete the temporary files that :func:`atomic_output` for ``path`` left behind when its
    process was killed mid-write (``.<stem>.<8 mkstemp characters><suffix>`` beside ``path``;
    no other file is touched). Returns how many were removed. Call it only when no other process
    writes ``path``.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> for name in (".last.ab_cd123.pt", ".last.backup.pt", "last.pt"):
    ...     _ = open(os.path.join(d, name), "w").write("x")
    >>> remove_stale_temporaries(os.path.join(d, "last.pt")), sorted(os.listdir(d))
    (1, ['.last.backup.pt', 'last.pt'])
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.stem}.") + r"[a-z0-9_]{8}"
                         + re.escape(path.suffix or ".tmp"))
    if not path.parent.is_dir():
        return 0
    n = 0
    for entry in os.scandir(path.parent):
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            n += 1
    return n
