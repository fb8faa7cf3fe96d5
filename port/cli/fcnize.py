"""``python -m port fcnize CLASSIFIER --classes N --stride 32|16|8 [--at-once] [--dataset voc] [--weights W.caffemodel] --out DIR``: cast a Caffe classifier into an FCN.

CLASSIFIER is a deploy prototxt or a binary caffemodel (its stored layers; legacy V1 nets are
upgraded). The casting follows :mod:`port.models.fcnize`'s rules, each read from the net: fully
connected layers become convolutions, the final classifier (and a final average pooling)
goes, a 1 x 1 scoring layer, skips of stride 16 and 8, frozen bilinear upsamplings and crops
are added, and the first convolution is padded so every input size gets a full-size score.

Writes ``DIR/train.prototxt``, ``DIR/val.prototxt``, ``DIR/deploy.prototxt`` and
``DIR/solver.prototxt`` (upstream's settings for the net); with ``--weights``, the starting
weights as upstream's ``solve.py`` makes them (transplant by layer name, fully connected
weights copied flat into the convolutions, bilinear upsamplings, scoring layers zero) as
``DIR/init.caffemodel`` (Caffe's binary format; ``solver.net.copy_from`` loads it) and
``DIR/init.safetensors``. Everything is computed before anything is written, and every file is
written atomically. Prints what was derived.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from port.cli import describe, fail
from port.errors import PortError

PROG = "python -m port fcnize"


class FcnizeCliError(PortError):
    """A file named on the command line that cannot serve (missing, or the wrong kind)."""


def _classifier(path: Path):
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    from port.caffe import is_hdf5, load_caffemodel, load_net
    from port.caffe.inspect import looks_like_text  # the one prototxt-or-caffemodel rule
    if not path.is_file():
        raise FcnizeCliError(f"{path}: classifier not found")
    if is_hdf5(path):
        raise FcnizeCliError(f"{path}: an HDF5 caffemodel stores no layer definitions; give the "
                             f"classifier's deploy prototxt (and the weights with --weights)")
    text = path.suffix in (".prototxt", ".pt", ".txt") or looks_like_text(str(path))
    return load_net(path) if text else load_caffemodel(path)


def main(argv: Sequence[str] | None = None) -> int:
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    from port.models.fcnize import DATASETS, STRIDES
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("classifier", metavar="CLASSIFIER",
                        help="the classifier: deploy .prototxt, or a binary .caffemodel (V1 or V2)")
    parser.add_argument("--classes", type=int, required=True, help="score classes (VOC: 21)")
    parser.add_argument("--stride", type=int, choices=STRIDES, default=32,
                        help="FCN-32s (default), -16s or -8s: the skips fused")
    parser.add_argument("--at-once", action="store_true",
                        help="the skips scaled as voc-fcn8s-atonce (scale_pool4 0.01, scale_pool3 0.0001)")
    parser.add_argument("--dataset", choices=DATASETS,
                        help="upstream's Python data layers (default: an Input layer of data and label)")
    parser.add_argument("--weights", metavar="W.caffemodel",
                        help="the classifier's weights: write DIR/init.caffemodel and DIR/init.safetensors")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    parser.add_argument("--pad", type=int, help="pad of the first convolution (default: the padding rule)")
    parser.add_argument("--input-size", type=int, metavar="N",
                        help="the classifier's input side, where it states none (sizes the cast fc layers)")
    parser.add_argument("--data-root", default="..",
                        help="where the data layers find data/ (default ..; voc-fcn16s has ../..)")
    parser.add_argument("--normalize-loss", action="store_true",
                        help="average the loss over valid pixels, with voc-fcn-alexnet's solver")
    parser.add_argument("--classifier-param", action="store_true",
                        help="keep the classifier's param {} as written, none where it has none "
                             "(voc-fcn-alexnet), instead of upstream's lr_mult 1/2, decay_mult 1/0")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random fillers (default 0)")
    args = parser.parse_args(argv)
    if args.at_once and args.stride == 32:
        parser.error("--at-once scales the skips: give --stride 16 or 8")
    try:
        written = run(args)
    except (PortError, OSError) as err:
        return fail(PROG, err)
    print("\n".join(written))
    return 0


def run(args: argparse.Namespace) -> list[str]:
    """Cast, write every file; the lines to print."""
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    from port.caffe import load_caffemodel
    from port.caffe.text_writer import format_text
    from port.fileio import write_text_atomic
    from port.models.fcnize import cast, recipe, solver
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FcnizeCliError(f"{out}: exists and is not a folder")
    classifier = _classifier(Path(args.classifier))
    weights = None
    if args.weights:
        if not Path(args.weights).is_file():
            raise FcnizeCliError(f"{args.weights}: weights not found")
        weights = load_caffemodel(args.weights)
    casting = cast(classifier, args.classes, args.stride, at_once=args.at_once, dataset=args.dataset,
                   data_root=args.data_root, pad=args.pad, normalize_loss=args.normalize_loss,
                   learned_param=not args.classifier_param, input_size=args.input_size, weights=weights)
    texts = {f"{form}.prototxt": format_text(casting.net(form).to_proto()) for form in ("train", "val", "deploy")}
    texts["solver.prototxt"] = f"# upstream {recipe(casting)}/solver.prototxt\n" + format_text(solver(casting))
    init = None
    if weights is not None:
        init = _init(casting, texts["train.prototxt"], weights, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        write_text_atomic(out / name, text)
    lines = casting.describe() + [f"wrote {out / name}" for name in texts]
    if init is not None:
        lines += _write_init(init, out, Path(args.weights), casting)
    return lines


def _init(casting, train_text: str, weights, seed: int):
    """The TRAIN net started as upstream's solve.py starts it, and its transplant report."""
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    from port.caffe import parse_text
    from port.caffe.net import netdef_from_message
    from port.training.surgery import init_from
    train = netdef_from_message(parse_text(train_text), "train.prototxt")
    return init_from(train, weights, seed=seed, do_interp=True, require=[l.name for l in casting.layers])


def _write_init(init, out: Path, weights: Path, casting) -> list[str]:
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    from port import weights as fmt
    net, report = init
    metadata = fmt.metadata(source_name=weights.name, source_sha256=fmt.sha256_file(weights),
                            net_name="fcnize", transplant=json.dumps(report.as_dict()))
    fmt.write_net(net, out / "init.caffemodel")
    fmt.write_net(net, out / "init.safetensors", metadata)
    counts = {k: len(v) for k, v in report.by_kind().items()}
    return [f"wrote {out / 'init.caffemodel'} and {out / 'init.safetensors'}: "
            + ", ".join(f"{n} {k}" for k, n in counts.items())]


if __name__ == "__main__":
    sys.exit(main())
