"""``NetSpec``: a Caffe net written out in Python, as Caffe's ``python/caffe/net_spec.py`` writes it.

Upstream ``<model>/net.py`` spells every FCN out with ``caffe.NetSpec`` and two helpers
(``conv_relu``, ``max_pool``); :mod:`port.models.nets` does the same with this class. The
result is the typed ``NetParameter`` the prototxt reader produces (:class:`port.caffe.Message`),
so a net written here and a net read from a ``.prototxt`` are one kind of thing: the same
``NetDef``, the same :class:`port.net.engine.CaffeNet`, compared field for field in the tests.

The rules are net_spec.py's:

- ``n.Convolution("conv1_1", "data", kernel_size=3, ...)`` appends one layer of that type. A
  keyword ending in ``param`` (``param=[...]``, ``convolution_param={...}``, ``loss_param=...``)
  is a field of the layer; any other keyword is a field of the type's own ``*_param`` message
  (``kernel_size`` of ``convolution_param``), else of the layer (``include``, ``loss_weight``).
  A dict is a sub-message, a list a repeated field, and a single value given to a repeated
  field becomes a one-element list (``assign_proto``).
- ``ntop=k`` names ``k`` tops (``tops=`` gives their names; the default is the layer name);
  ``in_place=True`` writes the layer's tops over its bottoms (the in-place ReLU and Dropout).
- Layers are kept in the order they are written; upstream net.py assigns every top after its
  bottoms, so net_spec's depth-first order is that order too.

Unlike net_spec.py, a layer is appended when it is written (no deferred graph walk), so
:meth:`NetSpec.crop` can derive a Crop's offsets from the geometry written so far with
:mod:`port.net.coord_map`, as upstream's ``caffe.coord_map.crop`` does.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from port.caffe import Message, NetDef, netdef_from_message
from port.caffe.schema import MESSAGES
from port.net import coord_map

__all__ = ["NetSpec", "SpecError", "assign"]

_SUFFIX = "Parameter"


class SpecError(ValueError):
    """A net written with :class:`NetSpec` that Caffe's ``NetParameter`` cannot hold (a field
    name or value the schema does not know); a programming error, not a user's file."""


def _param_names() -> dict[str, str]:
    """Layer type -> its ``*_param`` field, from ``LayerParameter``'s fields (net_spec.py
    ``param_name_dict``: ``ConvolutionParameter convolution_param`` gives ``Convolution``)."""
    names = {}
    for f in MESSAGES["LayerParameter"].fields:
        if f.name.endswith("_param") and f.kind == "message" and f.type_name.endswith(_SUFFIX):
            names[f.type_name[:-len(_SUFFIX)]] = f.name
    return names


_PARAM_OF_TYPE = _param_names()


def _coerce(msg: Message, name: str, value: Any) -> Any:
    """``value`` as field ``name`` of ``msg`` holds it (int, float, bool, enum name, string)."""
    f = msg.field(name)
    if f.kind == "bool":
        return bool(value)
    if f.kind == "float":
        return float(np.float32(value))  # Caffe holds a float field as float32, as the reader does
    if f.kind == "double":
        return float(value)
    if f.kind in ("string", "enum"):
        if not isinstance(value, str):
            raise SpecError(f"{msg.type_name}.{name}: expected a {'name' if f.kind == 'enum' else 'string'}, "
                            f"got {value!r}")
        return value
    if f.kind == "bytes":
        return value if isinstance(value, bytes) else str(value).encode()
    if isinstance(value, bool) or int(value) != value:
        raise SpecError(f"{msg.type_name}.{name}: expected an integer, got {value!r}")
    return int(value)


def assign(msg: Message, name: str, value: Any) -> None:
    """Set field ``name`` of ``msg`` from a Python value (net_spec.py ``assign_proto``): dicts
    are sub-messages, lists repeated fields (a lone value given to a repeated field is a list
    of one), everything else a scalar coerced to the field's kind."""
    try:
        f = msg.field(name)
    except AttributeError as err:
        raise SpecError(str(err)) from None
    if f.repeated and not isinstance(value, (list, tuple)):
        value = [value]
    if f.repeated:
        for item in value:
            if f.kind == "message":
                sub = msg.add(name)
                for key, val in dict(item).items():
                    assign(sub, key, val)
            else:
                msg.add(name, _coerce(msg, name, item))
    elif f.kind == "message":
        sub = getattr(msg, name)  # attaches itself to msg when a field is set
        if not isinstance(value, Mapping):
            raise SpecError(f"{msg.type_name}.{name}: expected a dict for a {f.type_name}, got {value!r}")
        if not value:
            msg.set(name, sub)
        for key, val in value.items():
            assign(sub, key, val)
    else:
        msg.set(name, _coerce(msg, name, value))


class NetSpec:
    """A net written layer by layer; :meth:`to_proto` is its ``NetParameter``, :meth:`netdef`
    its typed ``NetDef``. ``n.<Type>(name, *bottoms, **fields)`` appends a layer (see the
    module docstring) and returns its top name, or a tuple of names for ``ntop > 1``."""

    def __init__(self, name: str = ""):
        self._net = Message("NetParameter")
        if name:
            self._net.name = name
        self._names: set[str] = set()
        #: Geometry of the layers written so far, for :meth:`crop`'s derivations (each layer's
        #: computed once; a Crop's only once its offsets are written).
        self._geometry: list[coord_map.Geometry] = []

    def layer(self, type_name: str, name: str, *bottoms: str, ntop: int = 1,
              tops: Sequence[str] | None = None, in_place: bool = False, **fields: Any) -> Any:
        """Append a layer of ``type_name`` called ``name`` reading ``bottoms``."""
        if name in self._names:
            raise SpecError(f"layer {name!r} written twice")
        self._names.add(name)
        layer = self._net.add("layer")
        layer.name, layer.type = name, type_name
        if bottoms:
            layer.bottom = list(bottoms)
        if in_place:
            top_names = list(bottoms)
        elif tops is not None:
            top_names = list(tops)
        else:
            top_names = [name] if ntop == 1 else [f"{name}_{i}" for i in range(ntop)]
        if len(top_names) != (len(bottoms) if in_place else ntop) and tops is not None:
            raise SpecError(f"layer {name!r}: {len(top_names)} top names for ntop={ntop}")
        if top_names:
            layer.top = top_names
        own = _PARAM_OF_TYPE.get(type_name)
        for key, value in fields.items():
            if key.endswith("param"):
                assign(layer, key, value)
            elif own is not None and key in getattr(layer, own).schema.by_name:
                assign(getattr(layer, own), key, value)
            else:
                assign(layer, key, value)
        return top_names[0] if len(top_names) == 1 else tuple(top_names)

    def __getattr__(self, type_name: str) -> Callable[..., Any]:
        # n.Convolution(...), n.ReLU(...): any capitalised name is a layer type, as L.<Type>.
        if not re.match(r"[A-Z]", type_name):
            raise AttributeError(type_name)
        return lambda name, *bottoms, **fields: self.layer(type_name, name, *bottoms, **fields)

    def crop(self, name: str, bottom: str, reference: str) -> str:
        """A Crop of ``bottom`` to ``reference``'s size with the offsets their coordinate maps
        imply (upstream ``caffe.coord_map.crop``: ``axis: 2``, ``offset`` from the maps)."""
        top = self.layer("Crop", name, bottom, reference, crop_param={"axis": coord_map.SPATIAL_AXIS})
        # Read in place (no copy of the net so far): the derivation only reads the layers.
        done = self._geometry
        done += [coord_map.geometry_from_layer(layer) for layer in netdef_from_message(self._net).layers[len(done):]]
        offsets = coord_map.derive_crop_offset(done, name)
        self._net.layer[-1].crop_param.offset = list(offsets)
        done.pop()  # its offsets are written now: the next crop reads them
        return top

    def to_proto(self) -> Message:
        """The ``NetParameter`` written so far (a copy: later layers do not change it)."""
        return self._net.copy()

    def netdef(self) -> NetDef:
        """The typed view (:class:`port.caffe.NetDef`) of the net written so far."""
        return netdef_from_message(self.to_proto())
