"""The model registry: released FCN nets by name, with near-name suggestions for typos.

``register`` refuses a second builder under a taken name (timm's registry only warns;
a silently replaced builder is a bug that surfaces far away).

Imports no torch: every released net's name and record are known from
:mod:`port.models.released` (``list_models``, ``get_meta`` and a name's suggestions need
nothing else); the builders (:mod:`port.models.zoo`, torch) are imported when one is asked
for (``get_builder``, ``get_model``) or a released name is registered again.
"""
from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Any, Callable

from port.errors import PortError
from port.models.cast_meta import CAST
from port.models.meta import ModelMeta
from port.models.released import RELEASED

if TYPE_CHECKING:
    from torch import nn

_BUILDERS: dict[str, Callable[..., "nn.Module"]] = {}
#: The records known before any builder is imported: the released nets and the fcnize casts
#: (both torch-free); a user's ``register`` adds to ``_METAS``, never to these.
_RECORDED = frozenset(meta.name for meta in (*RELEASED, *CAST))
_METAS: dict[str, ModelMeta] = {meta.name: meta for meta in (*RELEASED, *CAST)}
#: The module whose import registers the released nets' builders.
_RELEASED_BUILDERS = "port.models.zoo"


def _load_released_builders() -> None:
    """Import the released builders (their module registers each); a no-op once done, and
    while that module is being imported (its ``register`` calls come through here)."""
    importlib.import_module(_RELEASED_BUILDERS)


class UnknownModelError(PortError):
    """A model name that is not registered; the message suggests the nearest names. A bad
    value the user gave (a ``PortError``, hence a ``ValueError``), not a missing mapping key."""


class DuplicateModelError(ValueError):
    """A second builder registered under a name that is already taken."""


def register(meta: ModelMeta) -> Callable[[Callable[..., "nn.Module"]], Callable[..., "nn.Module"]]:
    """Decorator: register ``builder`` under ``meta.name``; a taken name raises."""
    def decorate(builder: Callable[..., "nn.Module"]) -> Callable[..., "nn.Module"]:
        if meta.name in _METAS and meta.name not in _BUILDERS:
            _load_released_builders()  # a released name is taken by its builder
        if meta.name in _BUILDERS:
            raise DuplicateModelError(
                f"model name {meta.name!r} is already registered (by {_BUILDERS[meta.name].__module__}."
                f"{_BUILDERS[meta.name].__qualname__})")
        _BUILDERS[meta.name] = builder
        _METAS[meta.name] = meta
        builder.meta = meta  # type: ignore[attr-defined]
        return builder
    return decorate


def normalize_name(name: str) -> str:
    """A model name as registered: any case, dashes or underscores (``FCN8s-atonce``,
    ``siftflow-fcn8s`` and the upstream folder names ``voc-fcn8s``, ``voc-fcn-alexnet`` name
    ``fcn8s_atonce``, ``siftflow_fcn8s``, ``fcn8s``, ``fcn_alexnet``)."""
    key = str(name).strip().lower().replace("-", "_")
    if key.startswith("voc_") and key[4:] in _METAS:  # the upstream folder of a VOC net
        key = key[4:]
    return key


def _lookup(name: str) -> str:
    key = normalize_name(name)
    if key in _METAS:
        return key
    near = difflib.get_close_matches(key, list(_METAS), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    raise UnknownModelError(f"unknown model {name!r}{hint} (known: {', '.join(sorted(_METAS))})")


def get_model(name: str, **kwargs: Any) -> "nn.Module":
    """Build the registered model ``name`` with the builder's keyword arguments."""
    return get_builder(name)(**kwargs)


def get_builder(name: str) -> Callable[..., "nn.Module"]:
    """The registered builder function ``name``."""
    key = _lookup(name)
    if key not in _BUILDERS:
        _load_released_builders()
    return _BUILDERS[key]


def is_released(name: str) -> bool:
    """Whether ``name`` is one of the nets whose record the registry holds before any builder
    is imported: the released nets (:mod:`port.models.released`) and the nets fcnize casts
    (:mod:`port.models.cast_meta`, no released weights); for each,
    :func:`port.models.released.deploy_netdef` writes the definition without torch."""
    return _lookup(name) in _RECORDED


def get_meta(name: str) -> ModelMeta:
    """The :class:`ModelMeta` of the registered model ``name``."""
    return _METAS[_lookup(name)]


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_METAS)
