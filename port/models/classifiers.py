"""The ILSVRC classifiers the new FCNs are cast from, shipped unchanged, and their casts.

The FCN paper casts a classifier into an FCN (CVPR 2015 sections 3-4); FCN-GoogLeNet (Table 1)
and FCN-ResNet-50/101/152 are :func:`port.models.fcnize.cast` of the publishers' own deploy
nets, which ship in ``port/models/data/`` byte for byte (SHA-1 below; ``SOURCE.md`` there says
where each comes from, with its license: BVLC/caffe's BSD 2-Clause for GoogLeNet, MIT for
ResNet). Shipping the text rather than rewriting it as NetSpec calls (as
:mod:`port.models.nets` writes VGG16) keeps the cast derived from exactly what the publishers
released, checkable by digest, and keeps the casting rules in one place (``fcnize``).

``width_divisor`` divides every Convolution's ``num_output``, rounding down and at least 1, as
:func:`port.caffe.synth.divide_width` makes the goldens' reduced nets (``resnet50-div8``,
``googlenet-div8``: ResNet 64 -> 8 ... 2048 -> 256 at 8, exact; GoogLeNet's 24-wide layers
become 1 at 16). Layers of one released width get one reduced width, so ResNet's sums still
add equal widths; the classifier's InnerProduct is discarded by the cast, so its width never
matters.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from port.caffe import NetDef, load_net
from port.caffe.synth import divide_width
from port.models import fcnize, nets

__all__ = ["Classifier", "CLASSIFIERS", "DATA_DIR", "classifier_net", "casting", "cast_net"]

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Classifier:
    """A shipped deploy net: its file under :data:`DATA_DIR`, the file's SHA-1 (the digest
    of the publisher's file), and ``pad``: the first convolution's pad that fcnize's padding
    rule derives for its FCN at every stride (the smallest that gives every input size from 1
    to 500 a full-size score). It is recorded, not searched again at each build (the search
    sizes the trunk at 500 input sizes, seconds for ResNet-152); tests/test_new_nets.py checks
    both against the rule and the publishers' files."""

    name: str
    path: str
    sha1: str
    description: str
    pad: int


CLASSIFIERS = {c.name: c for c in (
    Classifier("bvlc_googlenet", "googlenet/deploy.prototxt", "7060345c8012294baa60eeb5901d2d3fd89d75fc",
               "BVLC GoogLeNet (BVLC/caffe models/bvlc_googlenet/deploy.prototxt @ 9b89154)", 18),
    Classifier("resnet50", "resnet/ResNet-50-deploy.prototxt", "5d6fd5aeadd8d4684843c5028b4e5672b9e51638",
               "ResNet-50 (KaimingHe/deep-residual-networks prototxt/ @ a7026cb)", 4),
    Classifier("resnet101", "resnet/ResNet-101-deploy.prototxt", "c165d6b6ccef7cc39ee16a66f00f927f93de198b",
               "ResNet-101 (KaimingHe/deep-residual-networks prototxt/ @ a7026cb)", 4),
    Classifier("resnet152", "resnet/ResNet-152-deploy.prototxt", "ae15aade2304af8a774c5bfb1d32457f119214ef",
               "ResNet-152 (KaimingHe/deep-residual-networks prototxt/ @ a7026cb)", 4),
)}


@functools.lru_cache(maxsize=16)
def classifier_net(name: str, width_divisor: int = 1) -> NetDef:
    """The shipped deploy net ``name`` with every Convolution's width divided by
    ``width_divisor`` (rounded down, at least 1)."""
    if isinstance(width_divisor, bool) or not isinstance(width_divisor, int) or width_divisor < 1:
        raise ValueError(f"width_divisor must be a positive integer, got {width_divisor!r}")
    net = load_net(DATA_DIR / CLASSIFIERS[name].path)
    if width_divisor == 1:
        return net
    return divide_width(net, width_divisor, keep_classes=False)


@functools.lru_cache(maxsize=64)
def casting(name: str, stride: int, num_classes: int = 21, width_divisor: int = 1,
            normalize_loss: bool = False, dataset: str | None = "voc") -> fcnize.Casting:
    """``fcnize.cast`` of the shipped classifier ``name`` with its recorded pad (the padding
    rule's, which depends on the geometry only, not on widths or classes), cached."""
    return fcnize.cast(classifier_net(name, width_divisor), num_classes, stride,
                       dataset=dataset, normalize_loss=normalize_loss, pad=CLASSIFIERS[name].pad)


def cast_net(name: str, stride: int, *, train: bool = False, deploy: bool = False,
             num_classes: int = 21, width_divisor: int = 1, normalize_loss: bool = False):
    """The FCN of the shipped classifier ``name`` written out as a NetSpec, with the
    signature of :mod:`port.models.nets`' writers (``ModelMeta.net``): ``train`` is
    fcnize's ``train`` form (upstream's SBD data layer, Dropout), ``deploy`` its deploy
    form, else ``val`` (seg11valid)."""
    form = "train" if train else "deploy" if deploy else "val"
    return casting(name, stride, nets.check_classes(num_classes), width_divisor,
                   normalize_loss).net(form)
