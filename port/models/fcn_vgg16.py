"""The FCN-VGG16 family (Long, Shelhamer & Darrell): FCN-32s, -16s, -8s, at-once, and the
SIFT Flow (two heads) and NYUDv2 (early and late fusion) variants, as explicit modules.

Every layer is an attribute named as in the upstream prototxts (fcn.berkeleyvision.org
``voc-fcn*/val.prototxt``, ``siftflow-fcn*/test.prototxt``, ``nyud-fcn32s-*/test.prototxt``,
``pascalcontext-fcn*/val.prototxt``), so a converted caffemodel loads by name. The layer plan
(:func:`vgg16_plan`, :func:`head_plan`) is written once and drives both construction and the
forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from port.models._layers import (
    BlobRecorder, Concat, Convolution, Crop, Deconvolution, Eltwise, Pooling, Scale,
)
from port.models._net import CaffeFamilyNet, check_num_classes, scaled_width

#: VGG16's convolution stages as the FCN prototxts name them: (convolutions, pooling).
VGG16_STAGES = (
    (("conv1_1", "conv1_2"), "pool1"),
    (("conv2_1", "conv2_2"), "pool2"),
    (("conv3_1", "conv3_2", "conv3_3"), "pool3"),
    (("conv4_1", "conv4_2", "conv4_3"), "pool4"),
    (("conv5_1", "conv5_2", "conv5_3"), "pool5"),
)
#: Released output widths of the five stages (VGG16, Simonyan & Zisserman 2014).
VGG16_WIDTHS = (64, 128, 256, 512, 512)
#: fc6/fc7 width, and fc6's kernel: VGG16's 7x7x512 -> 4096 classifier made convolutional.
FC_WIDTH = 4096
FC6_KERNEL = 7
#: conv1_1 ``pad: 100``: enough padding that every input size survives the 32x downsampling
#: and fc6's 7x7 kernel; the final Crop removes it again.
FIRST_CONV_PAD = 100
#: The other VGG16 convolutions: 3x3, ``pad: 1`` (size preserving); pools 2x2, stride 2, MAX.
CONV_KERNEL, CONV_PAD = 3, 1
POOL_KERNEL = POOL_STRIDE = 2
#: The skip layers the heads fuse, coarsest first, and the downsampling of each.
SKIPS = (("pool4", 16), ("pool3", 8))
#: FCN-8s at-once: ``scale_pool4``/``scale_pool3`` constant fillers (voc-fcn8s-atonce
#: val.prototxt, ``lr_mult: 0``): the skips are scaled down instead of learned from zero.
AT_ONCE_SCALES = {"pool4": 0.01, "pool3": 0.0001}
#: The output stride of the trunk (fc7): five 2x poolings.
TRUNK_STRIDE = 32


@dataclass(frozen=True)
class ConvStep:
    """One Convolution + ReLU (+ Dropout) of the trunk, in-place on the convolution's top."""

    conv: str
    relu: str
    width: int
    kernel: int
    pad: int
    drop: str = ""


def vgg16_plan(suffix: str = "", first_conv: str = "") -> list[ConvStep | str]:
    """The trunk conv1_1 ... fc7 as the prototxts name it: ConvSteps and pooling names.

    ``suffix`` names the streams of the late-fusion net (``conv1_1color``, ``relu1_1color``);
    ``first_conv`` renames conv1_1 alone (``conv1_1_bgrd`` of the early-fusion net)."""
    plan: list[ConvStep | str] = []
    for (convs, pool), width in zip(VGG16_STAGES, VGG16_WIDTHS):
        for conv in convs:
            first = conv == VGG16_STAGES[0][0][0]
            plan.append(ConvStep((first and first_conv) or conv + suffix, "relu" + conv[4:] + suffix,
                                 width, CONV_KERNEL, FIRST_CONV_PAD if first else CONV_PAD))
        plan.append(pool + suffix)
    for index, kernel in (("6", FC6_KERNEL), ("7", 1)):
        plan.append(ConvStep("fc" + index + suffix, "relu" + index + suffix, FC_WIDTH, kernel, 0,
                             drop="drop" + index + suffix))
    return plan


def add_trunk(net: CaffeFamilyNet, bottom: str, channels: int, divisor: int,
              suffix: str = "", first_conv: str = "") -> str:
    """Register the VGG16 trunk reading ``bottom``; returns its top (``fc7`` + suffix)."""
    for step in vgg16_plan(suffix, first_conv):
        if isinstance(step, str):
            net._add(step, Pooling(POOL_KERNEL, POOL_STRIDE), [bottom])
            bottom = step
            continue
        width = scaled_width(step.width, divisor)
        net._add(step.conv, Convolution(channels, width, step.kernel, padding=step.pad), [bottom])
        net._add(step.relu, nn.ReLU(), [step.conv], [step.conv])
        if step.drop:
            net._add(step.drop, nn.Dropout(), [step.conv], [step.conv])
        bottom, channels = step.conv, width
    return bottom


def run_trunk(net: CaffeFamilyNet, x: torch.Tensor, blobs: BlobRecorder, suffix: str = "",
              first_conv: str = "") -> dict[str, torch.Tensor]:
    """The trunk's forward: every pooling output by name, and ``fc7`` (+ suffix)."""
    tops: dict[str, torch.Tensor] = {}
    for step in vgg16_plan(suffix, first_conv):
        if isinstance(step, str):
            x = tops[step] = blobs.keep(step, getattr(net, step)(x))
            continue
        x = blobs.keep(step.conv, getattr(net, step.relu)(getattr(net, step.conv)(x)))
        if step.drop:
            x = blobs.keep(step.conv, getattr(net, step.drop)(x))
        tops[step.conv] = x
    return tops


def upsampling(factor: int) -> tuple[int, int]:
    """(kernel, stride) of an FCN upsampling Deconvolution: kernel twice the factor, the
    support of the bilinear kernel (surgery.py ``upsample_filt``): 4/2, 32/16, 16/8, 64/32."""
    return 2 * factor, factor


def add_head(net: CaffeFamilyNet, stride: int, fc7: str, ref: str, num_classes: int,
             divisor: int, suffix: str = "", at_once: bool = False) -> None:
    """Register the scoring head of FCN-``stride``s on ``fc7``: score_fr, the skip fusions
    (2x upsampling, a skip's 1x1 score cropped to it, a sum) and the final upsampling cropped
    to ``ref`` (the input); names as the prototxts, e.g. ``score_pool4_semc`` for suffix _sem."""
    n, s = num_classes, suffix
    net._add(f"score_fr{s}", Convolution(scaled_width(FC_WIDTH, divisor), n, 1), [fc7])
    coarse, coarse_stride = f"score_fr{s}", TRUNK_STRIDE
    for index, (skip, skip_stride) in enumerate(SKIPS):
        if skip_stride < stride:
            break
        up = f"upscore2{s}" if index == 0 else f"upscore_{SKIPS[index - 1][0]}{s}"
        net._add(up, Deconvolution(n, n, *upsampling(coarse_stride // skip_stride)), [coarse])
        bottom = skip
        if at_once:
            net._add(f"scale_{skip}", Scale(_pool_width(skip, divisor), AT_ONCE_SCALES[skip]), [skip])
            bottom = f"scale_{skip}"
        net._add(f"score_{skip}{s}", Convolution(_pool_width(skip, divisor), n, 1), [bottom])
        net._add(f"score_{skip}{s}c", Crop(), [f"score_{skip}{s}", up])
        net._add(f"fuse_{skip}{s}", Eltwise("SUM"), [up, f"score_{skip}{s}c"])
        coarse, coarse_stride = f"fuse_{skip}{s}", skip_stride
    final = f"upscore{s}" if stride == TRUNK_STRIDE else f"upscore{stride}{s}"
    net._add(final, Deconvolution(n, n, *upsampling(stride)), [coarse])
    net._add(f"score{s}", Crop(), [final, ref])


def _pool_width(pool: str, divisor: int) -> int:
    stage = [p for _, p in VGG16_STAGES].index(pool)
    return scaled_width(VGG16_WIDTHS[stage], divisor)


def run_head(net: CaffeFamilyNet, stride: int, tops: dict[str, torch.Tensor], fc7: str,
             ref: torch.Tensor, blobs: BlobRecorder, suffix: str = "",
             at_once: bool = False) -> torch.Tensor:
    """The forward of :func:`add_head`; returns the cropped ``score`` (+ suffix)."""
    s, keep = suffix, blobs.keep
    coarse = keep(f"score_fr{s}", getattr(net, f"score_fr{s}")(tops[fc7]))
    coarse_name = f"score_fr{s}"
    for index, (skip, skip_stride) in enumerate(SKIPS):
        if skip_stride < stride:
            break
        up_name = f"upscore2{s}" if index == 0 else f"upscore_{SKIPS[index - 1][0]}{s}"
        up = keep(up_name, getattr(net, up_name)(coarse))
        feature = tops[skip]
        if at_once:
            feature = keep(f"scale_{skip}", getattr(net, f"scale_{skip}")(feature))
        score = keep(f"score_{skip}{s}", getattr(net, f"score_{skip}{s}")(feature))
        cropped = keep(f"score_{skip}{s}c", getattr(net, f"score_{skip}{s}c")(score, up))
        coarse = keep(f"fuse_{skip}{s}", getattr(net, f"fuse_{skip}{s}")(up, cropped))
    final = f"upscore{s}" if stride == TRUNK_STRIDE else f"upscore{stride}{s}"
    upscored = keep(final, getattr(net, final)(coarse))
    return keep(f"score{s}", getattr(net, f"score{s}")(upscored, ref))


class FCNVGG16(CaffeFamilyNet):
    """FCN-32s/16s/8s on VGG16 with one input blob ``data`` and one scoring head per entry
    of ``heads`` (``(suffix, num_classes)``: ``("", 21)`` for VOC; ``("_sem", 33)`` and
    ``("_geo", 3)`` for SIFT Flow). ``at_once``: the FCN-8s at-once skips (``scale_pool4``,
    ``scale_pool3``). ``forward(data)`` returns ``score`` (one head) or a dict of scores."""

    def __init__(self, *, stride: int, heads: tuple[tuple[str, int], ...], at_once: bool = False,
                 width_divisor: int = 1, in_channels: int = 3):
        super().__init__()
        if stride not in (TRUNK_STRIDE,) + tuple(s for _, s in SKIPS):
            raise ValueError(f"FCN output stride must be 32, 16 or 8, got {stride!r}")
        self.stride, self.heads, self.at_once = stride, tuple(heads), at_once
        self._input("data", in_channels)
        fc7 = add_trunk(self, "data", in_channels, width_divisor)
        for suffix, n in self.heads:
            add_head(self, stride, fc7, "data", check_num_classes(n), width_divisor, suffix, at_once)
        self._derive_crops()

    def forward(self, data: torch.Tensor, *, return_blobs: bool = False):
        blobs = BlobRecorder(return_blobs)
        data = blobs.keep("data", self._check_input("data", data))
        tops = run_trunk(self, data, blobs)
        scores = {f"score{s}": run_head(self, self.stride, tops, "fc7", data, blobs, s, self.at_once)
                  for s, _ in self.heads}
        return self._result(blobs, scores)


class FCNVGG16EarlyFusion(CaffeFamilyNet):
    """NYUDv2 FCN-32s, early fusion (nyud-fcn32s-color-d): ``color`` (3) and ``depth`` (1)
    concatenated into a 4-channel ``data`` blob read by ``conv1_1_bgrd``."""

    def __init__(self, *, num_classes: int, width_divisor: int = 1,
                 color_channels: int = 3, depth_channels: int = 1):
        super().__init__()
        self._input("color", color_channels)
        self._input("depth", depth_channels)
        self._add("data", Concat(), ["color", "depth"])
        fc7 = add_trunk(self, "data", color_channels + depth_channels, width_divisor,
                        first_conv="conv1_1_bgrd")
        add_head(self, TRUNK_STRIDE, fc7, "data", check_num_classes(num_classes), width_divisor)
        self._derive_crops()

    def forward(self, color: torch.Tensor, depth: torch.Tensor, *, return_blobs: bool = False):
        blobs = BlobRecorder(return_blobs)
        color = blobs.keep("color", self._check_input("color", color))
        depth = blobs.keep("depth", self._check_input("depth", depth))
        data = blobs.keep("data", self.data(color, depth))
        tops = run_trunk(self, data, blobs, first_conv="conv1_1_bgrd")
        score = run_head(self, TRUNK_STRIDE, tops, "fc7", data, blobs)
        return self._result(blobs, {"score": score})


class FCNVGG16LateFusion(CaffeFamilyNet):
    """NYUDv2 FCN-32s, late fusion (nyud-fcn32s-color-hha): one VGG16 stream per input
    (layer names suffixed ``color`` and ``hha``), their ``score_fr`` averaged by
    ``score_fused`` (Eltwise SUM, coeff 1/2 each), one 32x upsampling cropped to ``color``."""

    STREAMS = ("color", "hha")

    def __init__(self, *, num_classes: int, width_divisor: int = 1, in_channels: int = 3):
        super().__init__()
        n = check_num_classes(num_classes)
        for stream in self.STREAMS:
            self._input(stream, in_channels)
        for stream in self.STREAMS:
            fc7 = add_trunk(self, stream, in_channels, width_divisor, suffix=stream)
            self._add(f"score_fr{stream}", Convolution(scaled_width(FC_WIDTH, width_divisor), n, 1), [fc7])
        average = tuple(1.0 / len(self.STREAMS) for _ in self.STREAMS)
        self._add("score_fused", Eltwise("SUM", average), [f"score_fr{s}" for s in self.STREAMS])
        self._add("upscore", Deconvolution(n, n, *upsampling(TRUNK_STRIDE)), ["score_fused"])
        self._add("score", Crop(), ["upscore", self.STREAMS[0]])
        self._derive_crops()

    def forward(self, color: torch.Tensor, hha: torch.Tensor, *, return_blobs: bool = False):
        blobs = BlobRecorder(return_blobs)
        inputs = {"color": color, "hha": hha}
        scores = []
        for stream in self.STREAMS:
            x = blobs.keep(stream, self._check_input(stream, inputs[stream]))
            fc7 = run_trunk(self, x, blobs, suffix=stream)[f"fc7{stream}"]
            scores.append(blobs.keep(f"score_fr{stream}", getattr(self, f"score_fr{stream}")(fc7)))
        fused = blobs.keep("score_fused", self.score_fused(*scores))
        upscore = blobs.keep("upscore", self.upscore(fused))
        return self._result(blobs, {"score": blobs.keep("score", self.score(upscore, color))})
