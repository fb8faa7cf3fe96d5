"""The one library of Caffe layers: each an ``nn.Module`` built from a parsed ``LayerDef``.

Each class reproduces one Caffe layer type (its ``*_layer.cpp``) for the FCN family and the
Caffe nets made of the same layers: ``__init__`` reads the ``*_param`` and sizes the
parameters in Caffe's blob layouts by :func:`port.net.shapes.layer_setup`,
:meth:`CaffeLayer.output_shapes` is the layer's ``Reshape`` arithmetic
(:func:`port.net.shapes.layer_reshape`, no data), ``forward(*bottoms)`` returns the tops. The
shape rules are in :mod:`port.net.shapes` (torch-free, shared with ``port.convert``), the
semantics in :mod:`port.net.ops`; :mod:`port.net.engine` runs the layers as Caffe's ``Net`` does.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from port.net import coord_map, fillers, ops, shapes as rules
from port.net.shapes import (INPUT_LAYER_TYPES, CaffeGraphError, CaffeSemanticsError, reshape_target,  # noqa: F401
                             spatial_value)
from port.weights import BATCH_NORM_BLOBS

__all__ = ["CaffeGraphError", "CaffeLayer", "LAYER_TYPES", "INPUT_LAYER_TYPES",
           "SUPPORTED_LAYER_TYPES", "build_layer", "redress", "Convolution", "Pooling", "LRN",
           "ReLU", "Identity", "relu_in_place_after", "Scale", "Bias", "BatchNorm",
           "BATCH_NORM_BLOBS", "Sigmoid"]

LAYER_TYPES: dict[str, type["CaffeLayer"]] = {}


def _register(*types: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        for name in types:
            LAYER_TYPES[name] = cls
        return cls
    return wrap


class CaffeLayer(nn.Module):
    """One Caffe layer: ``forward(*bottoms) -> tuple of tops``. Built, it has run the layer's
    ``LayerSetUp`` (:func:`port.net.shapes.layer_setup`: its checks, bottom and top counts
    included); :attr:`setup_shapes` are its parameter blobs' shapes in Caffe's order."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__()
        self.caffe_name, self.caffe_type, self.phase = layer.name, layer.type, phase
        self.layer = layer  # the LayerDef: param { lr_mult decay_mult }, *_param, fillers
        self.setup_shapes = rules.layer_setup(layer, shapes)
        for name, shape in zip(rules.param_names(layer, len(shapes)), self.setup_shapes):
            self._new_param(name, shape)

    def caffe_params(self) -> list[nn.Parameter]:
        """Parameters in Caffe's blob order (``layer.blobs()``)."""
        return []

    def geometry(self) -> coord_map.Geometry:
        """The layer as :mod:`port.net.coord_map` sees it (type, blobs, kernel/stride/pad...)."""
        return coord_map.geometry_from_layer(self.layer)

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
        """The tops' shapes for bottoms of these shapes, as the layer's Caffe ``Reshape``
        computes them (:func:`port.net.shapes.layer_reshape`, no data, no compute) with its
        parameters' shapes, raising the error ``forward`` would."""
        return rules.layer_reshape(self.layer, [tuple(b) for b in bottoms],
                                   [tuple(p.shape) for p in self.caffe_params()])

    def _new_param(self, name: str, shape: Sequence[int]) -> None:
        """A parameter of ``shape`` (:func:`port.net.shapes.param_names` names each blob)."""
        # Caffe's default filler is constant 0; real values come from a caffemodel.
        self.register_parameter(name, nn.Parameter(torch.zeros(tuple(int(s) for s in shape))))

    def _bias(self) -> nn.Parameter | None:
        """The bias, or None without ``bias_term``."""
        return self.bias if getattr(self, "bias_term", False) else None

    def _bias_params(self) -> list[nn.Parameter]:
        """The bias as Caffe's last blob, when there is one."""
        return [] if self._bias() is None else [self.bias]


@_register("Convolution", "Deconvolution")
class Convolution(CaffeLayer):
    """Caffe Convolution / Deconvolution (conv_layer.cpp, deconv_layer.cpp, base_conv_layer.cpp):
    weight ``(num_output, C/group, kh, kw)`` or, transposed, ``(C, num_output/group, kh, kw)``;
    bias ``(num_output,)`` when ``bias_term``."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)  # the checks and shapes: port.net.shapes
        geo = rules.conv_settings(layer)
        self.transposed = layer.type == "Deconvolution"
        self.kernel, self.stride, self.pad, self.dilation = (geo[k] for k in ("kernel", "stride", "pad", "dilation"))
        self.groups = int(layer.convolution_param.group)
        self.bias_term = bool(layer.convolution_param.bias_term)

    def caffe_params(self) -> list[nn.Parameter]:
        return [self.weight, *self._bias_params()]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        fn = ops.deconv2d if self.transposed else ops.conv2d
        return (fn(x, self.weight, self._bias(), self.stride, self.pad, self.groups, self.dilation,
                   self.caffe_name),)


@_register("InnerProduct")
class InnerProduct(CaffeLayer):
    """Caffe InnerProduct (inner_product_layer.cpp): flattens axes from ``axis`` into K;
    weight ``(num_output, K)`` (``(K, num_output)`` when ``transpose``), bias ``(num_output,)``."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        param = layer.inner_product_param
        self.axis, self.transpose = int(param.axis), bool(param.transpose)
        self.bias_term = bool(param.bias_term)

    def caffe_params(self) -> list[nn.Parameter]:
        return [self.weight, *self._bias_params()]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.inner_product(x, self.weight, self._bias(), self.axis,
                                  self.transpose, self.caffe_name),)


@_register("Pooling")
class Pooling(CaffeLayer):
    """Caffe Pooling (pooling_layer.cpp), MAX or AVE, via :func:`port.net.ops.pool2d`."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        s = rules.pooling_settings(layer, shapes)  # LayerSetUp's checks ran in super().__init__
        self.mode, self.global_pooling = s["mode"], s["global_pooling"]
        self.kernel, self.stride, self.pad = s["kernel"], s["stride"], s["pad"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.pool2d(x, self.kernel, self.stride, self.pad, self.mode, self.global_pooling,
                           self.caffe_name),)


@_register("ReLU")
class ReLU(CaffeLayer):
    """Caffe ReLU (relu_layer.cpp): ``max(x, 0) + negative_slope * min(x, 0)``. ``inplace``
    (off by default: autograd needs the input) overwrites the bottom's memory as Caffe does."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.negative_slope = float(layer.relu_param.negative_slope)
        self.inplace = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if self.negative_slope:
            return (F.leaky_relu(x, self.negative_slope, inplace=self.inplace),)
        return (F.relu(x, inplace=self.inplace),)


class Identity(CaffeLayer):
    """A layer whose work another one did (an in-place ReLU fused into its convolution by a
    run mode): passes its bottom through."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x,)


def relu_in_place_after(steps: Sequence[tuple[str, Sequence[str], Sequence[str]]],
                        layers: Mapping[str, nn.Module], index: int, *,
                        fused: bool = False) -> str | None:
    """The in-place ReLU right after a convolution: the name of the layer at ``index + 1`` of
    ``steps`` (``CaffeNet.steps``: ``(name, bottoms, tops)`` in net order; ``layers`` by name)
    when ``steps[index]`` is a non-transposed :class:`Convolution` (or a run-mode variant of
    one) with one top and the next layer is a plain :class:`ReLU` (``negative_slope: 0``)
    reading and writing that top (upstream's ``conv_relu``: ``L.ReLU(conv, in_place=True)``),
    the pair a backend can fuse; else None. With ``fused``, an :class:`Identity` there counts
    too (the ReLU a run mode already fused into its convolution)."""
    if index + 1 >= len(steps):
        return None
    (conv, _, conv_tops), (after, bottoms, tops) = steps[index], steps[index + 1]
    module, follower = layers[conv], layers[after]
    if not isinstance(module, Convolution) or module.transposed or len(conv_tops) != 1:
        return None
    plain = type(follower) is ReLU and not follower.negative_slope
    if tuple(bottoms) == tuple(tops) == tuple(conv_tops) and (plain or fused and type(follower) is Identity):
        return after
    return None


@_register("Dropout")
class Dropout(CaffeLayer):
    """Caffe Dropout (dropout_layer.cpp): the identity in the TEST phase; in a TRAIN-phase net
    in training mode, zero with probability ``dropout_ratio`` and scale by ``1/(1-ratio)``."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.ratio = float(layer.dropout_param.dropout_ratio)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (F.dropout(x, self.ratio, training=self.training and self.phase == "TRAIN"),)


@_register("LRN")
class LRN(CaffeLayer):
    """Caffe LRN (lrn_layer.cpp), ACROSS_CHANNELS or WITHIN_CHANNEL."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        p = layer.lrn_param
        self.region, self.size = str(p.norm_region), int(p.local_size)
        self.alpha, self.beta, self.k = float(p.alpha), float(p.beta), float(p.k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if self.region == "WITHIN_CHANNEL":
            return (ops.lrn_within_channel(x, self.size, self.alpha, self.beta, self.caffe_name),)
        return (ops.lrn_across_channels(x, self.size, self.alpha, self.beta, self.k, self.caffe_name),)


@_register("Crop")
class Crop(CaffeLayer):
    """Caffe Crop (crop_layer.cpp): the first bottom cropped to the second's size from ``axis``."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.axis, self.offsets = rules.crop_settings(layer)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.crop(x, ref, self.axis, self.offsets, self.caffe_name),)


@_register("Eltwise")
class Eltwise(CaffeLayer):
    """Caffe Eltwise (eltwise_layer.cpp): SUM with ``coeff``, PROD, MAX."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.operation, self.coeff = rules.eltwise_settings(layer)

    def forward(self, *bottoms: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.eltwise(bottoms, self.operation, self.coeff, self.caffe_name),)


@_register("Concat")
class Concat(CaffeLayer):
    """Caffe Concat (concat_layer.cpp) along ``axis`` (or the legacy ``concat_dim``)."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.axis = rules.concat_axis(layer)

    def forward(self, *bottoms: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.concat(bottoms, self.axis, self.caffe_name),)


@_register("Scale")
class Scale(CaffeLayer):
    """Caffe Scale (scale_layer.cpp): ``x * scale (+ bias)``, the scale a parameter of shape
    ``x.shape[axis:axis+num_axes]`` (one bottom; ``num_axes`` -1: to the end, 0: a scalar) or
    the second bottom; the bias (``bias_term``, Caffe's inner Bias layer) a parameter of the
    scale's shape, the layer's last blob."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        p = layer.scale_param
        self.axis, self.two_bottoms = int(p.axis), len(shapes) == 2
        self.bias_term = bool(p.bias_term)
        if not self.two_bottoms:
            # scale_layer.cpp LayerSetUp: the scale's filler, by default constant 1 (a constant
            # filler is applied here; the random ones are fill_net's, seeded by its caller).
            spec = fillers.layer_fillers(layer)[0]
            if fillers.filler_type(spec) == "constant":
                fillers.fill_(self.weight, spec, where=f"layer {layer.name!r} blob 0")

    def caffe_params(self) -> list[nn.Parameter]:
        return ([] if self.two_bottoms else [self.weight]) + self._bias_params()

    def forward(self, x: torch.Tensor, *scale: torch.Tensor) -> tuple[torch.Tensor]:
        weight = scale[0] if self.two_bottoms else self.weight
        return (ops.scale(x, weight, self._bias(), self.axis, self.caffe_name),)


@_register("Bias")
class Bias(CaffeLayer):
    """Caffe Bias (bias_layer.cpp): ``x + bias``, the bias a parameter of shape
    ``x.shape[axis:axis+num_axes]`` (one bottom; by default constant 0) or the second bottom."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        p = layer.bias_param
        self.axis, self.two_bottoms = int(p.axis), len(shapes) == 2
        if not self.two_bottoms:
            spec = fillers.layer_fillers(layer)[0]
            if fillers.filler_type(spec) == "constant":
                fillers.fill_(self.bias, spec, where=f"layer {layer.name!r} blob 0")

    def caffe_params(self) -> list[nn.Parameter]:
        return [] if self.two_bottoms else [self.bias]

    def forward(self, x: torch.Tensor, *value: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.bias(x, value[0] if self.two_bottoms else self.bias, self.axis, self.caffe_name),)


#: BatchNorm's blobs in Caffe's order (batch_norm_layer.cpp): the moving sums of the mean and
#: of the variance, and the scale factor they are divided by (``[1]``).


def _statistics_frozen(layer: Any, count: int) -> Any:
    """``layer`` as ``BatchNormLayer::LayerSetUp`` leaves its ``layer_param_``: a ``param {
    lr_mult: 0 }`` appended for each of the ``count`` blobs the prototxt gives no spec (so the
    solver never updates the statistics); a spec with another ``lr_mult`` is refused ("Cannot
    configure batch normalization statistics as layer parameters"). A copy when specs are
    added; the parsed net is left as it was."""
    specs = layer.params
    rules.check_statistics_specs(layer, count)
    if len(specs) >= count:
        return layer
    msg = layer.msg.copy()
    for _ in range(count - len(specs)):
        msg.add("param").set("lr_mult", 0.0)
    return type(layer)(msg, layer.blobs)


@_register("BatchNorm")
class BatchNorm(CaffeLayer):
    """Caffe BatchNorm (batch_norm_layer.cpp): per channel (axis 1), ``(x - mean) /
    sqrt(variance + eps)``. Three parameters in Caffe's blob order (:data:`BATCH_NORM_BLOBS`):
    ``mean`` and ``variance`` (C,), the moving sums, and ``scale_factor`` (1,); Caffe's
    default filler makes all three 0. They are never learned (``requires_grad`` off, and
    :attr:`layer` carries ``lr_mult: 0`` for each, as ``LayerSetUp`` adds it) but they are the
    layer's weights: every weights path (caffemodel, state dict, snapshots) carries them.

    ``use_global_stats`` (default: true in the TEST phase, false in TRAIN): normalise with the
    stored statistics, ``blob / blob2`` (:func:`port.net.ops.batch_norm_global_stats`).
    Without it, with the batch's own mean and biased variance over every axis but 1
    (:func:`port.net.ops.batch_norm_batch_stats`), and each forward pass updates the stored
    blobs in place (:func:`port.net.ops.batch_norm_update_`, ``moving_average_fraction``), as
    Caffe's does in either phase."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        p = layer.batch_norm_param
        self.use_global_stats = bool(p.use_global_stats) if p.has("use_global_stats") else phase == "TEST"
        self.fraction, self.eps = float(p.moving_average_fraction), float(p.eps)
        self.channels = self.setup_shapes[0][0]
        for name in BATCH_NORM_BLOBS:
            getattr(self, name).requires_grad_(False)
        self.layer = _statistics_frozen(layer, len(BATCH_NORM_BLOBS))

    def caffe_params(self) -> list[nn.Parameter]:
        return [getattr(self, name) for name in BATCH_NORM_BLOBS]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if self.use_global_stats:
            mean, variance = ops.batch_norm_global_stats(self.mean, self.variance, self.scale_factor)
        else:
            mean, variance = ops.batch_norm_batch_stats(x)
            ops.batch_norm_update_(self.mean, self.variance, self.scale_factor, mean, variance,
                                   x.numel() // self.channels, self.fraction)
        return (ops.batch_norm(x, mean, variance, self.eps, self.caffe_name),)


@_register("Sigmoid")
class Sigmoid(CaffeLayer):
    """Caffe Sigmoid (sigmoid_layer.cpp) by :func:`port.net.ops.sigmoid`."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.sigmoid(x),)


@_register("Softmax")
class Softmax(CaffeLayer):
    """Caffe Softmax (softmax_layer.cpp) along ``axis``."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.axis = int(layer.softmax_param.axis)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.softmax(x, self.axis),)


def _ignore_label(param: Any) -> int | None:
    return int(param.ignore_label) if param.has("ignore_label") else None


@_register("SoftmaxWithLoss")
class SoftmaxWithLoss(CaffeLayer):
    """Caffe SoftmaxWithLoss (softmax_loss_layer.cpp): the loss (0-d), and the softmax
    probabilities as an optional second top."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.ignore_label = _ignore_label(layer.loss_param)
        self.normalization = rules.softmax_loss_normalization(layer)
        self.axis, self.two_tops = int(layer.softmax_param.axis), len(layer.top) == 2

    def forward(self, score: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss = ops.softmax_with_loss(score, label, self.ignore_label, self.normalization, self.axis,
                                     self.caffe_name)
        return (loss, ops.softmax(score, self.axis)) if self.two_tops else (loss,)


@_register("Accuracy")
class Accuracy(CaffeLayer):
    """Caffe Accuracy (accuracy_layer.cpp), top-k over ``axis``; one top."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        p = layer.accuracy_param
        self.top_k, self.axis, self.ignore_label = int(p.top_k), int(p.axis), _ignore_label(p)

    def forward(self, score: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.accuracy(score, label, self.top_k, self.axis, self.ignore_label, self.caffe_name),)


@_register("Split")
class Split(CaffeLayer):
    """Caffe Split (split_layer.cpp): every top shares the bottom's data."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.count = len(layer.top)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.count


@_register("Silence")
class Silence(CaffeLayer):
    """Caffe Silence (silence_layer.cpp): consumes its bottoms, produces nothing."""

    def forward(self, *bottoms: torch.Tensor) -> tuple[()]:
        return ()


@_register("Flatten")
class Flatten(CaffeLayer):
    """Caffe Flatten (flatten_layer.cpp): axes ``axis..end_axis`` merged into one."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.start, self.end = rules.flatten_axes(layer, len(shapes[0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x.flatten(self.start, self.end),)


@_register("Reshape")
class Reshape(CaffeLayer):
    """Caffe Reshape (reshape_layer.cpp) via :func:`reshape_target`."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.dims, self.axis, self.num_axes = rules.reshape_settings(layer)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x.reshape(reshape_target(tuple(x.shape), self.dims, self.axis, self.num_axes,
                                         self.caffe_name)),)


SUPPORTED_LAYER_TYPES = tuple(sorted(set(LAYER_TYPES) | set(INPUT_LAYER_TYPES)))


def redress(cls: type[CaffeLayer], layer: CaffeLayer, **attributes: Any) -> CaffeLayer:
    """``layer`` as an instance of ``cls`` (a run-mode variant of its class, e.g. a prepacked
    convolution): the same ``LayerDef``, attributes and Parameter objects (so state-dict keys
    and values are unchanged, nothing is copied), plus ``attributes``."""
    new = cls.__new__(cls)
    nn.Module.__init__(new)
    for key, value in vars(layer).items():
        if not key.startswith("_"):
            setattr(new, key, value)
    for key, param in layer._parameters.items():
        new.register_parameter(key, param)
    for key, buffer in layer._buffers.items():
        new.register_buffer(key, buffer)
    for key, value in attributes.items():
        setattr(new, key, value)
    return new


def build_layer(layer: Any, shapes: Sequence[tuple[int, ...]], phase: str) -> CaffeLayer:
    """The module of ``layer`` (a ``LayerDef``) for bottoms of ``shapes`` in ``phase``."""
    cls = LAYER_TYPES.get(layer.type)
    if cls is None:
        raise CaffeGraphError(f"layer {layer.name!r}: unknown type {layer.type!r}; supported "
                              f"types: {', '.join(SUPPORTED_LAYER_TYPES)}")
    return cls(layer, shapes, phase)
