"""Protobuf text format (``.prototxt``, solver files) read into :class:`Message`.

Follows ``google::protobuf::TextFormat::Parser`` as Caffe's ``ReadProtoFromTextFile`` uses it:
nested messages with or without ``:`` and with ``{}`` or ``<>``, repeated fields given one per
line or as ``[a, b]`` lists, strings with C escapes (adjacent strings concatenate), integers
(decimal, hex, octal), floats with exponents, ``inf``/``nan``, enum identifiers or numbers,
``#`` comments, optional ``,``/``;`` separators. Float fields are rounded to float32 as Caffe
holds them. Unknown fields are an error, as in Caffe.
"""
from __future__ import annotations

import bisect
import math
import os
import re
import warnings
from typing import Any

import numpy as np

from .errors import CaffeFormatError
from .message import Message
from .schema import ENUMS, INT_RANGES, Field

MAX_DEPTH = 100  # protobuf's default recursion limit (CodedInputStream / TextFormat)

_TOKEN = re.compile(r"""
    (?P<ws>(?:\s+|\#[^\n]*)+)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<num>-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}<>\[\]:,;])
""", re.VERBOSE)
_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\", "'": b"'", '"': b'"', "a": b"\a",
            "b": b"\b", "f": b"\f", "v": b"\v", "?": b"?"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_FLOAT_WORDS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}
_BOOL_WORDS = {"true": True, "True": True, "t": True, "1": True,
               "false": False, "False": False, "f": False, "0": False}


class _Tokens:
    """The token stream of one text, each token with its kind and ``line:col``."""

    def __init__(self, text: str, path: str):
        self.path = path
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise self.error_at(pos, "text", f"unexpected character {text[pos]!r}")
            if m.lastgroup != "ws":
                self.toks.append((m.lastgroup, m.group(), pos))
            pos = m.end()
        self.end = len(text)
        self.i = 0

    def where(self, pos: int) -> str:
        line = bisect.bisect_right(self.line_starts, pos)
        return f"{line}:{pos - self.line_starts[line - 1] + 1}"

    def error_at(self, pos: int, field: str, message: str) -> CaffeFormatError:
        return CaffeFormatError(self.path, self.where(pos), field, message)

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i] if self.i < len(self.toks) else ("eof", "end of file", self.end)

    def take(self) -> tuple[str, str, int]:
        tok = self.peek()
        self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text and self.peek()[0] == "punct":
            self.i += 1
            return True
        return False

    def expect(self, text: str, field: str) -> None:
        kind, got, pos = self.peek()
        if not self.accept(text):
            raise self.error_at(pos, field, f"expected {text!r}, got {got!r}")


def parse_text(text: str, type_name: str = "NetParameter", path: str = "<string>") -> Message:
    """Parse protobuf text ``text`` as a ``type_name`` message (Caffe's ``ReadProtoFromTextFile``).

    Raises :class:`CaffeFormatError` naming ``path:line:col``, the field and what was expected.
    """
    toks = _Tokens(text, path)
    msg = Message(type_name, source_pos="1:1")
    _parse_body(toks, msg, close=None, depth=0)
    return msg


def read_prototxt(path: str | os.PathLike, type_name: str = "NetParameter") -> Message:
    """Read a ``.prototxt`` file (UTF-8) as a ``type_name`` message."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CaffeFormatError(path, f"byte {e.start}", "text", "not UTF-8 text") from None
    return parse_text(text, type_name, str(path))


def _parse_body(toks: _Tokens, msg: Message, close: str | None, depth: int) -> None:
    """Fields of ``msg`` up to the ``close`` bracket (or the end of the text)."""
    while True:
        kind, name, pos = toks.take()
        if close is not None and kind == "punct" and name == close:
            return
        if kind == "eof":
            if close is None:
                return
            raise toks.error_at(pos, msg.type_name, f"expected {close!r} before end of file")
        if kind != "ident":
            raise toks.error_at(pos, msg.type_name, f"expected a field name, got {name!r}")
        f = msg.schema.by_name.get(name)
        if f is None:
            raise toks.error_at(pos, f"{msg.type_name}.{name}", f"no field {name!r} in {msg.type_name}")
        _parse_field(toks, msg, f, depth)
        toks.accept(",") or toks.accept(";")


def _parse_field(toks: _Tokens, msg: Message, f: Field, depth: int) -> None:
    label = f"{msg.type_name}.{f.name}"
    colon = toks.accept(":")
    if f.kind != "message" and not colon:
        raise toks.error_at(toks.peek()[2], label, f"expected ':' after {f.name}, got {toks.peek()[1]!r}")
    if toks.accept("["):
        if not f.repeated:
            raise toks.error_at(toks.peek()[2], label, "a [list] for a field that is not repeated")
        while not toks.accept("]"):
            _store(msg, f, _parse_value(toks, f, label, depth))
            if not toks.accept(",") and toks.peek()[1] != "]":
                raise toks.error_at(toks.peek()[2], label, f"expected ',' or ']', got {toks.peek()[1]!r}")
        return
    _store(msg, f, _parse_value(toks, f, label, depth))


def _store(msg: Message, f: Field, value: Any) -> None:
    if f.repeated:
        msg.add(f.name, value)
    elif f.kind == "message" and msg.has(f.name):
        # a singular message given twice merges, as in TextFormat::Parser
        for name, v in value.fields():
            msg.__getattr__(f.name).set(name, v)
    else:
        msg.set(f.name, value)


def _parse_value(toks: _Tokens, f: Field, label: str, depth: int) -> Any:
    if f.kind == "message":
        kind, tok, pos = toks.peek()
        if tok not in ("{", "<"):
            raise toks.error_at(pos, label, f"expected '{{' to open a {f.type_name}, got {tok!r}")
        if depth + 1 > MAX_DEPTH:
            raise toks.error_at(pos, label, f"messages nested deeper than {MAX_DEPTH}")
        toks.take()
        sub = Message(f.type_name, source_pos=toks.where(pos))
        _parse_body(toks, sub, "}" if tok == "{" else ">", depth + 1)
        return sub
    kind, tok, pos = toks.take()
    try:
        if f.kind in ("string", "bytes"):
            return _string(toks, f, kind, tok)
        return _scalar(f, kind, tok)
    except ValueError as e:
        raise toks.error_at(pos, label, str(e)) from None


def _string(toks: _Tokens, f: Field, kind: str, tok: str) -> Any:
    if kind != "str":
        raise ValueError(f"expected a quoted string, got {tok!r}")
    data = _unescape(tok[1:-1])
    while toks.peek()[0] == "str":  # adjacent literals concatenate
        data += _unescape(toks.take()[1][1:-1])
    if f.kind == "bytes":
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("string is not valid UTF-8") from None


def _unescape(body: str) -> bytes:
    def one(m: re.Match) -> bytes:
        s = m.group(1)
        if s[0] == "x":
            return bytes([int(s[1:], 16)])
        if s[0] in "01234567":
            value = int(s, 8)
            if value > 255:
                raise ValueError(f"octal escape \\{s} is over 255")
            return bytes([value])
        if s in _ESCAPES:
            return _ESCAPES[s]
        raise ValueError(f"unknown escape \\{s}")
    out, last = bytearray(), 0
    for m in _ESCAPE.finditer(body):
        out += body[last:m.start()].encode("utf-8") + one(m)
        last = m.end()
    return bytes(out + body[last:].encode("utf-8"))


def _scalar(f: Field, kind: str, tok: str) -> Any:
    """One scalar or enum token converted to the field's kind (ValueError says why not)."""
    if f.kind == "enum":
        return _enum(f, kind, tok)
    if f.kind == "bool":
        if tok not in _BOOL_WORDS:
            raise ValueError(f"expected true or false, got {tok!r}")
        return _BOOL_WORDS[tok]
    if f.kind in ("float", "double"):
        return _float(f, kind, tok)
    return _integer(f, kind, tok)


def _enum(f: Field, kind: str, tok: str) -> str:
    values = ENUMS[f.type_name].values
    if kind == "ident" and tok in values:
        return tok
    if kind == "num" and _is_int(tok) and int(tok, 0) in values.values():
        return ENUMS[f.type_name].names[int(tok, 0)]
    raise ValueError(f"expected one of {', '.join(values)} ({f.type_name}), got {tok!r}")


def _is_int(tok: str) -> bool:
    return re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|\d+)", tok) is not None


def _integer(f: Field, kind: str, tok: str) -> int:
    if kind != "num" or not _is_int(tok):
        raise ValueError(f"expected an integer ({f.kind}), got {tok!r}")
    neg, digits = tok.startswith("-"), tok.lstrip("-")
    if digits.lower().startswith("0x"):
        value = int(digits, 16)
    elif len(digits) > 1 and digits.startswith("0"):
        value = int(digits, 8)  # C-style octal, as protobuf's tokenizer reads it
    else:
        value = int(digits)
    value = -value if neg else value
    lo, hi = INT_RANGES[f.kind]
    if not lo <= value <= hi:
        raise ValueError(f"{value} is out of range for {f.kind} [{lo}, {hi}]")
    return value


def _float(f: Field, kind: str, tok: str) -> float:
    word = tok.lstrip("-").lower()
    if kind == "ident" and word in _FLOAT_WORDS:
        value = _FLOAT_WORDS[word]
    elif kind == "num" and not tok.lower().lstrip("-").startswith("0x"):
        value = float(tok.rstrip("fF"))
    else:
        raise ValueError(f"expected a number ({f.kind}), got {tok!r}")
    value = -value if tok.startswith("-") and kind == "ident" else value
    if f.kind == "float":
        with warnings.catch_warnings():  # out-of-range becomes inf, as SafeDoubleToFloat does
            warnings.simplefilter("ignore", RuntimeWarning)
            value = float(np.float32(value))
    return value
