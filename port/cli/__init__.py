"""Command lines of ``python -m port``: one module per subcommand, each with ``main(argv) -> int``.

Conventions every command follows: the file a command works on is its positional argument, a
net definition is always ``--net NET.prototxt`` (a released net by name: ``--model NAME``),
bad input prints one line naming the file, layer or blob and exits 1
(``port.errors.EXIT_BAD_INPUT``), a usage error exits 2 (argparse's, ``EXIT_USAGE``).
"""
from __future__ import annotations

import re

__all__ = ["describe"]


def describe(doc: str | None) -> str:
    """A module docstring's first line as plain text for ``--help`` (reST ``double
    backticks`` dropped)."""
    first = (doc or "").strip().split("\n")[0]
    return re.sub(r"``([^`]*)``", r"\1", first)
