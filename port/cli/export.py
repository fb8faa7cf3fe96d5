"""``python -m port export WEIGHTS (--net NET.prototxt | --model NAME [--width-divisor N]) -o OUT [--format caffemodel|onnx|pt2] [--phase P]``: a net's weights for deployment: a caffemodel for Caffe (the inverse of ``python -m port convert``), an ONNX file, or a saved ``torch.export`` ExportedProgram (``.pt2``).

The format is ``--format``'s, else told by OUT's suffix (``.caffemodel``, ``.onnx``, ``.pt2``).
Caffemodel: WEIGHTS is a safetensors (one tensor per Caffe parameter blob, ``<layer>.weight``
blob 0, ``<layer>.bias`` blob 1, in Caffe's blob shapes: what ``convert``, ``transplant`` and
``reproduce train`` write), loaded strictly into the net of NET.prototxt, or of the released
net NAME (its ``test`` or ``train`` form, at the width and classes the file records unless
``--width-divisor`` says), in phase ``--phase`` (default TEST), then written as Caffe's
``Net::ToProto`` saves a net; Caffe's ``copy_from`` loads it by layer name.
ONNX and pt2: WEIGHTS is any weights file (caffemodel or safetensors), loaded strictly into
the TEST net (NAME's deploy net, or NET.prototxt's, which must be a deploy net: an Input
layer, no loss); the file takes every input height and width from the smallest the net takes
on, batch 1 (``port.export``; ONNX needs ``pip install 'fcn-port[export]'``).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from port.cli import describe, fail
from port.errors import PortError

PROG = "python -m port export"
FORMATS = ("caffemodel", "onnx", "pt2")  # port.export.FORMATS, without importing torch for --help


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("weights", help="the weights: W.safetensors (a caffemodel too for onnx and pt2)")
    net = parser.add_mutually_exclusive_group(required=True)
    net.add_argument("--net", metavar="NET.prototxt", help="the net definition whose layers the weights fill")
    net.add_argument("--model", metavar="NAME", help="a released net by name (e.g. fcn8s)")
    parser.add_argument("--width-divisor", type=int, metavar="N",
                        help="with --model: the net's width divisor (default: the one the weights record)")
    parser.add_argument("-o", "--out", required=True, help="the file to write: OUT.caffemodel, OUT.onnx or OUT.pt2")
    parser.add_argument("--format", choices=FORMATS, help="what to write (default: told by OUT's suffix)")
    parser.add_argument("--phase", choices=("TEST", "TRAIN"), default="TEST",
                        help="caffemodel: the net's phase to write (default TEST; onnx and pt2 are TEST)")
    args = parser.parse_args(argv)
    if args.width_divisor is not None and args.model is None:
        parser.error("--width-divisor goes with --model NAME (a prototxt has its own widths)")
    if args.phase != "TEST" and args.format in ("onnx", "pt2"):
        parser.error(f"--format {args.format} exports the TEST net (--phase goes with caffemodel)")
    try:
        from port.export import export
        out = export(args.weights, args.out, args.format, net_path=args.net, model=args.model,
                     width_divisor=args.width_divisor, phase=args.phase)
    except (PortError, OSError) as err:
        return fail(PROG, err)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
