"""Command lines of ``python -m port``: one module per subcommand, each with ``main(argv) -> int``.

Conventions every command follows: the file a command works on is its positional argument, a
net definition is always ``--net NET.prototxt`` (a released net by name: ``--model NAME``),
bad input prints one line naming the file, layer or blob and exits 1
(``port.errors.EXIT_BAD_INPUT``), a usage error exits 2 (argparse's, ``EXIT_USAGE``).
"""
from __future__ import annotations

import re
import sys

from port.errors import EXIT_BAD_INPUT

__all__ = ["describe", "one_line", "fail"]


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
    """Print ``err`` as the one line a user reads (``prog: message``); the bad-input exit code."""
    print(f"{prog}: {one_line(err)}", file=sys.stderr)
    return EXIT_BAD_INPUT
