"""Command lines of ``python -m port``: one module per subcommand, each with ``main(argv) -> int``.

Conventions every command follows: the file a command works on is its positional argument, a
net definition is always ``--net NET.prototxt`` (a released net by name: ``--model NAME``),
bad input prints one line naming the file, layer or blob through :func:`fail` and exits 1
(``port.errors.EXIT_BAD_INPUT``; a device this machine cannot run is bad input too), a usage
error exits 2 (argparse's, ``EXIT_USAGE``). Only :class:`port.errors.PortError` (and
``OSError`` for files) counts as bad input: anything else is a bug and keeps its traceback.
A command imports what it runs inside ``main``, after parsing, so ``--help`` answers at once.
This package holds only what the command lines share; no other module imports it.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, Mapping

from port.errors import EXIT_BAD_INPUT, PortError

__all__ = ["CommandLineError", "describe", "one_line", "fail", "read_npz", "write_npz",
           "released_net_args"]


class CommandLineError(PortError):
    """A file or value given on a command line that cannot be used (named in the message)."""


def describe(doc: str | None) -> str:
    """A module docstring's first paragraph (up to its first blank line, a usage line that
    wraps included) as plain text on one line for ``--help``, reST ``double backticks``
    dropped."""
    first = " ".join((doc or "").strip().split("\n\n")[0].split())
    return re.sub(r"``([^`]*)``", r"\1", first)


def one_line(err: BaseException) -> str:
    """An error's message on one line (a multi-line listing joined by '; ')."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())


def fail(prog: str, err: BaseException) -> int:
    """Print ``err`` as the one line a user reads (``prog: message``); the bad-input exit code.
    The one way every ``port`` command reports a user's mistake."""
    print(f"{prog}: {one_line(err)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def read_npz(path: str | os.PathLike, what: str = "input arrays") -> dict[str, Any]:
    """The arrays of an ``.npz`` (never unpickled: ``allow_pickle=False``); a missing, empty,
    truncated or other file is a :class:`CommandLineError` naming it."""
    import zipfile  # here: --help imports nothing it does not need
    import numpy as np
    try:
        if os.path.getsize(path) == 0:
            raise CommandLineError(f"{path}: empty file (0 bytes); expected an .npz of {what}")
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CommandLineError(f"{path}: one .npy array; expected an .npz of {what} (np.savez)")
        with loaded as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, PortError):
            raise
        raise CommandLineError(f"{path}: cannot read {what} ({one_line(err)})") from None


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """``arrays`` written to an ``.npz`` (``np.savez``) atomically (``port.fileio.atomic_open``:
    a temporary name in the same folder, then the rename): what ``read_npz`` reads."""
    import numpy as np  # here: --help imports nothing it does not need
    from port.fileio import atomic_open
    with atomic_open(path) as fh:
        np.savez(fh, **arrays)


def released_net_args(model: str, **kwargs: Any) -> dict[str, Any]:
    """``kwargs`` (``num_classes``, ``width_divisor``, ``num_geo_classes``; None: the released
    value) checked against the released net ``model`` before anything runs: an unknown name, an
    argument the net does not take, or a value its builder refuses is a
    :class:`CommandLineError` naming the option."""
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    from port.models import get_meta, net_spec
    meta = get_meta(model)  # an unknown name raises with the nearest names
    given = {k: v for k, v in kwargs.items() if v is not None}
    if "num_geo_classes" in given and len(meta.num_classes) < 2:
        raise CommandLineError(f"--num-geo-classes: {meta.name} has no geometric head (SIFT Flow's "
                               f"nets have)")
    try:
        net_spec(meta.name, "deploy", **given)
    except ValueError as err:  # the builder's own argument checks (nets.py)
        if isinstance(err, PortError):
            raise
        option = next((f"--{k.replace('_', '-')} {v}" for k, v in given.items() if k in str(err)), "")
        raise CommandLineError(f"{option + ': ' if option else ''}{err}") from None
    return given
