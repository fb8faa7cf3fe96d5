"""Caffemodel -> safetensors, strictly: ``python -m port convert [NET.prototxt] WEIGHTS -o OUT``.

The net comes from the prototxt or, without one, from the layer definitions a binary
caffemodel stores (an HDF5 caffemodel stores none: it needs a prototxt or a matching family
builder). The blobs fill the net's parameters as Caffe's ``Net::CopyTrainedLayersFrom`` does
(by layer name, blob by index) but strictly: every parameter filled, every blob used, shapes
equal, else one error listing each mismatch. Tensors are named ``{layer}.weight`` (blob 0) and
``{layer}.bias`` (blob 1) in Caffe's blob layouts, which is what both :class:`port.graph.CaffeNet`
and the :mod:`port.models` builders expect. The file records the source's SHA-256, the net
name, and the family builder(s) whose structure (parameter names and shapes) it matches.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from port import ops
from port.caffe import CaffeFormatError, NetDef, is_hdf5, load_caffemodel, load_net
from port.caffe.writer import atomic_open
from port.graph import BlobMismatchError, CaffeGraphError, CaffeNet
from port.models import _weights as fmt
from port.models import get_builder, get_meta, list_models
from port.models._weights import load_weights

__all__ = ["ConversionError", "ConversionReport", "convert", "load_weights", "match_builders", "main"]

#: Caffe's declared size of the deploy nets' input (voc-fcn8s/deploy.prototxt), used to size
#: the shape propagation when a Python data layer declares no shape; any size works for FCNs.
PROPAGATION_SIZE = 500
#: Channels of the upstream Python data layers' tops (voc/siftflow/nyud/pascalcontext_layers.py)
#: when no convolution reads them directly: images 3, depth and label maps 1.
DATA_LAYER_CHANNELS = {"data": 3, "color": 3, "hha": 3, "depth": 1, "label": 1, "sem": 1, "geo": 1}
#: The layers whose output count is a builder's class argument, by argument.
CLASS_LAYERS = {"num_classes": ("score_fr", "score_fr_sem", "score_frcolor"),
                "num_geo_classes": ("score_fr_geo",)}
_HASH_CHUNK = 1 << 20


class ConversionError(ValueError):
    """A caffemodel that does not convert: unreadable, or its blobs do not fill the net
    exactly (``problems`` lists each mismatch: layer, blob index, expected vs found)."""

    def __init__(self, source: str, message: str, problems: Sequence[str] = ()):
        self.source, self.problems = source, list(problems)
        lines = [f"{source}: {message}"] + [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


@dataclass
class ConversionReport:
    """What a conversion did: source and its SHA-256, output, net name, the matched builder
    (``""`` when none or ambiguous) and every structural match, the builder arguments the
    file was converted for, tensor shapes, and which deconvolutions hold bilinear kernels."""

    source: str
    source_sha256: str
    out: str
    net_name: str
    builder: str
    candidates: list[str]
    builder_kwargs: dict[str, int]
    shapes: dict[str, tuple[int, ...]]
    bilinear: dict[str, bool] = field(default_factory=dict)

    @property
    def num_parameters(self) -> int:
        return int(sum(np.prod(s) for s in self.shapes.values()))

    def summary(self) -> str:
        """A few human-readable lines for the command line."""
        match = self.builder or (f"ambiguous: {', '.join(self.candidates)}" if self.candidates else "none")
        lines = [f"converted {self.source} -> {self.out}",
                 f"  net {self.net_name!r}, {len(self.shapes)} tensors, {self.num_parameters:,} parameters",
                 f"  sha256 {self.source_sha256}", f"  builder: {match} {self.builder_kwargs or ''}"]
        lines += [f"  {layer}: {'bilinear' if ok else 'NOT bilinear'} upsampling kernel"
                  for layer, ok in self.bilinear.items()]
        return "\n".join(lines)


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- reading the blobs ------------------------------------------------------------------------
def _read(weights_path: Path, prototxt: str | os.PathLike | None) -> tuple[NetDef, NetDef | None]:
    """(the caffemodel's layers with blobs, the net definition or None when there is none)."""
    try:
        src = load_caffemodel(weights_path)
        net = load_net(prototxt) if prototxt is not None else None
    except (CaffeFormatError, OSError) as err:
        raise ConversionError(str(weights_path), f"cannot read: {err}") from err
    if net is None and not is_hdf5(weights_path):
        net = src
    return src, net


def _input_channels(net: NetDef, src: NetDef) -> dict[str, tuple[int, ...]]:
    """Shapes for the Python data layers' tops (Caffe learns them only at run time): channels
    from the convolution reading the top, else the upstream data layers' convention."""
    blobs = src.blobs()
    shapes = {}
    for layer in net.layers:
        if layer.type != "Python":
            continue
        for top in layer.top:
            channels = DATA_LAYER_CHANNELS.get(top, 1)
            for reader in net.layers:
                if reader.type == "Convolution" and reader.bottom[:1] == [top] and reader.name in blobs:
                    channels = int(blobs[reader.name][0].shape[1]) * int(reader.convolution_param.group)
                    break
            shapes[top] = (1, channels, PROPAGATION_SIZE, PROPAGATION_SIZE)
    return shapes


def _state_from_net(net: NetDef, src: NetDef, source: str) -> dict[str, torch.Tensor]:
    """Fill :class:`CaffeNet` of ``net`` from ``src`` strictly; its parameters by name."""
    try:
        graph = CaffeNet(net, "TEST", input_shapes=_input_channels(net, src))
        graph.load_blobs(src, source)
    except BlobMismatchError as err:
        raise ConversionError(source, "blobs do not fill the net's parameters", err.problems) from err
    except (CaffeGraphError, ops.CaffeSemanticsError) as err:
        raise ConversionError(source, f"cannot build the net: {err}") from err
    return {k: v.detach().contiguous() for k, v in graph.state_dict().items()}


def _state_from_blobs(src: NetDef) -> dict[str, torch.Tensor]:
    """Blobs as tensors named by index (0 weight, 1 bias), for a file without definitions."""
    state = {}
    for layer, blobs in src.blobs().items():
        if len(blobs) > len(fmt.BLOB_NAMES):
            raise ConversionError(str(src.path), f"layer {layer!r} has {len(blobs)} blobs; without "
                                  f"a prototxt only weight and bias blobs can be named")
        for name, blob in zip(fmt.BLOB_NAMES, blobs):
            state[f"{layer}.{name}"] = torch.from_numpy(np.array(blob, dtype=np.float32))
    return state


# -- matching the family ---------------------------------------------------------------------
def _meta_shapes(builder: str, **kwargs: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = get_builder(builder)(**kwargs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _infer_kwargs(builder: str, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int] | None:
    """The builder arguments ``shapes`` would need (class counts from the score layers,
    width from the first layer), or None when the names do not fit the builder."""
    released = _meta_shapes(builder)
    if set(released) != set(shapes):
        return None
    first = next(iter(released))
    width, rest = divmod(released[first][0], shapes[first][0])
    kwargs = {"width_divisor": width} if width and not rest else {"width_divisor": 0}
    for arg, layers in CLASS_LAYERS.items():
        for layer in layers:
            if f"{layer}.weight" in shapes:
                kwargs[arg] = shapes[f"{layer}.weight"][0]
                break
    return kwargs


def match_builders(shapes: Mapping[str, tuple[int, ...]], source_name: str = "") -> tuple[str, list[str], dict]:
    """``(builder, candidates, kwargs)``: every family builder whose parameter names and
    shapes equal ``shapes`` for some ``num_classes``/``width_divisor``; ``builder`` is the
    one released as ``source_name``, else the only candidate, else the only one whose
    released class count fits, else ``""`` (ambiguous)."""
    candidates, kwargs_of = [], {}
    for name in list_models():
        kwargs = _infer_kwargs(name, shapes)
        try:
            fits = kwargs is not None and _meta_shapes(name, **kwargs) == dict(shapes)
        except ValueError:  # e.g. a width that does not divide
            fits = False
        if fits:
            candidates.append(name)
            kwargs_of[name] = kwargs
    by_file = [c for c in candidates if get_meta(c).caffemodel and
               source_name in (get_meta(c).caffemodel, get_meta(c).caffemodel + ".h5")]
    by_classes = [c for c in candidates if kwargs_of[c].get("num_classes") == get_meta(c).num_classes[0]]
    unique = [group for group in (candidates, by_classes) if len(group) == 1]
    chosen = (by_file or (unique[0] if unique else [""]))[0]
    return chosen, candidates, kwargs_of.get(chosen or (candidates[0] if candidates else ""), {})


def _check_builder(builder: str, shapes: Mapping[str, tuple[int, ...]], source: str) -> dict[str, int]:
    """Strict comparison with a builder named by the caller; its inferred arguments."""
    get_builder(builder)  # unknown names raise with suggestions
    kwargs = _infer_kwargs(builder, shapes) or {}
    try:
        expected = _meta_shapes(builder, **kwargs) if kwargs else _meta_shapes(builder)
    except ValueError as err:
        raise ConversionError(source, f"does not fit builder {builder!r}: {err}") from err
    problems = [f"{k}: missing (builder expects {v})" for k, v in expected.items() if k not in shapes]
    problems += [f"{k}: not a parameter of {builder}" for k in shapes if k not in expected]
    problems += [f"{k}: shape {shapes[k]}, builder expects {v}" for k, v in expected.items()
                 if k in shapes and shapes[k] != v]
    if problems:
        raise ConversionError(source, f"does not fit builder {builder!r}", problems)
    return kwargs


# -- writing ---------------------------------------------------------------------------------
def _bilinear_report(net: NetDef | None, state: Mapping[str, torch.Tensor]) -> dict[str, bool]:
    """For each Deconvolution weight: whether it is the bilinear kernel (``ops.is_bilinear``)."""
    if net is not None:
        names = [l.name for l in net.layers if l.type == "Deconvolution"]
    else:
        names = [k[:-len(".weight")] for k in state if k.startswith("upscore") and k.endswith(".weight")]
    return {n: ops.is_bilinear(state[f"{n}.weight"]) for n in names if f"{n}.weight" in state}


def _write(out: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    from safetensors.torch import save
    payload = save({k: v.to(torch.float32).contiguous() for k, v in state.items()}, dict(metadata))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out) as fh:
        fh.write(payload)


def convert(weights_path: str | os.PathLike, prototxt: str | os.PathLike | None = None,
            out: str | os.PathLike | None = None, builder: str | None = None) -> ConversionReport:
    """Convert a caffemodel (binary or HDF5) to safetensors at ``out`` (default: beside it,
    ``.safetensors``). ``builder`` names the family model the weights must fit exactly."""
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise ConversionError(str(weights_path), "caffemodel not found")
    src, net = _read(weights_path, prototxt)
    source = str(weights_path)
    state = _state_from_net(net, src, source) if net is not None else _state_from_blobs(src)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    chosen, candidates, kwargs = match_builders(shapes, weights_path.name)
    if builder is not None:
        kwargs, chosen = _check_builder(builder, shapes, source), builder
        candidates = candidates if builder in candidates else [builder]
    if net is None and not candidates:
        raise ConversionError(source, "an HDF5 caffemodel stores no layer definitions and its blobs "
                              "match no family builder; give the net's prototxt")
    out = Path(out) if out is not None else weights_path.with_name(weights_path.name.split(".")[0] + ".safetensors")
    report = ConversionReport(source, sha256_file(weights_path), str(out),
                              (net.name if net is not None else "") or src.name or "",
                              chosen, candidates, kwargs, shapes, _bilinear_report(net, state))
    _write(out, state, {fmt.FORMAT_KEY: fmt.FORMAT, fmt.SOURCE_SHA256: report.source_sha256,
                        fmt.SOURCE_NAME: weights_path.name, fmt.NET_NAME: report.net_name,
                        fmt.BUILDER: chosen, fmt.CANDIDATES: ",".join(candidates),
                        fmt.BUILDER_KWARGS: json.dumps(kwargs if candidates else {}, sort_keys=True)})
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m port convert [NET.prototxt] WEIGHTS.caffemodel|.h5 -o OUT.safetensors``."""
    parser = argparse.ArgumentParser(prog="python -m port convert", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE", help="[NET.prototxt] WEIGHTS.caffemodel|.h5")
    parser.add_argument("-o", "--out", help="output .safetensors (default: beside the caffemodel)")
    parser.add_argument("--builder", help="family builder the weights must fit (e.g. fcn8s)")
    args = parser.parse_args(argv)
    if len(args.files) > 2:
        parser.error("give at most a prototxt and a caffemodel")
    prototxt, weights = (args.files if len(args.files) == 2 else (None, args.files[0]))
    try:
        report = convert(weights, prototxt, args.out, args.builder)
    except (ConversionError, KeyError, ValueError) as err:
        print(f"python -m port convert: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
