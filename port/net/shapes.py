"""Caffe's shape arithmetic on shapes alone, without torch: each layer's ``LayerSetUp`` (its
checks and its parameter blobs' shapes) and ``Reshape`` (its tops' shapes), and the net-wide
pass of ``Net::Init`` that sizes every blob and parameter from the inputs.

One home for these rules: :mod:`port.net.layers` sizes each layer's parameters by
:func:`layer_setup` and answers ``output_shapes`` by :func:`layer_reshape`, :mod:`port.net.ops`
checks its tensors with the ``*_output_shape`` functions here, :mod:`port.net.engine` walks a
net with :func:`walk`, and :mod:`port.convert` checks a caffemodel against :func:`net_shapes`
(no net built, no torch imported: converting a caffemodel needs none). Imports numpy,
``port.errors`` and ``port.net.coord_map`` only.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from port.caffe.net import NetState
from port.errors import PortError
from port.net import coord_map
from port.weights import BLOB_NAMES, blob_names, check_fit
from port.net.coord_map import spatial_params

__all__ = [
    "CaffeSemanticsError", "CaffeGraphError", "INPUT_LAYER_TYPES", "SHAPED_LAYER_TYPES",
    "DATA_LAYER_CHANNELS", "PROPAGATION_SIZE", "conv_output_size", "pool_output_size",
    "deconv_output_size", "canonical_axis", "conv_weight_shape", "conv2d_output_shape",
    "pool2d_output_shape", "crop_output_shape", "crop_offsets_for", "inner_product_weight_shape",
    "inner_product_output_shape", "concat_output_shape", "lrn_output_shape", "eltwise_output_shape",
    "scale_output_shape", "broadcast_shape", "param_blob_shape", "batch_norm_channels",
    "batch_norm_output_shape", "loss_normalization", "label_target_shape", "reshape_target",
    "spatial_value", "conv_settings", "check_counts", "check_statistics_specs", "layer_setup", "param_names", "layer_reshape",
    "check_layer_name", "data_input_shapes", "input_shapes", "located", "legacy_equal", "check_blobs", "check_crop_offsets", "walk",
    "NetShapes", "net_shapes",
]

#: Layer types whose tops are forward inputs (their data comes from outside the net).
INPUT_LAYER_TYPES = ("Input", "Python")


class CaffeGraphError(PortError):
    """A net the graph cannot build: unknown layer type, missing bottom, bad input."""


# ---------------------------------------------------------------------------------------------
# Each layer's arithmetic


#: LossParameter.NormalizationMode values (caffe.proto).
NORMALIZATION_MODES = ("FULL", "VALID", "BATCH_SIZE", "NONE")


class CaffeSemanticsError(PortError):
    """A net or tensor that Caffe itself would refuse (a failed ``CHECK`` in a layer's
    ``LayerSetUp``/``Reshape``), named by layer and with the expected and found values."""


def _where(layer: str) -> str:
    return f"layer {layer!r}: " if layer else ""


def _pair(value: int | Sequence[int], what: str, layer: str = "") -> tuple[int, int]:
    """An int or an ``(h, w)`` pair, as Caffe's ``kernel_size`` vs ``kernel_h``/``kernel_w``."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise CaffeSemanticsError(f"{_where(layer)}{what} must be an int or (h, w), got {value!r}")
    return pair  # type: ignore[return-value]


def _dims(shape: Sequence[int]) -> tuple[int, ...]:
    """A shape as a tuple of ints; a symbolic size (a ``torch.SymInt``, while ``torch.export``
    traces with dynamic height and width: anything that is not an integer) stays symbolic,
    where ``int()`` would bake in the traced size. No torch is imported here."""
    return tuple(_dim(s) for s in shape)


def _dim(size: Any) -> Any:
    """One size as :func:`_dims` keeps it."""
    return int(size) if isinstance(size, (int, np.integer)) else size


def _fails(condition: Any) -> bool:
    """Whether the refusal ``condition`` of a Caffe ``CHECK`` on sizes holds. A plain bool is
    itself. A symbolic one (a ``torch.SymBool``: ``torch.export`` tracing dynamic sizes) holds
    only where it is provable from the sizes' declared range, and adds no guard: a guard would
    tie the exported program to the traced size, and ``port.export`` checks these refusals over
    the range of sizes it declares (the smallest size every layer takes, and on)."""
    if isinstance(condition, (bool, np.bool_)):
        return bool(condition)
    # only reached while torch traces, so torch is already imported
    from torch.fx.experimental.symbolic_shapes import statically_known_true
    return statically_known_true(condition)


def canonical_axis(axis: int, ndim: int, layer: str = "", what: str = "axis") -> int:
    """Caffe ``Blob::CanonicalAxisIndex``: ``axis`` in ``[-ndim, ndim)``, negative from the
    end, as the non-negative index; ``what`` names the parameter in the error."""
    if not -ndim <= axis < ndim:
        raise CaffeSemanticsError(f"{_where(layer)}{what} {axis} out of range for a blob of "
                                  f"{ndim} axes (-{ndim} to {ndim - 1})")
    return axis % ndim


def conv_output_size(size: int, kernel: int, stride: int = 1, pad: int = 0, dilation: int = 1,
                     layer: str = "") -> int:
    """Convolution output size, floor rounding: ``(size + 2*pad - (dilation*(kernel-1)+1)) //
    stride + 1`` (caffe ``ConvolutionLayer::compute_output_shape``)."""
    extent = dilation * (kernel - 1) + 1
    out = (size + 2 * pad - extent) // stride + 1
    if _fails(out < 1):
        raise CaffeSemanticsError(
            f"{_where(layer)}convolution of input size {size} with dilated kernel {extent}, "
            f"pad {pad}, stride {stride} gives output size {out} (< 1)")
    return out


def pool_output_size(size: int, kernel: int, stride: int = 1, pad: int = 0, layer: str = "") -> int:
    """Pooling output size as caffe ``PoolingLayer::Reshape``: ceil rounding,
    ``ceil((size + 2*pad - kernel) / stride) + 1``, then, only when padding, drop a last window
    that would start in the padding (``(out - 1) * stride >= size + pad``)."""
    # Ceil division as floor((a + stride - 1) / stride), the form of PyTorch's own ceil_mode
    # size: equal for every integer, and under symbolic sizes the two read as one expression.
    out = (size + 2 * pad - kernel + stride - 1) // stride + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    if _fails(out < 1):
        raise CaffeSemanticsError(
            f"{_where(layer)}pooling of input size {size} with kernel {kernel}, pad {pad}, "
            f"stride {stride} gives output size {out} (< 1)")
    return out


def deconv_output_size(size: int, kernel: int, stride: int = 1, pad: int = 0, dilation: int = 1,
                       layer: str = "") -> int:
    """Deconvolution output size ``stride*(size-1) + dilation*(kernel-1)+1 - 2*pad``
    (caffe ``DeconvolutionLayer::compute_output_shape``)."""
    out = stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad
    if _fails(out < 1):
        raise CaffeSemanticsError(
            f"{_where(layer)}deconvolution of input size {size} with kernel {kernel}, pad {pad}, "
            f"stride {stride} gives output size {out} (< 1)")
    return out


def _pool_geometry(x_shape: Sequence[int], kernel: int | Sequence[int], stride: int | Sequence[int],
                   pad: int | Sequence[int], global_pooling: bool, layer: str
                   ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Kernel, stride, pad and output size as ``(h, w)`` pairs, checked as caffe
    ``PoolingLayer::LayerSetUp`` (4-D bottom; ``pad < kernel``; global pooling: kernel = H x W,
    stride 1, pad 0) and sized as ``PoolingLayer::Reshape`` (:func:`pool_output_size`)."""
    if len(x_shape) != 4:
        raise CaffeSemanticsError(f"{_where(layer)}pooling expects N x C x H x W, got {tuple(x_shape)}")
    if global_pooling:
        kernel, stride, pad = (_dim(x_shape[2]), _dim(x_shape[3])), 1, 0
    (kh, kw), (sh, sw), (ph, pw) = (_pair(kernel, "kernel", layer), _pair(stride, "stride", layer),
                                    _pair(pad, "pad", layer))
    if ph >= kh or pw >= kw:
        raise CaffeSemanticsError(f"{_where(layer)}pad ({ph}, {pw}) must be smaller than kernel ({kh}, {kw})")
    height, width = _dim(x_shape[2]), _dim(x_shape[3])
    out = pool_output_size(height, kh, sh, ph, layer), pool_output_size(width, kw, sw, pw, layer)
    return (kh, kw), (sh, sw), (ph, pw), out


def pool2d_output_shape(x_shape: Sequence[int], kernel: int | Sequence[int],
                        stride: int | Sequence[int] = 1, pad: int | Sequence[int] = 0,
                        global_pooling: bool = False, layer: str = "") -> tuple[int, int, int, int]:
    """The top shape ``(N, C, H', W')`` of caffe ``PoolingLayer::Reshape`` for an ``(N, C, H, W)``
    bottom, H' and W' by :func:`pool_output_size`, with ``LayerSetUp``'s checks (4-D bottom,
    ``pad < kernel``); ``global_pooling`` gives 1 x 1."""
    oh, ow = _pool_geometry(x_shape, kernel, stride, pad, global_pooling, layer)[3]
    return _dim(x_shape[0]), _dim(x_shape[1]), oh, ow


def _crop_offsets(ndim: int, axis: int, offsets: Sequence[int], layer: str) -> tuple[int, list[int]]:
    """The first cropped axis (``axis`` made non-negative, checked) and the per-axis offsets of
    :func:`crop_offsets_for`."""
    start = axis + ndim if axis < 0 else axis
    if not 0 <= start < ndim:
        raise CaffeSemanticsError(f"{_where(layer)}crop axis {axis} out of range for {ndim} axes")
    offsets = [int(o) for o in offsets]
    cropped = ndim - start
    if len(offsets) > 1 and len(offsets) != cropped:
        raise CaffeSemanticsError(
            f"{_where(layer)}crop has {len(offsets)} offsets; expected 1 or {cropped} (axes {start}..{ndim - 1})")
    per_axis = offsets * cropped if len(offsets) == 1 else (offsets or [0] * cropped)
    return start, [0] * start + per_axis


def crop_offsets_for(ndim: int, axis: int = 2, offsets: Sequence[int] = (0,),
                     layer: str = "") -> list[int]:
    """Per-axis offsets of a Crop (crop_layer.cpp ``Reshape``): axes before ``axis`` keep 0;
    no offset means 0, one offset applies to every axis >= ``axis``, else one per axis."""
    return _crop_offsets(ndim, axis, offsets, layer)[1]


def _crop_geometry(x_shape: Sequence[int], ref_shape: Sequence[int], axis: int,
                   offsets: Sequence[int], layer: str) -> tuple[int, list[int], tuple[int, ...]]:
    """The first cropped axis, the per-axis offsets and the top shape of caffe
    ``CropLayer::Reshape``, with its checks (same number of axes; every offset in range:
    ``0 <= offset`` and ``offset + reference size <= input size``)."""
    x_shape, ref_shape = _dims(x_shape), _dims(ref_shape)
    if len(ref_shape) != len(x_shape):
        raise CaffeSemanticsError(
            f"{_where(layer)}crop reference has {len(ref_shape)} axes, input has {len(x_shape)}")
    start, per_axis = _crop_offsets(len(x_shape), axis, offsets, layer)
    for i in range(start, len(x_shape)):
        offset, size = per_axis[i], x_shape[i]
        if offset < 0 or _fails(size - offset < ref_shape[i]):
            raise CaffeSemanticsError(
                f"{_where(layer)}crop on axis {i}: offset {offset} + reference size {ref_shape[i]} "
                f"exceeds input size {size}")
    return start, per_axis, x_shape[:start] + ref_shape[start:]


def crop_output_shape(x_shape: Sequence[int], ref_shape: Sequence[int], axis: int = 2,
                      offsets: Sequence[int] = (0,), layer: str = "") -> tuple[int, ...]:
    """The top shape of caffe ``CropLayer::Reshape``: the input's axes before ``axis``, the
    reference's from it, with its checks (same number of axes; every offset in range:
    ``0 <= offset`` and ``offset + reference size <= input size``)."""
    return _crop_geometry(x_shape, ref_shape, axis, offsets, layer)[2]


def conv_weight_shape(channels: int, num_output: int, kernel: int | Sequence[int], groups: int = 1,
                      transposed: bool = False, layer: str = "") -> tuple[int, int, int, int]:
    """The weight blob shape of caffe ``BaseConvolutionLayer::LayerSetUp``:
    ``(num_output, C/group, kh, kw)``, or for a Deconvolution (``reverse_dimensions``)
    ``(C, num_output/group, kh, kw)``."""
    kh, kw = _pair(kernel, "kernel", layer)
    io = (channels, num_output // groups) if transposed else (num_output, channels // groups)
    return (*io, kh, kw)


def conv2d_output_shape(x_shape: Sequence[int], weight_shape: Sequence[int],
                        stride: int | Sequence[int] = 1, pad: int | Sequence[int] = 0,
                        groups: int = 1, dilation: int | Sequence[int] = 1,
                        transposed: bool = False, layer: str = "") -> tuple[int, int, int, int]:
    """The top shape ``(N, C_out, H', W')`` of caffe ``BaseConvolutionLayer::Reshape`` for an
    ``(N, C, H, W)`` bottom and a weight laid out as :func:`conv_weight_shape`; H' and W' by
    :func:`conv_output_size` (``ConvolutionLayer::compute_output_shape``) or, ``transposed``,
    :func:`deconv_output_size` (``DeconvolutionLayer::compute_output_shape``). Raises when the
    weight's input channels (times ``groups``) do not match the bottom's channels."""
    x, w = _dims(x_shape), _dims(weight_shape)
    if transposed and (len(w) != 4 or len(x) != 4 or w[0] != x[1]):
        raise CaffeSemanticsError(
            f"{_where(layer)}deconvolution weight {w} (C_in, C_out/group, kh, kw) "
            f"does not fit input {x}")
    if not transposed and (len(w) != 4 or len(x) != 4 or w[1] * groups != x[1]):
        raise CaffeSemanticsError(
            f"{_where(layer)}convolution weight {w} with group {groups} does not "
            f"fit input {x} (expected C_in/group = {x[1] // max(groups, 1)})")
    (sh, sw), (ph, pw), (dh, dw) = (_pair(stride, "stride", layer), _pair(pad, "pad", layer),
                                    _pair(dilation, "dilation", layer))
    size = deconv_output_size if transposed else conv_output_size
    channels = w[1] * groups if transposed else w[0]
    return x[0], channels, size(x[2], w[2], sh, ph, dh, layer), size(x[3], w[3], sw, pw, dw, layer)


def inner_product_weight_shape(x_shape: Sequence[int], num_output: int, axis: int = 1,
                               transpose: bool = False, layer: str = "") -> tuple[int, int]:
    """The weight blob shape of caffe ``InnerProductLayer::LayerSetUp``: ``(num_output, K)``,
    or ``(K, num_output)`` when ``transpose``, with K the product of the bottom's axes from
    ``axis`` (``bottom[0]->count(axis)``, the axis checked by :func:`canonical_axis`)."""
    start = canonical_axis(axis, len(x_shape), layer)
    k, n = math.prod(int(s) for s in x_shape[start:]), int(num_output)
    return (k, n) if transpose else (n, k)


def inner_product_output_shape(x_shape: Sequence[int], weight_shape: Sequence[int], axis: int = 1,
                               transpose: bool = False, layer: str = "") -> tuple[int, ...]:
    """The top shape of caffe ``InnerProductLayer::Reshape``: the bottom's axes before ``axis``,
    then ``num_output``, for a weight laid out as :func:`inner_product_weight_shape`; raises,
    as its ``CHECK_EQ(K_, new_K)``, when the bottom's count from ``axis`` is not the weight's K."""
    x = _dims(x_shape)
    start = canonical_axis(axis, len(x), layer)
    k_axis, n_axis = (0, 1) if transpose else (1, 0)
    features, want = math.prod(x[start:]), int(weight_shape[k_axis])
    if features != want:
        raise CaffeSemanticsError(f"{_where(layer)}input has {features} features "
                                  f"from axis {start}, weights expect {want}")
    return x[:start] + (int(weight_shape[n_axis]),)


def concat_output_shape(shapes: Sequence[Sequence[int]], axis: int = 1, layer: str = "") -> tuple[int, ...]:
    """The top shape of caffe ``ConcatLayer::Reshape``: bottoms with equal shapes except on
    ``axis`` (checked by :func:`canonical_axis`), their sizes there summed."""
    if not shapes:
        raise CaffeSemanticsError(f"{_where(layer)}Concat needs at least 1 bottom, got 0")
    first = _dims(shapes[0])
    start = canonical_axis(axis, len(first), layer, "concat axis")
    rest = first[:start] + first[start + 1:]
    for i, other in enumerate((_dims(b) for b in shapes[1:]), 1):
        if len(other) != len(first) or other[:start] + other[start + 1:] != rest:
            raise CaffeSemanticsError(f"{_where(layer)}Concat bottom {i} has shape {other}, bottom 0 "
                                      f"has {first}; all must be equal except on axis {start}")
    return first[:start] + (sum(int(b[start]) for b in shapes),) + first[start + 1:]


def lrn_output_shape(x_shape: Sequence[int], local_size: int, layer: str = "") -> tuple[int, ...]:
    """The top shape of caffe ``LRNLayer::Reshape``: the bottom's (WITHIN_CHANNEL's pooling,
    kernel ``local_size``, pad ``(local_size-1)/2``, stride 1, keeps the size); an even
    ``local_size`` is refused as ``LRNLayer::LayerSetUp`` does."""
    if local_size % 2 != 1:
        raise CaffeSemanticsError(f"{_where(layer)}LRN only supports odd local_size, got {local_size}")
    return _dims(x_shape)


def eltwise_output_shape(shapes: Sequence[Sequence[int]], operation: str = "SUM",
                         coeff: Sequence[float] | None = None, layer: str = "") -> tuple[int, ...]:
    """The top shape of caffe ``EltwiseLayer::Reshape``, the bottoms' common shape, with
    ``LayerSetUp``'s checks: at least 2 bottoms of one shape, ``coeff`` only for SUM and one
    per bottom, operation SUM, PROD or MAX."""
    if len(shapes) < 2:
        raise CaffeSemanticsError(f"{_where(layer)}Eltwise needs at least 2 bottoms, got {len(shapes)}")
    shape = tuple(shapes[0])
    for i, other in enumerate(shapes[1:], 1):
        if tuple(other) != shape:
            raise CaffeSemanticsError(
                f"{_where(layer)}Eltwise bottom {i} has shape {tuple(other)}, bottom 0 has {shape}")
    coeff = list(coeff or [])
    if coeff and (operation != "SUM" or len(coeff) != len(shapes)):
        raise CaffeSemanticsError(
            f"{_where(layer)}Eltwise coeff needs operation SUM and one coefficient per bottom "
            f"({len(shapes)}), got {operation} with {len(coeff)}")
    if operation not in ("SUM", "PROD", "MAX"):
        raise CaffeSemanticsError(f"{_where(layer)}Eltwise operation {operation!r} not one of SUM, PROD, MAX")
    return shape


def scale_output_shape(x_shape: Sequence[int], scale_shape: Sequence[int],
                       bias_shape: Sequence[int] | None = None, axis: int = 1,
                       layer: str = "") -> tuple[int, ...]:
    """The top shape of caffe ``ScaleLayer::Reshape``, the bottom's, with its check that the
    scale covers the bottom's axes from ``axis`` (:func:`broadcast_shape`; a 0-axis scale
    covers everything) and that a bias has the scale's shape."""
    broadcast_shape(x_shape, scale_shape, axis, "scale", layer)
    if bias_shape is not None and tuple(bias_shape) != tuple(scale_shape):
        raise CaffeSemanticsError(
            f"{_where(layer)}bias shape {tuple(bias_shape)} differs from scale shape {tuple(scale_shape)}")
    return _dims(x_shape)


def broadcast_shape(x_shape: Sequence[int], blob_shape: Sequence[int], axis: int = 1,
                    what: str = "scale", layer: str = "") -> tuple[int, ...]:
    """How a Scale or Bias blob of ``blob_shape`` applied from ``axis`` broadcasts over a bottom
    of ``x_shape`` (scale_layer.cpp / bias_layer.cpp ``Reshape``: ``axis`` made canonical, but 0
    for a 0-axis blob, which applies everywhere; the blob must match the bottom's axes
    ``axis .. axis + blob.num_axes() - 1``): the blob's shape padded with 1s to the bottom's
    rank. ``what`` names the blob in the error."""
    x, blob = _dims(x_shape), _dims(blob_shape)
    start = 0 if not blob else canonical_axis(axis, len(x), layer, f"{what} axis")
    if x[start:start + len(blob)] != blob:
        raise CaffeSemanticsError(
            f"{_where(layer)}{what} of shape {blob} does not match input {x} from axis {axis}")
    return (1,) * start + blob + (1,) * (len(x) - start - len(blob))


def param_blob_shape(x_shape: Sequence[int], axis: int = 1, num_axes: int = 1,
                     what: str = "scale", layer: str = "") -> tuple[int, ...]:
    """The shape of a Scale or Bias layer's learned blob (scale_layer.cpp / bias_layer.cpp
    ``LayerSetUp`` with one bottom): the bottom's axes from ``axis`` (canonical), ``num_axes``
    of them, or all the rest for -1; ``num_axes: 0`` is a scalar (a 0-axis blob)."""
    x = _dims(x_shape)
    start = canonical_axis(axis, len(x), layer, f"{what} axis")
    if num_axes < -1:
        raise CaffeSemanticsError(f"{_where(layer)}{what} num_axes {num_axes} must be >= -1 "
                                  f"(-1: to the end of the bottom)")
    if num_axes >= 0 and start + num_axes > len(x):
        raise CaffeSemanticsError(f"{_where(layer)}{what} blob of {num_axes} axes from axis {axis} "
                                  f"extends past the bottom's shape {x}")
    return x[start:] if num_axes == -1 else x[start:start + num_axes]


def batch_norm_channels(x_shape: Sequence[int], layer: str = "") -> int:
    """The channels of caffe ``BatchNormLayer``: the bottom's axis 1. (``LayerSetUp`` takes 1
    for a 1-axis bottom, but ``Reshape`` then reads ``shape(1)``, which Caffe's
    ``CanonicalAxisIndex`` refuses: a BatchNorm bottom needs at least 2 axes.)"""
    if len(x_shape) < 2:
        raise CaffeSemanticsError(f"{_where(layer)}BatchNorm needs a bottom with a channel axis "
                                  f"(N x C x ...), got shape {tuple(x_shape)}")
    return int(x_shape[1])


def batch_norm_output_shape(x_shape: Sequence[int], channels: int, layer: str = "") -> tuple[int, ...]:
    """The top shape of caffe ``BatchNormLayer::Reshape``, the bottom's, whose axis 1 must be
    the ``channels`` the layer was set up with (its blobs' length)."""
    if batch_norm_channels(x_shape, layer) != channels:
        raise CaffeSemanticsError(f"{_where(layer)}BatchNorm of {channels} channels got a bottom "
                                  f"of shape {tuple(x_shape)}")
    return _dims(x_shape)


def loss_normalization(normalization: str | None = None, normalize: bool | None = None) -> str:
    """The effective LossParameter normalization (softmax_loss_layer.cpp ``LayerSetUp``): the
    legacy ``normalize`` applies only when ``normalization`` is unset (true -> VALID,
    false -> BATCH_SIZE); the default is VALID."""
    if normalization is None:
        if normalize is None:
            return "VALID"
        return "VALID" if normalize else "BATCH_SIZE"
    if normalization not in NORMALIZATION_MODES:
        raise CaffeSemanticsError(f"loss normalization {normalization!r} not one of {NORMALIZATION_MODES}")
    return normalization


def label_target_shape(score_shape: Sequence[int], label_shape: Sequence[int], axis: int = 1,
                       what: str = "SoftmaxWithLoss", layer: str = "") -> tuple[int, ...]:
    """The shape a loss reads its labels in: the score's without the class axis ``axis``
    (canonical, >= 0), checked by the count only as ``SoftmaxWithLossLayer::Reshape`` and
    ``AccuracyLayer::Reshape`` do (``outer_num * inner_num == label.count()``); ``what`` names
    the layer type in the error."""
    score, label = _dims(score_shape), _dims(label_shape)
    target = score[:axis] + score[axis + 1:]
    if math.prod(label) != math.prod(target):
        raise CaffeSemanticsError(
            f"{_where(layer)}{what}: label count {math.prod(label)} ({label}) must equal "
            f"the score's count without the class axis {target}")
    return target


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


# ---------------------------------------------------------------------------------------------
# Each layer type: LayerSetUp (checks, parameter shapes) and Reshape (top shapes)

Shape = tuple[int, ...]
_MANY = 1 << 30
#: Bottom and top counts (min, max) per type, as each layer's ``ExactNumBottomBlobs`` /
#: ``MinTopBlobs`` ...; a type not listed takes one bottom and gives one top.
COUNTS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "Crop": ((2, 2), (1, 1)), "Eltwise": ((2, _MANY), (1, 1)), "Concat": ((1, _MANY), (1, 1)),
    "Scale": ((1, 2), (1, 1)), "Bias": ((1, 2), (1, 1)), "SoftmaxWithLoss": ((2, 2), (1, 2)),
    "Accuracy": ((2, 2), (1, 1)), "Split": ((1, 1), (1, _MANY)), "Silence": ((1, _MANY), (0, 0)),
}


def check_counts(layer: Any) -> None:
    """Refuse a layer with a bottom or top count its type does not take."""
    for what, count, (low, high) in zip(("bottom", "top"), (len(layer.bottom), len(layer.top)),
                                        COUNTS.get(layer.type, ((1, 1), (1, 1)))):
        if not low <= count <= high:
            raise CaffeGraphError(f"layer {layer.name!r} ({layer.type}): {count} {what}s, "
                                  f"expected {low}" + (f" to {high}" if high != low else ""))


def _check_4d(layer: Any, shape: Sequence[int]) -> None:
    if len(shape) != 4:
        raise CaffeGraphError(f"layer {layer.name!r} ({layer.type}): expects an "
                              f"N x C x H x W bottom, got shape {tuple(shape)}")


def spatial_value(values: tuple[int, ...], what: str, layer: str) -> int | tuple[int, int]:
    """One spatial parameter (``kernel``, ``stride``, ...) of a 2-D layer: an int, or an
    ``(h, w)`` pair; more values (a 3-D layer) are refused."""
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise CaffeGraphError(f"layer {layer!r}: {len(values)} {what} values; only 2-D is supported")


def conv_settings(layer: Any) -> dict[str, int | tuple[int, int]]:
    """A Convolution's or Deconvolution's ``kernel``, ``stride``, ``pad`` and ``dilation``
    (base_conv_layer.cpp ``LayerSetUp``'s reading of ``convolution_param``), each an int or an
    ``(h, w)`` pair (:func:`spatial_value`)."""
    geo = spatial_params(layer)
    return {key: spatial_value(geo[key], key, layer.name) for key in ("kernel", "stride", "pad", "dilation")
            if key in geo}


def _bias_shapes(bias_term: Any, shape: Shape) -> tuple[Shape, ...]:
    return (tuple(shape),) if bool(bias_term) else ()


def _setup_convolution(layer: Any, bottoms: Sequence[Shape]) -> tuple[Shape, ...]:
    """base_conv_layer.cpp ``LayerSetUp``: weight ``(num_output, C/group, kh, kw)`` or, for a
    Deconvolution, ``(C, num_output/group, kh, kw)``; bias ``(num_output,)``."""
    _check_4d(layer, bottoms[0])
    param, geo = layer.convolution_param, conv_settings(layer)
    if int(param.axis) != 1:
        raise CaffeGraphError(f"layer {layer.name!r}: convolution axis {param.axis} unsupported (1 only)")
    channels, num_output, groups = bottoms[0][1], int(param.num_output), int(param.group)
    if channels % groups or num_output % groups:
        raise CaffeGraphError(f"layer {layer.name!r}: {channels} input and {num_output} output "
                              f"channels are not divisible by group {groups}")
    weight = conv_weight_shape(channels, num_output, geo["kernel"], groups,
                               layer.type == "Deconvolution", layer.name)
    return (weight, *_bias_shapes(param.bias_term, (num_output,)))


def _reshape_convolution(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    x, transposed = tuple(bottoms[0]), layer.type == "Deconvolution"
    if not transposed:  # a non-4-D Convolution bottom has always been a CaffeGraphError
        _check_4d(layer, x)
    geo = conv_settings(layer)
    return (conv2d_output_shape(x, tuple(params[0]), geo["stride"], geo["pad"], int(layer.convolution_param.group),
                                geo["dilation"], transposed, layer.name),)


def _setup_inner_product(layer: Any, bottoms: Sequence[Shape]) -> tuple[Shape, ...]:
    """inner_product_layer.cpp ``LayerSetUp``: weight ``(num_output, K)`` (``(K, num_output)``
    when ``transpose``), bias ``(num_output,)``."""
    p = layer.inner_product_param
    weight = inner_product_weight_shape(bottoms[0], int(p.num_output), int(p.axis), bool(p.transpose), layer.name)
    return (weight, *_bias_shapes(p.bias_term, (int(p.num_output),)))


def _reshape_inner_product(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    p = layer.inner_product_param
    return (inner_product_output_shape(tuple(bottoms[0]), tuple(params[0]), int(p.axis), bool(p.transpose),
                                       layer.name),)


def pooling_settings(layer: Any, bottoms: Sequence[Shape]) -> dict[str, Any]:
    """pooling_layer.cpp ``LayerSetUp``'s checks (4-D bottom, MAX or AVE, a kernel unless
    global, global pooling without kernel/pad/stride, CEIL rounding) and the settings:
    ``mode``, ``global_pooling``, ``kernel``, ``stride``, ``pad``."""
    _check_4d(layer, bottoms[0])
    param, geo = layer.pooling_param, spatial_params(layer)
    mode, global_pooling = str(param.pool), bool(param.global_pooling)
    if mode not in ("MAX", "AVE"):
        raise CaffeGraphError(f"layer {layer.name!r}: pooling method {mode} unsupported (MAX, AVE)")
    if not global_pooling and 0 in geo["kernel"]:
        raise CaffeGraphError(f"layer {layer.name!r}: pooling needs kernel_size or kernel_h/kernel_w")
    if global_pooling and (any(param.has(f) for f in ("kernel_size", "kernel_h", "kernel_w"))
                           or set(geo["pad"]) != {0} or set(geo["stride"]) != {1}):
        raise CaffeGraphError(f"layer {layer.name!r}: with global_pooling the kernel is the whole "
                              f"input; no kernel size, pad 0 and stride 1 only")
    if str(param.round_mode) != "CEIL":
        # Caffe's later round_mode: FLOOR; every Caffe FCN and classifier uses the default CEIL
        raise CaffeGraphError(f"layer {layer.name!r}: pooling round_mode {param.round_mode} is not "
                              f"supported (CEIL only)")
    return dict(mode=mode, global_pooling=global_pooling,
                **{k: spatial_value(geo[k], k, layer.name) for k in ("kernel", "stride", "pad")})


def _setup_pooling(layer: Any, bottoms: Sequence[Shape]) -> tuple[Shape, ...]:
    pooling_settings(layer, bottoms)  # its checks; no parameters
    return ()


def _reshape_pooling(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    s = pooling_settings(layer, bottoms)
    return (pool2d_output_shape(tuple(bottoms[0]), s["kernel"], s["stride"], s["pad"], s["global_pooling"],
                                layer.name),)


def _setup_lrn(layer: Any, bottoms: Sequence[Shape]) -> tuple[Shape, ...]:
    _check_4d(layer, bottoms[0])
    return ()


def crop_settings(layer: Any) -> tuple[int, tuple[int, ...]]:
    """A Crop's ``axis`` and ``offset`` list (``(0,)`` when none is written)."""
    return int(layer.crop_param.axis), tuple(int(o) for o in layer.crop_param.offset) or (0,)


def eltwise_settings(layer: Any) -> tuple[str, tuple[float, ...] | None]:
    """An Eltwise's ``operation`` and ``coeff`` (None when none is written)."""
    return str(layer.eltwise_param.operation), tuple(float(c) for c in layer.eltwise_param.coeff) or None


def concat_axis(layer: Any) -> int:
    """A Concat's axis: the legacy ``concat_dim`` when written, else ``axis``."""
    p = layer.concat_param
    return int(p.concat_dim if p.has("concat_dim") else p.axis)


def _setup_scale(layer: Any, bottoms: Sequence[Shape]) -> tuple[Shape, ...]:
    """scale_layer.cpp ``LayerSetUp``: with one bottom the scale blob (the bottom's axes from
    ``axis``, ``num_axes`` of them), then the bias of the scale's shape (``bias_term``)."""
    p = layer.scale_param
    if len(bottoms) == 2:
        return _bias_shapes(p.bias_term, tuple(bottoms[1]))
    scale = param_blob_shape(bottoms[0], int(p.axis), int(p.num_axes), "scale", layer.name)
    return (scale, *_bias_shapes(p.bias_term, scale))


def _reshape_scale(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    p = layer.scale_param
    two = len(bottoms) == 2
    weight = tuple(bottoms[1]) if two else tuple(params[0])
    bias = tuple(params[-1]) if bool(p.bias_term) else None
    return (scale_output_shape(tuple(bottoms[0]), weight, bias, int(p.axis), layer.name),)


def _setup_bias(layer: Any, bottoms: Sequence[Shape]) -> tuple[Shape, ...]:
    """bias_layer.cpp ``LayerSetUp``: with one bottom the bias blob (as Scale's)."""
    if len(bottoms) == 2:
        return ()
    p = layer.bias_param
    return (param_blob_shape(bottoms[0], int(p.axis), int(p.num_axes), "bias", layer.name),)


def _reshape_bias(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    value = tuple(bottoms[1]) if len(bottoms) == 2 else tuple(params[0])
    broadcast_shape(tuple(bottoms[0]), value, int(layer.bias_param.axis), "bias", layer.name)
    return (tuple(bottoms[0]),)


def check_statistics_specs(layer: Any, count: int) -> None:
    """``BatchNormLayer::LayerSetUp``'s refusal of a ``param`` spec with an ``lr_mult`` other
    than 0 ("Cannot configure batch normalization statistics as layer parameters")."""
    for index, spec in enumerate(layer.params[:count]):
        if float(spec.lr_mult) != 0:
            raise CaffeGraphError(f"layer {layer.name!r} (BatchNorm): param {index} has lr_mult "
                                  f"{spec.lr_mult:g}; its statistics cannot be learned parameters "
                                  f"(Caffe requires lr_mult 0)")


def _setup_batch_norm(layer: Any, bottoms: Sequence[Shape]) -> tuple[Shape, ...]:
    """batch_norm_layer.cpp ``LayerSetUp``: the mean and variance sums ``(C,)`` and the scale
    factor ``(1,)``, never learned."""
    channels = batch_norm_channels(bottoms[0], layer.name)
    shapes = ((channels,), (channels,), (1,))
    check_statistics_specs(layer, len(shapes))
    return shapes


def _reshape_batch_norm(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    return (batch_norm_output_shape(tuple(bottoms[0]), int(params[0][0]), layer.name),)


def _reshape_softmax(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    canonical_axis(int(layer.softmax_param.axis), len(bottoms[0]), layer.name, "softmax axis")
    return (tuple(bottoms[0]),)


def softmax_loss_normalization(layer: Any) -> str:
    """A SoftmaxWithLoss's effective normalization (:func:`loss_normalization` of its
    ``loss_param``)."""
    lp = layer.loss_param
    return loss_normalization(str(lp.normalization) if lp.has("normalization") else None,
                              bool(lp.normalize) if lp.has("normalize") else None)


def _setup_softmax_loss(layer: Any, bottoms: Sequence[Shape]) -> tuple[Shape, ...]:
    softmax_loss_normalization(layer)
    return ()


def _reshape_softmax_loss(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    """The loss is 0-d; the optional probabilities are shaped like the score."""
    score, label = tuple(bottoms[0]), tuple(bottoms[1])
    axis = canonical_axis(int(layer.softmax_param.axis), len(score), layer.name, "softmax axis")
    label_target_shape(score, label, axis, "SoftmaxWithLoss", layer.name)
    return ((), score) if len(layer.top) == 2 else ((),)


def _reshape_accuracy(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    score, label = tuple(bottoms[0]), tuple(bottoms[1])
    axis = canonical_axis(int(layer.accuracy_param.axis), len(score), layer.name, "accuracy axis")
    label_target_shape(score, label, axis, "Accuracy", layer.name)
    return ((),)


def flatten_axes(layer: Any, ndim: int) -> tuple[int, int]:
    """A Flatten's first and last merged axes (canonical), checked as ``Blob::count(start, end)``."""
    p = layer.flatten_param
    start = canonical_axis(int(p.axis), ndim, layer.name, "flatten axis")
    end = canonical_axis(int(p.end_axis), ndim, layer.name, "flatten end_axis")
    if end < start:
        raise CaffeSemanticsError(f"layer {layer.name!r}: flatten end_axis {p.end_axis} is "
                                  f"before axis {p.axis}")
    return start, end


def _setup_flatten(layer: Any, bottoms: Sequence[Shape]) -> tuple[Shape, ...]:
    flatten_axes(layer, len(bottoms[0]))
    return ()


def _reshape_flatten(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    x = tuple(bottoms[0])
    start, end = flatten_axes(layer, len(x))
    return (x[:start] + (int(np.prod(x[start:end + 1])),) + x[end + 1:],)


def reshape_settings(layer: Any) -> tuple[tuple[int, ...], int, int]:
    """A Reshape layer's ``shape.dim``, ``axis`` and ``num_axes``."""
    p = layer.reshape_param
    return tuple(int(d) for d in p.shape.dim), int(p.axis), int(p.num_axes)


def _reshape_reshape(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    dims, axis, num_axes = reshape_settings(layer)
    return (reshape_target(tuple(bottoms[0]), dims, axis, num_axes, layer.name),)


def _no_params(layer: Any, bottoms: Sequence[Shape]) -> tuple[Shape, ...]:
    return ()


def _elementwise(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    return (tuple(bottoms[0]),)


_SETUP: dict[str, Callable[[Any, Sequence[Shape]], tuple[Shape, ...]]] = {
    "Convolution": _setup_convolution, "Deconvolution": _setup_convolution,
    "InnerProduct": _setup_inner_product, "Pooling": _setup_pooling,
    "LRN": _setup_lrn, "Scale": _setup_scale, "Bias": _setup_bias, "BatchNorm": _setup_batch_norm,
    "SoftmaxWithLoss": _setup_softmax_loss, "Flatten": _setup_flatten,
}
_RESHAPE: dict[str, Callable[[Any, Sequence[Shape], Sequence[Shape]], tuple[Shape, ...]]] = {
    "Convolution": _reshape_convolution, "Deconvolution": _reshape_convolution,
    "InnerProduct": _reshape_inner_product, "Pooling": _reshape_pooling,
    "LRN": lambda l, b, p: (lrn_output_shape(tuple(b[0]), int(l.lrn_param.local_size), l.name),),
    "Crop": lambda l, b, p: (crop_output_shape(tuple(b[0]), tuple(b[1]), *crop_settings(l), l.name),),
    "Eltwise": lambda l, b, p: (eltwise_output_shape([tuple(s) for s in b], *eltwise_settings(l), l.name),),
    "Concat": lambda l, b, p: (concat_output_shape([tuple(s) for s in b], concat_axis(l), l.name),),
    "Scale": _reshape_scale, "Bias": _reshape_bias, "BatchNorm": _reshape_batch_norm,
    "Softmax": _reshape_softmax, "SoftmaxWithLoss": _reshape_softmax_loss, "Accuracy": _reshape_accuracy,
    "Split": lambda l, b, p: (tuple(b[0]),) * len(l.top), "Silence": lambda l, b, p: (),
    "Flatten": _reshape_flatten, "Reshape": _reshape_reshape,
    "ReLU": _elementwise, "Dropout": _elementwise, "Sigmoid": _elementwise,
}
#: The layer types whose shapes this module knows (those :mod:`port.net.layers` runs).
SHAPED_LAYER_TYPES = tuple(sorted(_RESHAPE))


def layer_setup(layer: Any, bottoms: Sequence[Shape]) -> tuple[Shape, ...]:
    """The layer's ``LayerSetUp`` on bottoms of these shapes: its checks (bottom and top
    counts included) and its parameter blobs' shapes in Caffe's blob order."""
    check_counts(layer)
    return _SETUP.get(layer.type, _no_params)(layer, bottoms)


def param_names(layer: Any, bottoms: int) -> tuple[str, ...]:
    """The names of the layer's parameters (``{layer}.{name}`` in a state dict) in Caffe's
    blob order, for a layer with ``bottoms`` bottoms: a Bias's one blob, and the one blob of a
    Scale whose scale is its second bottom, ``bias``; else the weights files' names of its
    type's blobs (``port.weights.blob_names``: a BatchNorm's statistics, else ``weight`` then
    ``bias``)."""
    if layer.type == "Bias" or (layer.type == "Scale" and bottoms == 2):
        return ("bias",)
    return blob_names(layer.type)


def layer_reshape(layer: Any, bottoms: Sequence[Shape], params: Sequence[Shape]) -> tuple[Shape, ...]:
    """The layer's ``Reshape``: its tops' shapes for bottoms of these shapes and parameters of
    these shapes (no data, no compute), raising what its ``Forward`` would. A type without a
    rule is elementwise: one top shaped like the first bottom."""
    return _RESHAPE.get(layer.type, _elementwise)(layer, bottoms, params)


# ---------------------------------------------------------------------------------------------
# The net: Net::Init's shape pass

#: Spatial size given to a data layer's tops whose size Caffe learns only at run time; any
#: size the net accepts gives the same parameter shapes.
PROPAGATION_SIZE = 500
#: Channels of the tops of upstream's Python data layers (voc_layers.py, siftflow_layers.py,
#: nyud_layers.py, pascalcontext_layers.py): images 3, depth and labels 1.
DATA_LAYER_CHANNELS = {"data": 3, "color": 3, "hha": 3, "depth": 1, "label": 1, "sem": 1, "geo": 1}


def data_input_shapes(net: Any, blobs: Mapping[str, Sequence] | None = None,
                      size: int = PROPAGATION_SIZE) -> dict[str, tuple[int, ...]]:
    """``(1, C, size, size)`` for each top of the net's ``Python`` data layers, which Caffe
    sizes only when the layer runs: ``C`` from the weight blob of the convolution reading the
    top (times its ``group``) when ``blobs`` (a caffemodel's, by layer name) has it, else
    :data:`DATA_LAYER_CHANNELS` (1 for a name it does not know, e.g. a label)."""
    blobs = blobs or {}
    shapes = {}
    for layer in net.layers:
        if layer.type != "Python":
            continue
        for top in layer.top:
            channels = DATA_LAYER_CHANNELS.get(top, 1)
            for reader in net.layers:
                if (reader.type == "Convolution" and reader.bottom[:1] == [top]
                        and len(blobs.get(reader.name, ())) > 0):
                    channels = int(blobs[reader.name][0].shape[1]) * int(reader.convolution_param.group)
                    break
            shapes[top] = (1, channels, size, size)
    return shapes


def input_shapes(net: Any, original: Any, overrides: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Forward inputs of the phase-filtered ``net`` in Caffe's order (net-level ``input``
    first, then ``Input`` and ``Python`` layers' tops) with their shapes; ``overrides``
    supplies or replaces shapes."""
    for layer in net.layers:
        if layer.type in INPUT_LAYER_TYPES and len(layer.bottom):
            raise CaffeGraphError(f"layer {layer.name!r}: a {layer.type} layer with bottoms computes "
                                  f"in code the port cannot run; only data layers (no bottoms) are supported")
    layer_tops = {t for layer in original.layers if layer.type in INPUT_LAYER_TYPES for t in layer.top}
    names = [n for n in net.inputs if n not in layer_tops]
    names += [t for layer in net.layers if layer.type in INPUT_LAYER_TYPES for t in layer.top]
    shapes = {}
    for name in names:
        shape = overrides.get(name, net.inputs.get(name))
        if shape is None:
            raise CaffeGraphError(
                f"net {net.name!r}: input blob {name!r} (a Python data layer's top) has no declared "
                f"shape; pass input_shapes={{{name!r}: (N, C, H, W)}}")
        shapes[name] = tuple(int(s) for s in shape)
    unknown = sorted(set(overrides) - set(shapes))
    if unknown:
        raise CaffeGraphError(f"net {net.name!r}: input_shapes names {unknown}, not inputs of the net {names}")
    return shapes


def located(err: Exception, net: Any, layer: Any) -> Exception:
    """``err`` with the file and place of ``layer`` in front (``net.prototxt: 12:1: layer ...``)
    when the net was read from a file, so a mistake in a prototxt names the prototxt."""
    pos = getattr(getattr(layer, "msg", None), "source_pos", None)
    path = getattr(net, "path", None)
    where = ": ".join(str(p) for p in (path, pos) if p)
    if not where or str(err).startswith(where):
        return err
    return type(err)(f"{where}: {err}")


def legacy_equal(blob_shape: tuple[int, ...], param_shape: tuple[int, ...]) -> bool:
    """Caffe ``Blob::ShapeEquals`` for legacy (num, channels, height, width) blobs: the shape
    padded with leading 1s to 4 axes (e.g. V1 InnerProduct weights ``1 x 1 x out x in``)."""
    pad = 4 - len(param_shape)
    return len(blob_shape) == 4 and pad > 0 and blob_shape == (1,) * pad + param_shape


def check_blobs(params: Mapping[str, Sequence[tuple[str, Shape]]], blobs: Mapping[str, Sequence[Any]],
                source: str, target: str) -> None:
    """Caffe's ``Net::CopyTrainedLayersFrom`` check, strictly: a caffemodel's ``blobs`` (by
    layer name, each layer's in blob order) against a net's parameters (``params``: by layer
    name, each ``(name, shape)`` in blob order) by ``port.weights.check_fit``: every parameter
    filled, every blob used, equal shapes (legacy 4-D shapes as ``Blob::ShapeEquals``); else
    one ``WeightsMismatchError`` listing each. Blob i of layer L is named as the net names L's
    i-th parameter (``L.weight``, ``L.bias``)."""
    def key(layer: str, index: int) -> str:
        own = params.get(layer, ())
        if index < len(own):
            return f"{layer}.{own[index][0]}"
        return f"{layer}.{BLOB_NAMES[index]}" if index < len(BLOB_NAMES) else f"{layer} blob {index}"
    check_fit({key(n, i): tuple(shape) for n, ps in params.items() for i, (_, shape) in enumerate(ps)},
              {key(n, i): tuple(np.shape(b)) for n, bs in blobs.items() for i, b in enumerate(bs)},
              source, target, equal=lambda got, want: got == want or legacy_equal(got, want))


def check_crop_offsets(net: Any) -> None:
    """Refuse a net whose written Crop offsets disagree with its geometry (``coord_map``).

    Caffe itself crops wherever the prototxt says, so a wrong offset would run silently and
    shift every score; the derivation is how ``net_spec``/``coord_map.py`` meant the offsets to
    be made. A crop whose map cannot be derived (a path through a layer without an affine
    spatial map, or no common ancestor) cannot be checked: that is a warning, not an error."""
    if not any(layer.type == "Crop" for layer in net.layers):
        return
    try:
        coord_map.check_crops(net)
    except coord_map.CropMismatchError:
        raise
    except coord_map.CoordMapError as err:
        warnings.warn(f"{net.name or 'net'}: crop offsets not checked: {err}", stacklevel=3)


def check_layer_name(name: str, taken: Any) -> None:
    """A layer name the net can name parameters by (``{layer}.weight``): unique (not in
    ``taken``), non-empty, without ``.``."""
    if name in taken or not name or "." in name:
        raise CaffeGraphError(f"layer {name!r}: layer names must be unique, non-empty "
                              f"and without '.' to name parameters")


def walk(net: Any, shapes: dict[str, Shape], add: Callable[[Any, list[Shape]], tuple[Shape, ...]],
         known_types: Sequence[str] = SHAPED_LAYER_TYPES) -> tuple[str, ...]:
    """``Net::Init`` over the phase-filtered ``net``: for each layer in order (data layers
    skipped; their tops are in ``shapes`` already) its bottoms' shapes, ``add(layer, bottoms)``
    giving its tops' shapes, recorded in ``shapes`` by top name (an in-place top replaces its
    bottom). Errors name the file and place of the layer. Returns the net's outputs: the tops
    no later layer consumes, sorted by name (Caffe keeps them in a ``std::set``)."""
    available = dict.fromkeys(shapes)
    for layer in net.layers:
        if layer.type in INPUT_LAYER_TYPES:
            continue
        try:
            if layer.type not in known_types:
                raise CaffeGraphError(f"layer {layer.name!r}: unknown type {layer.type!r}; supported "
                                      f"types: {', '.join(sorted(set(known_types) | set(INPUT_LAYER_TYPES)))}")
            missing = [b for b in layer.bottom if b not in shapes]
            if missing:
                raise CaffeGraphError(f"layer {layer.name!r}: bottom blob(s) {missing} are produced by "
                                      f"no earlier layer or input")
            shapes.update(zip(layer.top, add(layer, [shapes[b] for b in layer.bottom])))
        except (CaffeGraphError, CaffeSemanticsError) as err:
            raise located(err, net, layer) from None
        for bottom in layer.bottom:
            available.pop(bottom, None)
        available.update(dict.fromkeys(layer.top))
    return tuple(sorted(available))


@dataclass
class NetShapes:
    """What ``Net::Init`` sizes, without building a layer: every named blob's shape
    (``blobs``), each parameterised layer's parameter shapes in Caffe's blob order
    (``params``, by layer name, in net order) and their names (``param_names``), the layer
    types, the net's outputs and the phase-filtered definition."""

    blobs: dict[str, Shape]
    params: dict[str, tuple[Shape, ...]]
    param_names: dict[str, tuple[str, ...]]
    types: dict[str, str]
    outputs: tuple[str, ...]
    netdef: Any

    def named_params(self) -> dict[str, tuple[tuple[str, Shape], ...]]:
        """Each parameterised layer's ``(name, shape)`` pairs in blob order, by layer name
        (what :func:`check_blobs` takes)."""
        return {layer: tuple(zip(self.param_names[layer], shapes)) for layer, shapes in self.params.items()}

    def state_shapes(self) -> dict[str, Shape]:
        """``{layer}.{name}`` -> shape for every parameter, in the order a built net's
        ``state_dict`` lists them."""
        return {f"{layer}.{name}": shape for layer, shapes in self.params.items()
                for name, shape in zip(self.param_names[layer], shapes)}


def net_state(netdef: Any, phase: str = "TEST", level: int = 0, stages: Sequence[str] = ()) -> NetState:
    """The state of Caffe's ``Net(param_file, phase, level, stages)``: the prototxt's own
    ``state`` with its phase and level replaced and ``stages`` added (``NetState.built``)."""
    return NetState().merge(netdef.own_state).built(phase, level, stages)


def net_shapes(netdef: Any, phase: str = "TEST", input_shapes_: Mapping[str, Sequence[int]] | None = None,
               check_crops: bool = True, *, level: int = 0, stages: Sequence[str] = ()) -> NetShapes:
    """:class:`NetShapes` of ``netdef`` as :class:`port.net.engine.CaffeNet` (same arguments)
    sizes it: the same state, input shapes, per-layer rules and errors, with no torch."""
    net = netdef.for_state(net_state(netdef, phase, level, stages))
    shapes = input_shapes(net, netdef, dict(input_shapes_ or {}))
    params: dict[str, tuple[Shape, ...]] = {}
    names: dict[str, tuple[str, ...]] = {}
    types: dict[str, str] = {}

    def add(layer: Any, bottoms: list[Shape]) -> tuple[Shape, ...]:
        check_layer_name(layer.name, types)
        layer_params = layer_setup(layer, bottoms)
        if layer_params:
            params[layer.name] = layer_params
            names[layer.name] = param_names(layer, len(bottoms))[:len(layer_params)]
        types[layer.name] = layer.type
        return layer_reshape(layer, bottoms, layer_params)
    outputs = walk(net, shapes, add)
    if check_crops:
        check_crop_offsets(net)
    return NetShapes(shapes, params, names, types, outputs, net)
