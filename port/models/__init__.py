"""The released FCN family as explicit PyTorch modules, one registered builder per net.

>>> from port.models import get_model, list_models
>>> model = get_model("fcn8s", weights="fcn8s-heavy-pascal.safetensors")  # doctest: +SKIP
>>> score = model(data)            # N x 21 x H x W, the Caffe ``score`` blob    # doctest: +SKIP
>>> blobs = model(data, return_blobs=True)   # every named blob, as Caffe holds it  # doctest: +SKIP

Attribute names are the Caffe layer names (``conv1_1``, ``fc6``, ``upscore2``,
``score_pool4``, ``scale_pool4``), so state-dict keys read ``conv1_1.weight``. Each model
carries its :class:`ModelMeta` as ``model.meta``.
"""
from port.models._net import CaffeFamilyNet, InputError
from port.models._registry import (
    DuplicateModelError, UnknownModelError, get_builder, get_meta, get_model, list_models,
    register,
)
from port.models._weights import (
    SOURCE_NAME, SOURCE_SHA256, WeightsError, load_state_strict, load_weights, read_metadata,
)
from port.models.fcn_alexnet import FCNAlexNet
from port.models.fcn_vgg16 import FCNVGG16, FCNVGG16EarlyFusion, FCNVGG16LateFusion
from port.models.meta import ModelMeta
from port.models.zoo import (
    fcn8s, fcn8s_atonce, fcn16s, fcn32s, fcn_alexnet, nyud_fcn32s_color, nyud_fcn32s_color_d,
    nyud_fcn32s_color_hha, nyud_fcn32s_hha, pascalcontext_fcn8s, pascalcontext_fcn16s,
    pascalcontext_fcn32s, siftflow_fcn8s, siftflow_fcn16s, siftflow_fcn32s,
)

__all__ = [
    "CaffeFamilyNet", "InputError", "DuplicateModelError", "UnknownModelError", "WeightsError",
    "get_builder", "get_meta", "get_model", "list_models", "register", "load_weights",
    "read_metadata", "load_state_strict", "SOURCE_SHA256", "SOURCE_NAME",
    "FCNAlexNet", "FCNVGG16", "FCNVGG16EarlyFusion", "FCNVGG16LateFusion", "ModelMeta",
    "fcn8s", "fcn8s_atonce", "fcn16s", "fcn32s", "fcn_alexnet", "nyud_fcn32s_color",
    "nyud_fcn32s_color_d", "nyud_fcn32s_color_hha", "nyud_fcn32s_hha", "pascalcontext_fcn8s",
    "pascalcontext_fcn16s", "pascalcontext_fcn32s", "siftflow_fcn8s", "siftflow_fcn16s",
    "siftflow_fcn32s",
]
