"""``python -m port forward WEIGHTS --net NET.prototxt|--model NAME --inputs IN.npz --out OUT.npz [--blobs all]``.

Runs a net on given input arrays and writes its outputs (or every named blob, as Caffe holds
it after ``Net::Forward``) to an ``.npz``: a user's tool for checking the port against their
own Caffe. The net is a prototxt (``--net``, run by :class:`port.net.engine.CaffeNet`) or a
released net by name (``--model fcn8s``, see ``port.models.list_models()``); ``WEIGHTS`` is a
caffemodel (binary or HDF5) or a converted ``.safetensors``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from port.cli import describe, fail, read_npz, write_npz
from port.errors import PortError

PROG = "python -m port forward"


class ForwardError(PortError):
    """Inputs, net or weights that do not fit together (named in the message)."""


def check_out(path: str | os.PathLike) -> None:
    """Refuse an output whose folder does not exist (rather than making folders a typo
    names), before any work is done."""
    folder = Path(path).absolute().parent
    if not folder.is_dir():
        raise ForwardError(f"{path}: folder {folder} does not exist")


def _graph_net(prototxt: str, weights: str) -> Any:
    """:class:`CaffeNet` of ``prototxt`` filled from ``weights``. Sized by the weights (a data
    layer's channels from the convolution reading it), not by the arrays: an input of the wrong
    shape is then the input's error, named so."""
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    from port.load import load_net_and_weights
    return load_net_and_weights(prototxt, weights)[0]


def _check_inputs(names: Sequence[str], arrays: Mapping[str, Any], source: str) -> None:
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ForwardError(f"{source}: the net's inputs are {list(names)}; missing {missing} "
                           f"(arrays given: {sorted(arrays)})")


def run(net: str, weights: str, arrays: Mapping[str, Any], *, all_blobs: bool = False,
        device: str = "cpu") -> dict[str, Any]:
    """Run ``net`` with ``weights`` on ``arrays``; the outputs (or every blob) as arrays."""
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    import numpy as np
    import torch
    from port.models import get_model
    if Path(net).is_file():
        model = _graph_net(net, weights)
    elif net.endswith(".prototxt"):
        raise ForwardError(f"{net}: prototxt not found")
    else:
        model = get_model(net, weights=weights)  # an unknown name raises, with the nearest names
    names = model.input_names
    _check_inputs(names, arrays, net)
    model = model.to(device).eval()
    inputs = {n: torch.from_numpy(np.ascontiguousarray(arrays[n], dtype=np.float32)).to(device)
              for n in names}
    with torch.no_grad():
        result = model(**inputs, return_blobs=all_blobs)
    if isinstance(result, torch.Tensor):
        result = {model.meta.outputs[0]: result}
    return {k: v.detach().cpu().numpy() for k, v in result.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of :func:`run`."""
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("weights", metavar="WEIGHTS", help="WEIGHTS.caffemodel, .caffemodel.h5 or .safetensors")
    net = parser.add_mutually_exclusive_group(required=True)
    net.add_argument("--net", metavar="NET.prototxt", help="the net definition to run")
    net.add_argument("--model", metavar="NAME", help="a released net by name (e.g. fcn8s), for its builder")
    parser.add_argument("--inputs", required=True, help=".npz with one array per input blob")
    parser.add_argument("--out", required=True, help=".npz to write")
    parser.add_argument("--blobs", choices=("outputs", "all"), default="outputs",
                        help="write the outputs (default) or every named blob")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...; default cpu)")
    args = parser.parse_args(argv)
    from port.run.devices import check_device  # after parsing: --help imports nothing else
    try:
        check_device(args.device)
        check_out(args.out)
        if args.net is not None and not Path(args.net).is_file():
            raise ForwardError(f"{args.net}: prototxt not found")
        arrays = run(args.net or args.model, args.weights, read_npz(args.inputs, "input arrays"),
                     all_blobs=args.blobs == "all", device=args.device)
        write_npz(args.out, arrays)
    except (PortError, OSError) as err:
        return fail(PROG, err)
    print(f"wrote {len(arrays)} array{'s' if len(arrays) != 1 else ''} to {args.out}: " + ", ".join(
        f"{k} {tuple(v.shape)}" for k, v in arrays.items()))
    return 0
