"""Loading a net from its definition and weights: the one loader of ``forward``, ``convert``
and the evaluation harness.

A net comes from a prototxt (or a caffemodel's own stored definition) and runs in one phase as
:class:`port.net.engine.CaffeNet`. Caffe learns the shapes of a ``Python`` data layer's tops
only when the layer runs; here they are sized by :func:`port.net.engine.data_input_shapes` (the channels the
convolution reading a top needs, else the upstream data layers' convention), unless the caller
knows them (the arrays ``port forward`` is given). Weights are a caffemodel (binary or HDF5,
filled as Caffe's ``Net::CopyTrainedLayersFrom``, strictly) or a converted ``.safetensors``,
told apart by their content (:func:`port.weights.kind_of`), read and checked by :mod:`port.weights`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import torch

from port.caffe import NetDef, load_net
from port.errors import PortError
from port.net.engine import CaffeNet, data_input_shapes
from port.net.shapes import net_state
from port.weights import SOURCE_SHA256, SUFFIX, kind_of, load_state_strict, load_weights, read_blobs, sha256_file

__all__ = ["SAFETENSORS_SUFFIX", "build_net", "load_net_and_weights", "sha256_file"]

#: The suffix of a converted file (``port.weights.SUFFIX``; kept for users' imports).
SAFETENSORS_SUFFIX = SUFFIX


def build_net(net: NetDef, phase: str = "TEST", *, input_shapes: Mapping[str, Sequence[int]] | None = None,
              blobs: Mapping[str, Sequence] | None = None, meta: bool = False) -> CaffeNet:
    """:class:`CaffeNet` of ``net`` in ``phase``, its data layers' tops sized by
    ``input_shapes`` where given, else by :func:`data_input_shapes`. ``meta``: built on the
    meta device (parameters sized, nothing allocated)."""
    # the layers CaffeNet keeps (the prototxt's own state counts: net_state), not the phase's alone
    shapes = data_input_shapes(net.for_state(net_state(net, phase)), blobs)
    shapes.update({k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()})
    if meta:
        with torch.device("meta"):
            return CaffeNet(net, phase, input_shapes=shapes)
    return CaffeNet(net, phase, input_shapes=shapes)


def load_net_and_weights(prototxt: str | os.PathLike | None, weights: str | os.PathLike, *,
                         phase: str = "TEST",
                         input_shapes: Mapping[str, Sequence[int]] | None = None) -> tuple[CaffeNet, str]:
    """``(CaffeNet of the net in phase with the weights loaded, the weights' source SHA-256)``.

    The net is ``prototxt``'s, or, without one, the definition a binary caffemodel stores.
    The SHA-256 is that of the caffemodel, or the one a converted file records of its source."""
    weights = Path(weights)
    is_safetensors = kind_of(weights) == "safetensors"
    if prototxt is not None:
        net = load_net(prototxt)
        src = None if is_safetensors else read_blobs(weights, net)
    else:
        if is_safetensors:
            raise PortError(f"{weights}: a converted file holds no net definition; give the "
                            f"prototxt it was converted from (--net NET.prototxt) or the released "
                            f"net it is for (--model NAME)")
        src = read_blobs(weights)
        net = src
    model = build_net(net, phase, input_shapes=input_shapes, blobs=src.blobs() if src is not None else None)
    if is_safetensors:
        state, metadata = load_weights(weights)
        load_state_strict(model, state, str(weights))
        return model, metadata.get(SOURCE_SHA256) or sha256_file(weights)
    model.load_blobs(src, str(weights))
    return model, sha256_file(weights)
