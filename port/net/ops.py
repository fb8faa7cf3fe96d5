"""Each Caffe layer semantic in one named place, as functions on tensors.

Every function reproduces one piece of BVLC/caffe (master 9b89154) and cites the source it
follows. They take only Python numbers for geometry, so they are usable inside ``nn.Module``
forwards and under ``torch.compile`` (no Python loops over pixels, no data-dependent shapes),
and keep sizes symbolic under ``torch.export`` with a dynamic height and width (``port.export``):
no ``int()`` of a size, refusals that add no guard (:func:`_fails`).
Shape disagreements raise :class:`CaffeSemanticsError` naming the layer. The ``*_output_shape``
functions are the layers' ``Reshape`` arithmetic and checks on shapes alone (no tensor); the
tensor functions and ``port.net.engine``'s shape inference both call them, so each rule and each
error message lives here once.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from port.errors import PortError

__all__ = [
    "CaffeSemanticsError", "conv_output_size", "pool_output_size", "deconv_output_size",
    "canonical_axis", "conv_weight_shape", "conv2d_output_shape", "pool2d_output_shape",
    "crop_output_shape", "inner_product_weight_shape", "inner_product_output_shape",
    "concat_output_shape", "lrn_output_shape", "eltwise_output_shape", "scale_output_shape",
    "label_target_shape", "pool2d", "crop", "crop_offsets_for", "conv2d", "deconv2d",
    "inner_product", "concat", "lrn_across_channels", "lrn_within_channel", "eltwise", "scale",
    "softmax", "softmax_with_loss", "accuracy", "loss_normalization", "bilinear_kernel",
    "bilinear_weight", "is_bilinear", "upsample_filt_refusal", "set_upsample_filt_", "FLT_MIN",
    "broadcast_shape", "param_blob_shape", "bias", "batch_norm_channels", "batch_norm_output_shape",
    "batch_norm_global_stats", "batch_norm_batch_stats", "batch_norm", "batch_norm_update_",
    "sigmoid",
]

#: Caffe clamps probabilities at ``FLT_MIN`` before the log (softmax_loss_layer.cpp).
FLT_MIN = float(np.finfo(np.float32).tiny)

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
    """A shape as a tuple of ints; a symbolic size (``torch.SymInt``, while ``torch.export``
    traces with dynamic height and width) stays symbolic, where ``int()`` would bake in the
    traced size."""
    return tuple(s if isinstance(s, torch.SymInt) else int(s) for s in shape)


def _dim(size: int) -> int:
    """One size as :func:`_dims` keeps it."""
    return size if isinstance(size, torch.SymInt) else int(size)


def _fails(condition: bool) -> bool:
    """Whether the refusal ``condition`` of a Caffe ``CHECK`` on sizes holds. A plain bool is
    itself. A symbolic one (``torch.export`` tracing dynamic sizes) holds only where it is
    provable from the sizes' declared range, and adds no guard: a guard would tie the exported
    program to the traced size, and ``port.export`` checks these refusals over the range of
    sizes it declares (the smallest size every layer takes, and on)."""
    if isinstance(condition, torch.SymBool):
        from torch.fx.experimental.symbolic_shapes import statically_known_true
        return statically_known_true(condition)
    return bool(condition)


def canonical_axis(axis: int, ndim: int, layer: str = "", what: str = "axis") -> int:
    """Caffe ``Blob::CanonicalAxisIndex``: ``axis`` in ``[-ndim, ndim)``, negative from the
    end, as the non-negative index; ``what`` names the parameter in the error."""
    if not -ndim <= axis < ndim:
        raise CaffeSemanticsError(f"{_where(layer)}{what} {axis} out of range for a blob of "
                                  f"{ndim} axes (-{ndim} to {ndim - 1})")
    return axis % ndim


# ---------------------------------------------------------------------------------------------
# Output sizes


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


# ---------------------------------------------------------------------------------------------
# Pooling


def _check_shape(result: torch.Tensor, expected: tuple[int, ...], what: str, layer: str) -> None:
    if any(_fails(a != b) for a, b in zip(result.shape[-len(expected):], expected)):
        raise CaffeSemanticsError(
            f"{_where(layer)}{what} output spatial shape {tuple(result.shape[-len(expected):])} "
            f"differs from Caffe's formula {expected}")


def _pool_counts(size: int, out: int, kernel: int, stride: int, pad: int,
                 device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Per-window cell counts along one axis for AVE pooling: windows count padded cells but
    are clipped at the padded border, ``min(start + kernel, size + pad) - start``."""
    start = torch.arange(out, device=device, dtype=torch.int64) * stride - pad
    end = torch.clamp(start + kernel, max=size + pad)
    return (end - start).to(dtype)


def _torch_ceil_pool_agrees(height: int, width: int, kernel: tuple[int, int], stride: tuple[int, int],
                            pad: tuple[int, int], caffe: tuple[int, int]) -> bool:
    """Whether ``F.max_pool2d(..., ceil_mode=True)`` makes Caffe's windows: PyTorch needs
    pad <= kernel / 2, and drops a last window starting in the padding even when pad is 0
    (Caffe applies that rule only with padding), so the sizes must be compared."""
    if not any(pad) and all(k >= s for k, s in zip(kernel, stride)):
        # Without padding a last window starts inside the input when kernel >= stride
        # ((out - 1) * s = ceil((n - k) / s) * s < n - k + s <= n), so the sizes agree for
        # every input size: decided without comparing sizes (symbolic under torch.export).
        return True
    def torch_size(size: int, k: int, s: int, p: int) -> int:
        out = -(-(size + 2 * p - k) // s) + 1
        return out - 1 if (out - 1) * s >= size + p else out
    return all(2 * p <= k and torch_size(n, k, s, p) == o
               for n, k, s, p, o in zip((height, width), kernel, stride, pad, caffe))


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


def pool2d(x: torch.Tensor, kernel: int | Sequence[int], stride: int | Sequence[int] = 1,
           pad: int | Sequence[int] = 0, mode: str = "MAX", global_pooling: bool = False,
           layer: str = "") -> torch.Tensor:
    """Caffe 2-D Pooling (pooling_layer.cpp ``Forward_cpu``) on an ``(N, C, H, W)`` tensor.

    The output size follows :func:`pool_output_size` (ceil rounding). MAX takes the maximum of
    each window clipped to the input (padding never wins; an empty window gives ``-FLT_MAX``
    as Caffe's initial value). AVE sums the window clipped to the input and divides by the
    window's size clipped to the *padded* border, so padded cells count in the divisor.
    ``global_pooling`` pools the whole plane (kernel = H x W, stride 1, pad 0).
    """
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = _pool_geometry(tuple(x.shape), kernel, stride, pad,
                                                           global_pooling, layer)
    height, width = x.shape[2], x.shape[3]
    # Explicit padding so the last (ceil-rounded) window is complete; negative = rows no window reads.
    bottom_pad = (oh - 1) * sh + kh - ph - height
    right_pad = (ow - 1) * sw + kw - pw - width
    padding = (pw, right_pad, ph, bottom_pad)
    # Symbolic sizes (torch.export with a dynamic height and width) take the padded form:
    # PyTorch's ceil_mode size rule would guard on the traced size.
    symbolic = isinstance(height, torch.SymInt) or isinstance(width, torch.SymInt)
    if mode == "MAX" and not symbolic and _torch_ceil_pool_agrees(height, width, (kh, kw), (sh, sw),
                                                                  (ph, pw), (oh, ow)):
        # Same windows without a padded copy (pool1 of FCN-8s: ~3x faster on a CPU). Every
        # window then overlaps the input, so implicit -inf padding never wins, as in Caffe.
        y = F.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), ceil_mode=True)
    elif mode == "MAX":
        lowest = float(torch.finfo(x.dtype).min)  # -FLT_MAX, Caffe's initial maxval
        y = F.max_pool2d(F.pad(x, padding, value=lowest), (kh, kw), (sh, sw))
    elif mode == "AVE":
        if torch.compiler.is_exporting():
            # ONNX's AveragePool has no divisor_override (the exporter would drop it): the
            # window's mean times its size, the sum to float rounding.
            sums = F.avg_pool2d(F.pad(x, padding, value=0.0), (kh, kw), (sh, sw)) * float(kh * kw)
        else:
            sums = F.avg_pool2d(F.pad(x, padding, value=0.0), (kh, kw), (sh, sw), divisor_override=1)
        counts = (_pool_counts(height, oh, kh, sh, ph, x.device, x.dtype)[:, None]
                  * _pool_counts(width, ow, kw, sw, pw, x.device, x.dtype)[None, :])
        y = sums / counts
    else:
        raise CaffeSemanticsError(f"{_where(layer)}pooling method {mode!r} not supported (MAX, AVE)")
    _check_shape(y, (oh, ow), "pooling", layer)
    return y


# ---------------------------------------------------------------------------------------------
# Crop


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


def crop(x: torch.Tensor, ref: torch.Tensor | Sequence[int], axis: int = 2,
         offsets: Sequence[int] = (0,), layer: str = "") -> torch.Tensor:
    """Caffe Crop (crop_layer.cpp): ``x`` cropped on every axis >= ``axis`` to the size of
    ``ref`` (a tensor or its shape) on that axis, starting at that axis's offset."""
    ref_shape = ref.shape if isinstance(ref, torch.Tensor) else ref
    start, per_axis, out_shape = _crop_geometry(tuple(x.shape), ref_shape, axis, offsets, layer)
    if not any(isinstance(n, torch.SymInt) for n in (*x.shape, *out_shape)):
        index = [slice(None)] * start
        index += [slice(per_axis[i], per_axis[i] + out_shape[i]) for i in range(start, x.dim())]
        return x[tuple(index)]
    # Symbolic sizes (torch.export with a dynamic height and width): the same rows and columns
    # gathered by index, since a slice's clamping at the end, or narrow's bound, is a relation
    # between sizes that the exporter would guard on or fail to solve; the fit was checked above.
    for i in range(start, x.dim()):
        rows = torch.arange(out_shape[i], device=x.device) + per_axis[i]
        x = x.index_select(i, rows)
    return x


# ---------------------------------------------------------------------------------------------
# Convolution and deconvolution


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


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride: int | Sequence[int] = 1, pad: int | Sequence[int] = 0, groups: int = 1,
           dilation: int | Sequence[int] = 1, layer: str = "") -> torch.Tensor:
    """Caffe Convolution (conv_layer.cpp): blob layout ``(C_out, C_in/group, kh, kw)``,
    floor-rounded output (:func:`conv_output_size`), checked."""
    expected = conv2d_output_shape(tuple(x.shape), tuple(weight.shape), stride, pad, groups,
                                   dilation, False, layer)[2:]
    (sh, sw), (ph, pw), (dh, dw) = (_pair(stride, "stride", layer), _pair(pad, "pad", layer),
                                    _pair(dilation, "dilation", layer))
    y = F.conv2d(x, weight, bias, (sh, sw), (ph, pw), (dh, dw), groups)
    _check_shape(y, expected, "convolution", layer)
    return y


def deconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
             stride: int | Sequence[int] = 1, pad: int | Sequence[int] = 0, groups: int = 1,
             dilation: int | Sequence[int] = 1, layer: str = "") -> torch.Tensor:
    """Caffe Deconvolution (deconv_layer.cpp): the transpose of convolution, blob layout
    ``(C_in, C_out/group, kh, kw)`` (PyTorch's ``conv_transpose2d`` layout), output size
    :func:`deconv_output_size` (no output padding), checked."""
    expected = conv2d_output_shape(tuple(x.shape), tuple(weight.shape), stride, pad, groups,
                                   dilation, True, layer)[2:]
    (sh, sw), (ph, pw), (dh, dw) = (_pair(stride, "stride", layer), _pair(pad, "pad", layer),
                                    _pair(dilation, "dilation", layer))
    y = F.conv_transpose2d(x, weight, bias, (sh, sw), (ph, pw), 0, groups, (dh, dw))
    _check_shape(y, expected, "deconvolution", layer)
    return y


# ---------------------------------------------------------------------------------------------
# Inner product and concatenation


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


def inner_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  axis: int = 1, transpose: bool = False, layer: str = "") -> torch.Tensor:
    """Caffe InnerProduct (inner_product_layer.cpp ``Forward_cpu``): ``x`` flattened from
    ``axis`` times the weight (``(num_output, K)``, or ``(K, num_output)`` when ``transpose``)
    plus ``bias``; shape checked by :func:`inner_product_output_shape`."""
    inner_product_output_shape(tuple(x.shape), tuple(weight.shape), axis, transpose, layer)
    # The axis is checked in range; torch wraps a negative one as CanonicalAxisIndex does.
    return F.linear(x.flatten(axis), weight.t() if transpose else weight, bias)


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


def concat(inputs: Sequence[torch.Tensor], axis: int = 1, layer: str = "") -> torch.Tensor:
    """Caffe Concat (concat_layer.cpp ``Forward_cpu``): the bottoms joined along ``axis``,
    shapes checked by :func:`concat_output_shape`."""
    concat_output_shape([tuple(t.shape) for t in inputs], axis, layer)
    # The axis is checked in range; torch wraps a negative one as CanonicalAxisIndex does.
    return torch.cat(tuple(inputs), dim=axis)


# ---------------------------------------------------------------------------------------------
# Normalisation, elementwise, scale


def lrn_output_shape(x_shape: Sequence[int], local_size: int, layer: str = "") -> tuple[int, ...]:
    """The top shape of caffe ``LRNLayer::Reshape``: the bottom's (WITHIN_CHANNEL's pooling,
    kernel ``local_size``, pad ``(local_size-1)/2``, stride 1, keeps the size); an even
    ``local_size`` is refused as ``LRNLayer::LayerSetUp`` does."""
    if local_size % 2 != 1:
        raise CaffeSemanticsError(f"{_where(layer)}LRN only supports odd local_size, got {local_size}")
    return _dims(x_shape)


def lrn_across_channels(x: torch.Tensor, local_size: int = 5, alpha: float = 1.0,
                        beta: float = 0.75, k: float = 1.0, layer: str = "") -> torch.Tensor:
    """Caffe LRN ACROSS_CHANNELS (lrn_layer.cpp ``CrossChannelForward_cpu``):
    ``x / (k + alpha/n * sum of x^2 over the n channels centred on c) ** beta``, the window
    clipped at the first and last channel (zero padding of the squares)."""
    lrn_output_shape(tuple(x.shape), local_size, layer)
    pre_pad = (local_size - 1) // 2
    squares = F.pad((x * x).unsqueeze(1), (0, 0, 0, 0, pre_pad, local_size - pre_pad - 1))
    if torch.compiler.is_exporting():
        # ONNX's AveragePool has no divisor_override (PyTorch's ONNX exporter drops it and
        # divides by the window): the same sums as shifted channel slices, in window order.
        squares, channels = squares.squeeze(1), x.shape[1]
        sums = squares[:, 0:channels]
        for i in range(1, local_size):
            sums = sums + squares[:, i:i + channels]
    else:
        sums = F.avg_pool3d(squares, (local_size, 1, 1), stride=1, divisor_override=1).squeeze(1)
    return x * torch.pow(k + (alpha / local_size) * sums, -beta)


def lrn_within_channel(x: torch.Tensor, local_size: int = 5, alpha: float = 1.0,
                       beta: float = 0.75, layer: str = "") -> torch.Tensor:
    """Caffe LRN WITHIN_CHANNEL (lrn_layer.cpp ``LayerSetUp``): ``x * (1 + alpha * avg)^-beta``
    with ``avg`` Caffe's AVE pooling of ``x^2`` (kernel ``local_size``, pad ``(n-1)/2``)."""
    lrn_output_shape(tuple(x.shape), local_size, layer)
    avg = pool2d(x * x, local_size, 1, (local_size - 1) // 2, "AVE", layer=layer)
    return x * torch.pow(1.0 + alpha * avg, -beta)


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


def eltwise(inputs: Sequence[torch.Tensor], operation: str = "SUM",
            coeff: Sequence[float] | None = None, layer: str = "") -> torch.Tensor:
    """Caffe Eltwise (eltwise_layer.cpp): SUM (``sum_i coeff_i * x_i``, coeff default 1),
    PROD or MAX over bottoms of identical shape."""
    eltwise_output_shape([tuple(t.shape) for t in inputs], operation, coeff, layer)
    coeff = list(coeff or [])
    if operation == "SUM":
        coeff = coeff or [1.0] * len(inputs)
        out = inputs[0] if coeff[0] == 1 else coeff[0] * inputs[0]
        for c, t in zip(coeff[1:], inputs[1:]):
            out = out + (t if c == 1 else c * t)
        return out
    out = inputs[0]
    if operation == "MAX":
        # Forward_cpu replaces the max only where a later bottom is strictly greater, and
        # Backward_cpu routes to that mask: a tie's gradient goes to the first bottom
        # (torch.maximum would split it in halves).
        for t in inputs[1:]:
            out = torch.where(t > out, t, out)
        return out
    for t in inputs[1:]:  # the check leaves PROD
        out = torch.mul(out, t)
    return out


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


def scale(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
          axis: int = 1, layer: str = "") -> torch.Tensor:
    """Caffe Scale (scale_layer.cpp): ``x * weight (+ bias)`` with ``weight`` covering axes
    ``axis .. axis + weight.dim() - 1`` of ``x`` and broadcast over the others (a 0-d weight
    scales everything); the bias (its Bias layer) is added after the product."""
    scale_output_shape(tuple(x.shape), tuple(weight.shape), None if bias is None else tuple(bias.shape),
                       axis, layer)
    view = broadcast_shape(tuple(x.shape), tuple(weight.shape), axis, "scale", layer)
    y = x * weight.reshape(view)
    return y if bias is None else y + bias.reshape(view)


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


def bias(x: torch.Tensor, value: torch.Tensor, axis: int = 1, layer: str = "") -> torch.Tensor:
    """Caffe Bias (bias_layer.cpp): ``x + bias`` with ``bias`` covering axes
    ``axis .. axis + bias.dim() - 1`` of ``x`` (:func:`broadcast_shape`)."""
    return x + value.reshape(broadcast_shape(tuple(x.shape), tuple(value.shape), axis, "bias", layer))


# ---------------------------------------------------------------------------------------------
# BatchNorm (batch_norm_layer.cpp)


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


def _channel_view(x: torch.Tensor) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.dim() - 2)


def batch_norm_global_stats(mean_sum: torch.Tensor, variance_sum: torch.Tensor,
                            scale_factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored statistics of caffe ``BatchNormLayer::Forward_cpu`` with
    ``use_global_stats``: blob 0 and blob 1 times ``1 / blob2[0]`` (that reciprocal rounded to
    the blobs' float type first, as ``caffe_cpu_scale`` takes it), or times 0 when the scale
    factor is 0 (zero mean and variance)."""
    factor = scale_factor.reshape(-1)[:1]
    reciprocal = torch.where(factor == 0, torch.zeros_like(factor), 1 / factor)
    return mean_sum * reciprocal, variance_sum * reciprocal


def batch_norm_batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The statistics of caffe ``BatchNormLayer::Forward_cpu`` without ``use_global_stats``:
    per channel (axis 1) the mean over every other axis (N x H x W) and the biased variance
    ``E((x - mean)^2)`` of the mean-subtracted input, as Caffe computes it (two passes)."""
    dims = (0,) + tuple(range(2, x.dim()))
    mean = x.mean(dims)
    centred = x - mean.reshape(_channel_view(x))
    return mean, (centred * centred).mean(dims)


def batch_norm(x: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor, eps: float = 1e-5,
               layer: str = "") -> torch.Tensor:
    """Caffe BatchNorm's normalisation (batch_norm_layer.cpp ``Forward_cpu``):
    ``(x - mean) / sqrt(variance + eps)`` per channel (axis 1), a division as Caffe's
    ``caffe_div``. Its gradient is ``Backward_cpu``'s: with constant statistics (the global
    ones) ``dy / sqrt(variance + eps)``; with :func:`batch_norm_batch_stats` of ``x`` itself,
    autograd through them gives ``(dy - mean(dy) - mean(dy * y) * y) / sqrt(variance + eps)``."""
    batch_norm_output_shape(tuple(x.shape), int(mean.numel()), layer)
    view = _channel_view(x)
    std = torch.sqrt(variance + np.float32(eps).item())
    return (x - mean.reshape(view)) / std.reshape(view)


def batch_norm_update_(mean_sum: torch.Tensor, variance_sum: torch.Tensor, scale_factor: torch.Tensor,
                       mean: torch.Tensor, variance: torch.Tensor, count: int,
                       fraction: float = 0.999) -> None:
    """Caffe BatchNorm's moving averages (batch_norm_layer.cpp ``Forward_cpu`` without
    ``use_global_stats``), in place and without autograd: ``blob2 = f * blob2 + 1``,
    ``blob0 = f * blob0 + mean``, ``blob1 = f * blob1 + m / (m - 1) * variance`` with ``f`` the
    ``moving_average_fraction`` and ``m`` = ``count`` / channels the values per channel
    (N x H x W; the correction is 1 when ``m`` is 1), both factors in float32."""
    m = int(count)
    fraction = np.float32(fraction).item()
    correction = (np.float32(m) / np.float32(m - 1)).item() if m > 1 else 1.0
    with torch.no_grad():
        scale_factor.mul_(fraction).add_(1.0)
        mean_sum.mul_(fraction).add_(mean.detach().to(mean_sum.dtype))
        variance_sum.mul_(fraction).add_(variance.detach().to(variance_sum.dtype) * correction)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Caffe Sigmoid (sigmoid_layer.cpp): ``0.5 * tanh(0.5 * x) + 0.5``, evaluated there in
    double and stored as float, i.e. the logistic function rounded once; gradient
    ``dy * y * (1 - y)``."""
    return torch.sigmoid(x)


# ---------------------------------------------------------------------------------------------
# Softmax, loss, accuracy


def softmax(x: torch.Tensor, axis: int = 1) -> torch.Tensor:
    """Caffe Softmax (softmax_layer.cpp): ``exp(x - max) / sum exp(x - max)`` along ``axis``."""
    return torch.softmax(x, dim=axis)


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


def _labels(score: torch.Tensor, label: torch.Tensor, axis: int, what: str, layer: str) -> torch.Tensor:
    """Labels as integers shaped like ``score`` without its class axis (:func:`label_target_shape`)."""
    target = label_target_shape(tuple(score.shape), tuple(label.shape), axis, what, layer)
    return label.reshape(target).to(torch.int64)


def _clamped_nll(score: torch.Tensor, safe: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prob, -log(max(prob[label], FLT_MIN)) per position) as softmax_loss_layer.cpp's forward."""
    prob = torch.softmax(score, dim=axis)
    picked = torch.gather(prob, axis, safe.unsqueeze(axis)).squeeze(axis)
    return prob, -torch.log(torch.clamp(picked, min=FLT_MIN))


class _ClampedNLL(torch.autograd.Function):
    """The per-position loss of :func:`_clamped_nll` with ``Backward_cpu``'s gradient:
    ``prob - onehot`` times the position's incoming gradient, also where the forward clamped
    at ``FLT_MIN`` (the clamp's own gradient would be 0 there), from the saved probabilities."""

    @staticmethod
    def forward(ctx, score: torch.Tensor, safe: torch.Tensor, axis: int) -> torch.Tensor:
        prob, nll = _clamped_nll(score, safe, axis)
        ctx.save_for_backward(prob, safe)
        ctx.axis = axis
        return nll

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        prob, safe = ctx.saved_tensors
        grad = grad.unsqueeze(ctx.axis)
        out = prob * grad
        out.scatter_add_(ctx.axis, safe.unsqueeze(ctx.axis), -grad)
        return out, None, None


def softmax_with_loss(score: torch.Tensor, label: torch.Tensor, ignore_label: int | None = None,
                      normalization: str = "VALID", axis: int = 1, layer: str = "") -> torch.Tensor:
    """Caffe SoftmaxWithLoss forward (softmax_loss_layer.cpp ``Forward_cpu``):
    ``-sum log(max(prob[label], FLT_MIN)) / normalizer`` over positions whose label is not
    ``ignore_label``; the normalizer is FULL: all positions, VALID: non-ignored positions,
    BATCH_SIZE: the outer count, NONE: 1, and never below 1. Returns a 0-d tensor. Its
    gradient is ``Backward_cpu``'s: ``(prob - onehot) / normalizer`` at non-ignored positions
    (also where the clamp bit), 0 at ignored ones."""
    mode = loss_normalization(normalization)
    axis = axis + score.dim() if axis < 0 else axis
    labels = _labels(score, label, axis, "SoftmaxWithLoss", layer)
    valid = labels != ignore_label if ignore_label is not None else torch.ones_like(labels, dtype=torch.bool)
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    if torch.is_grad_enabled() and score.requires_grad:
        nll = _ClampedNLL.apply(score, safe, axis)
    else:
        nll = _clamped_nll(score, safe, axis)[1]
    total = torch.where(valid, nll, torch.zeros_like(nll)).sum()
    outer = math.prod(score.shape[:axis])
    if mode == "VALID":
        normalizer = valid.sum().to(score.dtype)
    else:
        normalizer = torch.tensor(float({"FULL": labels.numel(), "BATCH_SIZE": outer, "NONE": 1}[mode]),
                                  dtype=score.dtype, device=score.device)
    return total / torch.clamp(normalizer, min=1.0)


def accuracy(score: torch.Tensor, label: torch.Tensor, top_k: int = 1, axis: int = 1,
             ignore_label: int | None = None, layer: str = "") -> torch.Tensor:
    """Caffe Accuracy (accuracy_layer.cpp ``Forward_cpu``): the fraction of non-ignored
    positions where fewer than ``top_k`` classes score strictly higher than the true class
    (0 when every position is ignored). Returns a 0-d tensor."""
    axis = axis + score.dim() if axis < 0 else axis
    labels = _labels(score, label, axis, "Accuracy", layer)
    valid = labels != ignore_label if ignore_label is not None else torch.ones_like(labels, dtype=torch.bool)
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    true_score = torch.gather(score, axis, safe.unsqueeze(axis))
    better = (score > true_score).sum(dim=axis)
    correct = ((better < top_k) & valid).sum().to(score.dtype)
    count = valid.sum().to(score.dtype)
    return torch.where(count > 0, correct / torch.clamp(count, min=1.0), torch.zeros_like(count))


# ---------------------------------------------------------------------------------------------
# Bilinear interpolation kernels (fcn.berkeleyvision.org surgery.py)


def bilinear_kernel(size: int) -> torch.Tensor:
    """The 2-D bilinear interpolation kernel of fcn.berkeleyvision.org ``surgery.upsample_filt``:
    ``factor = (size+1)//2``, centre ``factor-1`` (odd) or ``factor-0.5`` (even),
    ``(1 - |i-centre|/factor) * (1 - |j-centre|/factor)``; computed in float64 as numpy does,
    returned as float32 ``(size, size)``."""
    if size < 1:
        raise CaffeSemanticsError(f"bilinear kernel size must be >= 1, got {size}")
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - np.abs(np.arange(size, dtype=np.float64) - centre) / factor
    return torch.from_numpy(np.outer(ramp, ramp).astype(np.float32))


def upsample_filt_refusal(shape: Sequence[int]) -> str | None:
    """Why upstream ``surgery.interp`` refuses a weight of ``shape`` ``(m, k, h, w)``: not
    4-D, input and output channels neither equal nor ``k == 1``, or a non-square kernel; None
    when it takes it (the message is upstream's ``print`` before its ``raise``)."""
    if len(shape) != 4:
        return "not 4-D"
    m, k, h, w = (int(s) for s in shape)
    if m != k and k != 1:
        return "input and output channels need to be the same or |output| == 1"
    if h != w:
        return "filters need to be square"
    return None


def set_upsample_filt_(weight: torch.Tensor) -> torch.Tensor:
    """Upstream ``surgery.interp`` on one weight ``(m, k, h, h)``, in place and without
    autograd: ``weight[range(m), range(k)] = upsample_filt(h)`` (:func:`bilinear_kernel`), the
    diagonal when ``m == k``, every ``[i, 0]`` when ``k == 1``; the other values stay as they
    are. A shape :func:`upsample_filt_refusal` refuses raises :class:`CaffeSemanticsError`."""
    reason = upsample_filt_refusal(tuple(weight.shape))
    if reason is not None:
        raise CaffeSemanticsError(f"upsample_filt: weight {tuple(weight.shape)}: {reason}")
    m, k, h, _ = (int(s) for s in weight.shape)
    rows = torch.arange(m)
    cols = torch.zeros(m, dtype=torch.long) if k == 1 else rows
    with torch.no_grad():
        weight[rows, cols] = bilinear_kernel(h).to(weight.device, weight.dtype)  # float64 -> float32
    return weight


def bilinear_weight(channels: int, size: int) -> torch.Tensor:
    """A ``(channels, channels, size, size)`` deconvolution weight that upsamples each channel
    on its own: :func:`set_upsample_filt_` on zeros (the kernel on the diagonal ``[i, i]``)."""
    return set_upsample_filt_(torch.zeros(channels, channels, size, size, dtype=torch.float32))


def is_bilinear(weight: np.ndarray | torch.Tensor, atol: float = 1e-6) -> bool:
    """Whether ``weight`` (numpy or torch) is a square ``(C, C, k, k)`` bilinear upsampling
    weight as :func:`bilinear_weight` builds (``atol`` allows a float32 round trip)."""
    w = weight.detach().cpu().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight)
    if w.ndim != 4 or w.shape[0] != w.shape[1] or w.shape[2] != w.shape[3] or w.shape[2] < 1:
        return False
    expected = bilinear_weight(w.shape[0], w.shape[2]).numpy()
    return bool(np.allclose(w.astype(np.float64), expected, rtol=0.0, atol=atol))
