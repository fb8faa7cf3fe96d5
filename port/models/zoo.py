"""The released FCN nets: one :class:`ModelMeta` and one registered builder each.

Every builder takes keyword-only ``weights=`` (a safetensors file written by
``python -m port convert``, or ``"released"``: the released caffemodel fetched, verified and
converted once into the per-user cache by :func:`port.hub.pretrained.released_weights`),
``num_classes=`` and ``width_divisor=`` (1: the released widths; 16: the widths of the Caffe
goldens, 64 -> 4 ... 4096 -> 256). Arguments left out come from the weights file's metadata,
else the released model; an argument that conflicts with the file raises (torchvision's rule).
Released file names and prototxts are those of shelhamer/fcn.berkeleyvision.org
(``<model>/caffemodel-url``).

>>> model = fcn8s(weights="released").eval()                      # doctest: +SKIP
>>> data = model.meta.transforms()(rgb_uint8_hwc)[None]         # 1 x 3 x H x W  # doctest: +SKIP
>>> labels = model(data).argmax(1)                              # doctest: +SKIP
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any, Callable, Mapping

import torch

from port.caffe import NetDef
from port.hub.pretrained import released_weights
from port.models import nets
from port.models._registry import get_meta, register
from port.weights import WeightsError, load_state_strict, load_weights, resolve_kwargs
from port.models.meta import ModelMeta
# The records live in port.models.released (no torch: the registry and port.convert read them).
from port.models.released import (  # noqa: F401
    FCN8S, FCN8S_ATONCE, FCN16S, FCN32S, FCN_ALEXNET, MEAN_OVER_VALID, NYUD_FCN32S_COLOR,
    NYUD_FCN32S_COLOR_D, NYUD_FCN32S_COLOR_HHA, NYUD_FCN32S_HHA, PASCALCONTEXT_FCN8S,
    PASCALCONTEXT_FCN16S, PASCALCONTEXT_FCN32S, SIFTFLOW_FCN8S, SIFTFLOW_FCN16S, SIFTFLOW_FCN32S,
    SUM_OVER_BATCH, builder_defaults, deploy_netdef,
)
from port.net.engine import CaffeNet
from port.net.fillers import start_frozen_upsamplings
from port.run import prepared  # noqa: F401  (registers the default inference path with the engine)

PathLike = str | os.PathLike | None
#: The ``weights=`` strings that name a net's released caffemodel rather than a file
#: (``"DEFAULT"``: torchvision's name for a model's best weights, here the only ones).
RELEASED_WEIGHTS = ("released", "DEFAULT")


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


def weights_file(meta: ModelMeta, weights: PathLike) -> PathLike:
    """The file ``weights=`` names: for ``"released"`` (:data:`RELEASED_WEIGHTS`) the released
    caffemodel converted into the cache (fetched and converted on the first call only); a path
    as given (a ``pathlib.Path`` is always a file, even one named ``released``)."""
    if isinstance(weights, str) and weights in RELEASED_WEIGHTS:
        return released_weights(meta.name).path
    return weights


def _resolved(meta: ModelMeta, weights: PathLike, requested: Mapping[str, Any]) -> dict[str, Any]:
    """The builder arguments: the caller's, else the weights file's, else the released net's."""
    defaults = {k: v for k, v in builder_defaults(meta).items() if k in requested}
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
    weights = weights_file(meta, weights)
    netdef = deploy_netdef(meta, **_resolved(meta, weights, requested))
    return _filled(lambda: FCN(netdef, meta), weights)


def _check_materialized(model: torch.nn.Module, source: str) -> None:
    """Refuse a model with a parameter or buffer still on ``meta`` after loading (one the
    weights file cannot fill, e.g. a non-persistent buffer): it has no data to compute with."""
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise WeightsError(f"{source}: {type(model).__name__} built on the meta device keeps "
                           f"{len(left)} tensor(s) without data after loading: {', '.join(left)}")


# -- PASCAL VOC -------------------------------------------------------------------------------


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


# -- cast from an ILSVRC classifier by fcnize (records: port.models.cast_meta) ------------------
from port.models.cast_meta import CAST, CAST_MODELS, FCN_GOOGLENET, RESNET  # noqa: E402,F401


def _cast_builder(meta: ModelMeta) -> Callable[..., FCN]:
    def builder(*, weights: PathLike = None, num_classes: int | None = None,
                width_divisor: int | None = None) -> FCN:
        return _build(meta, weights, dict(num_classes=num_classes, width_divisor=width_divisor))
    builder.__name__ = builder.__qualname__ = meta.name
    builder.__doc__ = (f"{meta.description}: fcnize of the shipped {meta.classifier} deploy net "
                       f"(port.models.classifiers); {meta.provenance}.")
    return register(meta)(builder)


fcn_googlenet = _cast_builder(FCN_GOOGLENET)
fcn_resnet50_32s, fcn_resnet50_16s, fcn_resnet50_8s = (_cast_builder(RESNET[50, s]) for s in (32, 16, 8))
fcn_resnet101_32s, fcn_resnet101_16s, fcn_resnet101_8s = (_cast_builder(RESNET[101, s]) for s in (32, 16, 8))
fcn_resnet152_32s, fcn_resnet152_16s, fcn_resnet152_8s = (_cast_builder(RESNET[152, s]) for s in (32, 16, 8))


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
    written by ``python -m port transplant``, or ``"released"``) loads strictly; without it Caffe's fillers
    apply and the frozen upsamplings start bilinear (:func:`init_unweighted`). ``size`` sizes
    the data tops at construction only: any input size runs."""
    meta = get_meta(name)
    weights = weights_file(meta, weights)
    requested = dict(num_classes=num_classes, width_divisor=width_divisor, **kwargs)
    netdef = meta.net(train=True, **_resolved(meta, weights, requested)).netdef()
    tops = [t for layer in netdef.layers if layer.type == "Python" for t in layer.top]
    shapes = {t: (1, nets.IMAGE_CHANNELS.get(t, nets.LABEL_CHANNELS), *size) for t in tops}
    return _filled(lambda: CaffeNet(netdef, "TRAIN", input_shapes=shapes), weights)
