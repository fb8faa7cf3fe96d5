"""What a prototxt, caffemodel or ``.caffemodel.h5`` holds, as plain rows (no printing).

:func:`summary` gives one JSON-ready record per layer: name, type, bottoms, tops, blob shapes,
parameter count and bytes. A caller may pass an *annotator*, called for every blob, whose
returned items are added to that blob's layer record (the command line ``python -m port
inspect``, in :mod:`port.cli.inspect`, uses one for the bilinear verdict of Deconvolution weights).
This module only reads formats; it imports nothing beyond :mod:`port.caffe`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import is_hdf5, load_caffemodel, load_net
from .hdf5 import with_definitions
from .net import LayerDef, NetDef

# (layer, blob index, blob) -> extra items for the layer's record, or None for none
Annotator = Callable[[LayerDef, int, np.ndarray], "dict[str, Any] | None"]

_TEXT_PROBE = 4096  # bytes looked at to tell a prototxt from a binary caffemodel
# a UTF-8 character is at most 4 bytes, so a probe can cut at most 3 of them off its end
_UTF8_TAIL = 3


def looks_like_text(path: str) -> bool:
    """Whether the file starts as UTF-8 text without control bytes (a prototxt)."""
    with open(path, "rb") as fh:
        head = fh.read(_TEXT_PROBE)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(head) < _TEXT_PROBE or e.start < len(head) - _UTF8_TAIL:
            return False
        text = head[:e.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\n\r" for c in text)


def load_any(path: str) -> tuple[str, NetDef]:
    """(format name, net) of a prototxt, binary caffemodel or HDF5 caffemodel, by content."""
    if is_hdf5(path):
        return "hdf5", load_caffemodel(path)
    if looks_like_text(path):
        return "prototxt", load_net(path)
    return "caffemodel", load_caffemodel(path)


def layer_record(layer: LayerDef, annotate: Annotator | None = None) -> dict[str, Any]:
    """One layer as a JSON-ready dict, with the annotator's items for each of its blobs."""
    rec = {"name": layer.name, "type": layer.type, "bottom": layer.bottom, "top": layer.top,
           "blobs": [list(map(int, b.shape)) for b in layer.blobs],
           "params": sum(int(b.size) for b in layer.blobs),
           "bytes": sum(int(b.nbytes) for b in layer.blobs)}
    for i, blob in enumerate(layer.blobs if annotate else ()):
        rec.update(annotate(layer, i, blob) or {})
    return rec


def summary(path: str, annotate: Annotator | None = None,
            net: NetDef | None = None) -> dict[str, Any]:
    """Everything ``inspect`` shows, as a dict.

    ``definitions`` says whether the layers carry their definitions (type, bottoms, tops):
    an HDF5 snapshot (``Net::ToHDF5``) stores blobs only, unless ``net`` (the parsed net
    prototxt) supplies them; ``unmatched`` then lists the file's layers with blobs that
    ``net`` has no layer for (``CopyTrainedLayersFromHDF5`` ignores those).
    """
    fmt, loaded = load_any(path)
    unmatched: list[str] = []
    if fmt == "hdf5" and net is not None:
        names = {layer.name for layer in net.layers}
        unmatched = [layer.name for layer in loaded.layers if layer.blobs and layer.name not in names]
        loaded = with_definitions(loaded, net)
    layers = [layer_record(layer, annotate) for layer in loaded.layers]
    return {"path": path, "format": fmt, "name": loaded.name,
            "definitions": fmt != "hdf5" or net is not None, "unmatched": unmatched,
            "inputs": {k: list(v) for k, v in loaded.inputs.items()}, "layers": layers,
            "params": sum(r["params"] for r in layers), "bytes": sum(r["bytes"] for r in layers)}
