"""torch.hub entry points of fcn-port: one per released FCN net (shelhamer/fcn.berkeleyvision.org).

>>> import torch
>>> model = torch.hub.load("<owner>/fcn-port", "fcn8s", pretrained=True).eval()   # doctest: +SKIP
>>> data = model.meta.transforms()(rgb_uint8_hwc)[None]    # 1 x 3 x H x W    # doctest: +SKIP
>>> labels = model(data).argmax(1)                         # doctest: +SKIP

``pretrained=True`` fetches the net's released caffemodel (upstream's address, then its mirror;
your ``$FCN_PORT_MIRRORS`` first), checks its published digests, and converts it once into the
per-user cache (``$FCN_PORT_CACHE``, else ``$XDG_CACHE_HOME/fcn-port``, else
``~/.cache/fcn-port``): ``port.hub.pretrained``. ``pretrained=False`` gives the builder's net
without weights (Caffe's default fillers, the frozen upsamplings bilinear). Other keyword
arguments are the builder's (``num_classes=``, ``width_divisor=``; with ``pretrained=True`` one
that differs from the released file raises, as torchvision's). Each entry point returns a
``port.models.FCN`` carrying ``model.meta`` (preprocessing ``meta.transforms()``, classes,
published numbers ``meta.published``).
"""
# What building, fetching and converting import (torch.hub checks each before loading; it
# puts the checkout first on sys.path while it loads, so the checkout's port is the one used).
dependencies = ["torch", "numpy", "requests", "tqdm"]

# Private names: torch.hub.list lists every public callable here as an entry point.
from port.models import get_meta as _get_meta, get_model as _get_model  # noqa: E402


def _load(name, pretrained, progress, kwargs):
    if pretrained:
        from port.hub.pretrained import released_weights
        kwargs = {**kwargs, "weights": released_weights(name, progress=progress).path}
    return _get_model(name, **kwargs)


def _entry(function):
    """The entry point's help (``torch.hub.help``): its record's description and inputs, and
    what ``pretrained`` does."""
    meta = _get_meta(function.__name__)
    inputs = ", ".join(meta.inputs)
    function.__doc__ = (
        f"{meta.description} (upstream {meta.upstream_prototxt.split('/')[0]}); inputs: {inputs}; "
        f"outputs: {', '.join(meta.outputs)}.\n\n"
        f"pretrained (bool): the released {meta.caffemodel or 'caffemodel (none was released)'}, "
        f"fetched, verified and converted once into the per-user cache; False: no weights.\n"
        f"progress (bool): show the download's progress bar.\n"
        f"**kwargs: the builder's (num_classes=, width_divisor=).\n"
        f"Preprocessing: model.meta.transforms(); published numbers: model.meta.published.")
    return function


@_entry
def fcn32s(pretrained=False, progress=True, **kwargs):
    return _load("fcn32s", pretrained, progress, kwargs)


@_entry
def fcn16s(pretrained=False, progress=True, **kwargs):
    return _load("fcn16s", pretrained, progress, kwargs)


@_entry
def fcn8s(pretrained=False, progress=True, **kwargs):
    return _load("fcn8s", pretrained, progress, kwargs)


@_entry
def fcn8s_atonce(pretrained=False, progress=True, **kwargs):
    return _load("fcn8s_atonce", pretrained, progress, kwargs)


@_entry
def fcn_alexnet(pretrained=False, progress=True, **kwargs):
    return _load("fcn_alexnet", pretrained, progress, kwargs)


@_entry
def siftflow_fcn32s(pretrained=False, progress=True, **kwargs):
    return _load("siftflow_fcn32s", pretrained, progress, kwargs)


@_entry
def siftflow_fcn16s(pretrained=False, progress=True, **kwargs):
    return _load("siftflow_fcn16s", pretrained, progress, kwargs)


@_entry
def siftflow_fcn8s(pretrained=False, progress=True, **kwargs):
    return _load("siftflow_fcn8s", pretrained, progress, kwargs)


@_entry
def nyud_fcn32s_color(pretrained=False, progress=True, **kwargs):
    return _load("nyud_fcn32s_color", pretrained, progress, kwargs)


@_entry
def nyud_fcn32s_hha(pretrained=False, progress=True, **kwargs):
    return _load("nyud_fcn32s_hha", pretrained, progress, kwargs)


@_entry
def nyud_fcn32s_color_d(pretrained=False, progress=True, **kwargs):
    return _load("nyud_fcn32s_color_d", pretrained, progress, kwargs)


@_entry
def nyud_fcn32s_color_hha(pretrained=False, progress=True, **kwargs):
    return _load("nyud_fcn32s_color_hha", pretrained, progress, kwargs)


@_entry
def pascalcontext_fcn32s(pretrained=False, progress=True, **kwargs):
    return _load("pascalcontext_fcn32s", pretrained, progress, kwargs)


@_entry
def pascalcontext_fcn16s(pretrained=False, progress=True, **kwargs):
    return _load("pascalcontext_fcn16s", pretrained, progress, kwargs)


@_entry
def pascalcontext_fcn8s(pretrained=False, progress=True, **kwargs):
    return _load("pascalcontext_fcn8s", pretrained, progress, kwargs)
