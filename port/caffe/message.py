"""``Message``: a protobuf-like object over :mod:`port.caffe.schema`, without protobuf.

Reading a field behaves like the protobuf Python API: a set field gives its value, an unset
scalar its proto2 default, an unset repeated field ``[]``, an unset sub-message an empty
default ``Message``. Enum values are held as their names (``"MAX"``, ``"TEST"``). Blob payloads
(``BlobProto.data`` and friends) are numpy arrays; other repeated fields are lists.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from .schema import ENUMS, MESSAGES, Field, MessageType

_KIND_DEFAULTS = {"bool": False, "float": 0.0, "double": 0.0, "string": "", "bytes": b""}
_ARRAY_DTYPES = {"float": np.dtype("<f4"), "double": np.dtype("<f8")}


def kind_default(f: Field) -> Any:
    """The proto2 default of a singular scalar or enum field (first enum value if none given)."""
    if f.default is not None:
        return f.default
    if f.kind == "enum":
        return next(iter(ENUMS[f.type_name].values))
    return _KIND_DEFAULTS.get(f.kind, 0)


def array_dtype(f: Field) -> np.dtype:
    """The little-endian dtype a blob payload field is held in (float32 or float64)."""
    return _ARRAY_DTYPES[f.kind]


class Message:
    """One message of a caffe.proto type; fields are read as attributes.

    ``source_pos`` is where the message was read: ``"byte N"`` (binary) or ``"line:col"``
    (text), so that later checks (blob sizes) can name the place. (Not called ``offset``:
    ``CropParameter.offset`` is a field.)
    """

    __slots__ = ("_type", "_values", "source_pos", "_attach")

    def __init__(self, type_name: str, source_pos: str | None = None, **values: Any):
        object.__setattr__(self, "_type", MESSAGES[type_name])
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "source_pos", source_pos)
        object.__setattr__(self, "_attach", None)  # (parent, field) of an unset sub-message
        for name, value in values.items():
            self.set(name, value)

    @property
    def type_name(self) -> str:
        return self._type.name

    @property
    def schema(self) -> MessageType:
        return self._type

    def field(self, name: str) -> Field:
        """The schema field ``name``; AttributeError naming the message type if there is none."""
        try:
            return self._type.by_name[name]
        except KeyError:
            raise AttributeError(f"{self._type.name} has no field {name!r}") from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        f = self.field(name)
        if name in self._values:
            return self._values[name]
        if f.repeated:
            return np.empty(0, array_dtype(f)) if f.array else []
        if f.kind == "message":
            # like protobuf, setting a field of the default sub-message sets it in the parent
            sub = Message(f.type_name)
            object.__setattr__(sub, "_attach", (self, name))
            return sub
        return kind_default(f)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "source_pos":
            object.__setattr__(self, name, value)
        else:
            self.set(name, value)

    def has(self, name: str) -> bool:
        """Whether field ``name`` is set (for repeated fields: holds at least one element)."""
        self.field(name)
        value = self._values.get(name)
        return value is not None and (not self.field(name).repeated or len(value) > 0)

    def set(self, name: str, value: Any) -> "Message":
        """Set field ``name``; repeated fields take a sequence (an array for blob payloads)."""
        f = self.field(name)
        if f.repeated:
            value = np.asarray(value, array_dtype(f)) if f.array else list(value)
        self._values[name] = value
        self._attached()
        return self

    def _attached(self) -> None:
        if self._attach is not None:
            parent, name = self._attach
            object.__setattr__(self, "_attach", None)
            parent._values.setdefault(name, self)
            parent._attached()

    def add(self, name: str, value: Any = None) -> Any:
        """Append ``value`` to repeated field ``name``; with no value, append and return a new
        empty sub-message."""
        f = self.field(name)
        if not f.repeated:
            raise TypeError(f"{self._type.name}.{name} is not repeated")
        if value is None and f.kind == "message":
            value = Message(f.type_name)
        if f.array:
            self._values[name] = np.append(self.__getattr__(name), value).astype(array_dtype(f))
        else:
            self._values.setdefault(name, []).append(value)
        self._attached()
        return value

    def clear(self, name: str) -> None:
        """Unset field ``name``."""
        self.field(name)
        self._values.pop(name, None)

    def copy(self) -> "Message":
        """A deep copy of the message tree (blob arrays are shared, not copied)."""
        out = Message(self.type_name, self.source_pos)
        for name, value in self._values.items():
            if isinstance(value, Message):
                value = value.copy()
            elif isinstance(value, list):
                value = [v.copy() if isinstance(v, Message) else v for v in value]
            out._values[name] = value
        return out

    def __copy__(self) -> "Message":
        return self.copy()

    def __deepcopy__(self, memo: dict) -> "Message":
        # copy.deepcopy of a module holding a net definition (a run mode's copy of a net):
        # the message tree is copied, blob payloads are shared as in copy().
        return self.copy()

    def fields(self) -> list[tuple[str, Any]]:
        """The set fields as ``(name, value)`` pairs, in the order they were set or read."""
        return [(k, v) for k, v in self._values.items() if self.has(k)]

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.fields())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message) or other.type_name != self.type_name:
            return NotImplemented if not isinstance(other, Message) else False
        mine, theirs = dict(self.fields()), dict(other.fields())
        return mine.keys() == theirs.keys() and all(_same(mine[k], theirs[k]) for k in mine)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={_short(v)}" for k, v in self.fields())
        return f"{self.type_name}({inner})"


def _same(a: Any, b: Any) -> bool:
    """Equality that is bit-exact for arrays (so NaN payloads and -0.0 compare as stored)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    return a == b


def _short(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"<{v.dtype} array of {v.size}>"
    if isinstance(v, list) and len(v) > 8:
        return f"[{len(v)} items]"
    return repr(v)
