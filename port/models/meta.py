"""``ModelMeta``: the typed record that travels with each released FCN model, and the record of
its released weights (file name, addresses, published digests) in one place.

Like timm's ``pretrained_cfg`` and torchvision's weight metadata: where the model comes from
(upstream prototxt, released caffemodel), what it expects (input blobs, their preprocessing:
BGR, 0-255, minus the dataset mean, no std, native size) and what it produces (output blobs,
their class names, the loss settings of the net's ``SoftmaxWithLoss`` layers).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from port.models import tables
from port.models.preprocess import InputTransform, PreprocessError

#: Where every released caffemodel lives (the ``caffemodel-url`` files upstream).
CAFFEMODEL_HOST = "http://dl.caffe.berkeleyvision.org/"
#: The Internet Archive serves a raw capture at web/<timestamp>id_/<url>, redirecting to the
#: capture nearest the timestamp: the mirror of hosts that have been down for long spells.
WAYBACK = "https://web.archive.org/web/2018id_/"
HASH_ALGORITHMS = ("md5", "sha1", "sha256")


@dataclass(frozen=True)
class Digests:
    """Published digests of one exact byte sequence, with where they were published."""

    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        present = self.as_dict()
        if not present:
            raise ValueError(f"Digests({self.source!r}): give at least one of {HASH_ALGORITHMS}")
        for algorithm, value in present.items():
            length = hashlib.new(algorithm).digest_size * 2
            if not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
                raise ValueError(f"Digests({self.source!r}): {algorithm} must be {length} "
                                 f"lowercase hex digits, got {value!r}")

    def as_dict(self) -> dict[str, str]:
        """The digests that are set, as {algorithm: hexdigest}."""
        return {a: getattr(self, a) for a in HASH_ALGORITHMS if getattr(self, a) is not None}

#: ``loss_param { ignore_label: 255 }`` of every upstream SoftmaxWithLoss: void pixels.
IGNORE_LABEL = 255


@dataclass(frozen=True)
class ModelMeta:
    """What a released FCN net is, expects and produces.

    ``inputs``/``preprocess`` are aligned (one port.models.preprocess function per input blob);
    ``outputs``/``classes`` are aligned (one class-name tuple per score blob, in channel
    order). ``net`` writes the net out in each phase. ``loss_normalization`` is the effective LossParameter mode of the upstream loss
    layers (``normalize: false`` -> ``BATCH_SIZE``, ``true`` -> ``VALID``).
    """

    name: str
    dataset: str
    inputs: tuple[str, ...]
    preprocess: tuple[Callable[..., np.ndarray], ...]
    outputs: tuple[str, ...]
    classes: tuple[tuple[str, ...], ...]
    upstream_prototxt: str
    caffemodel: str
    loss_normalization: str
    ignore_label: int = IGNORE_LABEL
    description: str = ""
    #: The net written out (a :mod:`port.models.nets` function: ``net(train=, deploy=,
    #: num_classes=, width_divisor=)`` -> ``NetSpec``), as upstream's ``net.py`` of the folder.
    net: Callable[..., Any] | None = None
    #: Published digests of the released caffemodel (none published: the downloader records
    #: a SHA-256 on the first verified download and checks it after).
    caffemodel_digests: tuple[Digests, ...] = ()
    #: For a net cast from an ILSVRC classifier by :mod:`port.models.fcnize` rather than
    #: released upstream: the shipped classifier (:data:`port.models.classifiers.CLASSIFIERS`)
    #: and where its numbers stand (a published table, or the project's own recipe with none).
    classifier: str = ""
    provenance: str = ""

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.preprocess):
            raise ValueError(f"{self.name}: {len(self.inputs)} inputs but "
                             f"{len(self.preprocess)} preprocessing functions")
        if len(self.outputs) != len(self.classes):
            raise ValueError(f"{self.name}: {len(self.outputs)} outputs but "
                             f"{len(self.classes)} class lists")

    @property
    def num_classes(self) -> tuple[int, ...]:
        """Released score channels per output blob."""
        return tuple(len(c) for c in self.classes)

    def transforms(self) -> InputTransform:
        """The net's preprocessing as a callable, as torchvision's ``weights.transforms()``: the
        decoded image (RGB uint8 HxWx3, numpy or PIL) -> the input tensor (BGR minus the
        dataset's mean, CHW float32, no batch axis, native size), by ``preprocess[0]``
        (:class:`port.models.preprocess.InputTransform`). A net of several inputs (NYUDv2's
        colour + HHA, colour + depth) raises one line: one image makes no such input."""
        if len(self.inputs) != 1:
            calls = ", ".join(f"{blob}={fn.__name__}(...)" for blob, fn in zip(self.inputs, self.preprocess))
            raise PreprocessError(
                f"{self.name}: transforms() covers a net of one image input, and this one takes "
                f"{len(self.inputs)} ({', '.join(self.inputs)}); preprocess each with meta.preprocess "
                f"(port.models.preprocess) and call model({calls})")
        return InputTransform(self.preprocess[0], self.inputs[0])

    @property
    def published(self) -> tuple[tables.Published, ...]:
        """The numbers published for this net (:mod:`port.models.tables`), in table order: each
        row's four metrics in percent, the weights it describes (``released`` or the papers'
        ``original``), and its ``source`` (paper, table, whether read there). Empty for a net
        no source reports (the nets fcnize casts; a net a user registered)."""
        return tuple(tables.published(self.name)) if self.name in tables.MODELS else ()

    @property
    def caffemodel_url(self) -> str | None:
        """The released caffemodel's download address (upstream ``caffemodel-url``), or None
        for a net released without weights (``caffemodel`` empty)."""
        return CAFFEMODEL_HOST + self.caffemodel if self.caffemodel else None

    @property
    def caffemodel_urls(self) -> tuple[str, ...]:
        """Every address of the released caffemodel, in order: upstream's, then its mirror."""
        url = self.caffemodel_url
        return (url, WAYBACK + url) if url else ()
