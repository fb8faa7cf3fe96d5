"""FCN-AlexNet (voc-fcn-alexnet/val.prototxt): CaffeNet's AlexNet made fully convolutional,
with one 32x upsampling, as an explicit module whose attributes are the Caffe layer names."""
from __future__ import annotations

import torch
from torch import nn

from port.models._layers import LRN, BlobRecorder, Convolution, Crop, Deconvolution, Pooling
from port.models._net import CaffeFamilyNet, check_num_classes, scaled_width

#: conv1..conv5 and fc6/fc7 of voc-fcn-alexnet/val.prototxt:
#: (name, relu, released width, kernel, stride, pad, group, pooling after, LRN after).
ALEXNET_CONVS = (
    ("conv1", "relu1", 96, 11, 4, 100, 1, "pool1", "norm1"),
    ("conv2", "relu2", 256, 5, 1, 2, 2, "pool2", "norm2"),
    ("conv3", "relu3", 384, 3, 1, 1, 1, "", ""),
    ("conv4", "relu4", 384, 3, 1, 1, 2, "", ""),
    ("conv5", "relu5", 256, 3, 1, 1, 2, "pool5", ""),
)
#: fc6/fc7: AlexNet's 6x6x256 -> 4096 -> 4096 classifier made convolutional, each followed by
#: ReLU and Dropout (in place).
FC_LAYERS = (("fc6", "relu6", "drop6", 6), ("fc7", "relu7", "drop7", 1))
FC_WIDTH = 4096
#: AlexNet's overlapping pooling (kernel 3, stride 2) and LRN (local_size 5, alpha 1e-4,
#: beta 0.75, k 1), as in the prototxt's pooling_param / lrn_param.
POOL_KERNEL, POOL_STRIDE = 3, 2
LRN_SIZE, LRN_ALPHA, LRN_BETA = 5, 1e-4, 0.75
#: ``upscore``: kernel 63, stride 32 as released (one less than the 2x-factor kernel of the
#: VGG16 nets); the derived crop offset is then 18 rather than 19.
UPSCORE_KERNEL, UPSCORE_STRIDE = 63, 32


class FCNAlexNet(CaffeFamilyNet):
    """FCN-AlexNet: ``forward(data)`` returns ``score``, the input-sized class scores."""

    def __init__(self, *, num_classes: int, width_divisor: int = 1, in_channels: int = 3):
        super().__init__()
        n = check_num_classes(num_classes)
        self._input("data", in_channels)
        bottom, channels = "data", in_channels
        for name, relu, width, kernel, stride, pad, group, pool, norm in ALEXNET_CONVS:
            width = scaled_width(width, width_divisor)
            self._add(name, Convolution(channels, width, kernel, stride, pad, groups=group), [bottom])
            self._add(relu, nn.ReLU(), [name], [name])
            bottom, channels = name, width
            if pool:
                bottom = self._add(pool, Pooling(POOL_KERNEL, POOL_STRIDE), [bottom]).layer_name
            if norm:
                bottom = self._add(norm, LRN(LRN_SIZE, LRN_ALPHA, LRN_BETA), [bottom]).layer_name
        for name, relu, drop, kernel in FC_LAYERS:
            width = scaled_width(FC_WIDTH, width_divisor)
            self._add(name, Convolution(channels, width, kernel), [bottom])
            self._add(relu, nn.ReLU(), [name], [name])
            self._add(drop, nn.Dropout(), [name], [name])
            bottom, channels = name, width
        self._add("score_fr", Convolution(channels, n, 1), [bottom])
        self._add("upscore", Deconvolution(n, n, UPSCORE_KERNEL, UPSCORE_STRIDE), ["score_fr"])
        self._add("score", Crop(), ["upscore", "data"])
        self._derive_crops()

    def forward(self, data: torch.Tensor, *, return_blobs: bool = False):
        blobs = BlobRecorder(return_blobs)
        x = data = blobs.keep("data", self._check_input("data", data))
        for name, relu, *_, pool, norm in ALEXNET_CONVS:
            x = blobs.keep(name, getattr(self, relu)(getattr(self, name)(x)))
            if pool:
                x = blobs.keep(pool, getattr(self, pool)(x))
            if norm:
                x = blobs.keep(norm, getattr(self, norm)(x))
        for name, relu, drop, _ in FC_LAYERS:
            x = blobs.keep(name, getattr(self, drop)(getattr(self, relu)(getattr(self, name)(x))))
        score_fr = blobs.keep("score_fr", self.score_fr(x))
        upscore = blobs.keep("upscore", self.upscore(score_fr))
        return self._result(blobs, {"score": blobs.keep("score", self.score(upscore, data))})
