"""How a net's parameters start when no caffemodel fills them: Caffe's fillers (BVLC/caffe
``include/caffe/filler.hpp``), seeded by a ``torch.Generator``, and upstream's bilinear start of
the frozen upsamplings (fcn.berkeleyvision.org ``surgery.interp``).

A net built without weights is what Caffe's fillers make, so the rules live beside the layer
library: :mod:`port.net.layers` (Scale's default constant 1), :mod:`port.models.zoo` (the
builders without weights) and :mod:`port.training` (``fill_net`` before a transplant,
``surgery.interp``) all take them from here.

:func:`fill` makes one blob from a ``FillerParameter`` (a :class:`port.caffe.Message`, or
``None`` for Caffe's default: ``constant`` 0); :func:`fill_net` fills every parameter of a
:class:`port.net.engine.CaffeNet` as each layer's ``LayerSetUp`` does (base_conv_layer.cpp,
inner_product_layer.cpp, scale_layer.cpp + bias_layer.cpp), in net order, weight then bias.

The random streams cannot equal Caffe's (boost's mt19937 through ``caffe_rng_*``); the
distributions, their parameters and the fan rules do:

- ``constant``: ``value``; ``uniform``: U[``min``, ``max``] (``caffe_rng_uniform`` draws in
  ``[a, nextafter(b))``); ``gaussian``: N(``mean``, ``std``), with ``sparse >= 0`` each value
  kept with probability ``sparse / shape[0]`` (a Bernoulli mask) and zeroed otherwise;
- ``positive_unitball``: U[0, 1] then each of the ``shape[0]`` rows divided by its sum;
- ``xavier``: U[-s, s], ``s = sqrt(3 / n)``; ``msra``: N(0, ``sqrt(2 / n)``); ``n`` is, by
  ``variance_norm``, ``fan_in = count / shape[0]`` (FAN_IN, the default),
  ``fan_out = count / shape[1]`` (``count`` for a 1-axis blob; FAN_OUT) or their mean (AVERAGE),
  integer divisions as in filler.hpp;
- ``bilinear``: for a 4-axis blob with square kernels, every ``(k, k)`` slice the
  interpolation kernel ``(1 - |x/f - c|)(1 - |y/f - c|)``, ``f = ceil(k/2)``,
  ``c = (k - 1)/(2f)``, computed in float32 as Caffe's ``Dtype`` (the same kernel for every
  channel pair, unlike upstream ``surgery.interp``'s diagonal).

Caffe's ``CHECK`` failures (an empty blob, ``sparse`` on a filler without sparsity, ``min > max``,
``std <= 0``, a sparsity above 1, a non-square bilinear blob, an unknown type) are
:class:`FillerError` naming the layer and blob.

The frozen upsamplings (:func:`frozen_deconvolutions`: every Deconvolution whose weight has
``lr_mult: 0``, upstream's interp layers found by structure) start as
:func:`port.net.ops.set_upsample_filt_` leaves them (:func:`start_frozen_upsamplings`).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from port.errors import PortError
from port.net import ops

__all__ = ["FillerError", "FILLER_TYPES", "SCALE_DEFAULT", "fill", "fill_", "filler_type", "fan_in_out",
           "fill_net", "layer_fillers", "frozen_deconvolutions", "start_frozen_upsamplings"]

FILLER_TYPES = ("constant", "gaussian", "positive_unitball", "uniform", "xavier", "msra", "bilinear")


class FillerError(PortError):
    """A filler Caffe's ``GetFiller``/``Fill`` would refuse, named by layer and blob."""


def _get(spec: Any, name: str, default: Any) -> Any:
    """A FillerParameter field: a Message's value (proto default when unset), a mapping's or
    an object's attribute, else Caffe's default."""
    if spec is None:
        return default
    if isinstance(spec, dict):
        return spec.get(name, default)
    return getattr(spec, name, default)


def filler_type(spec: Any) -> str:
    """The ``type`` of a filler spec (``constant`` for ``None``, Caffe's default)."""
    return str(_get(spec, "type", "constant"))


def fan_in_out(shape: Sequence[int]) -> tuple[int, int]:
    """filler.hpp's fans: ``fan_in = count / shape[0]``, ``fan_out = count / shape[1]`` for a
    blob of more than one axis, else ``count`` (C++ integer division)."""
    count = math.prod(int(s) for s in shape)
    fan_in = count // int(shape[0])
    fan_out = count // int(shape[1]) if len(shape) > 1 else count
    return fan_in, fan_out


def _fan(shape: Sequence[int], norm: str) -> np.float32:
    """The ``n`` of the Xavier and MSRA fillers for ``variance_norm`` (``Dtype n``)."""
    fan_in, fan_out = fan_in_out(shape)
    if norm == "AVERAGE":
        return np.float32((fan_in + fan_out) / np.float32(2))
    if norm == "FAN_OUT":
        return np.float32(fan_out)
    return np.float32(fan_in)


def _bilinear(shape: Sequence[int], where: str) -> torch.Tensor:
    """filler.hpp ``BilinearFiller::Fill`` in float32 (``Dtype``) arithmetic."""
    if len(shape) != 4:
        raise FillerError(f"{where}: the bilinear filler needs a 4-axis blob, got shape {tuple(shape)}")
    height, width = int(shape[2]), int(shape[3])
    if height != width:
        raise FillerError(f"{where}: the bilinear filler needs square kernels, got {height} x {width}")
    f = math.ceil(width / 2.0)
    c = np.float32((width - 1) / (2.0 * f))
    ramp = np.float32(1) - np.abs(np.arange(width, dtype=np.float32) / np.float32(f) - c)
    kernel = (ramp[:, None] * ramp[None, :]).astype(np.float32)  # [y, x]
    return torch.from_numpy(np.broadcast_to(kernel, tuple(int(s) for s in shape)).copy())


def fill(shape: Sequence[int], spec: Any = None, generator: torch.Generator | None = None,
         where: str = "blob") -> torch.Tensor:
    """A float32 tensor of ``shape`` filled as Caffe's filler ``spec`` (a ``FillerParameter``
    message, a dict of its fields, or ``None`` for the default ``constant`` 0) fills a blob;
    ``generator`` seeds the random ones; ``where`` names the blob in errors."""
    shape = tuple(int(s) for s in shape)
    kind = filler_type(spec)
    sparse = int(_get(spec, "sparse", -1))
    count = math.prod(shape)
    if kind not in FILLER_TYPES:
        raise FillerError(f"{where}: unknown filler type {kind!r}; Caffe's are {', '.join(FILLER_TYPES)}")
    if count == 0:
        raise FillerError(f"{where}: cannot fill an empty blob of shape {shape}")
    if kind != "gaussian" and sparse != -1:
        raise FillerError(f"{where}: sparsity (sparse: {sparse}) is supported by the gaussian filler only")
    if kind == "constant":
        return torch.full(shape, float(np.float32(_get(spec, "value", 0.0))), dtype=torch.float32)
    if kind == "bilinear":
        return _bilinear(shape, where)
    if kind in ("uniform", "positive_unitball", "xavier"):
        if kind == "uniform":
            low, high = np.float32(_get(spec, "min", 0.0)), np.float32(_get(spec, "max", 1.0))
        elif kind == "positive_unitball":
            low, high = np.float32(0), np.float32(1)
        else:
            scale = np.sqrt(np.float32(3) / _fan(shape, str(_get(spec, "variance_norm", "FAN_IN"))))
            low, high = -np.float32(scale), np.float32(scale)
        if low > high:
            raise FillerError(f"{where}: uniform filler min {low} > max {high}")
        out = torch.rand(shape, generator=generator, dtype=torch.float64)
        out = (float(low) + (float(high) - float(low)) * out).to(torch.float32)
        if kind == "positive_unitball":
            rows = out.reshape(shape[0], -1)
            out = (rows / rows.sum(dim=1, keepdim=True)).reshape(shape)
        return out
    # gaussian, msra
    if kind == "msra":
        mean = np.float32(0)
        std = np.sqrt(np.float32(2) / _fan(shape, str(_get(spec, "variance_norm", "FAN_IN"))))
    else:
        mean, std = np.float32(_get(spec, "mean", 0.0)), np.float32(_get(spec, "std", 1.0))
    if not std > 0:
        raise FillerError(f"{where}: gaussian filler std must be > 0, got {std}")
    out = (float(mean) + float(std) * torch.randn(shape, generator=generator, dtype=torch.float64))
    out = out.to(torch.float32)
    if kind == "gaussian" and sparse != -1:
        if sparse < -1:
            raise FillerError(f"{where}: sparse must be >= -1, got {sparse}")
        probability = np.float32(sparse) / np.float32(shape[0])
        if probability > 1:
            raise FillerError(f"{where}: sparse {sparse} over {shape[0]} outputs is a probability "
                              f"{probability} > 1")
        mask = torch.bernoulli(torch.full(shape, float(probability), dtype=torch.float64),
                               generator=generator)
        out = out * mask.to(torch.float32)
    return out


def fill_(tensor: torch.Tensor, spec: Any = None, generator: torch.Generator | None = None,
          where: str = "blob") -> torch.Tensor:
    """Fill ``tensor`` in place (no autograd) with :func:`fill`; returns it."""
    with torch.no_grad():
        tensor.copy_(fill(tuple(tensor.shape), spec, generator, where).to(tensor.device, tensor.dtype))
    return tensor


#: Caffe's filler for a Scale layer's scale when ``scale_param.filler`` is unset (scale_layer.cpp).
SCALE_DEFAULT = {"type": "constant", "value": 1.0}


def layer_fillers(layer: Any, module: Any = None) -> list[Any]:
    """The filler spec of each parameter blob of ``layer`` (a ``LayerDef``) in Caffe's blob
    order, as its ``LayerSetUp`` picks them: Convolution/Deconvolution ``convolution_param``
    and InnerProduct ``inner_product_param`` ``weight_filler``, ``bias_filler``; Scale
    ``scale_param.filler`` (constant 1 when unset; no scale blob with two bottoms) and
    ``bias_filler`` (the Bias layer's filler); Bias ``bias_param.filler`` (no blob with two
    bottoms); BatchNorm's three statistics blobs constant 0 (``LayerSetUp``'s ``caffe_set``).
    ``module`` (the built layer) tells how many blobs there are; without it, ``bias_term``
    does."""
    kind = layer.type
    if kind in ("Convolution", "Deconvolution", "InnerProduct"):
        param = layer.convolution_param if kind != "InnerProduct" else layer.inner_product_param
        specs = [param.weight_filler if param.has("weight_filler") else None,
                 param.bias_filler if param.has("bias_filler") else None]
        blobs = 1 + bool(param.bias_term)
    elif kind == "Scale":
        param = layer.scale_param
        two_bottoms = len(layer.bottom) == 2
        specs = [] if two_bottoms else [param.filler if param.has("filler") else SCALE_DEFAULT]
        specs.append(param.bias_filler if param.has("bias_filler") else None)
        blobs = len(specs) - (not param.bias_term)
    elif kind == "Bias":
        specs = [layer.bias_param.filler if layer.bias_param.has("filler") else None]
        blobs = 0 if len(layer.bottom) == 2 else 1
    elif kind == "BatchNorm":
        # batch_norm_layer.cpp LayerSetUp: caffe_set(..., 0) on the three blobs, no filler
        specs, blobs = [None, None, None], 3
    else:
        raise FillerError(f"layer {layer.name!r}: no Caffe filler rule for parameters of a "
                          f"{kind} layer (Convolution, Deconvolution, InnerProduct, Scale, "
                          f"Bias, BatchNorm)")
    if module is not None:
        blobs = len(module.caffe_params())
    return specs[:blobs]


def fill_net(net: Any, seed: int | None = 0, layers: Iterable[str] | None = None,
             generator: torch.Generator | None = None) -> dict[str, list[str]]:
    """Fill every parameter of ``net`` (a ``CaffeNet``) from its LayerDef's fillers, layer by
    layer in net order, weight before bias, from one ``torch.Generator`` seeded with ``seed``
    (or the given ``generator``); ``layers`` limits it to those layer names. Returns, per
    layer, the filler type used for each blob."""
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(int(seed or 0) & 0xFFFF_FFFF_FFFF_FFFF)
    wanted = None if layers is None else set(layers)
    used: dict[str, list[str]] = {}
    for name, module in net.caffe_layers().items():
        params = module.caffe_params()
        if not params or (wanted is not None and name not in wanted):
            continue
        specs = layer_fillers(module.layer, module)
        used[name] = []
        for index, (param, spec) in enumerate(zip(params, specs)):
            fill_(param, spec, generator, f"layer {name!r} blob {index}")
            used[name].append(filler_type(spec))
    return used


# -- upstream's frozen bilinear upsamplings (surgery.py interp) -----------------------------------


def frozen_deconvolutions(net: Any) -> list[str]:
    """The frozen upsamplings of a ``CaffeNet``: the Deconvolution layers whose weight has
    ``lr_mult: 0`` (upstream's interp layers, found by structure rather than by ``'up' in
    name``), in net order."""
    names = []
    for name, module in net.caffe_layers().items():
        specs = module.layer.params
        if module.caffe_type == "Deconvolution" and specs and float(specs[0].lr_mult) == 0:
            names.append(name)
    return names


def start_frozen_upsamplings(net: Any) -> list[str]:
    """Start every :func:`frozen_deconvolutions` layer of ``net`` as upstream ``surgery.interp``
    leaves it (:func:`port.net.ops.set_upsample_filt_`: ``upsample_filt`` on the diagonal, or
    on every ``[i, 0]`` of a one-output-per-group weight; the other values as they were). A
    weight interp refuses (:func:`port.net.ops.upsample_filt_refusal`) or one without data
    (built on the ``meta`` device) keeps what it holds. Returns the layers set."""
    done, layers = [], net.caffe_layers()
    for name in frozen_deconvolutions(net):
        weight = layers[name].caffe_params()[0]
        if not weight.is_meta and ops.upsample_filt_refusal(tuple(weight.shape)) is None:
            ops.set_upsample_filt_(weight)
            done.append(name)
    return done
