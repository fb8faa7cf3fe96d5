"""``python -m port forward NET WEIGHTS --inputs IN.npz --out OUT.npz [--blobs all] [--device D]``.

Runs a net on given input arrays and writes its outputs (or every named blob, as Caffe holds
it after ``Net::Forward``) to an ``.npz``: a user's tool for checking the port against their
own Caffe. ``NET`` is a prototxt (built generically by :class:`port.net.engine.CaffeNet`) or a
family model name (``fcn8s``, see ``port.models.list_models()``); ``WEIGHTS`` is a caffemodel
(binary or HDF5) or a converted ``.safetensors``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from port.caffe import CaffeFormatError, load_net
from port.fileio import atomic_open
from port.run.devices import device_usable
from port.net.engine import BlobMismatchError, CaffeNet
from port.net.layers import INPUT_LAYER_TYPES, CaffeGraphError
from port.load import load_net_and_weights
from port.models import WeightsError, get_builder, get_model, list_models
from port.net.ops import CaffeSemanticsError

SAFETENSORS_SUFFIX = ".safetensors"


class ForwardError(ValueError):
    """Inputs, net or weights that do not fit together (named in the message)."""


def read_inputs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (never unpickled: ``allow_pickle=False``)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as err:
        raise ForwardError(f"{path}: cannot read input arrays ({err})") from err


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to an ``.npz`` atomically (temporary name, then rename)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        np.savez(fh, **arrays)


def _graph_net(prototxt: str, weights: str, arrays: Mapping[str, np.ndarray]) -> CaffeNet:
    """:class:`CaffeNet` of ``prototxt`` sized by the given inputs, filled from ``weights``."""
    net = load_net(prototxt).for_phase("TEST")
    input_tops = [t for layer in net.layers if layer.type in INPUT_LAYER_TYPES for t in layer.top]
    names = list(dict.fromkeys(list(net.inputs) + input_tops))
    _check_inputs(names, arrays, prototxt)
    shapes = {k: v.shape for k, v in arrays.items() if k in names}
    model, _ = load_net_and_weights(prototxt, weights, input_shapes=shapes)
    return model


def _check_inputs(names: Sequence[str], arrays: Mapping[str, np.ndarray], source: str) -> None:
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ForwardError(f"{source}: the net's inputs are {list(names)}; missing {missing} "
                           f"(arrays given: {sorted(arrays)})")


def run(net: str, weights: str, arrays: Mapping[str, np.ndarray], *, all_blobs: bool = False,
        device: str = "cpu") -> dict[str, np.ndarray]:
    """Run ``net`` with ``weights`` on ``arrays``; the outputs (or every blob) as arrays."""
    if Path(net).is_file():
        model = _graph_net(net, weights, arrays)
        names = model.input_names
    elif net in list_models():
        model = get_model(net, weights=weights)
        names = model.input_names
    else:
        get_builder(net)  # raises with the nearest names
        raise ForwardError(f"{net}: neither a prototxt nor a model name")
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
    parser = argparse.ArgumentParser(prog="python -m port forward", description=__doc__.split("\n")[0])
    parser.add_argument("net", help="NET.prototxt or a family model name (e.g. fcn8s)")
    parser.add_argument("weights", help="WEIGHTS.caffemodel, .caffemodel.h5 or .safetensors")
    parser.add_argument("--inputs", required=True, help=".npz with one array per input blob")
    parser.add_argument("--out", required=True, help=".npz to write")
    parser.add_argument("--blobs", choices=("outputs", "all"), default="outputs",
                        help="write the outputs (default) or every named blob")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    args = parser.parse_args(argv)
    if not device_usable(args.device, "python -m port forward"):
        return 2
    try:
        arrays = run(args.net, args.weights, read_inputs(args.inputs), all_blobs=args.blobs == "all",
                     device=args.device)
    except (ForwardError, WeightsError, CaffeFormatError, CaffeGraphError, BlobMismatchError,
            CaffeSemanticsError, KeyError, OSError) as err:
        print(f"python -m port forward: {err}", file=sys.stderr)
        return 1
    write_npz(args.out, arrays)
    print(f"wrote {len(arrays)} arrays to {args.out}: " + ", ".join(
        f"{k} {tuple(v.shape)}" for k, v in arrays.items()))
    return 0
