"""BatchNorm (and the Scale after it) folded into the convolution before them, for inference.

ResNet writes every convolution as ``Convolution -> BatchNorm (in place, use_global_stats) ->
Scale (in place, bias_term)``: at inference three passes over each feature map, two of them
elementwise (``(x - mean) / std``, then ``x * gamma + beta``). With the stored statistics
these are one affine map per channel, which folds into the convolution:
``w' = w * gamma / std``, ``b' = (b - mean) * gamma / std + beta``, with ``mean``, ``std`` as
Caffe's BatchNorm computes them (:func:`port.net.ops.batch_norm_global_stats`, float32), the
product taken in float64 and rounded once. The arithmetic is no longer Caffe's order of
operations (one rounding of the folded weight instead of two of each activation), so the
outputs move by float32 rounding; :mod:`port.run.speed` folds only in its CPU fast mode
(``prepack``), and the agreement with strict fp32 is measured (``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from port.net import ops
from port.net.layers import BatchNorm, CaffeLayer, Convolution, Scale, redress
from port.run.canvas import sharing_copy

__all__ = ["Folded", "foldable", "fold_batchnorm"]


class Folded(CaffeLayer):
    """A BatchNorm or Scale whose work the convolution before it now does
    (:func:`fold_batchnorm`): passes its bottom through, keeps its parameters. Not an
    ``Identity``, which the run modes read as a ReLU fused into its convolution."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x,)


def _in_place_on(step: tuple[str, tuple[str, ...], tuple[str, ...]], top: str) -> bool:
    return tuple(step[1]) == tuple(step[2]) == (top,)


def foldable(model: Any) -> list[tuple[str, str, str | None]]:
    """``(convolution, batchnorm, scale or None)`` for each chain that folds: a plain
    (non-transposed) :class:`Convolution` with one top, directly followed by a
    :class:`BatchNorm` in place on that top with ``use_global_stats`` (stored statistics; a
    BatchNorm on its batch's statistics does not fold), optionally directly followed by a
    one-bottom :class:`Scale` in place on it, per channel (its scale of the convolution's
    ``num_output`` on axis 1). In place, the convolution's own output is never a blob anyone
    reads, so the folded net computes every named blob there is."""
    steps, layers = model.steps, model.caffe_layers()
    chains = []
    for index in range(len(steps) - 1):
        name, _, tops = steps[index]
        conv, (bn_name, _, _) = layers[name], steps[index + 1]
        bn = layers[bn_name]
        if (type(conv) is not Convolution or conv.transposed or len(tops) != 1
                or type(bn) is not BatchNorm or not bn.use_global_stats
                or not _in_place_on(steps[index + 1], tops[0])):
            continue
        scale = None
        if index + 2 < len(steps) and _in_place_on(steps[index + 2], tops[0]):
            candidate = layers[steps[index + 2][0]]
            channels = tuple(conv.weight.shape[:1])
            if (type(candidate) is Scale and not candidate.two_bottoms
                    and tuple(candidate.weight.shape) == channels
                    and candidate.axis in (1, -3) and len(model.blob_shapes[tops[0]]) == 4):
                scale = candidate.caffe_name
        chains.append((name, bn_name, scale))
    return chains


def fold_batchnorm(model: Any) -> Any:
    """A copy of ``model`` (a ``CaffeNet``) with each :func:`foldable` chain folded into its
    convolution (which gains a bias when it had none); the BatchNorm and Scale become
    :class:`Folded` (they pass their input through and keep their parameters).
    ``model`` itself when nothing folds. For inference only. The copy is a
    :func:`port.run.canvas.sharing_copy`: each folded convolution is a new layer with new
    parameters (the folded weight and bias), every other layer and parameter is the net's
    own, so no weight the fold leaves alone is copied."""
    chains = foldable(model)
    if not chains:
        return model
    model = sharing_copy(model)
    layers = model.caffe_layers()
    with torch.no_grad():
        for conv_name, bn_name, scale_name in chains:
            bn = layers[bn_name]
            conv = redress(Convolution, layers[conv_name])  # its own parameters, set below
            conv.register_parameter("weight", nn.Parameter(conv.weight.detach().clone(), requires_grad=False))
            if conv.bias_term:
                conv.register_parameter("bias", nn.Parameter(conv.bias.detach().clone(), requires_grad=False))
            setattr(model, conv_name, conv)
            mean, variance = ops.batch_norm_global_stats(bn.mean, bn.variance, bn.scale_factor)
            std = torch.sqrt(variance + np.float32(bn.eps).item()).double()  # as ops.batch_norm
            gain, shift = torch.ones_like(std), torch.zeros_like(std)
            if scale_name is not None:
                scale = layers[scale_name]
                gain = scale.weight.double()
                shift = scale.bias.double() if scale.bias_term else shift
            factor = gain / std
            weight = conv.weight.double() * factor.reshape(-1, 1, 1, 1)
            bias = conv.bias.double() if conv.bias_term else torch.zeros_like(std)
            conv.weight.copy_(weight.to(conv.weight.dtype))
            folded_bias = ((bias - mean.double()) * factor + shift).to(conv.weight.dtype)
            if conv.bias_term:
                conv.bias.copy_(folded_bias)
            else:
                conv.bias_term = True
                conv.register_parameter("bias", nn.Parameter(folded_bias, requires_grad=False))
            for name in (bn_name, scale_name):
                if name is not None:
                    setattr(model, name, redress(Folded, layers[name]))
    return model
