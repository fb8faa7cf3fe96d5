"""The one place files are written: to a temporary name beside the target, fsync'ed, then
``os.replace``'d onto it, so a reader (or a kill at any moment) sees the old file or the new
one, never half of one. It imports nothing of the project, so every module can use it.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

__all__ = ["atomic_open", "write_bytes_atomic", "write_text_atomic"]


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file opened at a temporary name in ``path``'s folder, ``os.replace``d onto
    ``path`` only when the block finishes; on any error (a ``KeyboardInterrupt`` too) the
    temporary file is removed and ``path`` is as it was. The folder must exist: a missing
    one is a ``FileNotFoundError`` (callers that want it made make it first)."""
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 keeps the user's umask, unlike mkstemp's 0o600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, make_folder: bool = True) -> Path:
    """``data`` at ``path`` through :func:`atomic_open` (its folder made first when
    ``make_folder``): all of it or, on any error, the file as it was."""
    path = Path(path)
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        handle.write(data)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, make_folder: bool = True) -> Path:
    """``text`` as UTF-8 at ``path``, as :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"), make_folder=make_folder)
