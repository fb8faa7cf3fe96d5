"""Binary protobuf encoding of :class:`Message` (the inverse of :mod:`port.caffe.wire`).

Fields are written in field-number order, packed where caffe.proto says ``packed``, as
protobuf's C++ ``SerializeToString`` (which Caffe's ``WriteProtoToBinaryFile`` calls) writes
them; so a caffemodel Caffe wrote reads and writes back byte for byte. Message sizes are
computed first so blob payloads stream from their arrays to the file without a copy.
"""
from __future__ import annotations

import io
import os
import struct
from typing import Any, BinaryIO

import numpy as np

from port.fileio import atomic_open

from .message import Message, array_dtype
from .schema import ENUMS, WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, Field
from .wire import _FIXED, encode_varint


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _scalar_bytes(f: Field, value: Any) -> bytes:
    """One element of a scalar/enum field, without its tag."""
    if f.wire_type in (WIRE_FIXED32, WIRE_FIXED64):
        return struct.pack(_FIXED[f.kind], value)
    if f.kind in ("string", "bytes"):
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
        return encode_varint(len(raw)) + raw
    if f.kind == "enum":
        value = ENUMS[f.type_name].values[value]
    elif f.kind in ("sint32", "sint64"):
        value = _zigzag(value)
    return encode_varint(int(value))


def _tag(f: Field, wire: int) -> bytes:
    return encode_varint(f.number << 3 | wire)


def _sorted_fields(msg: Message) -> list[tuple[Field, Any]]:
    return sorted(((msg.field(name), value) for name, value in msg.fields()), key=lambda p: p[0].number)


def _packed_payload(f: Field, values: Any) -> Any:
    """The payload of a packed field: an array buffer (no copy if already little-endian)."""
    if f.array:
        return memoryview(np.ascontiguousarray(values, array_dtype(f))).cast("B")
    if f.wire_type in (WIRE_FIXED32, WIRE_FIXED64):
        return np.asarray(values, np.dtype(_FIXED[f.kind])).tobytes()
    return b"".join(_scalar_bytes(f, v) for v in values)


class _Encoder:
    """Encodes one message tree, caching each sub-message's size by identity."""

    def __init__(self):
        self.sizes: dict[int, int] = {}

    def size(self, msg: Message) -> int:
        key = id(msg)
        if key not in self.sizes:
            self.sizes[key] = sum(len(chunk) for chunk in self.chunks(msg, sizing=True))
        return self.sizes[key]

    def chunks(self, msg: Message, sizing: bool = False):
        """The encoded message as byte chunks; while sizing, sub-messages count as their size."""
        for f, value in _sorted_fields(msg):
            values = value if f.repeated else [value]
            if f.repeated and f.packed:
                payload = _packed_payload(f, values)
                yield _tag(f, WIRE_LEN) + encode_varint(len(payload))
                yield payload
            elif f.kind == "message":
                for sub in values:
                    yield _tag(f, WIRE_LEN) + encode_varint(self.size(sub))
                    if sizing:
                        yield _Sized(self.size(sub))
                    else:
                        yield from self.chunks(sub)
            else:
                for v in (value.tolist() if isinstance(value, np.ndarray) else values):
                    yield _tag(f, f.wire_type) + _scalar_bytes(f, v)


class _Sized:
    """A placeholder chunk of a known length (a sub-message while computing sizes)."""
    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def encode_to(msg: Message, out: BinaryIO) -> int:
    """Write ``msg`` encoded to the binary stream ``out``; returns the bytes written."""
    written = 0
    for chunk in _Encoder().chunks(msg):
        written += out.write(chunk)
    return written


def encode(msg: Message) -> bytes:
    """``msg`` as protobuf wire bytes (``SerializeToString``)."""
    buf = io.BytesIO()
    encode_to(msg, buf)
    return buf.getvalue()


def blob_message(array: np.ndarray) -> Message:
    """A V2 ``BlobProto``: ``shape { dim }`` and packed float ``data``, as Caffe's
    ``Blob::ToProto`` writes it."""
    blob = Message("BlobProto")
    blob.shape = Message("BlobShape", dim=[int(d) for d in np.shape(array)])
    blob.set("data", np.ascontiguousarray(array, np.float32).reshape(-1))
    return blob


def net_message(net) -> Message:
    """A ``NetParameter`` to write: a ``Message`` as is, or a new one (copied, so the ``NetDef``
    is never changed through it) of a ``NetDef``'s net-level fields and its layers'
    definitions with their blobs (arrays) as ``BlobProto``s."""
    if isinstance(net, Message):
        return net
    out = Message("NetParameter")
    for name, value in net.msg.fields():
        if name not in ("layer", "layers"):
            out.set(name, value.copy() if isinstance(value, Message) else value)
    layers = []
    for layer in net.layers:
        lm = layer.msg.copy()
        lm.clear("blobs")
        if layer.blobs:
            lm.set("blobs", [blob_message(b) for b in layer.blobs])
        layers.append(lm)
    out.set("layer", layers)
    return out


def write_caffemodel(path: str | os.PathLike, net) -> None:
    """Write a ``NetParameter`` message or a ``NetDef`` with blobs as a binary caffemodel
    (``Net::ToProto`` + ``WriteProtoToBinaryFile``), atomically."""
    msg = net_message(net)
    with atomic_open(path) as fh:
        encode_to(msg, fh)
