"""``python -m port transplant SRC.caffemodel --net DST.prototxt -o OUT.safetensors|.caffemodel
[--interp] [--seed N] [--json]``: the weights of every parameter of DST (TRAIN phase), ready to
train from, as upstream ``solve.py`` starts: Caffe's fillers (seeded), then SRC's blobs
transplanted by layer name (``surgery.transplant``: copy, coerce equal counts, refuse others,
drop what DST lacks), then, with ``--interp``, the bilinear kernel into every frozen
Deconvolution (``surgery.interp``). Prints what happened to each blob (``--json``: as JSON).

A ``.safetensors`` output holds the state-dict names of the net (``<layer>.weight``,
``<layer>.bias``); a ``.caffemodel`` is written by the project's writer (V2 layers with
``BlobShape`` blobs, as Caffe's ``Net::ToProto``) and loads in Caffe.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from port.cli import describe, fail
from port.errors import PortError

PROG = "python -m port transplant"


class TransplantCliError(PortError):
    """A command-line value that does not fit (an --input-shape, a file not found)."""



def _shape_option(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape:
        raise TransplantCliError(f"--input-shape {text!r}: expected NAME=N,C,H,W (e.g. data=1,3,500,500)")
    return name, shape


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("source", help="SRC.caffemodel (binary or HDF5; legacy V1 nets are upgraded)")
    parser.add_argument("--net", required=True, help="DST.prototxt, the net to fill (its TRAIN phase)")
    parser.add_argument("-o", "--out", required=True, help="OUT.safetensors or OUT.caffemodel")
    parser.add_argument("--interp", action="store_true",
                        help="bilinear kernels into the frozen (lr_mult: 0) Deconvolutions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random fillers (default 0)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=N,C,H,W",
                        help="shape of a Python data layer's top (default 1 x C x 500 x 500, C "
                             "from the source's first convolution or the upstream convention)")
    args = parser.parse_args(argv)
    try:
        from port.caffe import load_caffemodel, load_net
        from port.training.surgery import init_from
        from port.weights import metadata, output_kind, write_net
        out = Path(args.out)
        output_kind(out)  # an output suffix it cannot write is refused before any work
        shapes = dict(_shape_option(s) for s in args.input_shape)
        for path, what in ((args.source, "source caffemodel"), (args.net, "destination net")):
            if not Path(path).is_file():
                raise TransplantCliError(f"{path}: {what} not found")
        src, dst = load_caffemodel(args.source), load_net(args.net)
        net, report = init_from(dst, src, seed=args.seed, do_interp=args.interp, input_shapes=shapes)
        write_net(net, out, metadata(source_name=Path(args.source).name, net_name=net.net_name,
                                     transplant=json.dumps(report.as_dict())))
    except (PortError, OSError) as err:
        return fail(PROG, err)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print("\n".join(report.lines()))
        counts = {k: len(v) for k, v in report.by_kind().items()}
        print(f"wrote {out}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
