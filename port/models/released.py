"""The released FCN nets as records: one :class:`ModelMeta` each (dataset, inputs and their
preprocessing, outputs and classes, loss settings, the :mod:`port.models.nets` function that
writes the net, the released caffemodel), without torch.

The registry (:mod:`port.models._registry`) knows every released name and record from here, so
listing the models, reading a record or writing a released net's definition
(:func:`deploy_netdef`) imports no torch: ``python -m port convert`` matches a caffemodel
against each released net's parameter shapes by :func:`port.net.shapes.net_shapes` of its
definition, building nothing. :mod:`port.models.zoo` registers one builder per record (the
module a user gets), built from the same :func:`deploy_netdef`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from port.caffe import NetDef
from port.models import classes, nets
from port.models import preprocess as pre
from port.models.meta import Digests, ModelMeta

#: Effective loss normalization of upstream ``normalize: false`` and ``normalize: true``.
SUM_OVER_BATCH, MEAN_OVER_VALID = "BATCH_SIZE", "VALID"


def _meta(name: str, dataset: str, prototxt: str, caffemodel: str, *, inputs=("data",),
          preprocess=(pre.preprocess_voc,), outputs=("score",), classes_=(classes.VOC_CLASSES,),
          loss=SUM_OVER_BATCH, description: str = "", net: Callable[..., Any],
          digests: tuple[Digests, ...] = ()) -> ModelMeta:
    return ModelMeta(name=name, dataset=dataset, inputs=tuple(inputs), preprocess=tuple(preprocess),
                     outputs=tuple(outputs), classes=tuple(classes_), upstream_prototxt=prototxt,
                     caffemodel=caffemodel, loss_normalization=loss, description=description, net=net,
                     caffemodel_digests=tuple(digests))


@functools.lru_cache(maxsize=128)
def _deploy_netdef(net: Callable[..., Any], kwargs: tuple[tuple[str, Any], ...]) -> NetDef:
    """The deploy ``NetDef`` of ``net(**kwargs)``, cached: a definition depends only on the
    function and its arguments (matching in ``port.convert`` builds every net several times)."""
    return net(deploy=True, **dict(kwargs)).netdef()


def _extra_defaults(meta: ModelMeta) -> dict[str, Any]:
    """Defaults of the arguments beyond num_classes (SIFT Flow's geometric head)."""
    return {"num_geo_classes": meta.num_classes[1]} if len(meta.num_classes) > 1 else {}


#: Each builder's net (port.models.nets), as upstream's net.py of its folder writes it.
_VOC32, _VOC16, _VOC8 = (functools.partial(nets.voc_fcn, s) for s in (32, 16, 8))
_VOC8_ATONCE = functools.partial(nets.voc_fcn, 8, at_once=True)
_SIFTFLOW = {s: functools.partial(nets.siftflow_fcn, s) for s in (32, 16, 8)}
_NYUD = {m: functools.partial(nets.nyud_fcn32s, m) for m in ("color", "hha")}
_CONTEXT = {s: functools.partial(nets.pascalcontext_fcn, s) for s in (32, 16, 8)}


FCN32S = _meta("fcn32s", "voc", "voc-fcn32s/val.prototxt", "fcn32s-heavy-pascal.caffemodel",
               description="FCN-32s, VGG16, PASCAL VOC (SBD train), one 32x upsampling", net=_VOC32)
FCN16S = _meta("fcn16s", "voc", "voc-fcn16s/val.prototxt", "fcn16s-heavy-pascal.caffemodel",
               description="FCN-16s, VGG16, PASCAL VOC, pool4 skip", net=_VOC16)
FCN8S = _meta("fcn8s", "voc", "voc-fcn8s/val.prototxt", "fcn8s-heavy-pascal.caffemodel",
              description="FCN-8s, VGG16, PASCAL VOC, pool4 and pool3 skips", net=_VOC8,
              digests=(Digests(md5="c03b2953ebd846c270da1a8e8f200c09",
                               sha1="c449ea74dd7d83751d1357d6a8c323fcf4038962",
                               source="opencv_extra testdata/dnn/download_models.py (sha1) and "
                                      "the published md5"),))
FCN8S_ATONCE = _meta("fcn8s_atonce", "voc", "voc-fcn8s-atonce/val.prototxt",
                     "fcn8s-atonce-pascal.caffemodel",
                     description="FCN-8s trained all at once, skips scaled by fixed Scale layers",
                     net=_VOC8_ATONCE)
FCN_ALEXNET = _meta("fcn_alexnet", "voc", "voc-fcn-alexnet/val.prototxt",
                    "fcn-alexnet-pascal.caffemodel", loss=MEAN_OVER_VALID,
                    description="FCN-AlexNet, PASCAL VOC, one 32x upsampling", net=nets.voc_fcn_alexnet)


def _siftflow_meta(stride: int) -> ModelMeta:
    return _meta(f"siftflow_fcn{stride}s", "siftflow", f"siftflow-fcn{stride}s/test.prototxt",
                 f"siftflow-fcn{stride}s-heavy.caffemodel", preprocess=(pre.preprocess_siftflow,),
                 outputs=("score_sem", "score_geo"),
                 classes_=(classes.SIFTFLOW_SEMANTIC_CLASSES, classes.SIFTFLOW_GEOMETRIC_CLASSES),
                 description=f"FCN-{stride}s, SIFT Flow, semantic (score_sem) and geometric "
                             f"(score_geo) heads on one VGG16 trunk", net=_SIFTFLOW[stride])


SIFTFLOW_FCN32S, SIFTFLOW_FCN16S, SIFTFLOW_FCN8S = (_siftflow_meta(s) for s in (32, 16, 8))


def _nyud_meta(variant: str, inputs: tuple[str, ...], preprocess: tuple, caffemodel: str,
               description: str, net: Callable[..., Any]) -> ModelMeta:
    return _meta(f"nyud_fcn32s_{variant.replace('-', '_')}", "nyud", f"nyud-fcn32s-{variant}/test.prototxt",
                 caffemodel, inputs=inputs, preprocess=preprocess, classes_=(classes.NYUD_CLASSES,),
                 description=description, net=net)


NYUD_FCN32S_COLOR = _nyud_meta("color", ("data",), (pre.preprocess_nyud_color,),
                               "nyud-fcn32s-color-heavy.caffemodel", "FCN-32s on NYUDv2 colour", _NYUD["color"])
NYUD_FCN32S_HHA = _nyud_meta("hha", ("data",), (pre.preprocess_nyud_hha,),
                             "nyud-fcn32s-hha-heavy.caffemodel", "FCN-32s on NYUDv2 HHA depth encoding", _NYUD["hha"])
#: No released caffemodel upstream (nyud-fcn32s-color-d has no caffemodel-url).
NYUD_FCN32S_COLOR_D = _nyud_meta("color-d", ("color", "depth"),
                                 (pre.preprocess_nyud_color, pre.preprocess_nyud_depth), "",
                                 "FCN-32s on NYUDv2, early fusion of colour and log depth (4 channels)",
                                 nets.nyud_fcn32s_color_d)
NYUD_FCN32S_COLOR_HHA = _nyud_meta("color-hha", ("color", "hha"),
                                   (pre.preprocess_nyud_color, pre.preprocess_nyud_hha),
                                   "nyud-fcn32s-color-hha-heavy.caffemodel",
                                   "FCN-32s on NYUDv2, late fusion of colour and HHA streams",
                                   nets.nyud_fcn32s_color_hha)


def _context_meta(stride: int) -> ModelMeta:
    return _meta(f"pascalcontext_fcn{stride}s", "pascalcontext", f"pascalcontext-fcn{stride}s/val.prototxt",
                 f"pascalcontext-fcn{stride}s-heavy.caffemodel",
                 preprocess=(pre.preprocess_pascalcontext,), classes_=(classes.PASCALCONTEXT_CLASSES,),
                 description=f"FCN-{stride}s, PASCAL-Context 59 classes + background", net=_CONTEXT[stride])


PASCALCONTEXT_FCN32S, PASCALCONTEXT_FCN16S, PASCALCONTEXT_FCN8S = (_context_meta(s) for s in (32, 16, 8))


#: Every released net's record, in the order the builders are registered.
RELEASED = (FCN32S, FCN16S, FCN8S, FCN8S_ATONCE, FCN_ALEXNET, SIFTFLOW_FCN32S, SIFTFLOW_FCN16S,
            SIFTFLOW_FCN8S, NYUD_FCN32S_COLOR, NYUD_FCN32S_HHA, NYUD_FCN32S_COLOR_D,
            NYUD_FCN32S_COLOR_HHA, PASCALCONTEXT_FCN32S, PASCALCONTEXT_FCN16S, PASCALCONTEXT_FCN8S)


def builder_defaults(meta: ModelMeta) -> dict[str, Any]:
    """A released net's builder arguments left out: its released class counts, width 1."""
    return {"num_classes": meta.num_classes[0], "width_divisor": 1, **_extra_defaults(meta)}


def deploy_netdef(meta: ModelMeta, **kwargs: Any) -> NetDef:
    """The deploy ``NetDef`` the builder of ``meta`` builds for ``kwargs`` (the builder's
    arguments, each left out at :func:`builder_defaults`), cached."""
    args = {**builder_defaults(meta), **{k: v for k, v in kwargs.items() if v is not None}}
    return _deploy_netdef(meta.net, tuple(sorted(args.items())))
