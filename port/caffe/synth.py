"""Caffemodels with seeded random weights, built from a parsed net: public API.

A user testing a converter, a loader or a whole pipeline on a net whose trained weights they
do not have (or cannot share) writes a caffemodel of any prototxt with it, e.g.
``make_caffemodel(divide_width(load_net("deploy.prototxt"), 16), "random.caffemodel")``;
the project's tests and benchmarks make theirs this way.

``random_caffemodel(net)`` gives the ``NetParameter`` Caffe's ``Net::ToProto`` would save
for that net (layer definitions of the chosen phase plus each parameter blob), with blobs
shaped as the layers create them: Convolution ``(num_output, C_in/group, kh, kw)``,
Deconvolution ``(C_in, num_output/group, kh, kw)`` (base_conv_layer.cpp), biases
``(num_output,)``, a one-bottom Scale/Bias ``(C,)``. Values follow the goldens' recipe:
He-scaled normals, small normal biases, Scale weights uniform in [0.5, 1.5].
"""
from __future__ import annotations

import math
import os

import numpy as np

from .message import Message
from .net import NetDef, netdef_from_message
from .writer import blob_message, net_message, write_caffemodel

BIAS_STD = 0.01              # spread of random biases
SCALE_RANGE = (0.5, 1.5)     # Scale weights: uniform, as in the goldens
_CONV_TYPES = ("Convolution", "Deconvolution")


def _kernel(cp: Message) -> tuple[int, int]:
    if cp.has("kernel_h") or cp.has("kernel_w"):
        return cp.kernel_h, cp.kernel_w
    ks = list(cp.kernel_size)
    if not ks:
        raise ValueError("convolution_param has no kernel_size")
    return ks[0], ks[-1]


def _layer_shapes(layer, c_in: int) -> tuple[list[tuple[int, ...]], int]:
    """(parameter blob shapes, output channels) of one layer given its input channels."""
    if layer.type in _CONV_TYPES:
        cp = layer.convolution_param
        n, g, (kh, kw) = cp.num_output, cp.group, _kernel(cp)
        weight = (n, c_in // g, kh, kw) if layer.type == "Convolution" else (c_in, n // g, kh, kw)
        return [weight] + ([(n,)] if cp.bias_term else []), n
    if layer.type in ("Scale", "Bias") and len(layer.bottom) == 1:
        p = layer.scale_param if layer.type == "Scale" else layer.bias_param
        if p.axis != 1 or p.num_axes != 1:
            raise ValueError(f"layer {layer.name!r}: only axis 1, num_axes 1 is supported here")
        extra = [(c_in,)] if layer.type == "Scale" and p.bias_term else []
        return [(c_in,)] + extra, c_in
    if layer.type == "InnerProduct":
        raise ValueError(f"layer {layer.name!r}: InnerProduct needs spatial sizes; not supported here")
    return [], c_in


def param_shapes(net: NetDef, input_channels: dict[str, int] | None = None) -> dict[str, list[tuple]]:
    """Layer name -> the shapes of its parameter blobs, by following channels through the net.

    Channels of the inputs come from ``net.inputs`` (axis 1) or ``input_channels``.
    """
    channels = {name: shape[1] for name, shape in net.inputs.items() if len(shape) > 1}
    channels.update(input_channels or {})
    shapes = {}
    for layer in net.layers:
        if not layer.bottom:
            continue
        missing = [b for b in layer.bottom if b not in channels]
        if missing:
            raise ValueError(f"layer {layer.name!r}: channels of {missing} unknown; pass input_channels")
        c_in = channels[layer.bottom[0]]
        blob_shapes, c_out = _layer_shapes(layer, c_in)
        if layer.type == "Concat":
            c_out = sum(channels[b] for b in layer.bottom)
        for top in layer.top:
            channels[top] = c_out
        if blob_shapes:
            shapes[layer.name] = blob_shapes
    return shapes


def _random_blob(rng: np.random.Generator, layer_type: str, index: int, shape: tuple) -> np.ndarray:
    if layer_type == "Scale" and index == 0:
        return rng.uniform(*SCALE_RANGE, size=shape).astype(np.float32)
    if len(shape) == 1:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(BIAS_STD))
    fan_in = math.prod(shape[1:])
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= np.float32(math.sqrt(2.0 / fan_in))
    return out


def divide_width(net: NetDef, divisor: int, *, keep_classes: bool = True) -> NetDef:
    """The net with every Convolution/Deconvolution ``num_output`` divided by ``divisor``
    (rounded down, at least 1), except, with ``keep_classes``, the classifier's width (the
    ``num_output`` of the net's last such layer), as the goldens' 1/16-width FCNs are made;
    without it every one, as the goldens' reduced classifiers (``resnet50-div8``), whose
    classifier is an InnerProduct."""
    convs = [l for l in net.layers if l.type in _CONV_TYPES]
    classes = convs[-1].convolution_param.num_output if convs and keep_classes else None
    msg = net_message(net)
    for lm in msg.layer:
        cp = lm.convolution_param
        if lm.type in _CONV_TYPES and cp.num_output != classes:
            cp.num_output = max(1, cp.num_output // divisor)
    return netdef_from_message(msg, net.path)


def random_caffemodel(net: NetDef, *, seed: int = 0, phase: str | None = "TEST",
                      input_channels: dict[str, int] | None = None) -> Message:
    """The ``NetParameter`` of ``net`` (filtered to ``phase``) with seeded random blobs."""
    net = net.for_phase(phase) if phase else net
    rng = np.random.default_rng(seed)
    shapes = param_shapes(net, input_channels)
    msg = net_message(net)
    for lm in msg.layer:
        for i, shape in enumerate(shapes.get(lm.name, [])):
            lm.add("blobs", blob_message(_random_blob(rng, lm.type, i, shape)))
    return msg


def make_caffemodel(net: NetDef, path: str | os.PathLike, **kw) -> Message:
    """Write ``random_caffemodel(net, **kw)`` to ``path`` (atomically) and return it."""
    msg = random_caffemodel(net, **kw)
    write_caffemodel(path, msg)
    return msg
