"""The typed view of a Caffe net: :class:`NetDef` and :class:`LayerDef` over a ``NetParameter``.

Legacy V1 nets (``layers { type: CONVOLUTION }``) are upgraded at load as Caffe's
``UpgradeV1Net``/``UpgradeV1LayerParameter`` (``src/caffe/util/upgrade_proto.cpp``) do. Blobs
come out shaped as Caffe holds them after ``Net::CopyTrainedLayersFrom``: a ``BlobShape`` is
used as is; a legacy ``num/channels/height/width`` blob takes the shape of the layer's own
blob, which ``Blob::ShapeEquals`` matches against the legacy 4-D shape padded with leading 1s.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .errors import CaffeFormatError
from .message import Message

# UpgradeV1LayerType (upgrade_proto.cpp): V1 enum name -> V2 type string
V1_LAYER_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}
# V1LayerParameter fields copied unchanged into the LayerParameter field of the same name
_V1_COPIED = ("name", "bottom", "top", "include", "exclude", "blobs", "loss_weight")
# The number of axes of each parameter blob a layer creates in LayerSetUp (2-D spatial case):
# Convolution/Deconvolution (base_conv_layer.cpp) weight 4, bias 1; InnerProduct weight 2,
# bias 1; Embed weight 2, bias 1; PReLU slope 1; BatchNorm mean, variance 1, scale factor 1.
LEGACY_BLOB_AXES = {"Convolution": (4, 1), "Deconvolution": (4, 1), "InnerProduct": (2, 1),
                    "Embed": (2, 1), "PReLU": (1,), "BatchNorm": (1, 1, 1)}
LEGACY_AXES = 4  # num, channels, height, width
MAX_BLOB_AXES = 32  # kMaxBlobAxes (include/caffe/blob.hpp)
INT_MAX = 2**31 - 1  # Blob::Reshape keeps count_ an int: CHECK_LE(shape[i], INT_MAX / count_)


@dataclass(frozen=True)
class ParamSpec:
    """A layer's ``param { lr_mult decay_mult }`` (caffe.proto ``ParamSpec``, defaults 1)."""
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    name: str = ""


@dataclass(frozen=True)
class NetState:
    """caffe.proto ``NetState``: the ``phase``, ``level`` and ``stages`` a net is built for,
    which ``Net::FilterNet`` meets against each layer's ``NetStateRule`` (the stages as a set).
    Defaults as caffe.proto's (``TEST``, 0, none)."""
    phase: str = "TEST"
    level: int = 0
    stages: tuple[str, ...] = ()

    def merge(self, msg: Message | None) -> "NetState":
        """proto2 ``MergeFrom`` of a ``NetState`` message: its ``phase`` and ``level`` where it
        sets them, its stages appended (a stage already present is not repeated); ``None``
        merges nothing."""
        if msg is None:
            return self
        return NetState(str(msg.phase) if msg.has("phase") else self.phase,
                        int(msg.level) if msg.has("level") else self.level,
                        _union(self.stages, msg.stage))

    def built(self, phase: str, level: int = 0, stages: Iterable[str] = ()) -> "NetState":
        """The state of Caffe's ``Net(param_file, phase, level, stages)`` for a net whose own
        state is this one: ``phase`` and ``level`` replace it (``set_phase``, ``set_level``),
        ``stages`` are added to its stages (``add_stage``)."""
        return NetState(str(phase), int(level), _union(self.stages, stages))

    def same(self, other: "NetState") -> bool:
        """Whether both states keep the same layers of any net (stages compared as sets)."""
        return (self.phase, self.level, set(self.stages)) == (other.phase, other.level, set(other.stages))

    def __str__(self) -> str:
        stages = "".join(f" stage: {s!r}" for s in self.stages)
        return f"{{ phase: {self.phase} level: {self.level}{stages} }}"


def _union(first: Iterable[str], then: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*first, *(str(s) for s in then)]))


class LayerDef:
    """One layer: name, V2 type, bottoms, tops, param specs, blobs and its ``*_param`` messages.

    Any field of the ``LayerParameter`` reads as an attribute (``layer.crop_param.offset``).
    """

    def __init__(self, msg: Message, blobs: list[np.ndarray] | None = None):
        self.msg = msg
        self.blobs: list[np.ndarray] = blobs if blobs is not None else []

    name = property(lambda self: self.msg.name)
    type = property(lambda self: self.msg.type)
    bottom = property(lambda self: list(self.msg.bottom))
    top = property(lambda self: list(self.msg.top))

    @property
    def params(self) -> list[ParamSpec]:
        return [ParamSpec(p.lr_mult, p.decay_mult, p.name) for p in self.msg.param]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "msg":
            raise AttributeError(name)
        return getattr(self.msg, name)

    def __repr__(self) -> str:
        shapes = [tuple(b.shape) for b in self.blobs]
        return f"LayerDef({self.name!r}, {self.type!r}, {self.bottom} -> {self.top}, blobs={shapes})"


class NetDef:
    """A parsed net: ``name``, ``inputs`` (blob -> shape), ``layers``, ``path``, ``msg``."""

    def __init__(self, msg: Message, layers: list[LayerDef], path: str | None = None):
        self.msg = msg
        self.layers = layers
        self.path = path
        self.name: str = msg.name
        self.inputs: dict[str, tuple[int, ...]] = _inputs(msg, layers, path)

    def blobs(self) -> dict[str, list[np.ndarray]]:
        """Layer name -> its parameter blobs, for the layers that have any, in net order."""
        return {layer.name: layer.blobs for layer in self.layers if layer.blobs}

    def layer(self, name: str) -> LayerDef:
        """The layer called ``name`` (KeyError listing the names if there is none)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{self.path or self.name}: no layer {name!r}; layers: "
                       + ", ".join(l.name for l in self.layers))

    def for_phase(self, phase: str = "TEST", level: int = 0, stages: Iterable[str] = ()) -> "NetDef":
        """The layers Caffe's ``Net::FilterNet`` keeps for this ``NetState`` (net.cpp)."""
        return self.for_state(NetState(phase, int(level), tuple(stages)))

    def for_state(self, state: "NetState") -> "NetDef":
        """The layers Caffe's ``Net::FilterNet`` keeps for ``state`` (``StateMeetsRule`` on each
        layer's include/exclude rules)."""
        key = (state.phase, state.level, frozenset(state.stages))
        kept = [layer for layer in self.layers if _included(layer, key, self.path)]
        return NetDef(self.msg, kept, self.path)

    @property
    def own_state(self) -> Message | None:
        """The net prototxt's own ``state { phase level stage }`` (``NetParameter.state``), or
        None when it has none."""
        return self.msg.state if self.msg.has("state") else None

    def __repr__(self) -> str:
        return f"NetDef({self.name!r}, inputs={self.inputs}, {len(self.layers)} layers)"


def _meets(rule: Message, state: tuple) -> bool:
    """``Net::StateMeetsRule``: phase, level bounds, required and forbidden stages."""
    phase, level, stages = state
    if rule.has("phase") and rule.phase != phase:
        return False
    if rule.has("min_level") and level < rule.min_level:
        return False
    if rule.has("max_level") and level > rule.max_level:
        return False
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def _included(layer: LayerDef, state: tuple, path: str | None) -> bool:
    include, exclude = layer.msg.include, layer.msg.exclude
    if include and exclude:
        raise CaffeFormatError(path, layer.msg.source_pos or "?", f"layer {layer.name!r}",
                               "specify either include rules or exclude rules; not both")
    if include:
        return any(_meets(rule, state) for rule in include)
    return not any(_meets(rule, state) for rule in exclude)


def _inputs(msg: Message, layers: list[LayerDef], path: str | None) -> dict[str, tuple[int, ...]]:
    """Net-level ``input`` + ``input_shape``/``input_dim`` and the tops of ``Input`` layers."""
    out: dict[str, tuple[int, ...]] = {}
    dims = list(msg.input_dim)
    for i, name in enumerate(msg.input):
        if i < len(msg.input_shape):
            out[name] = tuple(msg.input_shape[i].dim)
        elif len(dims) >= LEGACY_AXES * (i + 1):
            out[name] = tuple(dims[LEGACY_AXES * i:LEGACY_AXES * (i + 1)])
        else:
            raise CaffeFormatError(path, msg.source_pos or "?", "NetParameter.input",
                                   f"input {name!r} has no input_shape or 4 input_dim values")
    for layer in layers:
        if layer.type != "Input":
            continue
        shapes = layer.msg.input_param.shape
        for i, top in enumerate(layer.top):
            shape = shapes[i] if len(shapes) == len(layer.top) else shapes[0] if shapes else None
            out[top] = tuple(shape.dim) if shape is not None else ()
    return out


def upgrade_v1_layer(v1: Message) -> Message:
    """A ``V1LayerParameter`` as a ``LayerParameter`` (``UpgradeV1LayerParameter``)."""
    out = Message("LayerParameter", v1.source_pos)
    for name in _V1_COPIED:
        if v1.has(name):
            out.set(name, getattr(v1, name))
    if v1.has("type"):
        out.type = V1_LAYER_TYPES[v1.type]
    specs = (("name", v1.param), ("share_mode", v1.blob_share_mode),
             ("lr_mult", v1.blobs_lr), ("decay_mult", v1.weight_decay))
    for field, values in specs:
        for i, value in enumerate(values):
            while len(out.param) <= i:
                out.add("param")
            out.param[i].set(field, value)
    for name, value in v1.fields():
        if name.endswith("_param") and name != "param":
            out.set(name, value)
    return out


def upgrade_v1_net(msg: Message, path: str | None = None) -> Message:
    """The net with V1 ``layers`` replaced by V2 ``layer`` (``UpgradeV1Net``)."""
    if not msg.has("layers"):
        return msg
    if msg.has("layer"):
        raise CaffeFormatError(path, msg.source_pos or "?", "NetParameter.layers",
                               "a net has either V1 'layers' or V2 'layer' fields, not both")
    out = Message("NetParameter", msg.source_pos)
    for name, value in msg.fields():
        if name != "layers":
            out.set(name, value)
    out.set("layer", [upgrade_v1_layer(v1) for v1 in msg.layers])
    return out


def blob_array(blob: Message, layer: Message, index: int, path: str | None) -> np.ndarray:
    """One ``BlobProto`` as a float32 array of Caffe's loaded shape (a view where possible)."""
    where = blob.source_pos or "?"
    label = f"layer {layer.name!r} blobs[{index}]"
    data = blob.data
    if len(data) == 0 and len(blob.double_data):
        data = blob.double_data.astype(np.float32)  # Blob::FromProto casts double_data
    shape = _blob_shape(blob, layer.type, index, path, where, label)
    if math.prod(shape) != data.size:
        raise CaffeFormatError(path, where, label, f"holds {data.size} values but its shape "
                               f"{shape} needs {math.prod(shape)}")
    return data.reshape(shape)


def _blob_shape(blob: Message, layer_type: str, index: int, path, where, label) -> tuple[int, ...]:
    legacy = ("num", "channels", "height", "width")
    if any(blob.has(n) for n in legacy):
        shape = tuple(getattr(blob, n) for n in legacy)
        axes = LEGACY_BLOB_AXES.get(layer_type, ())
        if index < len(axes) and all(d == 1 for d in shape[:LEGACY_AXES - axes[index]]):
            shape = shape[LEGACY_AXES - axes[index]:]
    else:
        shape = tuple(blob.shape.dim)
    check_blob_shape(shape, path, where, label)
    return shape


def check_blob_shape(shape: tuple[int, ...], path, where: str, label: str) -> None:
    """Reject a shape Caffe's ``Blob::Reshape`` (blob.cpp) refuses: more than
    ``kMaxBlobAxes`` axes, a negative dimension, or a count past ``INT_MAX``.

    Caffe stops checking once a 0 dimension makes its count 0; here the non-zero dimensions
    of such an empty blob must multiply to ``INT_MAX`` at most too (Caffe holds each
    dimension as an int, and numpy cannot shape an array whose nominal size overflows).
    """
    if len(shape) > MAX_BLOB_AXES:
        raise CaffeFormatError(path, where, label,
                               f"{len(shape)} axes; a blob has at most {MAX_BLOB_AXES}")
    for axis, d in enumerate(shape):
        if d < 0:
            raise CaffeFormatError(path, where, label,
                                   f"negative dimension {d} at axis {axis} of shape {shape}")
    count = math.prod(d for d in shape if d)
    if count > INT_MAX:
        what = "its non-zero dimensions multiply to" if 0 in shape else "its count is"
        raise CaffeFormatError(path, where, label, f"shape {shape}: {what} {count}, "
                               f"more than INT_MAX ({INT_MAX}), the most a Caffe blob holds")


def netdef_from_message(msg: Message, path: str | os.PathLike | None = None) -> NetDef:
    """The typed view of a ``NetParameter`` (V1 upgraded), with each layer's blobs shaped."""
    path = None if path is None else str(path)
    msg = upgrade_v1_net(msg, path)
    layers = [LayerDef(lm, [blob_array(b, lm, i, path) for i, b in enumerate(lm.blobs)])
              for lm in msg.layer]
    return NetDef(msg, layers, path)
