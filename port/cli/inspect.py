"""``python -m port inspect FILE [--net NET.prototxt] [--json]``: what a Caffe file holds.

One line per layer: name, type, bottoms -> tops, blob shapes, parameter count and bytes (the
rows of :func:`port.caffe.inspect.summary`); for a Deconvolution with weights, whether they are
the bilinear upsampling kernel FCN's ``surgery.interp`` fills (``port.net.bilinear.is_bilinear``,
numpy: listing imports no torch). An HDF5 snapshot stores no layer definitions; ``--net`` supplies them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Iterable

from port.cli import CommandLineError, describe, fail
from port.errors import EXIT_USAGE, PortError

if TYPE_CHECKING:  # the readers (numpy) are imported once the arguments are parsed: --help needs none
    import numpy as np
    from port.caffe import LayerDef
    from port.caffe.inspect import Annotator

PROG = "python -m port inspect"
HDF5_NOTE = ("note: an HDF5 snapshot stores only blobs, no layer definitions (type, bottoms, "
             "tops); add --net NET.prototxt to show them")
_BILINEAR_WORDS = {True: "bilinear", False: "not bilinear"}


def bilinear_annotator() -> Annotator:
    """An annotator giving a Deconvolution's weight (blob 0) its ``bilinear`` verdict
    (``port.net.bilinear.is_bilinear``: numpy, no torch)."""
    from port.net.bilinear import is_bilinear

    def annotate(layer: LayerDef, index: int, blob: np.ndarray) -> dict[str, Any] | None:
        if layer.type != "Deconvolution" or index != 0:
            return None
        return {"bilinear": bool(is_bilinear(blob))}
    return annotate


def _fmt_line(r: dict[str, Any], name_width: int = 24, type_width: int = 16) -> str:
    line = (f"{r['name']:<{name_width}} {r['type'] or '?':<{type_width}} "
            f"{','.join(r['bottom']) or '-'} -> {','.join(r['top']) or '-'}")
    if r["blobs"]:
        shapes = " ".join("x".join(map(str, s)) or "scalar" for s in r["blobs"])
        line += f"  [{shapes}]  {r['params']:,} params  {r['bytes']:,} B"
    if "bilinear" in r:
        line += "  " + _BILINEAR_WORDS[r["bilinear"]]
    return line


def render(s: dict[str, Any]) -> Iterable[str]:
    """The human-readable listing, line by line."""
    yield f"{s['path']}: {s['format']}, net {s['name']!r}, {len(s['layers'])} layers"
    if not s["definitions"]:
        yield HDF5_NOTE
    if s["unmatched"]:
        yield f"note: no layer of --net for the file's layers: {', '.join(s['unmatched'])}"
    for k, v in s["inputs"].items():
        yield f"input {k}: {'x'.join(map(str, v)) or '?'}"
    # columns as wide as the longest name and type (auto-generated names run long)
    name_width = max([24] + [len(r["name"]) for r in s["layers"]])
    type_width = max([16] + [len(r["type"] or "?") for r in s["layers"]])
    yield from (_fmt_line(r, name_width, type_width) for r in s["layers"])
    yield (f"total: {s['params']:,} parameters, {s['bytes']:,} bytes "
           f"({s['bytes'] / 2**20:.1f} MiB)")


def _print_lines(lines: Iterable[str]) -> int:
    """Print, ending quietly when the reader goes away (``| head``), as the Python docs
    advise for SIGPIPE: point stdout at devnull so the interpreter's last flush is silent."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("file", help="a .prototxt, .caffemodel or .caffemodel.h5")
    parser.add_argument("--net", metavar="NET.prototxt",
                        help="layer definitions for an HDF5 caffemodel (it stores only blobs)")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from port.caffe import is_hdf5, load_net
    from port.caffe.inspect import summary
    try:
        if os.path.isfile(args.file) and os.path.getsize(args.file) == 0:
            raise CommandLineError(f"{args.file}: empty file (0 bytes): not a prototxt, caffemodel or .h5")
        if args.net and os.path.isfile(args.file) and not is_hdf5(args.file):
            print(f"{PROG}: --net is for an HDF5 caffemodel; {args.file} is not HDF5 "
                  "(a prototxt or binary caffemodel carries its layer definitions)", file=sys.stderr)
            return EXIT_USAGE
        net = load_net(args.net) if args.net else None
        s = summary(args.file, bilinear_annotator(), net)
    except (PortError, OSError) as err:
        return fail(PROG, err)
    return _print_lines([json.dumps(s, indent=1)] if args.json else render(s))


if __name__ == "__main__":
    sys.exit(main())
