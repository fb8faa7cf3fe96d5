"""The released FCN nets: one :class:`ModelMeta` and one registered builder each.

Every builder takes keyword-only ``weights=`` (a safetensors file written by
``python -m port convert``), ``num_classes=`` and ``width_divisor=`` (1: the released widths;
16: the widths of the Caffe goldens, 64 -> 4 ... 4096 -> 256). Arguments left out come from the
weights file's metadata, else the released model; an argument that conflicts with the file
raises (torchvision's rule). Released file names and prototxts are those of
shelhamer/fcn.berkeleyvision.org (``<model>/caffemodel-url``).
"""
from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from typing import Any, Callable, Mapping

import torch

from port.caffe import NetDef
from port.models import classes, nets
from port.models.classifiers import cast_net
from port.models import preprocess as pre
from port.models._registry import get_meta, register
from port.weights import WeightsError, load_state_strict, load_weights, resolve_kwargs
from port.models.meta import Digests, ModelMeta
from port.net.engine import CaffeNet
from port.net.fillers import start_frozen_upsamplings
from port.run import prepared  # noqa: F401  (registers the default inference path with the engine)

PathLike = str | os.PathLike | None
#: Effective loss normalization of upstream ``normalize: false`` and ``normalize: true``.
SUM_OVER_BATCH, MEAN_OVER_VALID = "BATCH_SIZE", "VALID"


class FCN(CaffeNet):
    """A released FCN: the :class:`port.net.engine.CaffeNet` of its deploy net
    (:mod:`port.net.engine`, the one engine), carrying its :class:`ModelMeta` as ``meta``.

    ``model(data)`` (or ``model(color=..., hha=...)``) returns the score tensor, or for a net
    with several score heads (SIFT Flow) the dict of them by blob name;
    ``model(data, return_blobs=True)`` every named blob as Caffe holds it.

    In ``eval()`` mode under ``torch.no_grad()``/``torch.inference_mode()`` on the CPU it runs
    the fast exact path of ``port.run.speed.CPU_FAST`` by itself (:mod:`port.run.prepared`:
    prepacked oneDNN weights, fused ReLU, NHWC, the constant canvas; strict fp32 arithmetic);
    in training mode or with autograd, the plain path, gradients as Caffe's."""

    def __init__(self, netdef: NetDef, meta: ModelMeta):
        # The net's crop offsets were derived by coord_map as it was written (NetSpec.crop):
        # checking them again against the same derivation would only cost time.
        super().__init__(netdef, "TEST", check_crops=False)
        self.meta = meta

    def forward(self, *args: Any, return_blobs: bool = False, **inputs: Any):
        out = super().forward(*args, return_blobs=return_blobs, **inputs)
        if return_blobs or len(out) != 1:
            return out
        return next(iter(out.values()))


def _meta(name: str, dataset: str, prototxt: str, caffemodel: str, *, inputs=("data",),
          preprocess=(pre.preprocess_voc,), outputs=("score",), classes_=(classes.VOC_CLASSES,),
          loss=SUM_OVER_BATCH, description: str = "", net: Callable[..., Any],
          digests: tuple[Digests, ...] = (), classifier: str = "", provenance: str = "") -> ModelMeta:
    return ModelMeta(name=name, dataset=dataset, inputs=tuple(inputs), preprocess=tuple(preprocess),
                     outputs=tuple(outputs), classes=tuple(classes_), upstream_prototxt=prototxt,
                     caffemodel=caffemodel, loss_normalization=loss, description=description, net=net,
                     caffemodel_digests=tuple(digests), classifier=classifier, provenance=provenance)


@functools.lru_cache(maxsize=128)
def _deploy_netdef(net: Callable[..., Any], kwargs: tuple[tuple[str, Any], ...]) -> NetDef:
    """The deploy ``NetDef`` of ``net(**kwargs)``, cached: a definition depends only on the
    function and its arguments (matching in ``port.convert`` builds every net several times)."""
    return net(deploy=True, **dict(kwargs)).netdef()


def init_unweighted(model: CaffeNet) -> list[str]:
    """Where no weights are given: every frozen upsampling (a Deconvolution whose weight has
    ``lr_mult: 0``) starts bilinear as upstream ``surgery.interp`` leaves it before training
    (:func:`port.net.fillers.start_frozen_upsamplings`, the rule ``port.training.surgery.interp``
    follows too: ``upsample_filt`` on the class diagonal, or on every ``[i, 0]`` of a weight
    with one output per group); the rest keeps what the engine built (Caffe's default constant
    0, a Scale's constant filler). A frozen Deconvolution ``interp`` would refuse (non-square,
    neither as many outputs as inputs nor one) keeps its zeros here, where ``interp`` raises.
    Returns the layers set."""
    return start_frozen_upsamplings(model)


def _resolved(meta: ModelMeta, weights: PathLike, requested: Mapping[str, Any]) -> dict[str, Any]:
    """The builder arguments: the caller's, else the weights file's, else the released net's."""
    defaults = {"num_classes": meta.num_classes[0], "width_divisor": 1}
    defaults.update({k: v for k, v in _extra_defaults(meta).items() if k in requested})
    return resolve_kwargs(weights, meta.name, {k: requested.get(k) for k in defaults}, defaults)


def _filled(make: Callable[[], CaffeNet], weights: PathLike) -> CaffeNet:
    """``make()`` filled: with ``weights``, built on the ``meta`` device (nothing allocated, no
    initialisation the weights would overwrite at once) and the file's tensors become its
    parameters (``load_state_strict`` assigns them); without, :func:`init_unweighted`."""
    with torch.device("meta") if weights is not None else nullcontext():
        model = make()
    if weights is None:
        init_unweighted(model)
    else:
        state, _ = load_weights(weights)
        load_state_strict(model, state, str(weights))
        _check_materialized(model, str(weights))
    return model


def _build(meta: ModelMeta, weights: PathLike, requested: Mapping[str, Any]) -> FCN:
    """The deploy net of ``meta`` at the resolved arguments, loaded strictly from ``weights``."""
    netdef = _deploy_netdef(meta.net, tuple(sorted(_resolved(meta, weights, requested).items())))
    return _filled(lambda: FCN(netdef, meta), weights)


def _check_materialized(model: torch.nn.Module, source: str) -> None:
    """Refuse a model with a parameter or buffer still on ``meta`` after loading (one the
    weights file cannot fill, e.g. a non-persistent buffer): it has no data to compute with."""
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise WeightsError(f"{source}: {type(model).__name__} built on the meta device keeps "
                           f"{len(left)} tensor(s) without data after loading: {', '.join(left)}")


def _extra_defaults(meta: ModelMeta) -> dict[str, Any]:
    """Defaults of the arguments beyond num_classes (SIFT Flow's geometric head)."""
    return {"num_geo_classes": meta.num_classes[1]} if len(meta.num_classes) > 1 else {}


#: Each builder's net (port.models.nets), as upstream's net.py of its folder writes it.
_VOC32, _VOC16, _VOC8 = (functools.partial(nets.voc_fcn, s) for s in (32, 16, 8))
_VOC8_ATONCE = functools.partial(nets.voc_fcn, 8, at_once=True)
_SIFTFLOW = {s: functools.partial(nets.siftflow_fcn, s) for s in (32, 16, 8)}
_NYUD = {m: functools.partial(nets.nyud_fcn32s, m) for m in ("color", "hha")}
_CONTEXT = {s: functools.partial(nets.pascalcontext_fcn, s) for s in (32, 16, 8)}


# -- PASCAL VOC -------------------------------------------------------------------------------
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


@register(FCN32S)
def fcn32s(*, weights: PathLike = None, num_classes: int | None = None,
           width_divisor: int | None = None) -> FCN:
    """FCN-32s (voc-fcn32s): VGG16 trunk, ``score_fr``, ``upscore`` 64/32, ``score``."""
    return _build(FCN32S, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


@register(FCN16S)
def fcn16s(*, weights: PathLike = None, num_classes: int | None = None,
           width_divisor: int | None = None) -> FCN:
    """FCN-16s (voc-fcn16s): FCN-32s plus the pool4 skip, ``upscore16`` 32/16."""
    return _build(FCN16S, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


@register(FCN8S)
def fcn8s(*, weights: PathLike = None, num_classes: int | None = None,
          width_divisor: int | None = None) -> FCN:
    """FCN-8s (voc-fcn8s): FCN-16s plus the pool3 skip, ``upscore8`` 16/8."""
    return _build(FCN8S, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


@register(FCN8S_ATONCE)
def fcn8s_atonce(*, weights: PathLike = None, num_classes: int | None = None,
                 width_divisor: int | None = None) -> FCN:
    """FCN-8s at-once (voc-fcn8s-atonce): FCN-8s with ``scale_pool4``/``scale_pool3``."""
    return _build(FCN8S_ATONCE, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


@register(FCN_ALEXNET)
def fcn_alexnet(*, weights: PathLike = None, num_classes: int | None = None,
                width_divisor: int | None = None) -> FCN:
    """FCN-AlexNet (voc-fcn-alexnet)."""
    return _build(FCN_ALEXNET, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


# -- SIFT Flow: a semantic and a geometric head --------------------------------------------
def _siftflow_meta(stride: int) -> ModelMeta:
    return _meta(f"siftflow_fcn{stride}s", "siftflow", f"siftflow-fcn{stride}s/test.prototxt",
                 f"siftflow-fcn{stride}s-heavy.caffemodel", preprocess=(pre.preprocess_siftflow,),
                 outputs=("score_sem", "score_geo"),
                 classes_=(classes.SIFTFLOW_SEMANTIC_CLASSES, classes.SIFTFLOW_GEOMETRIC_CLASSES),
                 description=f"FCN-{stride}s, SIFT Flow, semantic (score_sem) and geometric "
                             f"(score_geo) heads on one VGG16 trunk", net=_SIFTFLOW[stride])


SIFTFLOW_FCN32S, SIFTFLOW_FCN16S, SIFTFLOW_FCN8S = (_siftflow_meta(s) for s in (32, 16, 8))


@register(SIFTFLOW_FCN32S)
def siftflow_fcn32s(*, weights: PathLike = None, num_classes: int | None = None,
                    num_geo_classes: int | None = None, width_divisor: int | None = None) -> FCN:
    """SIFT Flow FCN-32s; ``forward(data)`` returns ``{"score_sem", "score_geo"}``."""
    return _build(SIFTFLOW_FCN32S, weights, dict(num_classes=num_classes, num_geo_classes=num_geo_classes,
                                                 width_divisor=width_divisor))


@register(SIFTFLOW_FCN16S)
def siftflow_fcn16s(*, weights: PathLike = None, num_classes: int | None = None,
                    num_geo_classes: int | None = None, width_divisor: int | None = None) -> FCN:
    """SIFT Flow FCN-16s; ``forward(data)`` returns ``{"score_sem", "score_geo"}``."""
    return _build(SIFTFLOW_FCN16S, weights, dict(num_classes=num_classes, num_geo_classes=num_geo_classes,
                                                 width_divisor=width_divisor))


@register(SIFTFLOW_FCN8S)
def siftflow_fcn8s(*, weights: PathLike = None, num_classes: int | None = None,
                   num_geo_classes: int | None = None, width_divisor: int | None = None) -> FCN:
    """SIFT Flow FCN-8s; ``forward(data)`` returns ``{"score_sem", "score_geo"}``."""
    return _build(SIFTFLOW_FCN8S, weights, dict(num_classes=num_classes, num_geo_classes=num_geo_classes,
                                                width_divisor=width_divisor))


# -- NYUDv2: colour, HHA, early and late fusion ---------------------------------------------
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


@register(NYUD_FCN32S_COLOR)
def nyud_fcn32s_color(*, weights: PathLike = None, num_classes: int | None = None,
                      width_divisor: int | None = None) -> FCN:
    """NYUDv2 FCN-32s on colour (nyud-fcn32s-color)."""
    return _build(NYUD_FCN32S_COLOR, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


@register(NYUD_FCN32S_HHA)
def nyud_fcn32s_hha(*, weights: PathLike = None, num_classes: int | None = None,
                    width_divisor: int | None = None) -> FCN:
    """NYUDv2 FCN-32s on HHA (nyud-fcn32s-hha)."""
    return _build(NYUD_FCN32S_HHA, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


@register(NYUD_FCN32S_COLOR_D)
def nyud_fcn32s_color_d(*, weights: PathLike = None, num_classes: int | None = None,
                        width_divisor: int | None = None) -> FCN:
    """NYUDv2 FCN-32s, early fusion (nyud-fcn32s-color-d): ``forward(color, depth)``."""
    return _build(NYUD_FCN32S_COLOR_D, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


@register(NYUD_FCN32S_COLOR_HHA)
def nyud_fcn32s_color_hha(*, weights: PathLike = None, num_classes: int | None = None,
                          width_divisor: int | None = None) -> FCN:
    """NYUDv2 FCN-32s, late fusion (nyud-fcn32s-color-hha): ``forward(color, hha)``."""
    return _build(NYUD_FCN32S_COLOR_HHA, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


# -- PASCAL-Context (59 classes + background) ------------------------------------------------
def _context_meta(stride: int) -> ModelMeta:
    return _meta(f"pascalcontext_fcn{stride}s", "pascalcontext", f"pascalcontext-fcn{stride}s/val.prototxt",
                 f"pascalcontext-fcn{stride}s-heavy.caffemodel",
                 preprocess=(pre.preprocess_pascalcontext,), classes_=(classes.PASCALCONTEXT_CLASSES,),
                 description=f"FCN-{stride}s, PASCAL-Context 59 classes + background", net=_CONTEXT[stride])


PASCALCONTEXT_FCN32S, PASCALCONTEXT_FCN16S, PASCALCONTEXT_FCN8S = (_context_meta(s) for s in (32, 16, 8))


@register(PASCALCONTEXT_FCN32S)
def pascalcontext_fcn32s(*, weights: PathLike = None, num_classes: int | None = None,
                         width_divisor: int | None = None) -> FCN:
    """PASCAL-Context FCN-32s (pascalcontext-fcn32s)."""
    return _build(PASCALCONTEXT_FCN32S, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


@register(PASCALCONTEXT_FCN16S)
def pascalcontext_fcn16s(*, weights: PathLike = None, num_classes: int | None = None,
                         width_divisor: int | None = None) -> FCN:
    """PASCAL-Context FCN-16s (pascalcontext-fcn16s)."""
    return _build(PASCALCONTEXT_FCN16S, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


@register(PASCALCONTEXT_FCN8S)
def pascalcontext_fcn8s(*, weights: PathLike = None, num_classes: int | None = None,
                        width_divisor: int | None = None) -> FCN:
    """PASCAL-Context FCN-8s (pascalcontext-fcn8s)."""
    return _build(PASCALCONTEXT_FCN8S, weights, dict(num_classes=num_classes, width_divisor=width_divisor))


# -- cast from an ILSVRC classifier by fcnize: no released weights -----------------------------
#: Where the numbers of the cast nets stand (``ModelMeta.provenance``).
TABLE1 = ("the FCN paper's Table 1 (CVPR 2015; 42.5 mean IU on PASCAL VOC 2011 val, trained on "
          "VOC 2011 train): no weights released (upstream README FAQ: 'coming soon')")
OWN_RECIPE = ("the project's own recipe (upstream's heavy VOC recipe on a ResNet trunk, BatchNorm "
              "frozen at the classifier's statistics): no published number to match")


def _cast_meta(name: str, classifier: str, stride: int, description: str, provenance: str,
               loss: str = SUM_OVER_BATCH) -> ModelMeta:
    """The metadata of an FCN that :func:`port.models.classifiers.cast_net` writes from the
    shipped ``classifier``: PASCAL VOC's 21 classes, the VOC data layer's preprocessing (BGR,
    0-255, minus ``VOC_MEAN_BGR``: what upstream's ``voc_layers`` feeds in training, within
    1.2 of GoogLeNet's training mean 104/117/123 and ResNet's per-channel 103.1/115.9/123.2),
    no released caffemodel."""
    normalize = loss == MEAN_OVER_VALID
    return _meta(name, "voc", "", "", loss=loss, description=description,
                 net=functools.partial(cast_net, classifier, stride, normalize_loss=normalize),
                 classifier=classifier, provenance=provenance)


def _cast_builder(meta: ModelMeta) -> Callable[..., FCN]:
    def builder(*, weights: PathLike = None, num_classes: int | None = None,
                width_divisor: int | None = None) -> FCN:
        return _build(meta, weights, dict(num_classes=num_classes, width_divisor=width_divisor))
    builder.__name__ = builder.__qualname__ = meta.name
    builder.__doc__ = (f"{meta.description}: fcnize of the shipped {meta.classifier} deploy net "
                       f"(port.models.classifiers); {meta.provenance}.")
    return register(meta)(builder)


FCN_GOOGLENET = _cast_meta(
    "fcn_googlenet", "bvlc_googlenet", 32,
    "FCN-GoogLeNet (32s), the paper's Table 1: BVLC GoogLeNet without its final average pooling "
    "and classifier, score_fr on inception_5b/output, one 32x upsampling", TABLE1, MEAN_OVER_VALID)
fcn_googlenet = _cast_builder(FCN_GOOGLENET)

_RESNET_METAS = {(depth, stride): _cast_meta(
    f"fcn_resnet{depth}_{stride}s", f"resnet{depth}", stride,
    f"FCN-ResNet-{depth} ({stride}s): MSRA ResNet-{depth} without pool5 and fc1000"
    + {32: ", one 32x upsampling", 16: ", a skip from the last res4 sum",
       8: ", skips from the last res4 and res3 sums"}[stride], OWN_RECIPE)
    for depth in (50, 101, 152) for stride in (32, 16, 8)}
fcn_resnet50_32s, fcn_resnet50_16s, fcn_resnet50_8s = (_cast_builder(_RESNET_METAS[50, s]) for s in (32, 16, 8))
fcn_resnet101_32s, fcn_resnet101_16s, fcn_resnet101_8s = (_cast_builder(_RESNET_METAS[101, s]) for s in (32, 16, 8))
fcn_resnet152_32s, fcn_resnet152_16s, fcn_resnet152_8s = (_cast_builder(_RESNET_METAS[152, s]) for s in (32, 16, 8))
#: The nets cast from a classifier (no upstream prototxt, no released caffemodel).
CAST_MODELS = (FCN_GOOGLENET.name, *(m.name for m in _RESNET_METAS.values()))


# -- every phase of a released net ----------------------------------------------------------
#: The forms a net is written in: ``train`` (upstream train/trainval.prototxt: the training
#: split's data layer, the loss; run in Caffe's TRAIN phase, Dropout active), ``test``
#: (val/test.prototxt: the evaluation split, the loss) and ``deploy`` (deploy.prototxt: an
#: Input layer, no loss, no Dropout), the form the builders return.
FORMS = ("train", "test", "deploy")


def net_spec(name: str, form: str = "test", **kwargs: Any):
    """The net of the registered model ``name`` written out in ``form`` (:data:`FORMS`) as a
    :class:`port.net.spec.NetSpec`; ``kwargs`` are the builder's (``num_classes``,
    ``width_divisor``, SIFT Flow's ``num_geo_classes``), defaults the released ones."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    meta = get_meta(name)
    return meta.net(train=form == "train", deploy=form == "deploy",
                    **{k: v for k, v in kwargs.items() if v is not None})


def train_net(name: str, *, weights: PathLike = None, num_classes: int | None = None,
              width_divisor: int | None = None, size: tuple[int, int] = nets.DEPLOY_SIZE,
              **kwargs: Any) -> CaffeNet:
    """The TRAIN-phase :class:`CaffeNet` of the registered model ``name`` (upstream's
    ``train.prototxt``: its data layer's tops are the inputs, ``SoftmaxWithLoss`` with the
    upstream ``loss_param`` gives ``loss``, Dropout is active in training mode). Parameter
    names are the builder's, so ``weights`` (a ``.safetensors`` of the builder's state, e.g.
    written by ``python -m port transplant``) loads strictly; without it Caffe's fillers
    apply and the frozen upsamplings start bilinear (:func:`init_unweighted`). ``size`` sizes
    the data tops at construction only: any input size runs."""
    meta = get_meta(name)
    requested = dict(num_classes=num_classes, width_divisor=width_divisor, **kwargs)
    netdef = meta.net(train=True, **_resolved(meta, weights, requested)).netdef()
    tops = [t for layer in netdef.layers if layer.type == "Python" for t in layer.top]
    shapes = {t: (1, nets.IMAGE_CHANNELS.get(t, nets.LABEL_CHANNELS), *size) for t in tops}
    return _filled(lambda: CaffeNet(netdef, "TRAIN", input_shapes=shapes), weights)
