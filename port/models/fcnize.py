"""``fcnize``: a Caffe classifier cast into a fully convolutional net, as the FCN paper casts VGG16,
AlexNet and GoogLeNet (Long, Shelhamer & Darrell, CVPR 2015, sections 3 and 4; upstream
``shelhamer/fcn.berkeleyvision.org`` 1305c73 writes the results out in ``<model>/net.py``).

:func:`cast` reads a classifier (a deploy prototxt or a caffemodel's stored layers, legacy V1
upgraded by :mod:`port.caffe`) and decides everything below from the net itself, never from a
layer's name; :meth:`Casting.net` writes the FCN's ``train``, ``val`` or ``deploy`` net as a
:class:`port.net.spec.NetSpec` (the head with :func:`port.models.nets.fcn_head`, the data
layers and the loss with :mod:`port.models.nets`'s helpers); :func:`fcnize` is both in one call.

The rules:

- **The classifier and what follows it are discarded**: the final classifier is the net's last
  ``InnerProduct``; it and every layer after it (softmax, loss, accuracy) go. In front of it, a
  ``Flatten``/``Reshape`` goes, and so does an average (or global) ``Pooling`` with the in-place
  layers on its top (GoogLeNet's ``pool5/7x7_s1`` and its Dropout, as the paper does; ResNet's
  ``pool5`` by the same rule). The input layers go too (replaced by the FCN's data layer; the
  blob they fed is renamed ``data``).
- **Fully connected layers become convolutions**: every other ``InnerProduct`` becomes a
  ``Convolution`` whose kernel is the map it sees at the classifier's input size (VGG16 fc6:
  7 x 7 from 224 x 224, AlexNet's 6 x 6 from 227 x 227; fc7 sees 1 x 1) with pad 0 and stride 1,
  the same outputs, parameters and fillers. Without an input shape the kernel is read from the
  weights: ``k * k = inputs / channels``. Its weights then transplant by a flat copy
  (:func:`port.training.surgery.transplant`'s coercion: ``4096 x 25088`` -> ``4096 x 512 x 7 x 7``).
- **Spelling**: the trunk is the classifier's layers as written, each Convolution with its
  ``stride`` and ``pad`` written out even at their defaults (upstream's ``conv_relu`` spells
  ``kernel_size``, ``stride`` and ``pad``); ``explicit`` names the fields written so. A learned
  layer (Convolution, cast InnerProduct) that names no ``param`` gets upstream's
  ``conv_relu`` ``param`` (weights ``lr_mult: 1 decay_mult: 1``, biases ``lr_mult: 2
  decay_mult: 0``) unless ``learned_param=False``; Dropout is left out of the deploy net.
- **Scoring** (:func:`port.models.nets.fcn_head`): a learned 1 x 1 convolution ``score_fr``
  with ``num_classes`` outputs on the trunk's output, which must have stride 32 (read from the
  coordinate maps, :func:`port.net.coord_map.maps_from`). For 16s and 8s, the skips read the
  blob of stride 16 and of stride 8 that ends a stage: the last blob of that stride that every
  path from the input passes through, produced by a pooling or a merge (Pooling, Eltwise,
  Concat; a plain convolution only where none is): VGG16's ``pool4``/``pool3``, AlexNet's
  ``pool2``/``pool1``, GoogLeNet's ``inception_4e/output``/``inception_3b/output``, ResNet's
  last ``res4*``/``res3*`` sums. Their layers carry upstream's names whatever blob they read
  (``score_pool4``, ``upscore2``, ``score_pool4c``, ``fuse_pool4``, ``upscore_pool4``,
  ``score_pool3`` ... ``upscore8``), ``at_once`` adds voc-fcn8s-atonce's frozen
  ``scale_pool4`` (0.01) and ``scale_pool3`` (0.0001). Upsamplings are frozen (``lr_mult: 0``)
  bilinear Deconvolutions, stride ``f``, kernel ``2f``; where a crop after it would fall on a
  half pixel, ``2f - 1`` (which moves the kernel's centre by half a pixel; upstream
  ``upsample_filt`` gives both the factor ``f``): AlexNet's 11 x 11 stride-4 conv1 leaves the
  score half a pixel off, whence voc-fcn-alexnet's ``upscore`` of 63 (GoogLeNet's and ResNet's
  3 x 3 pools and strided 1 x 1 convolutions give 3 and 15 too). A skip's score is cropped into
  the upsampled coarser score (upstream's ``score_pool4c``) where it fits at every input size;
  where the upsampled score is the larger (no cast fc6 shrinks it: GoogLeNet, ResNet) the
  upsampled score is cropped to the skip's (``upscore2c``, ``upscore_pool4c``). Crop offsets are
  derived by :meth:`port.net.spec.NetSpec.crop`.
- **Input padding**: every input size from 1 to 500 pixels (VOC's largest side; past the
  trunk's smallest sizes the arithmetic repeats with period 32) must get a score covering the
  whole input: every layer's output at least 1 x 1 and every crop inside its input (Caffe's
  ``Reshape`` rules, :mod:`port.net.shapes`). The first convolution keeps its own pad where that
  holds. Else, on a trunk with a cast fully connected layer, upstream's ``pad: 100`` where it
  holds: upstream's README FAQ says it "guarantees that the network output can be aligned to
  the input for any input size in the given datasets"; the cast fc6 needs its whole 7 x 7 (6 x 6)
  map even from a 1-pixel image, for which VGG16 needs a pad of at least 97 and AlexNet 99,
  and 100 is upstream's round number above both. Else (no cast layer: GoogLeNet 18, ResNet-50
  4) the smallest pad that holds. ``pad`` overrides the rule.
- **Data and loss**: ``dataset="voc"`` writes upstream's Python data layers (train:
  ``voc_layers.SBDDSegDataLayer`` on SBD ``train``; val: ``voc_layers.VOCSegDataLayer`` on
  ``seg11valid``, ``param_str`` as upstream's ``net.py``, paths under ``data_root``); without
  a dataset, one ``Input`` layer with ``data`` and ``label`` (replace it with your own data
  layer). The loss is upstream's ``SoftmaxWithLoss`` with ``ignore_label: 255``, summed
  (``normalize: false``, FCN-VGG16's) unless ``normalize_loss`` (FCN-AlexNet's). The deploy net
  has upstream deploy.prototxt's ``Input`` of 1 x C x 500 x 500 and no loss.
- **Solver** (:func:`solver`): upstream's ``solver.prototxt`` of the matching net
  (:func:`recipe`): voc-fcn-alexnet's with ``normalize_loss`` (base_lr 1e-4, momentum 0.9,
  iter_size 20), voc-fcn8s-atonce's with ``at_once``, else voc-fcn32s/16s/8s's by stride. Note
  that upstream's 16s and 8s rates (1e-12, 1e-14) are for staged training from the coarser net;
  from a classifier, at-once's 1e-10 is upstream's setting.

What upstream's released nets do that these rules do not, each with the option that
reproduces it (tests/test_fcnize.py checks every one): voc-fcn16s/net.py reads its data from
``../../data`` (``data_root="../.."``); voc-fcn-alexnet/net.py writes no ``param`` on its trunk
(``learned_param=False``), spells ``group: 1`` (``explicit=("stride", "pad", "group")``) and
averages its loss (``normalize_loss=True``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from port.caffe import Message, NetDef
from port.errors import PortError
from port.models import nets
from port.net import coord_map, shapes
from port.net.spec import NetSpec, assign

__all__ = ["FcnizeError", "Casting", "cast", "fcnize", "solver", "recipe", "spatial_sizes", "STRIDES",
           "SpatialSizes", "FORMS", "DATASETS", "UPSTREAM_PAD", "COVERED_SIZES"]

STRIDES = (32, 16, 8)
FORMS = ("train", "val", "deploy")
DATASETS = ("voc",)
#: upstream's pad of the first convolution (voc-fcn*/net.py ``conv_relu(n.data, 64, pad=100)``).
UPSTREAM_PAD = 100
#: The input sizes every score must cover (1 to VOC's largest side, 500).
COVERED_SIZES = range(1, 501)
#: Where the smallest sufficient pad is searched when neither the own pad nor 100 suffices.
MAX_PAD = 1024
#: Layers that end a stage: a skip prefers their tops (pooling, and the merges of GoogLeNet's
#: inception modules and ResNet's residual blocks).
STAGE_ENDS = ("Pooling", "Eltwise", "Concat")
#: Layers removed in front of an InnerProduct (the cast convolution reads the map itself).
FLATTENING = ("Flatten", "Reshape")
#: ConvolutionParameter fields ``explicit`` may write out, at their caffe.proto defaults.
EXPLICIT_DEFAULTS = {"stride": [1], "pad": [0], "group": 1}
#: Fields of a LayerParameter the trunk does not carry over (rewritten or phase-bound).
_NOT_CARRIED = ("name", "type", "bottom", "top", "blobs", "include", "exclude", "phase")
#: upstream's solver.prototxt settings common to every VOC net (test_iter: seg11valid's 736).
SOLVER_COMMON = dict(train_net="train.prototxt", test_net="val.prototxt", test_iter=[736],
                     test_interval=999999999, display=20, average_loss=20, lr_policy="fixed",
                     weight_decay=0.0005, snapshot=4000, snapshot_prefix="snapshot/train",
                     test_initialization=False)
#: Per upstream net: base_lr, momentum, iter_size, max_iter. The unnormalised-loss nets
#: ("lr for unnormalized softmax", "high momentum") differ in base_lr because 16s and 8s
#: start from the coarser net (staged training); at-once starts from the classifier.
SOLVER_RECIPES = {
    "voc-fcn32s": dict(base_lr=1e-10, momentum=0.99, iter_size=1, max_iter=100000),
    "voc-fcn16s": dict(base_lr=1e-12, momentum=0.99, iter_size=1, max_iter=100000),
    "voc-fcn8s": dict(base_lr=1e-14, momentum=0.99, iter_size=1, max_iter=100000),
    "voc-fcn8s-atonce": dict(base_lr=1e-10, momentum=0.99, iter_size=1, max_iter=300000),
    "voc-fcn-alexnet": dict(base_lr=1e-4, momentum=0.9, iter_size=20, max_iter=100000),
}


class FcnizeError(PortError):
    """A classifier that cannot be cast as asked (named: the file, the layer or blob, and why)."""


# ---------------------------------------------------------------------------------------------
# Spatial sizes (Caffe's Reshape arithmetic, port.net.shapes, along a net)


def _per_axis(values: tuple[int, ...]) -> tuple[int, int]:
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _size_rule(layer: Any) -> Callable[[list[tuple[int, int]]], tuple[int, int] | None]:
    """How a layer sizes its tops from its bottoms' (height, width), as Caffe's ``Reshape``
    (:mod:`port.net.shapes`); the rule returns None where the layer ends the spatial map
    (InnerProduct, Flatten: their tops are N x C)."""
    kind, name = layer.type, layer.name
    if kind in ("Convolution", "Deconvolution", "Pooling"):
        if kind == "Pooling" and layer.pooling_param.global_pooling:
            return lambda bottoms: (1, 1)
        p = coord_map.spatial_params(layer)
        geometry = list(zip(*(_per_axis(p[k]) for k in ("kernel", "stride", "pad", "dilation"))))
        if kind == "Pooling":
            return lambda bottoms: tuple(shapes.pool_output_size(size, k, st, pd, name)
                                         for size, (k, st, pd, _) in zip(bottoms[0], geometry))
        size = shapes.conv_output_size if kind == "Convolution" else shapes.deconv_output_size
        return lambda bottoms: tuple(size(n, k, st, pd, dl, name) for n, (k, st, pd, dl) in zip(bottoms[0], geometry))
    if kind == "Crop":
        axis, offsets = int(layer.crop_param.axis), tuple(layer.crop_param.offset) or (0,)
        return lambda bottoms: shapes.crop_output_shape((1, 1, *bottoms[0]), (1, 1, *bottoms[1]),
                                                     axis, offsets, name)[2:]
    if kind in ("InnerProduct", *FLATTENING) or kind.endswith("Loss") or kind in ("Accuracy", "Silence"):
        return lambda bottoms: None
    if kind in ("Eltwise", "Concat"):
        def merged(bottoms: list[tuple[int, int]]) -> tuple[int, int]:
            if any(b != bottoms[0] for b in bottoms):
                raise shapes.CaffeSemanticsError(f"layer {name!r}: {kind} of maps "
                                              f"{' and '.join(f'{h}x{w}' for h, w in bottoms)}")
            return bottoms[0]
        return merged
    if kind in coord_map.PASS_THROUGH_LAYERS:
        return lambda bottoms: bottoms[0]
    raise FcnizeError(f"layer {name!r}: type {kind!r} has no spatial size rule here")


class SpatialSizes:
    """Every spatial blob's (height, width) given the inputs', layer by layer as Caffe's
    ``Reshape`` sizes them; each layer's rule is read once, so a net is sized at many input
    sizes quickly. Calling it raises ``CaffeSemanticsError`` naming the layer where a size is
    impossible (an output under 1, a crop outside its input, merged maps of different sizes)."""

    def __init__(self, layers: Iterable[Any]):
        self.steps = [(tuple(l.bottom), tuple(l.top), _size_rule(l)) for l in layers if l.bottom]

    def __call__(self, inputs: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        sizes = dict(inputs)
        for bottoms, tops, rule in self.steps:
            have = [sizes[b] for b in bottoms if b in sizes]
            out = rule(have) if len(have) == len(bottoms) else None
            for top in tops:
                if out is None:
                    sizes.pop(top, None)
                else:
                    sizes[top] = out
        return sizes


def spatial_sizes(layers: Iterable[Any], inputs: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """:class:`SpatialSizes` of ``layers`` at ``inputs`` (blob -> (height, width))."""
    return SpatialSizes(layers)(inputs)


def _uncovered(netdef: NetDef, sizes: Iterable[int] = COVERED_SIZES) -> tuple[int, str] | None:
    """The first input size whose score does not cover the input, with why; None if all do."""
    sized = SpatialSizes(netdef.layers)
    for size in sizes:
        try:
            sized({"data": (size, size)})
        except shapes.CaffeSemanticsError as err:
            return size, str(err)
    return None


# ---------------------------------------------------------------------------------------------
# Reading the classifier


def _plain(value: Any) -> Any:
    """A message field as NetSpec's keywords take it (dicts, lists, scalars)."""
    if isinstance(value, Message):
        return {k: _plain(v) for k, v in value.fields()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass
class _Layer:
    """One trunk layer as it will be written: type, name, blobs, NetSpec keywords."""
    type: str
    name: str
    bottom: list[str]
    top: list[str]
    fields: dict[str, Any]


def _channels(layers: Sequence[Any], data: str, channels: int) -> dict[str, int]:
    """Each blob's channel count (Convolution/InnerProduct outputs, Concat sums, others keep)."""
    out = {data: channels}
    for layer in layers:
        have = [out.get(b) for b in layer.bottom]
        if layer.type in ("Convolution", "Deconvolution"):
            c = int(layer.convolution_param.num_output)
        elif layer.type == "InnerProduct":
            c = int(layer.inner_product_param.num_output)
        elif layer.type == "Concat" and None not in have:
            c = sum(have)
        else:
            c = have[0] if have else None
        for top in layer.top:
            if c is not None:
                out[top] = c
    return out


def _stage_ends(layers: Sequence[_Layer]) -> list[tuple[int, str]]:
    """(index, blob) of each layer's top that every path from the input to the trunk's output
    passes through: right after the layer, it is the only blob a later layer still reads."""
    last_use: dict[tuple[str, int], int] = {}
    version: dict[str, int] = {}
    produced: list[list[tuple[str, int]]] = []
    for i, layer in enumerate(layers):
        for b in layer.bottom:
            last_use[(b, version.get(b, 0))] = i
        tops = []
        for t in layer.top:
            version[t] = version[t] + 1 if t in version else 0
            tops.append((t, version[t]))
        produced.append(tops)
    ends = []
    live: set[tuple[str, int]] = {("data", 0)}
    for i, tops in enumerate(produced):
        live = {v for v in live if last_use.get(v, -1) > i}
        live |= {v for v in tops if last_use.get(v, -1) > i or i == len(layers) - 1}
        if len(tops) == 1 and live == set(tops):
            ends.append((i, tops[0][0]))
    return ends


def _stride(cmap: coord_map.CoordMap) -> Fraction | None:
    strides = {1 / a for a in cmap.scale}
    return strides.pop() if len(strides) == 1 else None


@dataclass
class Casting:
    """What :func:`cast` derived from a classifier, and :meth:`net` to write the FCN."""

    source: str
    num_classes: int
    stride: int
    layers: list[_Layer]
    channels: int
    cast: dict[str, tuple[int, int]]
    discarded: list[str]
    output: str
    skips: dict[int, str]
    first_conv: str
    own_pad: int
    pad: int = UPSTREAM_PAD
    at_once: bool = False
    dataset: str | None = None
    data_root: str = ".."
    normalize_loss: bool = False
    #: the upsampling kernels chosen, by (bottom, factor, aligned_to): the pad moves no parity
    kernels: dict[tuple[str, int, str], int] = field(default_factory=dict, repr=False)

    def net(self, form: str = "train") -> NetSpec:
        """The FCN as a NetSpec: ``train`` (TRAIN data, Dropout), ``val`` (validation data) or
        ``deploy`` (upstream deploy.prototxt's ``Input`` layer, no Dropout, no loss)."""
        return self._write(form, self.pad)

    def _write(self, form: str, pad: int | None) -> NetSpec:
        if form not in FORMS:
            raise FcnizeError(f"form {form!r}: expected one of {', '.join(FORMS)}")
        deploy = form == "deploy"
        n = NetSpec()
        if deploy:  # upstream voc-fcn8s/deploy.prototxt's Input layer
            n.Input("input", tops=["data"], input_param=dict(shape=dict(dim=[1, self.channels, *nets.DEPLOY_SIZE])))
        elif self.dataset == "voc":
            nets._voc_data(n, "train" if form == "train" else "seg11valid", deploy, self.data_root)
        else:
            shapes = [dict(dim=[1, self.channels, *nets.DEPLOY_SIZE]),
                      dict(dim=[1, nets.LABEL_CHANNELS, *nets.DEPLOY_SIZE])]
            n.Input("input", tops=["data", "label"], ntop=2, input_param=dict(shape=shapes))
        for layer in self.layers:
            if deploy and layer.type == "Dropout" and layer.bottom == layer.top:
                continue  # the identity at TEST; upstream deploy.prototxt has none
            fields = layer.fields
            if layer.name == self.first_conv and pad is not None:
                fields = dict(fields)
                cp = {k: v for k, v in fields["convolution_param"].items() if k not in ("pad_h", "pad_w")}
                fields["convolution_param"] = cp | {"pad": [pad]}
            n.layer(layer.type, layer.name, *layer.bottom, tops=layer.top, ntop=len(layer.top), **fields)
        score = nets.fcn_head(n, self.output, self.stride, self.num_classes, "data", 1,
                              at_once=self.at_once, skips=self.skips, rules=_Rules(self))
        nets.loss(n, "loss", score, "label", deploy, normalize=self.normalize_loss)
        return n

    def uncovered(self, pad: int | None = None) -> str | None:
        """Why the net with ``pad`` on its first convolution (default: the chosen one) leaves
        an input size from 1 to 500 without a full-size score; None where none is left."""
        try:
            netdef = self._write("deploy", self.pad if pad is None else pad).netdef()
        except coord_map.CoordMapError as err:
            return str(err)  # a crop that would start before its input
        found = _uncovered(netdef)
        return None if found is None else f"input size {found[0]}: {found[1]}"

    def describe(self) -> list[str]:
        """What was derived, one line each (the command prints it)."""
        lines = [f"cast to convolutions: " + (", ".join(f"{k} ({h}x{w})" for k, (h, w) in self.cast.items()) or "none"),
                 f"discarded: {', '.join(self.discarded)}",
                 f"score_fr on {self.output!r} (stride 32)"]
        lines += [f"skip of stride {s}: {b!r}" for s, b in sorted(self.skips.items(), reverse=True)]
        lines.append(f"pad of {self.first_conv!r}: {self.pad} (the classifier's: {self.own_pad})")
        return lines


class _Rules(nets.HeadRules):
    """The head's kernels and crop directions, derived from the net being written."""

    def __init__(self, casting: Casting):
        self.source, self.chosen = casting.source, casting.kernels

    def kernel(self, n: NetSpec, bottom: str, factor: int, aligned_to: str) -> int:
        """``2 * factor``, or ``2 * factor - 1`` where the even kernel leaves the crop between
        the upsampled top and ``aligned_to`` on a half pixel."""
        key = (bottom, factor, aligned_to)
        if key not in self.chosen:
            self.chosen[key] = self._kernel(n, bottom, factor, aligned_to)
        return self.chosen[key]

    def _kernel(self, n: NetSpec, bottom: str, factor: int, aligned_to: str) -> int:
        maps = coord_map.maps_from(n.netdef(), "data")
        for kernel in (2 * factor, 2 * factor - 1):
            up = coord_map.conv_geometry("up", bottom, "up", kernel, factor, kind="Deconvolution")
            rel = coord_map.compose(coord_map.compose(coord_map.layer_map(up), maps[bottom]),
                                    coord_map.inverse(maps[aligned_to]))
            if all(s.denominator == 1 for s in rel.shift):
                return kernel
        raise FcnizeError(f"{self.source}: upsampling {bottom!r} by {factor} cannot be aligned "
                          f"to {aligned_to!r} (shift {rel.shift[0]} is not a half pixel)")

    def crop_skip(self, n: NetSpec, upscored: str, score: str) -> bool:
        """upstream's direction (the skip's score cropped into the upsampled one) where the
        maps place it inside and it fits at every input size the trunk takes; else the
        upsampled score is the larger (no cast fc6 shrinks it) and is cropped to the skip's."""
        netdef = n.netdef()
        try:
            rel = coord_map.map_between(coord_map.geometry_from_net(netdef), score, upscored)
            offset = coord_map.crop_offset_from_map(rel)
        except coord_map.CoordMapError:
            return False
        offset = _per_axis(offset)
        sized = SpatialSizes(netdef.layers)
        for size in COVERED_SIZES:
            try:
                sizes = sized({"data": (size, size)})
            except shapes.CaffeSemanticsError:
                continue  # the trunk does not take this size at this pad
            if any(sizes[score][i] < sizes[upscored][i] + offset[i] for i in range(2)):
                return False
        return True


def _source(net: NetDef) -> str:
    return str(net.path) if net.path else (net.name or "classifier")


def _data_blob(net: NetDef, source: str) -> tuple[str, int]:
    """The image blob (what the first spatial layer reads) and its channels."""
    produced = {t for layer in net.layers if layer.bottom for t in layer.top}
    for layer in net.layers:
        if layer.type in ("Convolution", "Pooling", "InnerProduct") and layer.bottom:
            if layer.type == "InnerProduct":
                raise FcnizeError(f"{source}: layer {layer.name!r}: an InnerProduct before any "
                                  f"Convolution or Pooling: no spatial layer to keep, nothing to cast")
            data = layer.bottom[0]
            if data in produced:
                raise FcnizeError(f"{source}: the first spatial layer {layer.name!r} reads {data!r}, "
                                  f"which is not an input of the net")
            shape = net.inputs.get(data)
            channels = int(shape[1]) if shape and len(shape) == 4 else None
            if channels is None and layer.type == "Convolution" and layer.blobs:
                channels = int(layer.blobs[0].shape[1]) * int(layer.convolution_param.group)
            return data, channels or nets.IMAGE_CHANNELS["data"]
    raise FcnizeError(f"{source}: no Convolution or Pooling layer: not a convolutional classifier")


def _discard(layers: list[Any], source: str) -> tuple[list[Any], list[str], dict[str, str]]:
    """The layers left once the classifier and what follows it, and in front of it the
    flattening and a final average pooling, are discarded; the discarded names; blob aliases
    (a discarded Flatten's top -> its bottom)."""
    ips = [i for i, layer in enumerate(layers) if layer.type == "InnerProduct"]
    if not ips:
        raise FcnizeError(f"{source}: no InnerProduct: no final classifier to discard "
                          f"(is the net fully convolutional already?)")
    last = ips[-1]
    gone = set(range(last, len(layers)))
    aliases: dict[str, str] = {}
    blob, pending = layers[last].bottom[0], []
    for i in range(last - 1, -1, -1):
        layer = layers[i]
        if blob not in layer.top:
            continue
        if layer.bottom == layer.top:  # in place on the classifier's input (Dropout, ReLU)
            pending.append(i)
            continue
        if layer.type in FLATTENING:
            gone |= {i, *pending}
            pending, blob = [], layer.bottom[0]
            continue
        pool = layer.pooling_param
        if layer.type == "Pooling" and (pool.pool == "AVE" or pool.global_pooling):
            gone |= {i, *pending}
        break
    for i, layer in enumerate(layers):
        if layer.type in FLATTENING and i not in gone:
            gone.add(i)
            aliases[layer.top[0]] = aliases.get(layer.bottom[0], layer.bottom[0])
    kept = [layer for i, layer in enumerate(layers) if i not in gone]
    return kept, [layers[i].name for i in sorted(gone)], aliases


def _fc_kernel(layer: Any, sizes: Mapping[str, tuple[int, int]], channels: Mapping[str, int],
               aliases: Mapping[str, str], weights: NetDef | None, source: str) -> tuple[int, int]:
    """The map an InnerProduct sees: from the sizes at the classifier's input, else from its
    weight's inputs / channels."""
    ip = layer.inner_product_param
    if ip.transpose or int(ip.axis) != 1:
        raise FcnizeError(f"{source}: layer {layer.name!r}: an InnerProduct with transpose or "
                          f"axis {ip.axis} does not cast to a convolution")
    bottom = aliases.get(layer.bottom[0], layer.bottom[0])
    if bottom in sizes:
        return sizes[bottom]
    blobs = layer.blobs or (weights.layer(layer.name).blobs if weights is not None and
                            layer.name in {l.name for l in weights.layers} else [])
    c = channels.get(bottom)
    if blobs and c:
        inputs = int(np.prod(blobs[0].shape[1:]))
        k = math.isqrt(inputs // c)
        if k * k * c == inputs:
            return k, k
        raise FcnizeError(f"{source}: layer {layer.name!r}: {inputs} inputs are not {c} channels "
                          f"times a square map")
    raise FcnizeError(f"{source}: layer {layer.name!r}: the map it sees is unknown: the net has no "
                      f"input shape and no weights (give input_size / --input-size)")


def _trunk_layer(layer: Any, data: str, aliases: Mapping[str, str], kernel: tuple[int, int] | None,
                 learned_param: bool, explicit: Sequence[str]) -> _Layer:
    """A classifier layer as the FCN writes it (an InnerProduct cast with ``kernel``)."""
    fields = {k: _plain(v) for k, v in layer.msg.fields() if k not in _NOT_CARRIED}
    kind = layer.type
    if kernel is not None:
        ip = fields.pop("inner_product_param", {})
        cp = {k: ip[k] for k in ("num_output", "bias_term", "weight_filler", "bias_filler") if k in ip}
        cp |= {"pad": [0], "kernel_size": [kernel[0]]} if kernel[0] == kernel[1] else \
            {"pad": [0], "kernel_h": kernel[0], "kernel_w": kernel[1]}
        fields["convolution_param"], kind = cp, "Convolution"
    if kind == "Convolution":
        cp = fields.setdefault("convolution_param", {})
        for name in explicit:
            if name not in cp and f"{name}_h" not in cp:
                cp[name] = EXPLICIT_DEFAULTS[name]
        if learned_param and "param" not in fields:
            fields["param"] = nets.LEARNED[:2 if cp.get("bias_term", True) else 1]
    return _Layer(kind, layer.name, [_renamed(b, data, aliases) for b in layer.bottom],
                  [_renamed(t, data, aliases) for t in layer.top], fields)


def _renamed(blob: str, data: str, aliases: Mapping[str, str]) -> str:
    """The FCN's name of a classifier blob: the input is ``data``; a Flatten's top its input."""
    blob = aliases.get(blob, blob)
    return "data" if blob == data else blob


def cast(classifier: NetDef, num_classes: int, stride: int = 32, *, at_once: bool = False,
         dataset: str | None = None, data_root: str = "..", pad: int | None = None,
         normalize_loss: bool = False, learned_param: bool = True,
         explicit: Sequence[str] = ("stride", "pad"), input_size: int | Sequence[int] | None = None,
         weights: NetDef | None = None) -> Casting:
    """Read ``classifier`` (a ``NetDef``: deploy prototxt or caffemodel) and derive its FCN by
    the module's rules. ``weights`` (a caffemodel's ``NetDef``) serves only to size a cast
    InnerProduct's kernel where the net has no input shape; ``input_size`` replaces the net's
    own input size for that. Raises :class:`FcnizeError` naming what does not fit."""
    source = _source(classifier)
    try:
        nets.check_classes(num_classes)
    except ValueError as err:
        raise FcnizeError(str(err)) from None
    if stride not in STRIDES:
        raise FcnizeError(f"stride {stride!r}: expected one of {', '.join(map(str, STRIDES))}")
    if dataset not in (None, *DATASETS):
        raise FcnizeError(f"dataset {dataset!r}: expected one of {', '.join(DATASETS)} (or none)")
    if set(explicit) - set(EXPLICIT_DEFAULTS):
        raise FcnizeError(f"explicit {tuple(explicit)!r}: the fields written out are among "
                          f"{', '.join(EXPLICIT_DEFAULTS)}")
    if at_once and stride == 32:
        raise FcnizeError("at_once scales the skips of a 16s or 8s net; stride 32 has none")
    net = classifier.for_phase("TEST")
    data, channels = _data_blob(net, source)
    layers = [layer for layer in net.layers if layer.bottom]
    layers, discarded, aliases = _discard(layers, source)
    discarded = [layer.name for layer in net.layers if not layer.bottom] + discarded
    size = net.inputs.get(data, ())[2:] if input_size is None else \
        ((input_size,) * 2 if isinstance(input_size, int) else tuple(input_size))
    sizes = spatial_sizes(layers, {data: tuple(int(s) for s in size)}) if len(size) == 2 else {}
    chans = _channels(layers, data, channels)
    trunk, kernels, first_conv, own_pad = [], {}, "", 0
    for layer in layers:
        kernel = None
        if layer.type == "InnerProduct":
            kernel = kernels[layer.name] = _fc_kernel(layer, sizes, chans, aliases, weights, source)
            sizes[layer.top[0]] = (1, 1)
        if not first_conv and layer.type == "Convolution":
            first_conv = layer.name
            own_pad = max(_per_axis(coord_map.spatial_params(layer)["pad"]))
        trunk.append(_trunk_layer(layer, data, aliases, kernel, learned_param, explicit))
    if trunk[0].type != "Convolution" or trunk[0].bottom[0] != "data":
        raise FcnizeError(f"{source}: layer {trunk[0].name!r} ({trunk[0].type}) reads the input: "
                          f"the padding rule pads the first Convolution")
    casting = Casting(source, num_classes, stride, trunk, channels, kernels, discarded,
                      trunk[-1].top[0], {}, first_conv, own_pad, at_once=at_once, dataset=dataset,
                      data_root=data_root, normalize_loss=normalize_loss)
    casting.skips = _skips(casting, stride, source)
    casting.pad = _pad(casting, source) if pad is None else int(pad)
    return casting


def _skips(casting: Casting, stride: int, source: str) -> dict[int, str]:
    """The trunk's output checked at stride 32; the skip blobs of the strides the net fuses."""
    maps = coord_map.maps_from(_spec_netdef(casting), "data")
    out = maps.get(casting.output)
    if out is None or _stride(out) != 32:
        what = "no coordinate map" if out is None else f"stride {_stride(out)}"
        raise FcnizeError(f"{source}: the trunk's output {casting.output!r} has {what}, not stride 32")
    skips = {}
    ends = _stage_ends(casting.layers)
    for skip_stride in (16, 8):
        if skip_stride < stride:
            break
        found = [(i, b) for i, b in ends if b in maps and _stride(maps[b]) == skip_stride]
        preferred = [(i, b) for i, b in found if casting.layers[i].type in STAGE_ENDS]
        if not (preferred or found):
            raise FcnizeError(f"{source}: --stride {stride}: the trunk has no blob of stride "
                              f"{skip_stride} that every path passes through, to skip from")
        skips[skip_stride] = (preferred or found)[-1][1]
    return skips


def _spec_netdef(casting: Casting) -> NetDef:
    """The trunk alone (with an Input ``data``), for its coordinate maps."""
    n = NetSpec()
    n.Input("input", tops=["data"], input_param=dict(shape=dict(dim=[1, casting.channels, 1, 1])))
    for layer in casting.layers:
        n.layer(layer.type, layer.name, *layer.bottom, tops=layer.top, ntop=len(layer.top), **layer.fields)
    return n.netdef()


def _pad(casting: Casting, source: str) -> int:
    """The padding rule (module docstring): the own pad where it covers every size; else, for
    a trunk with a cast fully connected layer, upstream's 100 where it covers; else the
    smallest pad that covers (doubling, then bisection: a larger pad only enlarges every map
    and moves the final crop by as much as it pads)."""
    def covers(pad: int) -> bool:
        return casting.uncovered(pad) is None

    low = casting.own_pad
    if covers(low):
        return low
    if casting.cast and low < UPSTREAM_PAD and covers(UPSTREAM_PAD):
        return UPSTREAM_PAD
    high = max(2 * low, 8)
    while not covers(high):
        if high >= MAX_PAD:
            raise FcnizeError(f"{source}: no pad of {casting.first_conv!r} up to {MAX_PAD} gives every "
                              f"input size from {COVERED_SIZES[0]} to {COVERED_SIZES[-1]} a full-size score")
        low, high = high, min(2 * high, MAX_PAD)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if covers(middle) else (middle, high)
    return high


def fcnize(classifier: NetDef, num_classes: int, stride: int = 32, form: str = "train",
           **options: Any) -> NetSpec:
    """The FCN of ``classifier`` as a NetSpec: ``cast(classifier, num_classes, stride,
    **options).net(form)`` (see :func:`cast` and the module docstring for the rules)."""
    return cast(classifier, num_classes, stride, **options).net(form)


def recipe(casting: Casting) -> str:
    """The upstream net whose solver settings fit: the normalised loss -> voc-fcn-alexnet's,
    at-once -> voc-fcn8s-atonce's, else voc-fcn32s/16s/8s's by stride."""
    if casting.normalize_loss:
        return "voc-fcn-alexnet"
    if casting.at_once:
        return "voc-fcn8s-atonce"
    return f"voc-fcn{casting.stride}s"


def solver(casting: Casting) -> Message:
    """upstream's ``solver.prototxt`` for the FCN (:func:`recipe`), as a ``SolverParameter``."""
    msg = Message("SolverParameter")
    for key, value in (SOLVER_COMMON | SOLVER_RECIPES[recipe(casting)]).items():
        assign(msg, key, value)
    return msg
