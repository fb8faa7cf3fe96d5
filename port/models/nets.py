"""The released FCN nets written out layer by layer, as upstream's ``<model>/net.py`` writes them.

Each function here is one upstream ``net.py`` ``fcn(split)`` in :class:`port.net.spec.NetSpec`:
the Python data layer of its split, the VGG16 (or AlexNet) trunk made fully convolutional, the
scoring head with its skips, crops derived from the geometry (``NetSpec.crop``, upstream's
``caffe.coord_map.crop``) and the ``SoftmaxWithLoss`` of training. ``deploy=True`` gives the
net as upstream ``voc-fcn8s/deploy.prototxt`` has it: one ``Input`` layer instead of the data
layer, no loss. ``width_divisor`` divides the trunk widths (16 gives the Caffe goldens' nets);
the class counts are arguments. The tests compare every function with the upstream
``val``/``test``/``deploy`` and ``train``/``trainval`` prototxt, field for field.

Caffe phases: upstream writes the same layers for training and testing; the solver runs the
``train`` net in the TRAIN phase (Dropout active) and the ``val`` net in TEST.
"""
from __future__ import annotations

from typing import Sequence

from port.net.shapes import DATA_LAYER_CHANNELS
from port.net.spec import NetSpec

#: upstream ``conv_relu``'s ``param``: weights at the base rate with weight decay, biases at
#: twice the rate without.
LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
#: A frozen parameter (``lr_mult: 0``): the bilinear upsampling, the at-once skip scales.
FROZEN = [dict(lr_mult=0)]
#: ``loss_param`` of upstream's SoftmaxWithLoss: void pixels ignored; FCN-VGG16 sums the loss
#: over pixels (``normalize: false``), FCN-AlexNet averages it over valid ones.
IGNORE_LABEL = 255
#: The VOC mean, BGR, that upstream's data layers subtract (voc_layers.py ``mean``).
VOC_MEAN = (104.00699, 116.66877, 122.67892)
#: Released VGG16 stage widths and fc width (Simonyan & Zisserman 2014).
VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_CONVS = (2, 2, 3, 3, 3)
FC_WIDTH = 4096
#: The input size of upstream deploy.prototxt's Input layer ("purely for sake of example").
DEPLOY_SIZE = (500, 500)
#: Channels of the image tops of upstream's data layers (port.net.shapes.DATA_LAYER_CHANNELS);
#: label tops (label, sem, geo) have one.
IMAGE_CHANNELS = {t: DATA_LAYER_CHANNELS[t] for t in ("data", "color", "hha", "depth")}
LABEL_CHANNELS = DATA_LAYER_CHANNELS["label"]


def scaled(width: int, divisor: int) -> int:
    """A released width divided by ``width_divisor``."""
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1 or width % divisor:
        raise ValueError(f"width_divisor must be a positive integer dividing the layer width "
                         f"{width}; got {divisor!r}")
    return width // divisor


def check_classes(num_classes: int, what: str = "num_classes") -> int:
    """``num_classes`` as a positive int, or a ValueError naming it."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{what} must be a positive integer, got {num_classes!r}")
    return num_classes


# -- upstream's two helpers ------------------------------------------------------------------
def conv_relu(n: NetSpec, name: str, relu: str, bottom: str, nout: int, ks: int = 3,
              stride: int = 1, pad: int = 1) -> str:
    """upstream ``conv_relu`` (VGG16 nets): a learned Convolution and its in-place ReLU."""
    n.Convolution(name, bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad, param=LEARNED)
    return n.ReLU(relu, name, in_place=True)


def max_pool(n: NetSpec, name: str, bottom: str, ks: int = 2, stride: int = 2) -> str:
    """upstream ``max_pool``: MAX pooling (Caffe rounds its output size up)."""
    return n.Pooling(name, bottom, pool="MAX", kernel_size=ks, stride=stride)


def data_layer(n: NetSpec, tops: Sequence[str], module: str, layer: str, params: dict,
               deploy: bool) -> None:
    """The Python data layer of upstream (``params`` in upstream's key order, written as its
    ``str(dict)``), or for ``deploy`` one ``Input`` layer for the image tops."""
    if deploy:
        images = [t for t in tops if t in IMAGE_CHANNELS]
        shapes = [dict(dim=[1, IMAGE_CHANNELS[t], *DEPLOY_SIZE]) for t in images]
        n.Input("input", tops=images, ntop=len(images), input_param=dict(shape=shapes))
    else:
        n.Python(tops[0], tops=list(tops), ntop=len(tops),
                 python_param=dict(module=module, layer=layer, param_str=str(params)))


def loss(n: NetSpec, name: str, score: str, label: str, deploy: bool, normalize: bool = False) -> None:
    """upstream's SoftmaxWithLoss (left out of a deploy net)."""
    if not deploy:
        n.SoftmaxWithLoss(name, score, label,
                          loss_param=dict(normalize=normalize, ignore_label=IGNORE_LABEL))


# -- VGG16 made fully convolutional ------------------------------------------------------------
def vgg16_trunk(n: NetSpec, bottom: str, divisor: int, suffix: str = "", first: str = "",
                dropout: bool = True) -> str:
    """conv1_1 ... drop7 of upstream's VGG16 FCNs (conv1_1 ``pad: 100``; fc6 a 7x7 and fc7 a
    1x1 convolution, each with ReLU and Dropout 0.5 in place); returns the blob ``drop7`` writes
    (``fc7`` + suffix). ``suffix`` names the streams of the late-fusion net (``conv1_1color``),
    ``first`` renames conv1_1 alone (``conv1_1_bgrd`` of the early-fusion net). Without
    ``dropout`` (a deploy net, as upstream deploy.prototxt) the Dropout layers are left out:
    in the TEST phase they are the identity."""
    top = bottom
    for stage, (width, convs) in enumerate(zip(VGG16_WIDTHS, VGG16_CONVS), 1):
        for i in range(1, convs + 1):
            conv = f"conv{stage}_{i}"
            name = (first if first and (stage, i) == (1, 1) else conv + suffix)
            top = conv_relu(n, name, f"relu{stage}_{i}{suffix}", top, scaled(width, divisor),
                            pad=100 if (stage, i) == (1, 1) else 1)
        top = max_pool(n, f"pool{stage}{suffix}", top)
    fc = scaled(FC_WIDTH, divisor)
    top = conv_relu(n, f"fc6{suffix}", f"relu6{suffix}", top, fc, ks=7, pad=0)
    if dropout:
        top = n.Dropout(f"drop6{suffix}", top, dropout_ratio=0.5, in_place=True)
    top = conv_relu(n, f"fc7{suffix}", f"relu7{suffix}", top, fc, ks=1, pad=0)
    if dropout:
        top = n.Dropout(f"drop7{suffix}", top, dropout_ratio=0.5, in_place=True)
    return top


def score_conv(n: NetSpec, name: str, bottom: str, num_classes: int) -> str:
    """A learned 1x1 scoring convolution (``score_fr``, ``score_pool4``...)."""
    return n.Convolution(name, bottom, num_output=num_classes, kernel_size=1, pad=0, param=LEARNED)


def upsample(n: NetSpec, name: str, bottom: str, num_classes: int, factor: int,
             kernel: int | None = None) -> str:
    """A frozen Deconvolution upsampling by ``factor`` (kernel ``2 * factor``, upstream's
    bilinear support; FCN-AlexNet's 63), no bias; ``surgery.interp`` fills it bilinearly."""
    return n.Deconvolution(name, bottom, param=FROZEN, convolution_param=dict(
        num_output=num_classes, kernel_size=kernel or 2 * factor, stride=factor, bias_term=False))


#: upstream's skips: the stride-16 and stride-8 features, named after VGG16's pool4 and pool3,
#: and voc-fcn8s-atonce's constant scale of each ("scale pool4 skip for compatibility").
SKIPS = (("pool4", 0.01, 16), ("pool3", 0.0001, 8))


class HeadRules:
    """upstream's choices in the head: every upsampling's kernel is ``2 * factor``, and each
    skip's score is cropped into the upsampled coarser score. :mod:`port.models.fcnize`
    derives both from a classifier's geometry instead."""

    def kernel(self, n: NetSpec, bottom: str, factor: int, aligned_to: str) -> int:
        """The kernel of the upsampling of ``bottom`` by ``factor`` whose top is then cropped
        against (or into) ``aligned_to``."""
        return 2 * factor

    def crop_skip(self, n: NetSpec, upscored: str, score: str) -> bool:
        """True: crop the skip's ``score`` into ``upscored`` (upstream); False: the other way."""
        return True


def fcn_head(n: NetSpec, fc7: str, stride: int, num_classes: int, reference: str,
             divisor: int, suffix: str = "", at_once: bool = False,
             skips: dict[int, str] | None = None, rules: HeadRules | None = None) -> str:
    """The scoring of FCN-``stride``s on the trunk: ``score_fr``, then per skip (pool4 for
    16s, pool4 and pool3 for 8s) a 2x upsampling, the skip's score cropped to it and their sum;
    the last upsampling cropped to ``reference``. ``at_once``: the skips scaled by frozen Scale
    layers first (voc-fcn8s-atonce). Names as upstream (``score_pool4_semc`` for ``_sem``).
    ``skips`` gives the blob each skip reads by its stride (default ``pool4``, ``pool3``; the
    layer names stay upstream's); ``rules`` the kernels and crop directions (:class:`HeadRules`;
    where the upsampled score is the larger, it is cropped to the skip's as ``upscore2c``)."""
    s = suffix
    blobs = {skip_stride: skip for skip, _, skip_stride in SKIPS} | dict(skips or {})
    rules = rules or HeadRules()
    coarse = score_conv(n, f"score_fr{s}", fc7, num_classes)
    up = f"upscore2{s}"
    for skip, scale, skip_stride in SKIPS:
        if skip_stride < stride:
            break
        feature = blobs[skip_stride]
        upscored = upsample(n, up, coarse, num_classes, 2, rules.kernel(n, coarse, 2, feature))
        if at_once:
            feature = n.Scale(f"scale_{skip}", feature, filler=dict(type="constant", value=scale), param=FROZEN)
        score = score_conv(n, f"score_{skip}{s}", feature, num_classes)
        if rules.crop_skip(n, upscored, score):
            cropped = n.crop(f"score_{skip}{s}c", score, upscored)
            coarse = n.Eltwise(f"fuse_{skip}{s}", upscored, cropped, operation="SUM")
        else:
            cropped = n.crop(f"{up}c", upscored, score)
            coarse = n.Eltwise(f"fuse_{skip}{s}", cropped, score, operation="SUM")
        up = f"upscore_{skip}{s}"
    name = f"upscore{s}" if stride == 32 else f"upscore{stride}{s}"
    final = upsample(n, name, coarse, num_classes, stride, rules.kernel(n, coarse, stride, reference))
    return n.crop(f"score{s}", final, reference)


def _voc_data(n: NetSpec, split: str, deploy: bool, root: str = "..") -> None:
    # voc-fcn*/net.py: SBDD for training, VOC2011 seg11valid for validation.
    if split == "train":
        params = dict(sbdd_dir=f"{root}/data/sbdd/dataset", seed=1337, split=split, mean=VOC_MEAN)
        layer = "SBDDSegDataLayer"
    else:
        params = dict(voc_dir=f"{root}/data/pascal/VOC2011", seed=1337, split=split, mean=VOC_MEAN)
        layer = "VOCSegDataLayer"
    data_layer(n, ("data", "label"), "voc_layers", layer, params, deploy)


def _split(train: bool, deploy: bool, train_split: str, test_split: str) -> str:
    return train_split if train and not deploy else test_split


# -- the released nets -------------------------------------------------------------------------
def voc_fcn(stride: int, *, train: bool = False, deploy: bool = False, num_classes: int = 21,
            width_divisor: int = 1, at_once: bool = False) -> NetSpec:
    """voc-fcn32s / voc-fcn16s / voc-fcn8s / voc-fcn8s-atonce ``net.py``."""
    n = NetSpec()
    # voc-fcn16s/net.py alone reads its data from ../../data (as its prototxts say).
    _voc_data(n, _split(train, deploy, "train", "seg11valid"), deploy, "../.." if stride == 16 else "..")
    fc7 = vgg16_trunk(n, "data", width_divisor, dropout=not deploy)
    score = fcn_head(n, fc7, stride, check_classes(num_classes), "data", width_divisor, at_once=at_once)
    loss(n, "loss", score, "label", deploy)
    return n


def voc_fcn_alexnet(*, train: bool = False, deploy: bool = False, num_classes: int = 21,
                    width_divisor: int = 1) -> NetSpec:
    """voc-fcn-alexnet ``net.py``: AlexNet (CaffeNet order: pool before LRN, grouped conv2,
    conv4, conv5) made fully convolutional, fc6 6x6, one 32x upsampling of kernel 63, the loss
    averaged over valid pixels (``normalize: true``)."""
    n, d = NetSpec(), width_divisor
    _voc_data(n, _split(train, deploy, "train", "seg11valid"), deploy)

    def conv_relu_alex(name: str, relu: str, bottom: str, ks: int, nout: int, stride: int = 1,
                       pad: int = 0, group: int = 1) -> str:
        # voc-fcn-alexnet/net.py's own conv_relu: no param {} (lr_mult 1, decay_mult 1 for both).
        n.Convolution(name, bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad, group=group)
        return n.ReLU(relu, name, in_place=True)

    top = conv_relu_alex("conv1", "relu1", "data", 11, scaled(96, d), stride=4, pad=100)
    top = max_pool(n, "pool1", top, 3, stride=2)
    top = n.LRN("norm1", top, local_size=5, alpha=1e-4, beta=0.75)
    top = conv_relu_alex("conv2", "relu2", top, 5, scaled(256, d), pad=2, group=2)
    top = max_pool(n, "pool2", top, 3, stride=2)
    top = n.LRN("norm2", top, local_size=5, alpha=1e-4, beta=0.75)
    top = conv_relu_alex("conv3", "relu3", top, 3, scaled(384, d), pad=1)
    top = conv_relu_alex("conv4", "relu4", top, 3, scaled(384, d), pad=1, group=2)
    top = conv_relu_alex("conv5", "relu5", top, 3, scaled(256, d), pad=1, group=2)
    top = max_pool(n, "pool5", top, 3, stride=2)
    top = conv_relu_alex("fc6", "relu6", top, 6, scaled(FC_WIDTH, d))
    if not deploy:
        top = n.Dropout("drop6", top, dropout_ratio=0.5, in_place=True)
    top = conv_relu_alex("fc7", "relu7", top, 1, scaled(FC_WIDTH, d))
    if not deploy:
        top = n.Dropout("drop7", top, dropout_ratio=0.5, in_place=True)
    classes = check_classes(num_classes)
    score_fr = score_conv(n, "score_fr", top, classes)
    upscore = upsample(n, "upscore", score_fr, classes, 32, kernel=63)
    score = n.crop("score", upscore, "data")
    loss(n, "loss", score, "label", deploy, normalize=True)
    return n


def siftflow_fcn(stride: int, *, train: bool = False, deploy: bool = False, num_classes: int = 33,
                 num_geo_classes: int = 3, width_divisor: int = 1) -> NetSpec:
    """siftflow-fcn32s/16s/8s ``net.py``: one trunk, a semantic head (``_sem``, 33 classes,
    its loss named ``loss``) and a geometric head (``_geo``, 3 classes, ``loss_geo``)."""
    n = NetSpec()
    params = dict(siftflow_dir="../data/sift-flow", seed=1337,
                  split=_split(train, deploy, "trainval", "test"))
    data_layer(n, ("data", "sem", "geo"), "siftflow_layers", "SIFTFlowSegDataLayer", params, deploy)
    fc7 = vgg16_trunk(n, "data", width_divisor, dropout=not deploy)
    for suffix, classes, label, name in (("_sem", num_classes, "sem", "loss"),
                                         ("_geo", num_geo_classes, "geo", "loss_geo")):
        what = "num_classes" if suffix == "_sem" else "num_geo_classes"
        score = fcn_head(n, fc7, stride, check_classes(classes, what), "data", width_divisor, suffix)
        loss(n, name, score, label, deploy)
    return n


def nyud_fcn32s(modality: str, *, train: bool = False, deploy: bool = False, num_classes: int = 40,
                width_divisor: int = 1) -> NetSpec:
    """nyud-fcn32s-color / nyud-fcn32s-hha ``net.py``: FCN-32s on one modality (the data
    layer serves ``tops=[modality, 'label']`` into the blobs ``data`` and ``label``)."""
    n = NetSpec()
    params = dict(tops=[modality, "label"], seed=1337, nyud_dir="../data/nyud",
                  split=_split(train, deploy, "trainval", "test"))
    data_layer(n, ("data", "label"), "nyud_layers", "NYUDSegDataLayer", params, deploy)
    fc7 = vgg16_trunk(n, "data", width_divisor, dropout=not deploy)
    score = fcn_head(n, fc7, 32, check_classes(num_classes), "data", width_divisor)
    loss(n, "loss", score, "label", deploy)
    return n


def nyud_fcn32s_color_d(*, train: bool = False, deploy: bool = False, num_classes: int = 40,
                        width_divisor: int = 1) -> NetSpec:
    """nyud-fcn32s-color-d ``net.py``: early fusion, ``color`` and ``depth`` concatenated into
    a 4-channel ``data`` read by ``conv1_1_bgrd``."""
    n = NetSpec()
    params = dict(tops=["color", "depth", "label"], seed=1337, nyud_dir="../data/nyud",
                  split=_split(train, deploy, "trainval", "test"))
    data_layer(n, ("color", "depth", "label"), "nyud_layers", "NYUDSegDataLayer", params, deploy)
    data = n.Concat("data", "color", "depth")
    fc7 = vgg16_trunk(n, data, width_divisor, first="conv1_1_bgrd", dropout=not deploy)
    score = fcn_head(n, fc7, 32, check_classes(num_classes), data, width_divisor)
    loss(n, "loss", score, "label", deploy)
    return n


def nyud_fcn32s_color_hha(*, train: bool = False, deploy: bool = False, num_classes: int = 40,
                          width_divisor: int = 1) -> NetSpec:
    """nyud-fcn32s-color-hha ``net.py``: late fusion, one VGG16 stream per modality (names
    suffixed ``color``/``hha``), their ``score_fr`` averaged (Eltwise SUM, coeff 0.5 each), one
    32x upsampling cropped to ``color``."""
    n = NetSpec()
    params = dict(tops=["color", "hha", "label"], seed=1337, nyud_dir="../data/nyud",
                  split=_split(train, deploy, "trainval", "test"))
    data_layer(n, ("color", "hha", "label"), "nyud_layers", "NYUDSegDataLayer", params, deploy)
    classes = check_classes(num_classes)
    scores = [score_conv(n, f"score_fr{m}", vgg16_trunk(n, m, width_divisor, suffix=m, dropout=not deploy), classes)
              for m in ("color", "hha")]
    fused = n.Eltwise("score_fused", *scores, operation="SUM", coeff=[0.5, 0.5])
    upscore = upsample(n, "upscore", fused, classes, 32)
    score = n.crop("score", upscore, "color")
    loss(n, "loss", score, "label", deploy)
    return n


def pascalcontext_fcn(stride: int, *, train: bool = False, deploy: bool = False, num_classes: int = 60,
                      width_divisor: int = 1) -> NetSpec:
    """pascalcontext-fcn32s/16s/8s ``net.py``: 59 classes + background."""
    n = NetSpec()
    params = dict(context_dir="../../data/pascal-context", seed=1337,
                  split=_split(train, deploy, "train", "val"), voc_dir="../../data/pascal")
    data_layer(n, ("data", "label"), "pascalcontext_layers", "PASCALContextSegDataLayer", params, deploy)
    fc7 = vgg16_trunk(n, "data", width_divisor, dropout=not deploy)
    score = fcn_head(n, fc7, stride, check_classes(num_classes), "data", width_divisor)
    loss(n, "loss", score, "label", deploy)
    return n
