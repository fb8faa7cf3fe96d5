"""The one library of Caffe layers: each an ``nn.Module`` built from a parsed ``LayerDef``.

Each class reproduces one Caffe layer type (its ``*_layer.cpp``) for the FCN family and the
Caffe nets made of the same layers: ``__init__`` reads the ``*_param`` and sizes the
parameters in Caffe's blob layouts, :meth:`CaffeLayer.output_shapes` is the layer's
``Reshape`` arithmetic (no data), ``forward(*bottoms)`` returns the tops. The semantics are in
:mod:`port.net.ops`; :mod:`port.net.engine` runs the layers as Caffe's ``Net`` does.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from port.errors import PortError
from port.net import coord_map, fillers, ops
from port.net.coord_map import spatial_params
from port.net.ops import CaffeSemanticsError
from port.weights import BATCH_NORM_BLOBS

__all__ = ["CaffeGraphError", "CaffeLayer", "LAYER_TYPES", "INPUT_LAYER_TYPES",
           "SUPPORTED_LAYER_TYPES", "build_layer", "redress", "Convolution", "Pooling", "LRN",
           "ReLU", "Identity", "relu_in_place_after", "Scale", "Bias", "BatchNorm",
           "BATCH_NORM_BLOBS", "Sigmoid"]

#: Layer types whose tops are forward inputs (their data comes from outside the net).
INPUT_LAYER_TYPES = ("Input", "Python")
LAYER_TYPES: dict[str, type["CaffeLayer"]] = {}


class CaffeGraphError(PortError):
    """A net the graph cannot build: unknown layer type, missing bottom, bad input."""


def _register(*types: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        for name in types:
            LAYER_TYPES[name] = cls
        return cls
    return wrap


class CaffeLayer(nn.Module):
    """One Caffe layer: ``forward(*bottoms) -> tuple of tops``. ``bottoms``/``tops`` are the
    allowed counts (min, max) as the layer's ``ExactNumBottomBlobs``/``MinTopBlobs``..."""

    bottoms: tuple[int, int] = (1, 1)
    tops: tuple[int, int] = (1, 1)

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__()
        self.caffe_name, self.caffe_type, self.phase = layer.name, layer.type, phase
        self.layer = layer  # the LayerDef: param { lr_mult decay_mult }, *_param, fillers
        for what, count, (low, high) in (("bottom", len(layer.bottom), self.bottoms),
                                         ("top", len(layer.top), self.tops)):
            if not low <= count <= high:
                raise CaffeGraphError(f"layer {layer.name!r} ({layer.type}): {count} {what}s, "
                                      f"expected {low}" + (f" to {high}" if high != low else ""))

    def caffe_params(self) -> list[nn.Parameter]:
        """Parameters in Caffe's blob order (``layer.blobs()``)."""
        return []

    def geometry(self) -> coord_map.Geometry:
        """The layer as :mod:`port.net.coord_map` sees it (type, blobs, kernel/stride/pad...)."""
        return coord_map.geometry_from_layer(self.layer)

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
        """The tops' shapes for bottoms of these shapes, as the layer's Caffe ``Reshape``
        computes them (no data, no compute), raising the error ``forward`` would. This
        default is an elementwise layer's: one top shaped like the first bottom."""
        return (tuple(bottoms[0]),)

    def _new_param(self, name: str, shape: Sequence[int]) -> None:
        # Caffe's default filler is constant 0; real values come from a caffemodel.
        self.register_parameter(name, nn.Parameter(torch.zeros(tuple(int(s) for s in shape))))

    def _new_bias(self, bias_term: bool, shape: Sequence[int]) -> None:
        """A layer's ``bias_term`` and, when it is set, its ``bias`` parameter of ``shape``."""
        self.bias_term = bool(bias_term)
        if self.bias_term:
            self._new_param("bias", shape)

    def _bias(self) -> nn.Parameter | None:
        """The bias, or None without ``bias_term``."""
        return self.bias if getattr(self, "bias_term", False) else None

    def _bias_params(self) -> list[nn.Parameter]:
        """The bias as Caffe's last blob, when there is one."""
        return [] if self._bias() is None else [self.bias]


def _check_4d(layer: CaffeLayer, shape: Sequence[int]) -> None:
    if len(shape) != 4:
        raise CaffeGraphError(f"layer {layer.caffe_name!r} ({layer.caffe_type}): expects an "
                              f"N x C x H x W bottom, got shape {tuple(shape)}")


def _one(values: tuple[int, ...], what: str, layer: str) -> int | tuple[int, int]:
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise CaffeGraphError(f"layer {layer!r}: {len(values)} {what} values; only 2-D is supported")


@_register("Convolution", "Deconvolution")
class Convolution(CaffeLayer):
    """Caffe Convolution / Deconvolution (conv_layer.cpp, deconv_layer.cpp, base_conv_layer.cpp):
    weight ``(num_output, C/group, kh, kw)`` or, transposed, ``(C, num_output/group, kh, kw)``;
    bias ``(num_output,)`` when ``bias_term``."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        _check_4d(self, shapes[0])
        param, geo = layer.convolution_param, spatial_params(layer)
        if int(param.axis) != 1:
            raise CaffeGraphError(f"layer {layer.name!r}: convolution axis {param.axis} unsupported (1 only)")
        self.transposed = layer.type == "Deconvolution"
        self.kernel = _one(geo["kernel"], "kernel", layer.name)
        self.stride, self.pad = _one(geo["stride"], "stride", layer.name), _one(geo["pad"], "pad", layer.name)
        self.dilation, self.groups = _one(geo["dilation"], "dilation", layer.name), int(param.group)
        channels, num_output = shapes[0][1], int(param.num_output)
        if channels % self.groups or num_output % self.groups:
            raise CaffeGraphError(f"layer {layer.name!r}: {channels} input and {num_output} output "
                                  f"channels are not divisible by group {self.groups}")
        self._new_param("weight", ops.conv_weight_shape(channels, num_output, self.kernel, self.groups,
                                                        self.transposed, layer.name))
        self._new_bias(param.bias_term, (num_output,))

    def caffe_params(self) -> list[nn.Parameter]:
        return [self.weight, *self._bias_params()]

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """``(N, num_output, H', W')`` by :func:`port.net.ops.conv2d_output_shape`
        (``BaseConvolutionLayer::Reshape``), which makes the channel check of
        :func:`port.net.ops.conv2d` / :func:`port.net.ops.deconv2d`."""
        x = tuple(bottoms[0])
        if not self.transposed:  # a non-4-D Convolution bottom has always been a CaffeGraphError here
            _check_4d(self, x)
        return (ops.conv2d_output_shape(x, tuple(self.weight.shape), self.stride, self.pad, self.groups,
                                        self.dilation, self.transposed, self.caffe_name),)

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
        self.axis, self.transpose, num_output = int(param.axis), bool(param.transpose), int(param.num_output)
        self._new_param("weight", ops.inner_product_weight_shape(shapes[0], num_output, self.axis,
                                                                 self.transpose, layer.name))
        self._new_bias(param.bias_term, (num_output,))

    def caffe_params(self) -> list[nn.Parameter]:
        return [self.weight, *self._bias_params()]

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """The axes before ``axis``, then ``num_output``, by
        :func:`port.net.ops.inner_product_output_shape` (``InnerProductLayer::Reshape``), which
        makes :func:`port.net.ops.inner_product`'s check of K."""
        return (ops.inner_product_output_shape(tuple(bottoms[0]), tuple(self.weight.shape), self.axis,
                                               self.transpose, self.caffe_name),)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.inner_product(x, self.weight, self._bias(), self.axis,
                                  self.transpose, self.caffe_name),)


@_register("Pooling")
class Pooling(CaffeLayer):
    """Caffe Pooling (pooling_layer.cpp), MAX or AVE, via :func:`port.net.ops.pool2d`."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        _check_4d(self, shapes[0])
        param, geo = layer.pooling_param, spatial_params(layer)
        self.mode, self.global_pooling = str(param.pool), bool(param.global_pooling)
        if self.mode not in ("MAX", "AVE"):
            raise CaffeGraphError(f"layer {layer.name!r}: pooling method {self.mode} unsupported (MAX, AVE)")
        if not self.global_pooling and 0 in geo["kernel"]:
            raise CaffeGraphError(f"layer {layer.name!r}: pooling needs kernel_size or kernel_h/kernel_w")
        if self.global_pooling and (any(param.has(f) for f in ("kernel_size", "kernel_h", "kernel_w"))
                                    or set(geo["pad"]) != {0} or set(geo["stride"]) != {1}):
            # pooling_layer.cpp LayerSetUp's CHECKs
            raise CaffeGraphError(f"layer {layer.name!r}: with global_pooling the kernel is the whole "
                                  f"input; no kernel size, pad 0 and stride 1 only")
        if str(param.round_mode) != "CEIL":
            # Caffe's later round_mode: FLOOR; every Caffe FCN and classifier uses the default CEIL
            raise CaffeGraphError(f"layer {layer.name!r}: pooling round_mode {param.round_mode} is not "
                                  f"supported (CEIL only)")
        self.kernel = _one(geo["kernel"], "kernel", layer.name)
        self.stride, self.pad = _one(geo["stride"], "stride", layer.name), _one(geo["pad"], "pad", layer.name)

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """``(N, C, H', W')`` by :func:`port.net.ops.pool2d_output_shape` (``PoolingLayer::Reshape``:
        ceil rounding), :func:`port.net.ops.pool2d`'s checks; global pooling gives 1 x 1."""
        return (ops.pool2d_output_shape(tuple(bottoms[0]), self.kernel, self.stride, self.pad,
                                        self.global_pooling, self.caffe_name),)

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
        _check_4d(self, shapes[0])
        p = layer.lrn_param
        self.region, self.size = str(p.norm_region), int(p.local_size)
        self.alpha, self.beta, self.k = float(p.alpha), float(p.beta), float(p.k)

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """The bottom's shape by :func:`port.net.ops.lrn_output_shape` (``LRNLayer::Reshape``),
        which refuses an even ``local_size``."""
        return (ops.lrn_output_shape(tuple(bottoms[0]), self.size, self.caffe_name),)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if self.region == "WITHIN_CHANNEL":
            return (ops.lrn_within_channel(x, self.size, self.alpha, self.beta, self.caffe_name),)
        return (ops.lrn_across_channels(x, self.size, self.alpha, self.beta, self.k, self.caffe_name),)


@_register("Crop")
class Crop(CaffeLayer):
    """Caffe Crop (crop_layer.cpp): the first bottom cropped to the second's size from ``axis``."""

    bottoms = (2, 2)

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.axis = int(layer.crop_param.axis)
        self.offsets = tuple(int(o) for o in layer.crop_param.offset) or (0,)

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """The first bottom's axes before ``axis``, the reference's from it, by
        :func:`port.net.ops.crop_output_shape` (``CropLayer::Reshape``), which checks every offset."""
        return (ops.crop_output_shape(tuple(bottoms[0]), tuple(bottoms[1]), self.axis, self.offsets,
                                      self.caffe_name),)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.crop(x, ref, self.axis, self.offsets, self.caffe_name),)


@_register("Eltwise")
class Eltwise(CaffeLayer):
    """Caffe Eltwise (eltwise_layer.cpp): SUM with ``coeff``, PROD, MAX."""

    bottoms = (2, 1 << 30)

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.operation = str(layer.eltwise_param.operation)
        self.coeff = tuple(float(c) for c in layer.eltwise_param.coeff) or None

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """The common shape of the bottoms by :func:`port.net.ops.eltwise_output_shape`
        (``EltwiseLayer::Reshape``), which checks shapes, coefficients and operation."""
        return (ops.eltwise_output_shape([tuple(b) for b in bottoms], self.operation, self.coeff,
                                         self.caffe_name),)

    def forward(self, *bottoms: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.eltwise(bottoms, self.operation, self.coeff, self.caffe_name),)


@_register("Concat")
class Concat(CaffeLayer):
    """Caffe Concat (concat_layer.cpp) along ``axis`` (or the legacy ``concat_dim``)."""

    bottoms = (1, 1 << 30)

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        p = layer.concat_param
        self.axis = int(p.concat_dim if p.has("concat_dim") else p.axis)

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """Bottoms with equal axes except ``axis``, summed there, by
        :func:`port.net.ops.concat_output_shape` (``ConcatLayer::Reshape``)."""
        return (ops.concat_output_shape([tuple(b) for b in bottoms], self.axis, self.caffe_name),)

    def forward(self, *bottoms: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.concat(bottoms, self.axis, self.caffe_name),)


@_register("Scale")
class Scale(CaffeLayer):
    """Caffe Scale (scale_layer.cpp): ``x * scale (+ bias)``, the scale a parameter of shape
    ``x.shape[axis:axis+num_axes]`` (one bottom; ``num_axes`` -1: to the end, 0: a scalar) or
    the second bottom; the bias (``bias_term``, Caffe's inner Bias layer) a parameter of the
    scale's shape, the layer's last blob."""

    bottoms = (1, 2)

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        p = layer.scale_param
        self.axis, self.two_bottoms = int(p.axis), len(shapes) == 2
        if self.two_bottoms:
            scale_shape = tuple(shapes[1])
        else:
            scale_shape = ops.param_blob_shape(shapes[0], self.axis, int(p.num_axes), "scale", layer.name)
            self._new_param("weight", scale_shape)
            # scale_layer.cpp LayerSetUp: the scale's filler, by default constant 1 (a constant
            # filler is applied here; the random ones are fill_net's, seeded by its caller).
            spec = fillers.layer_fillers(layer)[0]
            if fillers.filler_type(spec) == "constant":
                fillers.fill_(self.weight, spec, where=f"layer {layer.name!r} blob 0")
        self._new_bias(p.bias_term, scale_shape)

    def caffe_params(self) -> list[nn.Parameter]:
        return ([] if self.two_bottoms else [self.weight]) + self._bias_params()

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """The first bottom's shape by :func:`port.net.ops.scale_output_shape`
        (``ScaleLayer::Reshape``), which checks that the scale covers the axes from ``axis``."""
        weight = tuple(bottoms[1]) if self.two_bottoms else tuple(self.weight.shape)
        bias = tuple(self.bias.shape) if self.bias_term else None
        return (ops.scale_output_shape(tuple(bottoms[0]), weight, bias, self.axis, self.caffe_name),)

    def forward(self, x: torch.Tensor, *scale: torch.Tensor) -> tuple[torch.Tensor]:
        weight = scale[0] if self.two_bottoms else self.weight
        return (ops.scale(x, weight, self._bias(), self.axis, self.caffe_name),)


@_register("Bias")
class Bias(CaffeLayer):
    """Caffe Bias (bias_layer.cpp): ``x + bias``, the bias a parameter of shape
    ``x.shape[axis:axis+num_axes]`` (one bottom; by default constant 0) or the second bottom."""

    bottoms = (1, 2)

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        p = layer.bias_param
        self.axis, self.two_bottoms = int(p.axis), len(shapes) == 2
        if not self.two_bottoms:
            self._new_param("bias", ops.param_blob_shape(shapes[0], self.axis, int(p.num_axes), "bias",
                                                         layer.name))
            spec = fillers.layer_fillers(layer)[0]
            if fillers.filler_type(spec) == "constant":
                fillers.fill_(self.bias, spec, where=f"layer {layer.name!r} blob 0")

    def caffe_params(self) -> list[nn.Parameter]:
        return [] if self.two_bottoms else [self.bias]

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """The first bottom's shape (``BiasLayer::Reshape``), the bias checked against the axes
        from ``axis`` (:func:`port.net.ops.broadcast_shape`)."""
        value = tuple(bottoms[1]) if self.two_bottoms else tuple(self.bias.shape)
        ops.broadcast_shape(tuple(bottoms[0]), value, self.axis, "bias", self.caffe_name)
        return (tuple(bottoms[0]),)

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
    for index, spec in enumerate(specs[:count]):
        if float(spec.lr_mult) != 0:
            raise CaffeGraphError(f"layer {layer.name!r} (BatchNorm): param {index} has lr_mult "
                                  f"{spec.lr_mult:g}; its statistics cannot be learned parameters "
                                  f"(Caffe requires lr_mult 0)")
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
        self.channels = ops.batch_norm_channels(shapes[0], layer.name)
        for name, shape in zip(BATCH_NORM_BLOBS, ((self.channels,), (self.channels,), (1,))):
            self._new_param(name, shape)
            getattr(self, name).requires_grad_(False)
        self.layer = _statistics_frozen(layer, len(BATCH_NORM_BLOBS))

    def caffe_params(self) -> list[nn.Parameter]:
        return [getattr(self, name) for name in BATCH_NORM_BLOBS]

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """The bottom's shape, its channels checked (``BatchNormLayer::Reshape``)."""
        return (ops.batch_norm_output_shape(tuple(bottoms[0]), self.channels, self.caffe_name),)

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

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """The bottom's shape (``SoftmaxLayer::Reshape``), ``axis`` checked."""
        ops.canonical_axis(self.axis, len(bottoms[0]), self.caffe_name, "softmax axis")
        return (tuple(bottoms[0]),)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.softmax(x, self.axis),)


def _ignore_label(param: Any) -> int | None:
    return int(param.ignore_label) if param.has("ignore_label") else None


@_register("SoftmaxWithLoss")
class SoftmaxWithLoss(CaffeLayer):
    """Caffe SoftmaxWithLoss (softmax_loss_layer.cpp): the loss (0-d), and the softmax
    probabilities as an optional second top."""

    bottoms, tops = (2, 2), (1, 2)

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        lp = layer.loss_param
        self.ignore_label = _ignore_label(lp)
        self.normalization = ops.loss_normalization(
            str(lp.normalization) if lp.has("normalization") else None,
            bool(lp.normalize) if lp.has("normalize") else None)
        self.axis, self.two_tops = int(layer.softmax_param.axis), len(layer.top) == 2

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
        """The loss is 0-d; the optional probabilities are shaped like the score."""
        score, label = tuple(bottoms[0]), tuple(bottoms[1])
        axis = ops.canonical_axis(self.axis, len(score), self.caffe_name, "softmax axis")
        ops.label_target_shape(score, label, axis, "SoftmaxWithLoss", self.caffe_name)
        return ((), score) if self.two_tops else ((),)

    def forward(self, score: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss = ops.softmax_with_loss(score, label, self.ignore_label, self.normalization, self.axis,
                                     self.caffe_name)
        return (loss, ops.softmax(score, self.axis)) if self.two_tops else (loss,)


@_register("Accuracy")
class Accuracy(CaffeLayer):
    """Caffe Accuracy (accuracy_layer.cpp), top-k over ``axis``; one top."""

    bottoms = (2, 2)

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        p = layer.accuracy_param
        self.top_k, self.axis, self.ignore_label = int(p.top_k), int(p.axis), _ignore_label(p)

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """A 0-d accuracy (``AccuracyLayer::Reshape``), the label count checked."""
        score, label = tuple(bottoms[0]), tuple(bottoms[1])
        axis = ops.canonical_axis(self.axis, len(score), self.caffe_name, "accuracy axis")
        ops.label_target_shape(score, label, axis, "Accuracy", self.caffe_name)
        return ((),)

    def forward(self, score: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor]:
        return (ops.accuracy(score, label, self.top_k, self.axis, self.ignore_label, self.caffe_name),)


@_register("Split")
class Split(CaffeLayer):
    """Caffe Split (split_layer.cpp): every top shares the bottom's data."""

    tops = (1, 1 << 30)

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        self.count = len(layer.top)

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
        return (tuple(bottoms[0]),) * self.count

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.count


@_register("Silence")
class Silence(CaffeLayer):
    """Caffe Silence (silence_layer.cpp): consumes its bottoms, produces nothing."""

    bottoms, tops = (1, 1 << 30), (0, 0)

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[()]:
        return ()

    def forward(self, *bottoms: torch.Tensor) -> tuple[()]:
        return ()


@_register("Flatten")
class Flatten(CaffeLayer):
    """Caffe Flatten (flatten_layer.cpp): axes ``axis..end_axis`` merged into one."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        p, ndim = layer.flatten_param, len(shapes[0])
        self.start = ops.canonical_axis(int(p.axis), ndim, layer.name, "flatten axis")
        self.end = ops.canonical_axis(int(p.end_axis), ndim, layer.name, "flatten end_axis")
        if self.end < self.start:  # Blob::count(start, end) checks start <= end
            raise CaffeSemanticsError(f"layer {layer.name!r}: flatten end_axis {p.end_axis} is "
                                      f"before axis {p.axis}")

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        """Axes ``axis..end_axis`` merged into their product (``FlattenLayer::Reshape``)."""
        x = tuple(bottoms[0])
        return (x[:self.start] + (int(np.prod(x[self.start:self.end + 1])),) + x[self.end + 1:],)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x.flatten(self.start, self.end),)


def reshape_target(shape: Sequence[int], dims: Sequence[int], axis: int = 0, num_axes: int = -1,
                   layer: str = "") -> tuple[int, ...]:
    """Caffe Reshape's output shape (reshape_layer.cpp ``Reshape``): ``dims`` replace axes
    ``axis .. axis+num_axes`` (all remaining for -1); 0 copies the bottom's dimension at that
    position, one -1 is inferred from the count."""
    ndim = len(shape)
    start = axis + ndim + 1 if axis < 0 else axis
    stop = ndim if num_axes == -1 else start + num_axes
    if not 0 <= start <= stop <= ndim or list(dims).count(-1) > 1:
        raise CaffeSemanticsError(f"layer {layer!r}: reshape axis {axis}, num_axes {num_axes}, "
                                  f"dims {list(dims)} do not fit bottom shape {tuple(shape)}")
    middle = [shape[start + i] if d == 0 else d for i, d in enumerate(dims)]
    if -1 in middle:
        known = int(np.prod([d for d in middle if d != -1])) or 1
        middle[middle.index(-1)] = int(np.prod(shape[start:stop])) // known
    result = tuple(shape[:start]) + tuple(middle) + tuple(shape[stop:])
    if int(np.prod(result)) != int(np.prod(shape)):
        raise CaffeSemanticsError(f"layer {layer!r}: reshape of {tuple(shape)} to {result} changes the count")
    return result


@_register("Reshape")
class Reshape(CaffeLayer):
    """Caffe Reshape (reshape_layer.cpp) via :func:`reshape_target`."""

    def __init__(self, layer: Any, shapes: Sequence[tuple[int, ...]], phase: str):
        super().__init__(layer, shapes, phase)
        p = layer.reshape_param
        self.dims = tuple(int(d) for d in p.shape.dim)
        self.axis, self.num_axes = int(p.axis), int(p.num_axes)

    def output_shapes(self, bottoms: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...]]:
        return (reshape_target(tuple(bottoms[0]), self.dims, self.axis, self.num_axes, self.caffe_name),)

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
