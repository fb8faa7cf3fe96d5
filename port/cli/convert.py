"""``python -m port convert WEIGHTS.caffemodel|.h5 [--net NET.prototxt] [-o OUT.safetensors] [--model NAME]``.

Converts a caffemodel into a ``.safetensors`` strictly (:func:`port.convert.convert`): the net
comes from ``--net`` or, without it, from the definitions a binary caffemodel stores; every
blob must fill the net's parameters exactly. The report names the released net (``--model``)
the weights fit, and says what was not checked. Without ``-o`` the file goes beside the
caffemodel, and the report says where.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from port.cli import describe, fail
from port.errors import PortError

PROG = "python -m port convert"


class _OldName(argparse.Action):
    """An option's former name: still taken, with a one-line note of the current one."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{PROG}: note: {option_string} is now --model", file=sys.stderr)
        setattr(namespace, self.dest, values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("weights", metavar="WEIGHTS", nargs="+",
                        help="the caffemodel (binary, or HDF5 .caffemodel.h5) to convert")
    parser.add_argument("--net", metavar="NET.prototxt",
                        help="the net definition (default: the one a binary caffemodel stores; "
                             "an HDF5 caffemodel needs it or a matching released net)")
    parser.add_argument("-o", "--out", help="output .safetensors (default: beside the caffemodel)")
    parser.add_argument("--model", metavar="NAME", dest="model",
                        help="the released net the weights must fit exactly (e.g. fcn8s; default: any)")
    # the name this option once had: still taken, no longer shown
    parser.add_argument("--builder", dest="model", action=_OldName, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if len(args.weights) == 2 and args.net is None and args.weights[0].endswith(".prototxt"):
        # the order this command once took: say the new one rather than guess
        parser.error(f"give the net as --net: {PROG} {args.weights[1]} --net {args.weights[0]}")
    if len(args.weights) != 1:
        parser.error("give one caffemodel (and its net with --net NET.prototxt)")
    from port.convert import convert  # after parsing: --help imports nothing else
    try:
        report = convert(args.weights[0], args.net, args.out, args.model)
    except (PortError, OSError) as err:
        return fail(PROG, err)
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
