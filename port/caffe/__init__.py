"""Caffe's file formats read and written without Caffe or protobuf (and never with pickle).

``load_net(path)`` reads a ``.prototxt``; ``load_caffemodel(path)`` reads a binary or HDF5
caffemodel (told apart by content); both give a :class:`NetDef` whose layers carry their
blobs as shaped float32 numpy arrays. ``write_caffemodel``/``write_caffemodel_h5`` write them.
"""
from __future__ import annotations

import os

from .errors import CaffeFormatError
from .hdf5 import read_caffemodel_h5, write_caffemodel_h5 as _write_caffemodel_h5
from .message import Message
from .net import LayerDef, NetDef, NetState, ParamSpec, netdef_from_message
from .text import parse_text, read_prototxt
from .wire import decode, file_range, read_binaryproto
from .writer import write_caffemodel as _write_caffemodel

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

__all__ = ["CaffeFormatError", "LayerDef", "Message", "NetDef", "NetState", "ParamSpec", "decode",
           "file_range", "is_hdf5", "load_caffemodel", "load_net", "parse_text", "read_binaryproto",
           "read_prototxt", "write_caffemodel", "write_caffemodel_h5"]


def load_net(path: str | os.PathLike) -> NetDef:
    """A net definition from a ``.prototxt`` (V1 nets upgraded to V2)."""
    return netdef_from_message(read_prototxt(path, "NetParameter"), path)


def is_hdf5(path: str | os.PathLike) -> bool:
    """Whether the file starts with the HDF5 signature (Caffe's ``snapshot_format: HDF5``)."""
    with open(path, "rb") as fh:
        return fh.read(len(HDF5_MAGIC)) == HDF5_MAGIC


def load_caffemodel(path: str | os.PathLike, net: NetDef | None = None, *, writable: bool = True) -> NetDef:
    """The net and blobs of a caffemodel: binary protobuf, or HDF5 told by its signature.

    A binary caffemodel carries its layer definitions; an HDF5 one holds only blobs, so its
    layers have names and blobs only unless ``net`` (a parsed prototxt) gives the definitions.
    A binary one's blobs are views of the file mapped copy-on-write, or read-only with
    ``writable=False`` (what a writer can copy from the file itself: ``wire.file_range``).
    """
    if is_hdf5(path):
        return read_caffemodel_h5(path, net)
    netdef = netdef_from_message(read_binaryproto(path, "NetParameter", writable), path)
    if not netdef.layers:
        raise CaffeFormatError(path, "byte 0", "NetParameter.layer",
                               "no layers: not a caffemodel (or an empty net)")
    return netdef


def write_caffemodel(path, net) -> None:
    """Write a ``NetParameter`` (or a ``NetDef``) as a binary caffemodel, atomically."""
    _write_caffemodel(path, net)


def write_caffemodel_h5(path, net) -> None:
    """Write a ``NetDef``'s blobs (or a ``NetParameter``'s) as Caffe's HDF5 snapshot, atomically."""
    _write_caffemodel_h5(path, net)
