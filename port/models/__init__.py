"""The released FCN nets, one registered builder each, run by the one engine.

>>> from port.models import get_model, list_models
>>> model = get_model("fcn8s", weights="fcn8s-heavy-pascal.safetensors")  # doctest: +SKIP
>>> score = model(data)            # N x 21 x H x W, the Caffe ``score`` blob    # doctest: +SKIP
>>> blobs = model(data, return_blobs=True)   # every named blob, as Caffe holds it  # doctest: +SKIP

Each builder writes its net out as upstream's ``net.py`` does (:mod:`port.models.nets`) and
returns an :class:`FCN`, the :class:`port.net.engine.CaffeNet` of its deploy definition.
Parameter names are the Caffe layer names (``conv1_1.weight``, ``upscore2.weight``,
``scale_pool4.weight``). Each model carries its :class:`ModelMeta` as ``model.meta``. Importing this package imports
no torch: the builders (:mod:`port.models.zoo`) are imported on first use.
"""
from port.models._registry import (
    DuplicateModelError, UnknownModelError, get_builder, get_meta, get_model, list_models,
    register,
)
from port.weights import (  # the one home of weights files, re-exported for users
    SOURCE_NAME, SOURCE_SHA256, WeightsError, load_state_strict, load_weights, read_metadata,
)
from port.models.meta import ModelMeta

#: Names imported on first use, by the module that holds them: the builders and the engine
#: import torch, which listing the models, reading their records and converting weights
#: (``python -m port convert``) do without.
_LAZY = {"InputError": "port.net.engine",
         **dict.fromkeys(("FCN", "FORMS", "net_spec", "train_net", "fcn8s", "fcn8s_atonce", "fcn16s",
                          "fcn32s", "fcn_alexnet", "nyud_fcn32s_color", "nyud_fcn32s_color_d",
                          "nyud_fcn32s_color_hha", "nyud_fcn32s_hha", "pascalcontext_fcn8s",
                          "pascalcontext_fcn16s", "pascalcontext_fcn32s", "siftflow_fcn8s",
                          "siftflow_fcn16s", "siftflow_fcn32s"), "port.models.zoo")}


#: Submodules reachable as attributes (``port.models.zoo``) before anything imported them.
_SUBMODULES = ("zoo", "weights", "fcnize", "classes", "preprocess", "nets", "meta", "released",
               "tables")


def __getattr__(name: str):
    import importlib
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "FCN", "FORMS", "net_spec", "train_net", "InputError", "DuplicateModelError", "UnknownModelError", "WeightsError",
    "get_builder", "get_meta", "get_model", "list_models", "register", "load_weights",
    "read_metadata", "load_state_strict", "SOURCE_SHA256", "SOURCE_NAME", "ModelMeta",
    "fcn8s", "fcn8s_atonce", "fcn16s", "fcn32s", "fcn_alexnet", "nyud_fcn32s_color",
    "nyud_fcn32s_color_d", "nyud_fcn32s_color_hha", "nyud_fcn32s_hha", "pascalcontext_fcn8s",
    "pascalcontext_fcn16s", "pascalcontext_fcn32s", "siftflow_fcn8s", "siftflow_fcn16s",
    "siftflow_fcn32s",
]
