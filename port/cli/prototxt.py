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

from port.cli import describe
from port.caffe.text_writer import format_text, write_prototxt
from port.errors import EXIT_BAD_INPUT, PortError
from port.models import FORMS, list_models, net_spec


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m port prototxt", description=describe(__doc__))
    parser.add_argument("model", help=f"a released net: {', '.join(list_models())}")
    parser.add_argument("--phase", choices=FORMS, default="test",
                        help="train (upstream train.prototxt), test (val/test.prototxt, the default) "
                             "or deploy (Input layer, no loss)")
    parser.add_argument("-o", "--out", help="file to write (default: print to stdout)")
    parser.add_argument("--num-classes", type=int, help="score classes (default: the released net's)")
    parser.add_argument("--num-geo-classes", type=int, help="SIFT Flow's geometric classes (default 3)")
    parser.add_argument("--width-divisor", type=int, help="divide the trunk widths (default 1)")
    args = parser.parse_args(argv)
    kwargs = {"num_classes": args.num_classes, "width_divisor": args.width_divisor}
    if args.num_geo_classes is not None:
        kwargs["num_geo_classes"] = args.num_geo_classes
    try:
        net = net_spec(args.model, args.phase, **kwargs).to_proto()
        if args.out:
            write_prototxt(args.out, net)
        else:
            sys.stdout.write(format_text(net))
    except (PortError, TypeError, ValueError, OSError) as err:
        print(f"python -m port prototxt: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.out:
        print(f"wrote the {args.phase} net of {args.model} to {args.out}")
    return 0
