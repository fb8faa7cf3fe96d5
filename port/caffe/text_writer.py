"""Protobuf text format written from a :class:`Message`: the inverse of :mod:`port.caffe.text`.

Writes what ``google::protobuf::TextFormat::Printer`` writes for Caffe's messages (what
``str(net_param)`` gives in pycaffe, the form of every upstream ``.prototxt``): fields in
field-number order, two-space indentation, one line per element of a repeated field, enums by
name, strings double-quoted with C escapes, floats in the shortest form that reads back to the
same float32 (doubles: float64). Reading the text back with :func:`port.caffe.parse_text` gives
an equal message.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from port.fileio import write_text_atomic

from .message import Message
from .schema import Field

__all__ = ["format_text", "write_prototxt"]

_ESCAPES = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(value: str | bytes) -> str:
    """A double-quoted literal: quotes, backslashes and control bytes escaped; text keeps its
    non-ASCII characters (the reader decodes UTF-8), bytes get octal escapes."""
    if isinstance(value, str):
        body = "".join(_ESCAPES.get(c, c if ord(c) >= 0x20 and ord(c) != 0x7F else f"\\{ord(c):03o}")
                       for c in value)
    else:
        body = "".join(_ESCAPES.get(chr(b), chr(b) if 0x20 <= b < 0x7F else f"\\{b:03o}") for b in value)
    return '"' + body + '"'


def _float(value: float, kind: str) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    number = np.float32(value) if kind == "float" else np.float64(value)
    text = np.format_float_positional(number, unique=True, trim="-")
    if len(text) > 16:  # very large or small magnitudes read better in scientific form
        text = np.format_float_scientific(number, unique=True, trim="-")
    return text


def _scalar(f: Field, value: Any) -> str:
    if f.kind in ("string", "bytes"):
        return _string(value)
    if f.kind == "enum":
        return str(value)
    if f.kind == "bool":
        return "true" if value else "false"
    if f.kind in ("float", "double"):
        return _float(float(value), f.kind)
    return str(int(value))


def _lines(msg: Message, indent: str, out: list[str]) -> None:
    values = dict(msg.fields())
    for f in sorted((msg.field(name) for name in values), key=lambda f: f.number):
        value = values[f.name]
        items = list(value) if f.repeated else [value]
        for item in items:
            if f.kind == "message":
                out.append(f"{indent}{f.name} {{")
                _lines(item, indent + "  ", out)
                out.append(f"{indent}}}")
            else:
                out.append(f"{indent}{f.name}: {_scalar(f, item)}")


def format_text(msg: Message) -> str:
    """``msg`` in protobuf text format, ending with a newline."""
    out: list[str] = []
    _lines(msg, "", out)
    return "\n".join(out) + "\n"


def write_prototxt(path: str | os.PathLike, msg: Message) -> None:
    """Write ``msg`` (a ``NetParameter``, a ``SolverParameter``...) as text, atomically."""
    write_text_atomic(path, format_text(msg))
