"""The one base of every error the project raises on a user's input.

A command line (``python -m port ...``, ``python -m reproduce ...``) catches :class:`PortError`
and prints its message as one line (no traceback); anything else is a bug and keeps its
traceback. Each subclass names the file, layer, blob or argument concerned and what was
expected. It is a ``ValueError`` because every such error is a value the user gave (a file's
content, a name, a shape) that does not fit, and callers that caught ``ValueError`` keep working.
This module imports nothing, so every package can import it.
"""
from __future__ import annotations

__all__ = ["PortError", "EXIT_OK", "EXIT_BAD_INPUT", "EXIT_USAGE"]

#: The exit codes of every command line in ``port`` and ``reproduce``: 0 done; 1 bad input
#: (a file, name or value that does not fit: a :class:`PortError`); 2 a usage error (argparse's
#: own code: unknown option, missing argument). ``reproduce`` counts a dataset item it cannot
#: read as bad input (1) too, and exits 128 + N when signal N stopped it after a checkpoint.
EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2


class PortError(ValueError):
    """An input (file, name, shape, option value) that the project cannot use; ``str()`` is
    the one line to show the user."""
