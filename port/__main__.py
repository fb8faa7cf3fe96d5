"""``python -m port {inspect,convert,forward,selfcheck,prototxt} ...``: the port's command line.

Each subcommand lives beside the code it drives and exposes ``main(argv) -> int``; this file
only dispatches, importing lazily so ``inspect`` works without torch initialising.
"""
from __future__ import annotations

import importlib
import sys

from port.errors import EXIT_USAGE

COMMANDS = {
    "inspect": ("port.cli.inspect", "list layers, tops and blob shapes of a prototxt, caffemodel or .h5"),
    "convert": ("port.cli.convert", "convert a caffemodel (or .caffemodel.h5) to safetensors"),
    "forward": ("port.cli.forward", "run a net on input arrays and write its outputs or every blob"),
    "selfcheck": ("port.cli.selfcheck", "compare a device/precision against CPU fp32 on random weights"),
    "prototxt": ("port.cli.prototxt", "write a released net (train, test or deploy) as a Caffe prototxt"),
    "solve": ("port.cli.solve", "replay Caffe's SGD solver: K iterations, weights and losses per iteration"),
    "transplant": ("port.cli.transplant", "surgery: a caffemodel's weights into a train net (+ interp)"),
    "export": ("port.cli.export", "weights for deployment: a caffemodel (inverse of convert), ONNX or torch.export .pt2 (any image size)"),
    "fcnize": ("port.cli.fcnize", "cast a classifier (prototxt or caffemodel) into an FCN: nets, solver, init weights"),
}


def version() -> str:
    """The installed distribution's version (the source tree's when not installed)."""
    # lazy: only --version needs importlib.metadata; the dispatcher stays light
    from importlib.metadata import PackageNotFoundError, version as dist_version
    try:
        return dist_version("fcn-port")
    except PackageNotFoundError:
        return "unknown (not installed)"


def usage() -> str:
    lines = ["usage: python -m port COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return EXIT_USAGE
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"fcn-port {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"python -m port: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return EXIT_USAGE
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
