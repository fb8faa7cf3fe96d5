"""``python -m port export W.safetensors (--net NET.prototxt | --model NAME [--width-divisor N]) -o W.caffemodel [--phase P]``: weights for Caffe users, the inverse of ``python -m port convert``.

The safetensors holds one tensor per Caffe parameter blob in the builder's / engine's names
(``<layer>.weight`` blob 0, ``<layer>.bias`` blob 1) and Caffe's blob shapes (what ``convert``,
``transplant`` and ``reproduce train`` write). They are loaded strictly into the net of
NET.prototxt, or of the released net NAME (its ``test`` or ``train`` form, at the width and
classes the file records unless ``--width-divisor`` says), in phase ``--phase`` (default TEST:
every parameter filled, every tensor used, equal shapes), then written by the project's writer
(``port.weights.write_net``, atomic) as Caffe's ``Net::ToProto`` saves a net: the phase's V2
layer definitions, each parameterised layer's blobs with a ``BlobShape``. Caffe's
``copy_from`` / ``CopyTrainedLayersFrom`` loads it by layer name.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping, Sequence

from port.cli import describe, fail
from port.errors import PortError

PROG = "python -m port export"


class ExportError(PortError):
    """An export whose files or options do not fit (named in the message)."""


def fit_hint(meta: Mapping[str, str]) -> str:
    """What the weights' metadata says they are for, as the options to pass."""
    from port.weights import BUILDER, builder_kwargs
    builder, width = meta.get(BUILDER, ""), builder_kwargs(meta).get("width_divisor")
    if not builder:
        return f"the weights record --width-divisor {width}" if width not in (None, 1) else ""
    option = f"--model {builder}" + (f" --width-divisor {width}" if width not in (None, 1) else "")
    return f"they are weights of {builder}" + (f" at --width-divisor {width}" if width else "") + f": pass {option}"


def export(weights: str | Path, net_path: str | Path | None, out: str | Path, phase: str = "TEST", *,
           model: str | None = None, width_divisor: int | None = None) -> Path:
    """Write ``weights`` (safetensors) as a caffemodel of ``phase`` at ``out``: the net of
    ``net_path`` (a prototxt) or of the released net ``model``."""
    from port.caffe import load_net
    from port.load import build_net
    from port.weights import kind_of, load_into, output_kind, read_metadata, resolve_kwargs, write_net
    weights, out = Path(weights), Path(out)
    if kind_of(weights) != "safetensors":
        raise ExportError(f"{weights}: export reads a .safetensors (a caffemodel is Caffe's already)")
    output_kind(out, (".caffemodel",))
    meta = read_metadata(weights)
    if model is not None:
        from port.models import get_meta, net_spec
        released = get_meta(model)  # an unknown name raises with the nearest names
        defaults = {"num_classes": released.num_classes[0], "width_divisor": 1}
        if len(released.num_classes) > 1:
            defaults["num_geo_classes"] = released.num_classes[1]
        requested = {k: None for k in defaults} | {"width_divisor": width_divisor}
        kwargs = resolve_kwargs(weights, released.name, requested, defaults)
        netdef = net_spec(released.name, "train" if phase == "TRAIN" else "test", **kwargs).netdef()
    else:
        if net_path is None or not Path(net_path).is_file():
            raise ExportError(f"{net_path}: net prototxt not found")
        netdef = load_net(net_path)
    net = build_net(netdef, phase)
    load_into(net, weights, hint=fit_hint(meta))
    return write_net(net, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("weights", help="W.safetensors (builder / engine parameter names)")
    net = parser.add_mutually_exclusive_group(required=True)
    net.add_argument("--net", metavar="NET.prototxt", help="the net definition whose layers the weights fill")
    net.add_argument("--model", metavar="NAME", help="a released net by name (e.g. fcn8s): its test (or train) net")
    parser.add_argument("--width-divisor", type=int, metavar="N",
                        help="with --model: the net's width divisor (default: the one the weights record)")
    parser.add_argument("-o", "--out", required=True, help="W.caffemodel to write")
    parser.add_argument("--phase", choices=("TEST", "TRAIN"), default="TEST",
                        help="the net's phase to write (default TEST)")
    args = parser.parse_args(argv)
    if args.width_divisor is not None and args.model is None:
        parser.error("--width-divisor goes with --model NAME (a prototxt has its own widths)")
    try:
        out = export(args.weights, args.net, args.out, args.phase, model=args.model,
                     width_divisor=args.width_divisor)
    except (PortError, OSError) as err:
        return fail(PROG, err)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
