"""``python -m port convert WEIGHTS.caffemodel|.h5 [--net NET.prototxt] [-o OUT.safetensors] [--builder NAME]``.

Converts a caffemodel into a ``.safetensors`` strictly (:func:`port.convert.convert`): the net
comes from ``--net`` or, without it, from the definitions a binary caffemodel stores; every
blob must fill the net's parameters exactly. The report names the released net (builder) the
weights fit, and says what was not checked.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from port.cli import describe
from port.convert import convert
from port.errors import EXIT_BAD_INPUT, PortError

PROG = "python -m port convert"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("weights", metavar="WEIGHTS", nargs="+",
                        help="the caffemodel (binary, or HDF5 .caffemodel.h5) to convert")
    parser.add_argument("--net", metavar="NET.prototxt",
                        help="the net definition (default: the one a binary caffemodel stores; "
                             "an HDF5 caffemodel needs it or a matching builder)")
    parser.add_argument("-o", "--out", help="output .safetensors (default: beside the caffemodel)")
    parser.add_argument("--builder", metavar="NAME",
                        help="the released net the weights must fit exactly (e.g. fcn8s; default: any)")
    args = parser.parse_args(argv)
    if len(args.weights) == 2 and args.net is None and args.weights[0].endswith(".prototxt"):
        # the order this command once took: say the new one rather than guess
        parser.error(f"give the net as --net: {PROG} {args.weights[1]} --net {args.weights[0]}")
    if len(args.weights) != 1:
        parser.error("give one caffemodel (and its net with --net NET.prototxt)")
    try:
        report = convert(args.weights[0], args.net, args.out, args.builder)
    except (PortError, OSError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report.summary())
    return 0
