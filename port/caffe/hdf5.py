"""Caffe's HDF5 snapshots (``snapshot_format: HDF5``, ``.caffemodel.h5``) read and written.

Layout, from ``Net::ToHDF5`` / ``Net::CopyTrainedLayersFromHDF5`` (src/caffe/net.cpp): a
group ``/data`` with one group per layer (every layer, empty for those without parameters)
holding datasets ``"0"``, ``"1"``, ... — the layer's blobs in order, float32, in their shapes.
The file holds no layer definitions and no layer order (HDF5 lists groups by name).
"""
from __future__ import annotations

import os

import numpy as np

from .errors import CaffeFormatError
from .message import Message
from .net import LayerDef, NetDef
from .writer import atomic_open

DATA_GROUP = "data"


def _h5py():
    import h5py  # a runtime dependency, imported only when an HDF5 file is met
    return h5py


def _layer_blobs(group, path: str, name: str) -> list[np.ndarray]:
    """Datasets ``0..n-1`` of one layer group, as float32 arrays."""
    h5py = _h5py()
    keys = list(group.keys())
    where = f"/{DATA_GROUP}/{name}"
    if sorted(keys, key=lambda k: (len(k), k)) != [str(i) for i in range(len(keys))]:
        raise CaffeFormatError(path, where, name, f"blob datasets must be named 0..{len(keys) - 1}, got {keys}")
    blobs = []
    for i in range(len(keys)):
        ds = group[str(i)]
        if not isinstance(ds, h5py.Dataset) or ds.dtype.kind != "f":
            raise CaffeFormatError(path, f"{where}/{i}", f"{name} blobs[{i}]", "expected a float dataset")
        blobs.append(np.asarray(ds[()], dtype=np.float32).reshape(ds.shape))
    return blobs


def read_h5_blobs(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Layer name -> blobs for every layer group in ``/data`` (empty list for none)."""
    h5py, path = _h5py(), str(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as e:
        raise CaffeFormatError(path, "byte 0", "HDF5", f"cannot be opened as HDF5: {e}") from None
    with fh:
        data = fh.get(DATA_GROUP)
        if not isinstance(data, h5py.Group):
            raise CaffeFormatError(path, "/", DATA_GROUP, "no /data group: not a Caffe HDF5 snapshot")
        out = {}
        for name, group in data.items():
            if not isinstance(group, h5py.Group):
                raise CaffeFormatError(path, f"/{DATA_GROUP}/{name}", name, "expected a group per layer")
            out[name] = _layer_blobs(group, path, name)
        return out


def read_caffemodel_h5(path: str | os.PathLike, net: NetDef | None = None) -> NetDef:
    """An HDF5 caffemodel as a ``NetDef``; with ``net``, its layers (in its order) take the
    file's blobs as ``CopyTrainedLayersFromHDF5`` does, else one bare layer per group."""
    blobs = read_h5_blobs(path)
    if net is None:
        layers = [LayerDef(Message("LayerParameter", name=name), b) for name, b in blobs.items()]
        return NetDef(Message("NetParameter"), layers, str(path))
    layers = [LayerDef(layer.msg, blobs.get(layer.name, [])) for layer in net.layers]
    return NetDef(net.msg, layers, str(path))


def write_caffemodel_h5(path: str | os.PathLike, net) -> None:
    """Write a ``NetDef``'s (or a ``NetParameter``'s) blobs as ``Net::ToHDF5`` does, atomically."""
    if isinstance(net, Message):
        from .net import netdef_from_message
        net = netdef_from_message(net)
    h5py = _h5py()
    with atomic_open(path) as fh:
        with h5py.File(fh, "w") as f:
            data = f.create_group(DATA_GROUP)
            for layer in net.layers:
                if "/" in layer.name:
                    raise CaffeFormatError(path, "/data", layer.name, "a layer name with '/' cannot be an HDF5 group")
                group = data.create_group(layer.name)
                for i, blob in enumerate(layer.blobs):
                    group.create_dataset(str(i), data=np.asarray(blob, np.float32))
