"""The Caffe layers of the FCN family as small ``nn.Module`` wrappers over :mod:`port.net.ops`.

Each module computes exactly one Caffe layer type by calling the :mod:`port.net.ops` function that
holds its semantics, and knows its Caffe layer name (``layer_name``) so shape errors name it.
Parameter layouts are Caffe's blob layouts, so a caffemodel's blobs load without reshaping:
Convolution ``(C_out, C_in/group, kh, kw)``, Deconvolution ``(C_in, C_out/group, kh, kw)``,
Scale ``(C,)``.
"""
from __future__ import annotations

import torch
from torch import nn

from port.net import ops


class Convolution(nn.Conv2d):
    """Caffe ``Convolution`` (conv_layer.cpp) through :func:`port.net.ops.conv2d`; bias always on
    (every FCN convolution has ``bias_term: true``, Caffe's default)."""

    layer_name = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups,
                          self.dilation, layer=self.layer_name)


class Deconvolution(nn.Module):
    """Caffe ``Deconvolution`` (deconv_layer.cpp) through :func:`port.net.ops.deconv2d`.

    The weight has Caffe's blob layout ``(C_in, C_out/group, k, k)``. ``frozen`` mirrors
    ``param { lr_mult: 0 }``: the weight is loaded (never regenerated) and gets no gradient.
    Without loaded weights it starts as the bilinear kernel that fcn.berkeleyvision.org's
    ``surgery.interp`` writes before training (channel-diagonal when ``C_in == C_out``).
    """

    layer_name = ""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 pad: int = 0, groups: int = 1, bias: bool = False, frozen: bool = True):
        super().__init__()
        self.kernel, self.stride, self.pad, self.groups = kernel, stride, pad, groups
        shape = (in_channels, out_channels // groups, kernel, kernel)
        self.weight = nn.Parameter(torch.empty(shape), requires_grad=not frozen)
        self.bias = nn.Parameter(torch.zeros(out_channels), requires_grad=not frozen) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Bilinear upsampling weights (surgery.py ``interp``), or zeros off the diagonal case."""
        if self.weight.is_meta:
            return
        with torch.no_grad():
            c_in, c_out_g = self.weight.shape[:2]
            if c_in == c_out_g and self.groups == 1:
                self.weight.copy_(ops.bilinear_weight(c_in, self.kernel))
            else:
                self.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.deconv2d(x, self.weight, self.bias, self.stride, self.pad, self.groups,
                            layer=self.layer_name)

    def extra_repr(self) -> str:
        c_in, c_out_g, k, _ = self.weight.shape
        return (f"{c_in}, {c_out_g * self.groups}, kernel={k}, stride={self.stride}, pad={self.pad}, "
                f"groups={self.groups}, bias={self.bias is not None}, "
                f"frozen={not self.weight.requires_grad}")


class Pooling(nn.Module):
    """Caffe ``Pooling`` (pooling_layer.cpp) through :func:`port.net.ops.pool2d`: ceil rounding,
    shape checked against Caffe's formula."""

    layer_name = ""

    def __init__(self, kernel: int, stride: int, pad: int = 0, mode: str = "MAX"):
        super().__init__()
        self.kernel, self.stride, self.pad, self.mode = kernel, stride, pad, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.pool2d(x, self.kernel, self.stride, self.pad, self.mode, layer=self.layer_name)

    def extra_repr(self) -> str:
        return f"{self.mode}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}"


class LRN(nn.Module):
    """Caffe ``LRN`` ACROSS_CHANNELS (lrn_layer.cpp) through :func:`port.net.ops.lrn_across_channels`."""

    layer_name = ""

    def __init__(self, local_size: int, alpha: float, beta: float, k: float = 1.0):
        super().__init__()
        self.local_size, self.alpha, self.beta, self.k = local_size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.lrn_across_channels(x, self.local_size, self.alpha, self.beta, self.k,
                                       layer=self.layer_name)

    def extra_repr(self) -> str:
        return f"local_size={self.local_size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class Crop(nn.Module):
    """Caffe ``Crop`` (crop_layer.cpp) through :func:`port.net.ops.crop`. The offset is not typed
    in: the owning net derives it from its layer geometry (``port.net.coord_map``) once built."""

    layer_name = ""

    def __init__(self, axis: int = 2):
        super().__init__()
        self.axis = axis
        self.offsets: tuple[int, ...] | None = None

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if self.offsets is None:
            raise ops.CaffeSemanticsError(f"layer {self.layer_name!r}: crop offset was never derived")
        return ops.crop(x, ref, self.axis, self.offsets, layer=self.layer_name)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, offsets={self.offsets}"


class Eltwise(nn.Module):
    """Caffe ``Eltwise`` (eltwise_layer.cpp) through :func:`port.net.ops.eltwise`."""

    layer_name = ""

    def __init__(self, operation: str = "SUM", coeff: tuple[float, ...] = ()):
        super().__init__()
        self.operation, self.coeff = operation, tuple(coeff)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return ops.eltwise(inputs, self.operation, self.coeff or None, layer=self.layer_name)

    def extra_repr(self) -> str:
        return f"{self.operation}, coeff={self.coeff}"


class Scale(nn.Module):
    """Caffe ``Scale`` with one bottom, ``axis: 1``, no bias (scale_layer.cpp) through
    :func:`port.net.ops.scale`: one learned factor per channel. ``frozen`` mirrors ``lr_mult: 0``;
    ``initial`` is the prototxt's constant ``filler`` value."""

    layer_name = ""

    def __init__(self, channels: int, initial: float, frozen: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), initial), requires_grad=not frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.scale(x, self.weight, None, axis=1, layer=self.layer_name)


class Concat(nn.Module):
    """Caffe ``Concat`` along channels (concat_layer.cpp, ``axis: 1``)."""

    layer_name = ""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return ops.concat(inputs, 1, self.layer_name)


class BlobRecorder:
    """Collects the named blobs of one forward pass, as Caffe holds them afterwards (an
    in-place layer overwrites its bottom, so a later ``keep`` of the same name replaces it)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.blobs: dict[str, torch.Tensor] = {}

    def keep(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            self.blobs[name] = value
        return value
