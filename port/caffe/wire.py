"""Protobuf wire format decoded into :class:`Message` (Caffe's ``ReadProtoFromBinaryFile``).

Field numbers and kinds come from :mod:`port.caffe.schema` (caffe.proto). Packed repeated
blob payloads become zero-copy ``np.frombuffer`` views of the buffer (an mmap of the file);
unpacked ones (old writers: one tag per float) are gathered with numpy, not per float in
Python. Every read is bounds-checked against the enclosing length, so a hostile file gives a
:class:`CaffeFormatError` naming the byte offset and field, never a read past the end or an
allocation larger than the input. Unknown fields are skipped, as protobuf does.
"""
from __future__ import annotations

import mmap
import os
import struct
from typing import Any

import numpy as np

from .errors import CaffeFormatError
from .message import Message, array_dtype
from .schema import ENUMS, WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT, Field, MESSAGES

MAX_DEPTH = 100          # protobuf's default recursion limit
MAX_VARINT_BYTES = 10    # a 64-bit varint never needs more
_U64 = (1 << 64) - 1
_FIXED = {"float": "<f", "double": "<d", "fixed32": "<I", "sfixed32": "<i",
          "fixed64": "<Q", "sfixed64": "<q"}
_WIDTH = {WIRE_FIXED32: 4, WIRE_FIXED64: 8}
_FIRST_RUN = 64  # records checked at first when gathering an unpacked run (then doubled)


def encode_varint(value: int) -> bytes:
    """The varint bytes of an unsigned 64-bit value (negative ints as two's complement)."""
    value &= _U64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def varint_to_kind(value: int, kind: str) -> Any:
    """A decoded varint as the field kind reads it (truncation as protobuf's C++ casts)."""
    if kind in ("int32", "enum"):
        return _signed(value, 32)
    if kind == "int64":
        return _signed(value, 64)
    if kind == "uint32":
        return value & 0xFFFFFFFF
    if kind == "bool":
        return value != 0
    if kind in ("sint32", "sint64"):
        return (value >> 1) ^ -(value & 1)
    return value


class _Decoder:
    """One decoding pass over ``buf`` (bytes or mmap) of the file ``path``."""

    def __init__(self, buf, path: str | None):
        self.buf = buf
        self.path = path

    def error(self, pos: int, field: str, message: str) -> CaffeFormatError:
        return CaffeFormatError(self.path, f"byte {pos}", field, message)

    def varint(self, pos: int, end: int, field: str) -> tuple[int, int]:
        buf, result, shift, start = self.buf, 0, 0, pos
        while pos < end:
            if pos - start >= MAX_VARINT_BYTES:
                raise self.error(start, field, f"varint longer than {MAX_VARINT_BYTES} bytes")
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result & _U64, pos
            shift += 7
        raise self.error(start, field, f"truncated varint (message ends at byte {end})")

    def message(self, msg: Message, pos: int, end: int, depth: int) -> Message:
        """Fill ``msg`` from ``buf[pos:end]``."""
        if depth > MAX_DEPTH:
            raise self.error(pos, msg.type_name, f"messages nested deeper than {MAX_DEPTH}")
        by_number = msg.schema.by_number
        while pos < end:
            tag_pos = pos
            key, pos = self.varint(pos, end, f"{msg.type_name} (field tag)")
            number, wire = key >> 3, key & 7
            f = by_number.get(number)
            label = f"{msg.type_name}.{f.name}" if f else f"{msg.type_name} field {number}"
            if number == 0:
                raise self.error(tag_pos, label, "field number 0 is invalid")
            if f is None:
                pos = self.skip(wire, pos, end, label, tag_pos)
            elif wire == WIRE_LEN and f.wire_type != WIRE_LEN and f.repeated:
                pos = self.packed(msg, f, pos, end, label)
            elif wire != f.wire_type:
                raise self.error(tag_pos, label, f"wire type {wire}, expected {f.wire_type} for {f.kind}")
            elif f.array:
                pos = self.unpacked_run(msg, f, tag_pos, end, label)
            else:
                pos = self.single(msg, f, wire, pos, end, label, depth)
        return msg

    def skip(self, wire: int, pos: int, end: int, label: str, tag_pos: int) -> int:
        if wire == WIRE_VARINT:
            return self.varint(pos, end, label)[1]
        if wire in _WIDTH:
            return self.take(pos, _WIDTH[wire], end, label)
        if wire == WIRE_LEN:
            length, pos = self.varint(pos, end, label)
            return self.take(pos, length, end, label)
        raise self.error(tag_pos, label, f"wire type {wire} is not one of 0, 1, 2, 5")

    def take(self, pos: int, length: int, end: int, label: str) -> int:
        if length > end - pos:
            raise self.error(pos, label, f"length {length} runs past the end of its message (byte {end})")
        return pos + length

    def single(self, msg: Message, f: Field, wire: int, pos: int, end: int, label: str, depth: int) -> int:
        if wire == WIRE_VARINT:
            raw, pos = self.varint(pos, end, label)
            value = varint_to_kind(raw, f.kind)
            if f.kind == "enum":
                value = ENUMS[f.type_name].names.get(value)
                if value is None:  # proto2: an unknown enum number is kept out of the message
                    return pos
        elif wire in _WIDTH:
            start, pos = pos, self.take(pos, _WIDTH[wire], end, label)
            value = struct.unpack_from(_FIXED[f.kind], self.buf, start)[0]
        else:
            length, pos = self.varint(pos, end, label)
            start, pos = pos, self.take(pos, length, end, label)
            value = self.length_delimited(msg, f, start, pos, label, depth)
            if value is None:
                return pos
        self.store(msg, f, value)
        return pos

    def length_delimited(self, msg: Message, f: Field, start: int, stop: int, label: str, depth: int):
        if f.kind == "message":
            existing = msg._values.get(f.name) if not f.repeated else None
            sub = existing if existing is not None else Message(f.type_name, f"byte {start}")
            self.message(sub, start, stop, depth + 1)
            return None if existing is not None else sub  # a repeated singular message merges
        raw = bytes(self.buf[start:stop])
        # proto2 strings are not validated on parse; keep any bytes for an exact round trip
        return raw if f.kind == "bytes" else raw.decode("utf-8", "surrogateescape")

    @staticmethod
    def store(msg: Message, f: Field, value: Any) -> None:
        if f.repeated:
            msg._values.setdefault(f.name, []).append(value)
        else:
            msg._values[f.name] = value

    def packed(self, msg: Message, f: Field, pos: int, end: int, label: str) -> int:
        length, pos = self.varint(pos, end, label)
        start, pos = pos, self.take(pos, length, end, label)
        if f.wire_type in _WIDTH:
            width = _WIDTH[f.wire_type]
            if length % width:
                raise self.error(start, label, f"packed length {length} is not a multiple of {width}")
            values = np.frombuffer(self.buf, np.dtype(_FIXED[f.kind]), length // width, start)
        else:
            values, p = [], start
            while p < pos:
                raw, p = self.varint(p, pos, label)
                values.append(varint_to_kind(raw, f.kind))
            if f.kind == "enum":
                names = ENUMS[f.type_name].names
                values = [names[v] for v in values if v in names]
        self.extend(msg, f, values)
        return pos

    @staticmethod
    def extend(msg: Message, f: Field, values) -> None:
        old = msg._values.get(f.name)
        if f.array:
            values = values if old is None or len(old) == 0 else np.concatenate([old, values])
            msg._values[f.name] = values
        else:
            values = values.tolist() if isinstance(values, np.ndarray) else values
            msg._values[f.name] = (old or []) + list(values)

    def unpacked_run(self, msg: Message, f: Field, tag_pos: int, end: int, label: str) -> int:
        """Gather a run of unpacked elements (tag, value, tag, value, ...) with numpy."""
        tag = encode_varint(f.number << 3 | f.wire_type)
        width = _WIDTH[f.wire_type]
        rec = len(tag) + width
        tag_arr = np.frombuffer(tag, np.uint8)
        pos, chunk, parts = tag_pos, _FIRST_RUN, []
        while (avail := (end - pos) // rec) > 0:
            n = min(chunk, avail)
            recs = np.frombuffer(self.buf, np.uint8, n * rec, pos).reshape(n, rec)
            ok = (recs[:, :len(tag)] == tag_arr).all(axis=1)
            k = n if ok.all() else int(np.argmin(ok))
            parts.append(recs[:k, len(tag):].copy().view(np.dtype(_FIXED[f.kind])).ravel())
            pos += k * rec
            if k < n:
                break
            chunk *= 2
        if pos == tag_pos:  # the first element's value is cut short by the end of the message
            raise self.error(tag_pos + len(tag), label, f"truncated {f.kind} (message ends at byte {end})")
        self.extend(msg, f, np.concatenate(parts).astype(array_dtype(f), copy=False))
        return pos


def decode(buf, type_name: str = "NetParameter", path: str | os.PathLike | None = None) -> Message:
    """Decode a whole buffer (bytes, memoryview or mmap) as one ``type_name`` message."""
    if type_name not in MESSAGES:
        raise KeyError(f"no message {type_name!r} in the caffe.proto subset")
    dec = _Decoder(buf, None if path is None else str(path))
    return dec.message(Message(type_name, "byte 0"), 0, len(buf), 0)


class FileMap(mmap.mmap):
    """A file's bytes mapped by :func:`map_file`: the ``mmap`` plus ``path``, the file's
    identity when mapped (``identity``: device and inode), whether views may be written
    (``writable``: copy-on-write) and the mapping's address, so that :func:`file_range` can
    tell which bytes of which file a blob view holds."""

    path: str
    identity: tuple[int, int]
    writable: bool
    address: int


def map_file(path: str | os.PathLike, writable: bool = True):
    """The file's bytes as a :class:`FileMap` (``b""`` for an empty file): private
    copy-on-write by default, read-only with ``writable=False``.

    Copy-on-write lets the blob views be writable numpy arrays without ever changing the file;
    read-only views are the file's bytes for as long as they live, which lets a writer copy
    them from the file in the kernel (:func:`file_range`). Either way pages are read from the
    page cache only when an array is touched.
    """
    with open(path, "rb") as fh:
        stat = os.fstat(fh.fileno())
        if stat.st_size == 0:
            return b""
        mapped = FileMap(fh.fileno(), stat.st_size, access=mmap.ACCESS_COPY if writable else mmap.ACCESS_READ)
    mapped.path, mapped.identity, mapped.writable = os.fspath(path), (stat.st_dev, stat.st_ino), writable
    mapped.address = np.frombuffer(mapped, np.uint8, 1).__array_interface__["data"][0]
    return mapped


def file_range(array: np.ndarray) -> tuple[FileMap, int] | None:
    """``(mapping, offset)`` when ``array``'s bytes are, in order and contiguous, the bytes of
    a file mapped read-only by :func:`map_file` from ``offset`` on (a packed blob's view, as
    ``read_binaryproto(..., writable=False)`` gives it, reshaped or not); else None (a copy, an
    unpacked blob, a copy-on-write view whose memory may differ from the file)."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # numpy keeps the buffer it was given as a memoryview
        base = base.obj
    if not isinstance(base, FileMap) or base.writable or not array.flags.c_contiguous:
        return None
    offset = array.__array_interface__["data"][0] - base.address
    return (base, offset) if 0 <= offset and offset + array.nbytes <= len(base) else None


def read_binaryproto(path: str | os.PathLike, type_name: str = "NetParameter", writable: bool = True) -> Message:
    """Read a binary protobuf file (a ``.caffemodel``) as a ``type_name`` message; its packed
    blobs are views of the file mapped by :func:`map_file` (``writable``: copy-on-write)."""
    return decode(map_file(path, writable), type_name, path)
