"""Caffe's HDF5 snapshots (``snapshot_format: HDF5``, ``.caffemodel.h5``) read and written.

Layout, from ``Net::ToHDF5`` / ``Net::CopyTrainedLayersFromHDF5`` (src/caffe/net.cpp): a
group ``/data`` with one group per layer (every layer, empty for those without parameters)
holding datasets ``"0"``, ``"1"``, ... — the layer's blobs in order, float32, in their shapes.
The file holds no layer definitions and no layer order (HDF5 lists groups by name).
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager

import numpy as np

from port.fileio import atomic_open

from .errors import CaffeFormatError
from .message import Message
from .net import LayerDef, NetDef, check_blob_shape, netdef_from_message

DATA_GROUP = "data"


# What h5py raises for a damaged file: HDF5's errors map to OSError, RuntimeError, KeyError
# or ValueError (a bad datatype, a non-UTF-8 name), TypeError for an odd object kind
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def _h5py():
    import h5py  # a runtime dependency, imported only when an HDF5 file is met
    return h5py


@contextmanager
def _reading(path: str, where: str, field: str):
    """Turn h5py's errors for a damaged file into one CaffeFormatError at ``where``."""
    try:
        yield
    except CaffeFormatError:
        raise
    except _H5_ERRORS as e:
        raise CaffeFormatError(path, where, field,
                               f"damaged HDF5 ({type(e).__name__}: {e})") from None


def _blob(ds, path: str, name: str, i: int, budget: int) -> np.ndarray:
    """Dataset ``i`` of layer ``name`` as a float32 array, its shape checked as
    ``hdf5_load_nd_dataset`` (``Blob::Reshape``) does before anything is read."""
    where, label = f"/{DATA_GROUP}/{name}/{i}", f"{name} blobs[{i}]"
    if not isinstance(ds, _h5py().Dataset) or ds.dtype.kind != "f":
        raise CaffeFormatError(path, where, label, "expected a float dataset")
    check_blob_shape(tuple(ds.shape), path, where, label)
    nbytes = math.prod(ds.shape) * np.dtype(np.float32).itemsize
    if nbytes > budget:  # fill values or compression could make a small file claim any size
        raise CaffeFormatError(path, where, label, f"shape {ds.shape} needs {nbytes} bytes, more "
                               f"than the {budget} the file's size leaves for it")
    return np.asarray(ds[()], dtype=np.float32).reshape(ds.shape)


def _layer_blobs(group, path: str, name: str, budget: int) -> list[np.ndarray]:
    """Datasets ``0..n-1`` of one layer group, as float32 arrays."""
    keys = list(group.keys())
    if sorted(keys, key=lambda k: (len(k), k)) != [str(i) for i in range(len(keys))]:
        raise CaffeFormatError(path, f"/{DATA_GROUP}/{name}", name,
                               f"blob datasets must be named 0..{len(keys) - 1}, got {keys}")
    blobs = []
    for i in range(len(keys)):
        blobs.append(_blob(group[str(i)], path, name, i, budget))
        budget -= blobs[-1].nbytes
    return blobs


def read_h5_blobs(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Layer name -> blobs for every layer group in ``/data`` (empty list for none).

    A damaged file gives a CaffeFormatError naming the HDF5 object, never h5py's own error,
    and no blob larger than the file is allocated."""
    h5py, path = _h5py(), str(path)
    budget = os.path.getsize(path)  # bytes the blobs may take in all
    try:
        fh = h5py.File(path, "r")
    except _H5_ERRORS as e:
        raise CaffeFormatError(path, "byte 0", "HDF5", f"cannot be opened as HDF5: {e}") from None
    with _reading(path, f"/{DATA_GROUP}", DATA_GROUP), fh:
        data = fh.get(DATA_GROUP)
        if not isinstance(data, h5py.Group):
            raise CaffeFormatError(path, "/", DATA_GROUP, "no /data group: not a Caffe HDF5 snapshot")
        out = {}
        for name, group in data.items():
            if not isinstance(group, h5py.Group):
                raise CaffeFormatError(path, f"/{DATA_GROUP}/{name}", name, "expected a group per layer")
            with _reading(path, f"/{DATA_GROUP}/{name}", name):
                out[name] = _layer_blobs(group, path, name, budget)
            budget -= sum(b.nbytes for b in out[name])
        return out


def read_caffemodel_h5(path: str | os.PathLike, net: NetDef | None = None) -> NetDef:
    """An HDF5 caffemodel as a ``NetDef``; with ``net``, its layers (in its order) take the
    file's blobs as ``CopyTrainedLayersFromHDF5`` does, else one bare layer per group."""
    layers = [LayerDef(Message("LayerParameter", name=name), b)
              for name, b in read_h5_blobs(path).items()]
    bare = NetDef(Message("NetParameter"), layers, str(path))
    return bare if net is None else with_definitions(bare, net)


def with_definitions(bare: NetDef, net: NetDef) -> NetDef:
    """``net``'s layers, in its order, each with the blobs ``bare`` holds under its name
    (the file's path kept); layers of ``bare`` that ``net`` lacks are left out."""
    blobs = {layer.name: layer.blobs for layer in bare.layers}
    layers = [LayerDef(layer.msg, blobs.get(layer.name, [])) for layer in net.layers]
    return NetDef(net.msg, layers, bare.path)


def write_caffemodel_h5(path: str | os.PathLike, net) -> None:
    """Write a ``NetDef``'s (or a ``NetParameter``'s) blobs as ``Net::ToHDF5`` does, atomically."""
    if isinstance(net, Message):
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
