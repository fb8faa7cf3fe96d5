"""``python -m port prototxt MODEL [--phase train|test|deploy] [-o NET.prototxt]``.

Writes a released net as a Caffe ``.prototxt``, spelled out by the builder's net
(:mod:`port.models.nets`, as upstream ``net.py`` writes it): ``train`` is upstream's
``train.prototxt`` (``trainval`` for SIFT Flow and NYUDv2), ``test`` its ``val``/``test``
prototxt, ``deploy`` the form of ``voc-fcn8s/deploy.prototxt`` (an Input layer, no loss). At
the released widths and class counts the text equals upstream's file byte for byte; Caffe reads
it as it is.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from port.cli import describe, fail, released_net_args
from port.errors import PortError

PROG = "python -m port prototxt"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("model", help="a released net, e.g. fcn8s (an unknown name lists them all)")
    parser.add_argument("--phase", default="test", metavar="{train,test,deploy}",
                        help="train (upstream train.prototxt), test (val/test.prototxt, the default) "
                             "or deploy (Input layer, no loss)")
    parser.add_argument("-o", "--out", help="file to write (default: print to stdout)")
    parser.add_argument("--num-classes", type=int, help="score classes (default: the released net's)")
    parser.add_argument("--num-geo-classes", type=int, help="SIFT Flow's geometric classes (default 3)")
    parser.add_argument("--width-divisor", type=int, help="divide the trunk widths (default 1)")
    args = parser.parse_args(argv)
    from port.caffe.text_writer import format_text, write_prototxt
    from port.models import FORMS, net_spec  # after parsing: --help imports no torch
    if args.phase not in FORMS:
        parser.error(f"argument --phase: invalid choice: {args.phase!r} (choose from {', '.join(FORMS)})")
    try:
        kwargs = released_net_args(args.model, num_classes=args.num_classes, width_divisor=args.width_divisor,
                                   num_geo_classes=args.num_geo_classes)
        net = net_spec(args.model, args.phase, **kwargs).to_proto()
        if args.out:
            write_prototxt(args.out, net)
        else:
            sys.stdout.write(format_text(net))
    except (PortError, OSError) as err:
        return fail(PROG, err)
    if args.out:
        print(f"wrote the {args.phase} net of {args.model} to {args.out}")
    return 0
