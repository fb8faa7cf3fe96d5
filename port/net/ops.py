"""Each Caffe layer semantic in one named place, as functions on tensors.

Every function reproduces one piece of BVLC/caffe (master 9b89154) and cites the source it
follows. They take only Python numbers for geometry, so they are usable inside ``nn.Module``
forwards and under ``torch.compile`` (no Python loops over pixels, no data-dependent shapes),
and keep sizes symbolic under ``torch.export`` with a dynamic height and width (``port.export``):
no ``int()`` of a size, refusals that add no guard (:func:`_fails`).
Shape disagreements raise :class:`CaffeSemanticsError` naming the layer. The ``*_output_shape``
functions are the layers' ``Reshape`` arithmetic and checks on shapes alone (no tensor); they
live in :mod:`port.net.shapes` (no torch), re-exported here; the tensor functions and the
engine's shape inference both call them, so each rule and each error message lives once.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# The shape arithmetic lives in port.net.shapes (torch-free, shared with port.convert); its
# names are re-exported here, where the tensor functions that check with them are.
from port.net.shapes import (NORMALIZATION_MODES, CaffeSemanticsError, _crop_geometry, _dims, _fails, _pair,  # noqa: F401
                             _pool_geometry, _where, batch_norm_channels, batch_norm_output_shape,
                             broadcast_shape, canonical_axis, concat_output_shape, conv2d_output_shape,
                             conv_output_size, conv_weight_shape, crop_offsets_for, crop_output_shape,
                             deconv_output_size, eltwise_output_shape, inner_product_output_shape,
                             inner_product_weight_shape, label_target_shape, loss_normalization,
                             lrn_output_shape, param_blob_shape, pool2d_output_shape, pool_output_size,
                             scale_output_shape)
from port.net.bilinear import is_bilinear, upsample_filt, upsample_filt_refusal  # noqa: F401  (numpy)

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


# ---------------------------------------------------------------------------------------------
# Output sizes


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


def inner_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  axis: int = 1, transpose: bool = False, layer: str = "") -> torch.Tensor:
    """Caffe InnerProduct (inner_product_layer.cpp ``Forward_cpu``): ``x`` flattened from
    ``axis`` times the weight (``(num_output, K)``, or ``(K, num_output)`` when ``transpose``)
    plus ``bias``; shape checked by :func:`inner_product_output_shape`."""
    inner_product_output_shape(tuple(x.shape), tuple(weight.shape), axis, transpose, layer)
    # The axis is checked in range; torch wraps a negative one as CanonicalAxisIndex does.
    return F.linear(x.flatten(axis), weight.t() if transpose else weight, bias)


def concat(inputs: Sequence[torch.Tensor], axis: int = 1, layer: str = "") -> torch.Tensor:
    """Caffe Concat (concat_layer.cpp ``Forward_cpu``): the bottoms joined along ``axis``,
    shapes checked by :func:`concat_output_shape`."""
    concat_output_shape([tuple(t.shape) for t in inputs], axis, layer)
    # The axis is checked in range; torch wraps a negative one as CanonicalAxisIndex does.
    return torch.cat(tuple(inputs), dim=axis)


# ---------------------------------------------------------------------------------------------
# Normalisation, elementwise, scale


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


def bias(x: torch.Tensor, value: torch.Tensor, axis: int = 1, layer: str = "") -> torch.Tensor:
    """Caffe Bias (bias_layer.cpp): ``x + bias`` with ``bias`` covering axes
    ``axis .. axis + bias.dim() - 1`` of ``x`` (:func:`broadcast_shape`)."""
    return x + value.reshape(broadcast_shape(tuple(x.shape), tuple(value.shape), axis, "bias", layer))


# ---------------------------------------------------------------------------------------------
# BatchNorm (batch_norm_layer.cpp)


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
    """The 2-D bilinear interpolation kernel of fcn.berkeleyvision.org ``surgery.upsample_filt``
    as a float32 ``(size, size)`` tensor (:func:`port.net.bilinear.upsample_filt`, numpy)."""
    return torch.from_numpy(upsample_filt(size))


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
