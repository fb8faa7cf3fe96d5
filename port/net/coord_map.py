"""Coordinate maps between blobs, and the Crop offsets they imply (Caffe ``python/caffe/coord_map.py``).

Each spatial layer maps an input coordinate ``x`` to an output coordinate ``scale * x + shift``
on every spatial axis. Composing the maps along the two paths from a Crop's bottoms back to
their common ancestor gives the map between the bottoms; a Crop is well placed when that map
has scale 1 and a non-positive integer shift, and its offset is ``-shift``.

Unlike Caffe's module (which works on NetSpec objects), this works on plain geometry records
(:class:`Geometry`) so the explicit model builders can derive their offsets from their own
layer geometry, and on a parsed ``NetDef`` (:func:`geometry_from_net`), blob names resolved
as Caffe resolves them (an in-place layer's top is a new version of its bottom). Arithmetic is
exact (``fractions.Fraction``). Axis convention: a map's ``axis`` is the first coordinate axis
(2 for N x C x H x W; Caffe's module stores the axis before it), ``None`` when the map does not
depend on one (identity).
"""
from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Mapping, Sequence

from port.errors import PortError

__all__ = [
    "CoordMap", "Geometry", "CoordMapError", "UndefinedMapError", "CropMismatchError",
    "IDENTITY", "PASS_THROUGH_LAYERS", "layer_map", "compose", "inverse", "map_between",
    "crop_offset_from_map", "derive_crop_offsets", "maps_from", "crop_offsets", "check_crops", "geometry_from_layer",
    "geometry_from_net", "conv_geometry", "pool_geometry", "spatial_params",
]

#: Layers that keep every spatial coordinate (Caffe's ``PASS_THROUGH_LAYERS`` plus the
#: channel-wise FCN layers Concat and Softmax, checked for a channel axis in :func:`layer_map`).
PASS_THROUGH_LAYERS = frozenset({
    "AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN", "Exp",
    "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH", "Threshold",
    "Concat", "Softmax",
})
#: Layers whose map is a convolution's (Caffe ``coord_map``: Convolution, Pooling, Im2col).
CONV_LIKE_LAYERS = frozenset({"Convolution", "Pooling", "Im2col"})
#: The first coordinate axis of an N x C x H x W blob (convolution's ``axis`` is the channel one).
SPATIAL_AXIS = 2
#: Blob rank assumed to resolve a negative Crop axis when only geometry is known.
BLOB_RANK = 4

Scalars = tuple[Fraction, ...]


class CoordMapError(PortError):
    """A coordinate map that cannot be formed: incompatible axes, no common ancestor, a
    scale other than 1 at a Crop, a fractional or negative offset."""


class UndefinedMapError(CoordMapError):
    """A layer whose output coordinates are not an affine function of its input's
    (InnerProduct, Reshape, global pooling, ...)."""


class CropMismatchError(CoordMapError):
    """A Crop's written offset differs from the one its geometry implies."""


def _fractions(values: int | Sequence[Any]) -> Scalars:
    seq = values if isinstance(values, (tuple, list)) else (values,)
    return tuple(Fraction(v) for v in seq)


def _broadcast(a: Scalars, b: Scalars, what: str) -> tuple[Scalars, Scalars]:
    """Length-1 tuples apply to every axis (Caffe's ``np.array(..., ndmin=1)`` broadcasting)."""
    if len(a) == len(b):
        return a, b
    if len(a) == 1:
        return a * len(b), b
    if len(b) == 1:
        return a, b * len(a)
    raise CoordMapError(f"{what}: {len(a)} axes do not broadcast with {len(b)} axes")


@dataclass(frozen=True)
class CoordMap:
    """``out = scale * in + shift`` on each coordinate axis from ``axis`` on (one value
    applies to every axis). ``axis is None``: independent of the axis (identity-like)."""

    axis: int | None
    scale: Scalars
    shift: Scalars

    def __post_init__(self) -> None:
        scale, shift = _broadcast(_fractions(self.scale), _fractions(self.shift), "CoordMap")
        if any(s == 0 for s in scale):
            raise CoordMapError(f"CoordMap scale must be non-zero, got {scale}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "shift", shift)

    def __call__(self, coord: int | Fraction | Sequence[Any]) -> Scalars:
        """The output coordinate(s) of input coordinate(s) ``coord``."""
        scale, coords = _broadcast(self.scale, _fractions(coord), "CoordMap application")
        shift, _ = _broadcast(self.shift, coords, "CoordMap application")
        return tuple(a * x + b for a, x, b in zip(scale, coords, shift))


IDENTITY = CoordMap(None, (1,), (0,))


def compose(base: CoordMap, then: CoordMap) -> CoordMap:
    """``base ∘ then`` (apply ``then`` first, as Caffe's ``compose(base_map, next_map)``):
    scales multiply and ``then``'s shift is scaled by ``base``'s scale:
    ``a1 * (a2 * x + b2) + b1 = (a1 a2) x + (a1 b2 + b1)``."""
    if base.axis is None or then.axis is None or base.axis == then.axis:
        axis = then.axis if base.axis is None else base.axis
    else:
        raise CoordMapError(f"cannot compose maps on axis {base.axis} and axis {then.axis}")
    a1, a2 = _broadcast(base.scale, then.scale, "compose")
    b1, b2 = _broadcast(base.shift, then.shift, "compose")  # each map's scale and shift have equal length
    return CoordMap(axis, tuple(x * y for x, y in zip(a1, a2)),
                    tuple(x * y + z for x, y, z in zip(a1, b2, b1)))


def inverse(cmap: CoordMap) -> CoordMap:
    """The map back from output to input coordinates: ``x = (1/a) y - b/a``."""
    return CoordMap(cmap.axis, tuple(1 / a for a in cmap.scale),
                    tuple(-b / a for a, b in zip(cmap.scale, cmap.shift)))


# ---------------------------------------------------------------------------------------------
# Geometry records


def _ints(value: int | Sequence[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),)


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class Geometry:
    """What the coordinate maps need of one layer: its Caffe type (``kind``), blob names, and
    spatial geometry (int for every axis, or one per axis). ``axis`` is the layer's own Caffe
    axis parameter (None: the type's default: Convolution 1, Crop 2, Concat 1); ``offset`` is a
    Crop's written offset (empty: unknown or to be derived; the walk uses derived offsets).
    ``global_pooling`` marks a Pooling with no fixed geometry."""

    name: str
    kind: str
    bottoms: tuple[str, ...] = ()
    tops: tuple[str, ...] = ()
    kernel: tuple[int, ...] = (1,)
    stride: tuple[int, ...] = (1,)
    pad: tuple[int, ...] = (0,)
    dilation: tuple[int, ...] = (1,)
    axis: int | None = None
    offset: tuple[int, ...] = ()
    global_pooling: bool = False

    def __post_init__(self) -> None:
        for name in ("bottoms", "tops"):
            object.__setattr__(self, name, _names(getattr(self, name)))
        for name in ("kernel", "stride", "pad", "dilation", "offset"):
            object.__setattr__(self, name, _ints(getattr(self, name)))


def conv_geometry(name: str, bottom: str, top: str, kernel: int | Sequence[int],
                  stride: int | Sequence[int] = 1, pad: int | Sequence[int] = 0,
                  dilation: int | Sequence[int] = 1, kind: str = "Convolution") -> Geometry:
    """A Convolution (or ``kind="Deconvolution"``) record with one bottom and one top."""
    return Geometry(name, kind, (bottom,), (top,), kernel, stride, pad, dilation)


def pool_geometry(name: str, bottom: str, top: str, kernel: int | Sequence[int],
                  stride: int | Sequence[int] = 1, pad: int | Sequence[int] = 0) -> Geometry:
    """A Pooling record with one bottom and one top."""
    return Geometry(name, "Pooling", (bottom,), (top,), kernel, stride, pad)


def _per_axis_params(g: Geometry) -> list[Scalars]:
    """Kernel, stride, pad and dilation broadcast to one value per coordinate axis."""
    params = [_fractions(v) for v in (g.kernel, g.stride, g.pad, g.dilation)]
    count = max(len(p) for p in params)
    for p, what in zip(params, ("kernel", "stride", "pad", "dilation")):
        if len(p) not in (1, count):
            raise CoordMapError(f"layer {g.name!r}: {what} has {len(p)} values for {count} axes")
    return [p * count if len(p) == 1 else p for p in params]


def _conv_map(g: Geometry, deconv: bool) -> CoordMap:
    """Caffe ``coord_map``: convolution and pooling ``1/stride`` with shift
    ``(pad - (k-1)/2) / stride``, dilation folded into ``k`` as ``(k-1)*dilation + 1``;
    deconvolution the inverse."""
    kernel, stride, pad, dilation = _per_axis_params(g)
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    axis = (1 if g.axis is None else g.axis) + 1
    forward = CoordMap(axis, tuple(1 / s for s in stride),
                       tuple((p - (e - 1) / 2) / s for p, e, s in zip(pad, extent, stride)))
    return inverse(forward) if deconv else forward


def _canonical(axis: int) -> int:
    return axis + BLOB_RANK if axis < 0 else axis


def layer_map(g: Geometry, offset: Sequence[int] | None = None) -> CoordMap:
    """The coordinate map from a layer's (first) bottom to its top (Caffe ``coord_map``).

    ``offset`` overrides a Crop's written offset (the derivation walks with derived offsets).
    Raises :class:`UndefinedMapError` for layers without an affine spatial map.
    """
    if g.kind in CONV_LIKE_LAYERS:
        if g.global_pooling:
            raise UndefinedMapError(f"layer {g.name!r}: global pooling has no fixed coordinate map")
        return _conv_map(g, deconv=False)
    if g.kind == "Deconvolution":
        return _conv_map(g, deconv=True)
    if g.kind == "Crop":
        axis = _canonical(SPATIAL_AXIS if g.axis is None else g.axis)
        return CoordMap(axis, (1,), tuple(-o for o in (offset if offset is not None else g.offset) or (0,)))
    if g.kind in PASS_THROUGH_LAYERS:
        if g.kind in ("Concat", "Softmax") and _canonical(1 if g.axis is None else g.axis) >= SPATIAL_AXIS:
            raise UndefinedMapError(f"layer {g.name!r}: {g.kind} along spatial axis {g.axis}")
        return IDENTITY
    raise UndefinedMapError(f"layer {g.name!r}: no coordinate map for type {g.kind!r}")


# ---------------------------------------------------------------------------------------------
# The graph walk


@dataclass
class _Graph:
    """Layers with blob names resolved to versions, as Caffe resolves them in order: a top
    named like an existing blob (in-place) is a new version of it."""

    layers: list[Geometry]
    bottoms: list[tuple[tuple[str, int], ...]] = field(default_factory=list)
    producer: dict[tuple[str, int], int] = field(default_factory=dict)
    latest: dict[str, int] = field(default_factory=dict)

    def layer_map(self, index: int, offset: Sequence[int] | None = None) -> CoordMap:
        """:func:`layer_map` of layer ``index`` (``offset`` overriding a Crop's)."""
        if offset is not None:
            return layer_map(self.layers[index], offset)
        found = _written_map(self.layers[index])
        if isinstance(found, str):
            raise UndefinedMapError(found)
        return found

    @classmethod
    def build(cls, layers: Iterable[Geometry]) -> "_Graph":
        graph = cls(list(layers))
        for i, g in enumerate(graph.layers):
            graph.bottoms.append(tuple((b, graph.latest.get(b, 0)) for b in g.bottoms))
            for top in g.tops:
                version = graph.latest[top] + 1 if top in graph.latest else 0
                graph.latest[top] = version
                graph.producer[(top, version)] = i
        return graph

    def blob(self, name: str) -> tuple[str, int]:
        if name not in self.latest:
            raise CoordMapError(f"blob {name!r} is produced by no layer")
        return name, self.latest[name]


@functools.lru_cache(maxsize=4096)
def _written_map(g: Geometry) -> CoordMap | str:
    """:func:`layer_map` of ``g`` with its written offsets, or why it has none (the message);
    computed once per geometry (a Geometry is a value): every walk through a net's trunk, and
    every net written with the same layers, crosses the same ones."""
    try:
        return layer_map(g)
    except UndefinedMapError as err:
        return str(err)


def _walk(graph: _Graph, start: tuple[str, int], offsets: Mapping[str, Sequence[int]],
          stops: list[str]):
    """Breadth-first from ``start`` towards the inputs, yielding ``(blob, map from blob's
    coordinates to start's)``; appends to ``stops`` where and why a path ended early."""
    maps = {start: IDENTITY}
    queue = deque([start])
    while queue:
        blob = queue.popleft()
        yield blob, maps[blob]
        index = graph.producer.get(blob)
        if index is None:
            continue
        g = graph.layers[index]
        try:
            cmap = graph.layer_map(index, offsets.get(g.name))
        except UndefinedMapError as err:
            stops.append(str(err))
            continue
        # A Crop maps only its first bottom; the second only gives the size.
        for bottom in graph.bottoms[index][:1] if g.kind == "Crop" else graph.bottoms[index]:
            if bottom not in maps:
                maps[bottom] = compose(maps[blob], cmap)
                queue.append(bottom)


def _ancestors(graph: _Graph, start: tuple[str, int], offsets: Mapping[str, Sequence[int]]) -> set[tuple[str, int]]:
    """The blobs :func:`_walk` from ``start`` reaches (itself included), without their maps."""
    seen, queue = {start}, deque([start])
    while queue:
        index = graph.producer.get(queue.popleft())
        if index is None:
            continue
        g = graph.layers[index]
        try:
            graph.layer_map(index, offsets.get(g.name))
        except UndefinedMapError:
            continue
        for bottom in graph.bottoms[index][:1] if g.kind == "Crop" else graph.bottoms[index]:
            if bottom not in seen:
                seen.add(bottom)
                queue.append(bottom)
    return seen


def _map_between(graph: _Graph, source: tuple[str, int], target: tuple[str, int],
                 offsets: Mapping[str, Sequence[int]]) -> CoordMap:
    """Caffe ``coord_map_from_to``: every ancestor of ``source`` with its map, then the
    nearest ancestor of ``target`` among them: ``to_map ∘ inverse(from_map)``."""
    stops: list[str] = []
    from_walk = _walk(graph, source, offsets, stops)
    # source's ancestors, as far as the walk reaches (the maps themselves only as far as needed)
    reach = _ancestors(graph, source, offsets)
    for blob, cmap in _walk(graph, target, offsets, stops):
        if blob in reach:  # the same walk, stopped at the common blob
            from_map = next(found_map for found, found_map in from_walk if found == blob)
            return compose(cmap, inverse(from_map))
    for _ in from_walk:  # every stop of both walks, for the message
        pass
    why = "; ".join(stops) or "the walks reached only net inputs"
    raise CoordMapError(f"no common ancestor of blobs {source[0]!r} and {target[0]!r} ({why})")


def map_between(layers: Iterable[Geometry], source: str, target: str) -> CoordMap:
    """The map from ``source``'s coordinates to ``target``'s (Caffe ``coord_map_from_to``),
    through their nearest common ancestor, for blobs as they stand after the last layer."""
    graph = _Graph.build(layers)
    return _map_between(graph, graph.blob(source), graph.blob(target), {})


def maps_from(net_or_layers: Any, source: str) -> dict[str, CoordMap]:
    """The map from ``source``'s coordinates to each blob's (``blob = scale * source + shift``;
    a blob's stride is ``1 / scale``), walking forward in layer order from each layer's first
    bottom (a Crop's first bottom; merged bottoms agree wherever a net's crops are placed).
    Blobs behind a layer without a map (InnerProduct, global pooling) get none; an in-place
    blob keeps its name and the map of its last version."""
    maps = {source: IDENTITY}
    for g in _as_geometry(net_or_layers):
        if not g.bottoms or g.bottoms[0] not in maps:
            continue
        try:
            cmap = compose(layer_map(g), maps[g.bottoms[0]])
        except UndefinedMapError:
            for top in g.tops:
                maps.pop(top, None)
            continue
        for top in g.tops:
            maps[top] = cmap
    return maps


def crop_offset_from_map(cmap: CoordMap, layer: str = "") -> tuple[int, ...]:
    """The Crop offsets a map implies (Caffe ``coord_map.crop``): scale 1 on every axis, shift
    a non-positive integer; offset ``-shift`` (one value when all axes agree)."""
    where = f"layer {layer!r}: " if layer else ""
    if any(a != 1 for a in cmap.scale):
        raise CoordMapError(f"{where}scale mismatch on crop: scale {_show(cmap.scale)} (expected 1)")
    if any(b > 0 for b in cmap.shift):
        raise CoordMapError(f"{where}cannot crop a negative width: shift {_show(cmap.shift)}")
    if any(b.denominator != 1 for b in cmap.shift):
        raise CoordMapError(f"{where}cannot crop a fractional width: shift {_show(cmap.shift)}")
    offsets = tuple(int(-b) for b in cmap.shift)
    return offsets[:1] if len(set(offsets)) == 1 else offsets


def _show(values: Scalars) -> str:
    return "(" + ", ".join(str(v) for v in values) + ")"


def _crop_axis(g: Geometry, cmap: CoordMap) -> None:
    axis = _canonical(SPATIAL_AXIS if g.axis is None else g.axis)
    if cmap.axis is not None and cmap.axis != axis:
        raise CoordMapError(f"layer {g.name!r}: Crop axis {axis} but its bottoms' map starts at axis {cmap.axis}")


def _as_geometry(net_or_layers: Any) -> list[Geometry]:
    if hasattr(net_or_layers, "layers"):
        return geometry_from_net(net_or_layers)
    return list(net_or_layers)


def derive_crop_offsets(net_or_layers: Any) -> dict[str, tuple[int, ...]]:
    """Each Crop's offsets derived from geometry, in layer order, by name (one value when all
    axes agree). Takes a parsed ``NetDef`` or a list of :class:`Geometry`; later crops are
    walked with the derived (never the written) offsets of earlier ones."""
    graph = _Graph.build(_as_geometry(net_or_layers))
    derived: dict[str, tuple[int, ...]] = {}
    for index, g in enumerate(graph.layers):
        if g.kind != "Crop":
            continue
        if len(g.bottoms) != 2:
            raise CoordMapError(f"layer {g.name!r}: Crop needs 2 bottoms, got {len(g.bottoms)}")
        source, target = graph.bottoms[index]
        cmap = _map_between(graph, source, target, derived)
        _crop_axis(g, cmap)
        derived[g.name] = crop_offset_from_map(cmap, g.name)
    return derived


def derive_crop_offset(net_or_layers: Any, name: str) -> tuple[int, ...]:
    """The offsets of the Crop ``name`` derived from geometry, every other Crop walked with
    its written offsets: upstream ``net_spec``'s ``coord_map.crop`` as it writes a crop (the
    ones written before it are in the net as written). One walk, where
    :func:`derive_crop_offsets` derives every crop of the net."""
    graph = _Graph.build(_as_geometry(net_or_layers))
    for index, g in enumerate(graph.layers):
        if g.kind == "Crop" and g.name == name:
            if len(g.bottoms) != 2:
                raise CoordMapError(f"layer {g.name!r}: Crop needs 2 bottoms, got {len(g.bottoms)}")
            source, target = graph.bottoms[index]
            cmap = _map_between(graph, source, target, {})
            _crop_axis(g, cmap)
            return crop_offset_from_map(cmap, g.name)
    raise CoordMapError(f"no Crop layer {name!r}")


#: The name ``docs/ARCHITECTURE.md`` gives the derivation.
crop_offsets = derive_crop_offsets


def _per_axis(offsets: Sequence[int], count: int) -> tuple[int, ...]:
    offsets = tuple(offsets) or (0,)
    return offsets * count if len(offsets) == 1 else offsets


def check_crops(net_or_layers: Any) -> dict[str, tuple[int, ...]]:
    """Check every Crop's written offset against the derived one; raise
    :class:`CropMismatchError` naming the layer with both values. Returns the derived offsets."""
    layers = _as_geometry(net_or_layers)
    derived = derive_crop_offsets(layers)
    for g in layers:
        if g.kind != "Crop":
            continue
        count = max(len(g.offset), len(derived[g.name]))
        if _per_axis(g.offset, count) != _per_axis(derived[g.name], count):
            raise CropMismatchError(
                f"layer {g.name!r}: written crop offset {list(g.offset) or [0]} differs from "
                f"the offset its geometry implies {list(derived[g.name])}")
    return derived


# ---------------------------------------------------------------------------------------------
# From a parsed NetDef (port.caffe.net LayerDef)


def _repeated_or_hw(param: Any, base: str, default: int) -> tuple[int, ...]:
    """Caffe's ``kernel_size``/``stride``/``pad`` (repeated in ConvolutionParameter, optional
    in PoolingParameter) or the 2-D ``_h``/``_w`` pair (conv_layer / base_conv_layer.cpp)."""
    if param.has(f"{base}_h") or param.has(f"{base}_w"):
        return int(getattr(param, f"{base}_h")), int(getattr(param, f"{base}_w"))
    name = "kernel_size" if base == "kernel" else base
    value = getattr(param, name)
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value) or (default,)
    return (int(value),) if param.has(name) else (default,)


def spatial_params(layer: Any) -> dict[str, tuple[int, ...]]:
    """Kernel, stride, pad and dilation of a Convolution/Deconvolution/Pooling ``LayerDef``
    (kernel from ``kernel_size`` or ``kernel_h``/``kernel_w``; stride default 1, pad 0)."""
    param = layer.pooling_param if layer.type == "Pooling" else layer.convolution_param
    params = {"kernel": _repeated_or_hw(param, "kernel", 0), "stride": _repeated_or_hw(param, "stride", 1),
              "pad": _repeated_or_hw(param, "pad", 0), "dilation": (1,)}
    if layer.type != "Pooling":
        params["dilation"] = tuple(int(d) for d in param.dilation) or (1,)
    return params


def geometry_from_layer(layer: Any) -> Geometry:
    """The :class:`Geometry` of a parsed ``LayerDef``."""
    kind = layer.type
    extra: dict[str, Any] = {}
    if kind in CONV_LIKE_LAYERS or kind == "Deconvolution":
        extra.update(spatial_params(layer))
        if kind == "Pooling":
            extra["global_pooling"] = bool(layer.pooling_param.global_pooling)
        else:
            extra["axis"] = int(layer.convolution_param.axis)
    elif kind == "Crop":
        extra["axis"] = int(layer.crop_param.axis)
        extra["offset"] = tuple(int(o) for o in layer.crop_param.offset)
    elif kind in ("Concat", "Softmax"):
        param = layer.concat_param if kind == "Concat" else layer.softmax_param
        extra["axis"] = int(param.axis)
    return Geometry(layer.name, kind, tuple(layer.bottom), tuple(layer.top), **extra)


def geometry_from_net(net: Any) -> list[Geometry]:
    """Geometry records of every layer of a parsed ``NetDef`` (already filtered by phase)."""
    return [geometry_from_layer(layer) for layer in net.layers]
