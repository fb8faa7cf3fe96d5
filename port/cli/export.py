"""``python -m port export W.safetensors --net NET.prototxt -o W.caffemodel [--phase P]``: weights
for Caffe users, the inverse of ``python -m port convert``.

The safetensors holds one tensor per Caffe parameter blob in the builder's / engine's names
(``<layer>.weight`` blob 0, ``<layer>.bias`` blob 1) and Caffe's blob shapes (what ``convert``,
``transplant`` and ``reproduce train`` write). They are loaded strictly into the net of
NET.prototxt (phase ``--phase``, default TEST: every parameter filled, every tensor used, equal
shapes), then written by the project's writer (``port.caffe.write_caffemodel``, atomic) as
Caffe's ``Net::ToProto`` saves a net: the phase's V2 layer definitions, each parameterised
layer's blobs with a ``BlobShape``. Caffe's ``copy_from`` / ``CopyTrainedLayersFrom`` loads it by
layer name.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from port.cli import describe
from port.errors import EXIT_BAD_INPUT, PortError

PROG = "python -m port export"


class ExportError(PortError):
    """An export whose files or options do not fit (named in the message)."""


def export(weights: str | Path, net_path: str | Path, out: str | Path, phase: str = "TEST") -> Path:
    """Write ``weights`` (safetensors) as a caffemodel of ``net_path``'s ``phase`` at ``out``."""
    from port.caffe import load_net
    from port.cli.solve import load_weights_into
    from port.cli.transplant import write_weights
    from port.net.engine import CaffeNet
    from port.training.surgery import data_shapes
    weights, net_path, out = Path(weights), Path(net_path), Path(out)
    if weights.suffix != ".safetensors":
        raise ExportError(f"{weights}: export reads a .safetensors (a caffemodel is Caffe's already)")
    if out.suffix != ".caffemodel":
        raise ExportError(f"{out}: the output must end in .caffemodel")
    if not net_path.is_file():
        raise ExportError(f"{net_path}: net prototxt not found")
    netdef = load_net(net_path)
    net = CaffeNet(netdef, phase, input_shapes=data_shapes(netdef.for_phase(phase)))
    load_weights_into(net, str(weights))
    write_weights(net, out, {})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("weights", help="W.safetensors (builder / engine parameter names)")
    parser.add_argument("--net", required=True, help="NET.prototxt whose layers the weights fill")
    parser.add_argument("-o", "--out", required=True, help="W.caffemodel to write")
    parser.add_argument("--phase", choices=("TEST", "TRAIN"), default="TEST",
                        help="the net's phase to write (default TEST)")
    args = parser.parse_args(argv)
    try:
        out = export(args.weights, args.net, args.out, args.phase)
    except (PortError, OSError) as err:
        text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"{PROG}: {text}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
