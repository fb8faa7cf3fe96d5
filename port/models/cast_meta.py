"""The records (:class:`ModelMeta`) of the nets :mod:`port.models.fcnize` casts from the shipped
ILSVRC classifiers (:mod:`port.models.classifiers`): FCN-GoogLeNet (32s, the paper's Table 1)
and FCN-ResNet-50/101/152 at 32s/16s/8s. No torch and no casting at import (the registry reads
the records); the net function casts on first use. Their builders are in :mod:`port.models.zoo`.
"""
from __future__ import annotations

import functools
from typing import Any

from port.models import classes
from port.models import preprocess as pre
from port.models.meta import ModelMeta
from port.models.released import MEAN_OVER_VALID, SUM_OVER_BATCH

#: Where the numbers of the cast nets stand (``ModelMeta.provenance``).
TABLE1 = ("the FCN paper's Table 1 (CVPR 2015; 42.5 mean IU on PASCAL VOC 2011 val, trained on "
          "VOC 2011 train): no weights released (upstream README FAQ: 'coming soon')")
OWN_RECIPE = ("the project's own recipe (upstream's heavy VOC recipe on a ResNet trunk, BatchNorm "
              "frozen at the classifier's statistics): no published number to match")


def cast_net(classifier: str, stride: int, **kwargs: Any):
    """:func:`port.models.classifiers.cast_net`, imported on first use."""
    from port.models.classifiers import cast_net as cast
    return cast(classifier, stride, **kwargs)


def _cast_meta(name: str, classifier: str, stride: int, description: str, provenance: str,
               loss: str = SUM_OVER_BATCH) -> ModelMeta:
    """An FCN that :func:`port.models.classifiers.cast_net` writes from the shipped
    ``classifier``: PASCAL VOC's 21 classes, the VOC data layer's preprocessing (BGR, 0-255,
    minus ``VOC_MEAN_BGR``: what upstream's ``voc_layers`` feeds in training, within 1.2 of
    GoogLeNet's training mean 104/117/123 and ResNet's per-channel 103.1/115.9/123.2), no
    released caffemodel."""
    return ModelMeta(name=name, dataset="voc", inputs=("data",), preprocess=(pre.preprocess_voc,),
                     outputs=("score",), classes=(classes.VOC_CLASSES,), upstream_prototxt="",
                     caffemodel="", loss_normalization=loss, description=description,
                     net=functools.partial(cast_net, classifier, stride,
                                           normalize_loss=loss == MEAN_OVER_VALID),
                     classifier=classifier, provenance=provenance)


FCN_GOOGLENET = _cast_meta(
    "fcn_googlenet", "bvlc_googlenet", 32,
    "FCN-GoogLeNet (32s), the paper's Table 1: BVLC GoogLeNet without its final average pooling "
    "and classifier, score_fr on inception_5b/output, one 32x upsampling", TABLE1, MEAN_OVER_VALID)
RESNET = {(depth, stride): _cast_meta(
    f"fcn_resnet{depth}_{stride}s", f"resnet{depth}", stride,
    f"FCN-ResNet-{depth} ({stride}s): MSRA ResNet-{depth} without pool5 and fc1000"
    + {32: ", one 32x upsampling", 16: ", a skip from the last res4 sum",
       8: ", skips from the last res4 and res3 sums"}[stride], OWN_RECIPE)
    for depth in (50, 101, 152) for stride in (32, 16, 8)}
CAST = (FCN_GOOGLENET, *RESNET.values())
#: The nets cast from a classifier (no upstream prototxt, no released caffemodel).
CAST_MODELS = tuple(meta.name for meta in CAST)
