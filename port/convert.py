"""Caffemodel -> safetensors, strictly (the command line: ``python -m port convert WEIGHTS [--net NET.prototxt]``).

The net comes from the prototxt or, without one, from the layer definitions a binary
caffemodel stores (an HDF5 caffemodel stores none: it needs a prototxt or a matching family
builder). The blobs fill the net's parameters as Caffe's ``Net::CopyTrainedLayersFrom`` does
(by layer name, blob by index) but strictly: every parameter filled, every blob used, shapes
equal, else one error listing each mismatch. Tensors are named ``{layer}.weight`` (blob 0) and
``{layer}.bias`` (blob 1) in Caffe's blob layouts, which is what both :class:`port.net.engine.CaffeNet`
and the :mod:`port.models` builders expect. The file records the source's SHA-256, the net
name, and the family builder(s) whose structure (parameter names and shapes) it matches.

No torch: the net's parameter shapes come from Caffe's shape rules
(:func:`port.net.shapes.net_shapes`, what the engine sizes a net by) and each released net's
from its definition (:func:`port.models.released.deploy_netdef`), so converting reads the
file, checks it and writes it without importing torch. Only a builder a user registered
outside the released ones is built (on the meta device, importing torch) to learn its shapes.
"""
from __future__ import annotations

import functools
import gc
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from port.net import coord_map
from port.caffe import CaffeFormatError, NetDef, is_hdf5, load_caffemodel, load_net
from port.errors import PortError
from port.net.bilinear import is_bilinear
from port.net.shapes import (CaffeGraphError, CaffeSemanticsError, check_blobs, data_input_shapes, net_shapes,
                             net_state)
from port.models._registry import get_builder, get_meta, is_released, list_models  # no torch
from port.models.released import deploy_netdef
from port import weights as fmt
from port.weights import (WeightsMismatchError, check_fit, default_output, load_weights, problems_summary,
                          safetensors_header, sha256_file, write_safetensors)

__all__ = ["ConversionError", "ConversionReport", "convert", "load_weights", "match_builders",
           "safetensors_header", "sha256_file", "write_safetensors"]

#: The layers whose output count is a builder's class argument, by argument.
CLASS_LAYERS = {"num_classes": ("score_fr", "score_fr_sem", "score_frcolor"),
                "num_geo_classes": ("score_fr_geo",)}
_FLOAT32 = np.dtype("<f4")


class ConversionError(PortError):
    """A caffemodel that does not convert: unreadable, or its blobs do not fill the net
    exactly (``problems`` lists each mismatch: layer, blob index, expected vs found)."""

    def __init__(self, source: str, message: str, problems: Sequence[str] = (), hint: str = ""):
        self.source, self.problems, self.hint = source, list(problems), hint
        text = f"{source}: {message}"
        if self.problems:  # one line, as port.weights lists a mismatch (all in .problems)
            text += f" ({problems_summary(self.problems)})"
        super().__init__(text + (f"; {hint}" if hint else ""))


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
    notes: list[str] = field(default_factory=list)

    @property
    def num_parameters(self) -> int:
        return int(sum(np.prod(s) for s in self.shapes.values()))

    def summary(self) -> str:
        """A few human-readable lines for the command line."""
        match = self.builder or (f"ambiguous: {', '.join(self.candidates)}" if self.candidates else "none")
        lines = [f"converted {self.source} -> {self.out}",
                 f"  net {self.net_name!r}, {len(self.shapes)} tensors, {self.num_parameters:,} parameters",
                 f"  sha256 {self.source_sha256}", f"  model: {match} {self.builder_kwargs or ''}"]
        lines += [f"  {layer}: {'bilinear' if ok else 'NOT bilinear'} upsampling kernel"
                  for layer, ok in self.bilinear.items()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


# -- reading the blobs ------------------------------------------------------------------------
def _read_file(reader: Callable[[Path], NetDef], path: Path) -> NetDef:
    """``reader(path)``; a failure as a :class:`ConversionError` naming ``path`` once."""
    try:
        return reader(path)
    except CaffeFormatError as err:  # its str() starts with the path: keep only the rest
        raise ConversionError(str(path), f"cannot read: {err.where}: {err.field}: {err.message}") from err
    except OSError as err:
        raise ConversionError(str(path), f"cannot read: {err.strerror or err}") from err


def _read(weights_path: Path, prototxt: Path | None) -> tuple[NetDef, NetDef | None]:
    """(the caffemodel's layers with blobs, the net definition or None when there is none);
    each file read on its own so an error names the one that failed."""
    # read-only views: the writer copies them from the file in the kernel (port.weights)
    src = _read_file(functools.partial(load_caffemodel, writable=False), weights_path)
    net = _read_file(load_net, prototxt) if prototxt is not None else None
    if net is None and not is_hdf5(weights_path):
        net = src
    return src, net


def _float32(blob: np.ndarray) -> np.ndarray:
    """``blob`` as contiguous little-endian float32: the file's own view when it is one
    already (Caffe's ``data``), a converted copy otherwise (``double_data``). A 0-axis blob (a
    Scale's ``num_axes: 0``) stays 0-d (``ascontiguousarray`` alone makes it 1-d)."""
    return np.ascontiguousarray(blob, dtype=_FLOAT32).reshape(np.shape(blob))


def _state_from_net(net: NetDef, src: NetDef, source: str) -> dict[str, np.ndarray]:
    """``src``'s blobs by parameter name, checked strictly against the parameters of ``net``
    in the TEST phase as :func:`port.load.build_net` sizes them (data layers' tops by
    :func:`port.net.shapes.data_input_shapes`): Caffe's ``Net::Init`` shape pass
    (:func:`port.net.shapes.net_shapes`, no net built) and ``CopyTrainedLayersFrom``'s check
    (:func:`port.net.shapes.check_blobs`, each mismatch listed)."""
    blobs = src.blobs()
    try:
        sized = net_shapes(net, "TEST", data_input_shapes(net.for_state(net_state(net, "TEST")), blobs))
        params = sized.named_params()
        check_blobs(params, blobs, source, f"net {sized.netdef.name!r}")  # blobs(): layers with blobs only
    except WeightsMismatchError as err:
        raise ConversionError(source, f"blobs do not fill the parameters of {err.target}", err.problems) from err
    except (CaffeGraphError, CaffeSemanticsError) as err:
        # a mistake in the definition names the file it is in (the prototxt), not the weights
        where, text = net.path or source, str(err)
        if text.startswith(f"{where}: "):
            text = text[len(where) + 2:]
        raise ConversionError(where, text) from err
    # The blobs are views of the caffemodel; a legacy 4-D blob reshapes to its parameter.
    return {f"{layer}.{name}": _float32(blob).reshape(shape)
            for layer, named in params.items()
            for (name, shape), blob in zip(named, blobs[layer])}


def undeclared_inputs(net: NetDef) -> list[str]:
    """Bottoms that no earlier layer produces and the net does not declare as an input: what a
    classifier stored as the ILSVRC caffemodels are lacks (their input shape lives in a deploy
    prototxt)."""
    known, missing = set(net.inputs), []
    for layer in net.for_phase("TEST").layers:
        missing += [b for b in layer.bottom if b not in known and b not in missing]
        known.update(layer.top)
    return missing


def _check_layer_blobs(net: NetDef, source: str) -> None:
    """What a definition allows checking without an input shape: each parameterised layer's
    blob count and the shapes its own parameters fix (Convolution/Deconvolution: outputs,
    kernel, group; InnerProduct: outputs; biases: outputs), as the layer's ``LayerSetUp``."""
    problems = []
    for layer in net.for_phase("TEST").layers:
        blobs = layer.blobs
        if layer.type in ("Convolution", "Deconvolution"):
            p, geo = layer.convolution_param, coord_map.spatial_params(layer)
            n, group, bias = int(p.num_output), int(p.group), bool(p.bias_term)
            kernel = tuple(geo["kernel"]) * (2 // len(geo["kernel"]))
        elif layer.type == "InnerProduct":
            p = layer.inner_product_param
            n, bias, kernel, group = int(p.num_output), bool(p.bias_term), None, 1
        else:
            continue
        if len(blobs) != 1 + bias:
            problems.append(f"layer {layer.name!r}: {len(blobs)} blobs, expected {1 + bias}")
            continue
        w = tuple(blobs[0].shape)
        if layer.type == "InnerProduct":
            out = w[1] if layer.inner_product_param.transpose else w[0]
            ok = len(w) == 2 and out == n
        else:
            out = w[1] * group if layer.type == "Deconvolution" else w[0]
            ok = len(w) == 4 and out == n and w[2:] == kernel
        if not ok:
            problems.append(f"layer {layer.name!r} blob 0: shape {w} does not fit num_output {n}"
                            + (f", kernel {kernel}, group {group}" if kernel else ""))
        if bias and tuple(blobs[1].shape) != (n,):
            problems.append(f"layer {layer.name!r} blob 1: shape {tuple(blobs[1].shape)}, expected ({n},)")
    if problems:
        raise ConversionError(source, "blobs do not fit the layers' parameters", problems)


def _state_from_blobs(src: NetDef) -> dict[str, np.ndarray]:
    """Blobs named by index (0 weight, 1 bias; a BatchNorm's three as the engine names them),
    for a file without definitions or without an input shape."""
    state = {}
    for layer in src.layers:
        blobs = layer.blobs
        names = fmt.blob_names(layer.type)
        if len(blobs) > len(names):
            raise ConversionError(str(src.path), f"layer {layer.name!r} has {len(blobs)} blobs; without "
                                  f"a prototxt only weight and bias blobs can be named")
        for name, blob in zip(names, blobs):
            state[f"{layer.name}.{name}"] = _float32(blob)
    return state


# -- matching the family ---------------------------------------------------------------------
def _meta_shapes(builder: str, **kwargs: int) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the net ``builder(**kwargs)`` builds: a released net's
    from its definition by Caffe's shape rules (no torch), another builder's built on the
    meta device."""
    if is_released(builder):
        return dict(_released_structure(get_meta(builder).name, tuple(sorted(kwargs.items()))))
    return dict(_structure(get_builder(builder), tuple(sorted(kwargs.items()))))


@functools.lru_cache(maxsize=256)
def _released_structure(name: str, kwargs: tuple[tuple[str, int], ...]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """:func:`_meta_shapes` of a released net, cached: the parameters of its deploy
    definition (what its builder's ``FCN`` holds: TEST phase, crops as written) by
    :func:`port.net.shapes.net_shapes`."""
    netdef = deploy_netdef(get_meta(name), **dict(kwargs))
    return tuple(net_shapes(netdef, "TEST", check_crops=False).state_shapes().items())


@functools.lru_cache(maxsize=256)
def _structure(make: Callable, kwargs: tuple[tuple[str, int], ...]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """:func:`_meta_shapes` of a builder function, cached: a build's structure depends only on
    the function and its arguments, and matching tries every builder (each build costs
    milliseconds of module construction even on meta)."""
    import torch  # only for a builder registered outside the released ones
    with torch.device("meta"):
        model = make(**dict(kwargs))
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


@contextmanager
def _gc_paused():
    """The cyclic garbage collector off for the block (back on after, if it was on).

    Matching builds every family model on meta: many short-lived objects that reference
    counting frees, whose allocations would otherwise trigger collections that each traverse
    every live object, the parsed caffemodel included (~40% of the matching time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _infer_kwargs(builder: str, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int] | None:
    """The builder arguments ``shapes`` would need (class counts from the score layers,
    width from the first layer), or None when the names do not fit the builder."""
    released = _meta_shapes(builder)
    if released.keys() != shapes.keys():
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


def _fitting_kwargs(builder: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, int] | None:
    """The arguments for which ``builder``'s parameter names and shapes equal ``shapes``, or None."""
    kwargs = _infer_kwargs(builder, shapes)
    if kwargs is None:
        return None
    try:
        # The released structure is the builder's at the arguments inferred from it (a test
        # checks this for every builder), so it needs no second build.
        fits = _meta_shapes(builder) == shapes or _meta_shapes(builder, **kwargs) == shapes
    except ValueError:  # e.g. a width that does not divide
        fits = False
    return kwargs if fits else None


def _cast(builder: str) -> bool:
    """Whether ``builder`` is a net :mod:`port.models.fcnize` casts from a shipped classifier
    (a record of the registry's own, not a user's builder)."""
    return bool(get_meta(builder).classifier) and is_released(builder)


def _may_fit(builder: str, layers: frozenset[str], released_fits: bool) -> bool:
    """False when the cast net ``builder`` cannot have parameters of exactly these ``layers``,
    told without casting (40 to 240 ms per cast net: coordinate maps, the head; the costly
    part of matching): where a released net that is not a cast fits (``released_fits``; no cast
    net's parameters are named as such a net's, which a test checks), or where the file lacks
    a Convolution of the classifier (a cast keeps every one by name, the trunk being the
    classifier's layers as written: that is how the classifier's weights transplant)."""
    if not _cast(builder):
        return True
    if released_fits:
        return False
    from port.models.classifiers import classifier_net  # no torch; parses the shipped prototxt
    trunk = classifier_net(get_meta(builder).classifier)
    return all(layer.name in layers for layer in trunk.layers if layer.type == "Convolution")


def match_builders(shapes: Mapping[str, tuple[int, ...]], source_name: str = "") -> tuple[str, list[str], dict]:
    """``(builder, candidates, kwargs)``: every family builder whose parameter names and
    shapes equal ``shapes`` for some ``num_classes``/``width_divisor``; ``builder`` is the
    one released as ``source_name``, else the only candidate, else the only one whose
    released class count fits, else ``""`` (ambiguous)."""
    candidates, kwargs_of = [], {}
    layers = frozenset(name.rsplit(".", 1)[0] for name in shapes)
    names = list_models()
    with _gc_paused():
        for name in sorted(names, key=_cast):  # the cast nets last (stable: else in list order)
            released_fits = any(is_released(c) and not _cast(c) for c in candidates)
            if not _may_fit(name, layers, released_fits):
                continue
            kwargs = _fitting_kwargs(name, dict(shapes))
            if kwargs is not None:
                candidates.append(name)
                kwargs_of[name] = kwargs
    candidates.sort(key=names.index)
    by_file = [c for c in candidates if get_meta(c).caffemodel and
               source_name in (get_meta(c).caffemodel, get_meta(c).caffemodel + ".h5")]
    by_classes = [c for c in candidates if kwargs_of[c].get("num_classes") == get_meta(c).num_classes[0]]
    unique = [group for group in (candidates, by_classes) if len(group) == 1]
    chosen = (by_file or (unique[0] if unique else [""]))[0]
    return chosen, candidates, kwargs_of.get(chosen or (candidates[0] if candidates else ""), {})


def fits_hint(candidates: Sequence[str], chosen: str = "") -> str:
    """What to pass when weights fit another released net than the one asked: one clause
    naming the net (``--model NAME``; the width and classes are read from the file)."""
    if not candidates:
        return ""
    fit = chosen or candidates[0]
    others = [c for c in candidates if c != fit]
    return (f"they are weights of {fit}" + (f" (same structure: {', '.join(others)})" if others else "")
            + f": name that model (--model {fit})")


def _check_builder(builder: str, shapes: Mapping[str, tuple[int, ...]], source: str,
                   hint: str = "") -> dict[str, int]:
    """Strict comparison with a builder named by the caller (``port.weights.check_fit``); its
    inferred arguments. ``hint`` says what the weights fit instead."""
    get_meta(builder)  # unknown names raise with suggestions
    kwargs = _infer_kwargs(builder, shapes) or {}
    try:
        expected = _meta_shapes(builder, **kwargs) if kwargs else _meta_shapes(builder)
    except ValueError as err:
        raise ConversionError(source, f"does not fit builder {builder!r}: {err}", hint=hint) from err
    try:
        check_fit(expected, shapes, source, f"builder {builder!r}")
    except WeightsMismatchError as err:
        raise ConversionError(source, f"does not fit builder {builder!r}", err.problems, hint) from None
    return kwargs


# -- writing ---------------------------------------------------------------------------------
def _bilinear_report(net: NetDef | None, state: Mapping[str, np.ndarray], builder: str = "",
                     kwargs: Mapping[str, int] | None = None) -> dict[str, bool]:
    """For each Deconvolution weight: whether it is the bilinear kernel (``port.net.bilinear.is_bilinear``).
    The Deconvolutions are those of the net's definition, or, for an HDF5 file without one,
    of the matched builder's net."""
    if net is None and builder:
        net = get_meta(builder).net(deploy=True, **dict(kwargs or {})).netdef()
    if net is None:
        return {}
    names = [l.name for l in net.layers if l.type == "Deconvolution"]
    return {n: is_bilinear(state[f"{n}.weight"]) for n in names if f"{n}.weight" in state}


def _existing(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ConversionError(str(path), f"{what} not found")
    return path


def convert(weights_path: str | os.PathLike, prototxt: str | os.PathLike | None = None,
            out: str | os.PathLike | None = None, builder: str | None = None) -> ConversionReport:
    """Convert a caffemodel (binary or HDF5) to safetensors at ``out`` (default: beside it,
    ``.safetensors``). ``builder`` names the family model the weights must fit exactly.
    The source's SHA-256 is computed in a thread while the rest reads, checks and writes."""
    weights_path = _existing(weights_path, "caffemodel")
    prototxt = _existing(prototxt, "prototxt") if prototxt is not None else None
    stop, digest = threading.Event(), []

    def hash_source() -> None:
        try:
            digest.append(sha256_file(weights_path, stop))
        except BaseException as err:  # raised where the digest is asked for, as a future's would be
            digest.append(err)
    # a plain thread: concurrent.futures would import logging (~6 ms of a ~1 s command)
    hashing = threading.Thread(target=hash_source, name="sha256", daemon=True)
    hashing.start()

    def source_sha256() -> str:
        hashing.join()
        if isinstance(digest[0], BaseException):
            raise digest[0]
        return digest[0]
    try:
        return _convert(weights_path, prototxt, out, builder, source_sha256)
    finally:
        stop.set()  # a failed conversion does not wait for the whole file to be hashed
        hashing.join()


def _stem(name: str) -> str:
    """``fcn8s-heavy-pascal.caffemodel`` -> ``fcn8s-heavy-pascal`` (``port.weights.default_output``'s rule)."""
    return default_output(name).name[: -len(fmt.SUFFIX)]


def _convert(weights_path: Path, prototxt: Path | None, out: str | os.PathLike | None,
             builder: str | None, source_sha256: Callable[[], str]) -> ConversionReport:
    """:func:`convert` once the files exist; ``source_sha256()`` waits for the digest."""
    src, net = _read(weights_path, prototxt)
    source = str(weights_path)
    if not any(len(layer.blobs) for layer in src.layers):
        raise ConversionError(source, f"holds no parameter blobs ({len(src.layers)} layer definitions "
                              f"only): not trained weights")
    notes = []
    missing = undeclared_inputs(net) if net is src else []
    if missing:
        # A stored net without its input shape converts: every blob carries its shape.
        _check_layer_blobs(net, source)
        notes.append(f"the file's net declares no input for {', '.join(missing)}, so the shapes "
                     f"between layers were not checked (each layer's own were); --net "
                     f"deploy.prototxt adds that check")
        state = _state_from_blobs(src)
    else:
        state = _state_from_net(net, src, source) if net is not None else _state_from_blobs(src)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    chosen, candidates, kwargs = match_builders(shapes, weights_path.name)
    if builder is not None:
        kwargs, chosen = _check_builder(builder, shapes, source, fits_hint(candidates, chosen)), builder
        candidates = candidates if builder in candidates else [builder]
    if net is None and not candidates:
        raise ConversionError(source, "an HDF5 caffemodel stores no layer definitions and its blobs "
                              "match no family builder; give the net's prototxt")
    out = Path(out) if out is not None else default_output(weights_path)
    net_name = (net.name if net is not None else "") or src.name or ""
    meta = fmt.metadata(source_name=weights_path.name, net_name=net_name, builder=chosen,
                        candidates=candidates, builder_kwargs=kwargs if candidates else {})
    try:
        write_safetensors(out, state, meta, source_sha256)
    except OSError as err:  # a read-only folder, a full disk: nothing was left behind
        where = out.parent if isinstance(err, PermissionError) else out
        raise ConversionError(str(out), f"cannot write: {err.strerror or err} ({where}); "
                              f"pass -o FILE in a folder you can write") from None
    if not candidates:
        notes.append(_nearest_builder(shapes))
    return ConversionReport(source, source_sha256(), str(out), net_name, chosen, candidates, kwargs,
                            shapes, _bilinear_report(net, state, chosen or next(iter(candidates), ""), kwargs),
                            notes)


def _nearest_builder(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """What a file no builder fits is nearest to: the smallest released net sharing the most
    parameterised layers, and what it has that the file lacks (a file cut short at a layer
    boundary) or what the file has that it lacks (another net)."""
    layers = {k.rsplit(".", 1)[0] for k in shapes}
    scored = [(-len(set(_ordered_layers(n)) & layers), len(_ordered_layers(n)), n) for n in list_models()]
    overlap, _, best = min(scored)
    overlap = -overlap
    if overlap < len(layers) / 2:
        return "its layers match no released FCN net (not an FCN, or a net of your own)"
    lacking = [l for l in _ordered_layers(best) if l not in layers]
    extra = sorted(layers - set(_ordered_layers(best)))

    def listed(names: list[str]) -> str:
        return ", ".join(names[:6]) + (f" ... ({len(names)} layers)" if len(names) > 6 else "")
    if extra:
        return (f"its layers match no released FCN net: it has {listed(extra)}, which "
                f"{best} (the nearest) has not" + (f", and lacks {best}'s {listed(lacking)}" if lacking else ""))
    return (f"its layers match no released FCN net; nearest: {best}, whose {listed(lacking)} the "
            f"file lacks: was it cut short at a layer boundary?")


def _ordered_layers(builder: str) -> list[str]:
    """The parameterised layers of a builder's net, in net order."""
    return list(dict.fromkeys(k.rsplit(".", 1)[0] for k in _meta_shapes(builder)))
