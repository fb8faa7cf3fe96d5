"""The model registry: released FCN nets by name, with near-name suggestions for typos.

``register`` refuses a second builder under a taken name (timm's registry only warns;
a silently replaced builder is a bug that surfaces far away).
"""
from __future__ import annotations

import difflib
from typing import Any, Callable

from torch import nn

from port.errors import PortError
from port.models.meta import ModelMeta

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_METAS: dict[str, ModelMeta] = {}


class UnknownModelError(PortError):
    """A model name that is not registered; the message suggests the nearest names. A bad
    value the user gave (a ``PortError``, hence a ``ValueError``), not a missing mapping key."""


class DuplicateModelError(ValueError):
    """A second builder registered under a name that is already taken."""


def register(meta: ModelMeta) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder`` under ``meta.name``; a taken name raises."""
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
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
    if key.startswith("voc_") and key[4:] in _BUILDERS:  # the upstream folder of a VOC net
        key = key[4:]
    return key


def _lookup(name: str) -> str:
    key = normalize_name(name)
    if key in _BUILDERS:
        return key
    near = difflib.get_close_matches(key, list(_BUILDERS), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    raise UnknownModelError(f"unknown model {name!r}{hint} (known: {', '.join(sorted(_BUILDERS))})")


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with the builder's keyword arguments."""
    return _BUILDERS[_lookup(name)](**kwargs)


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The registered builder function ``name``."""
    return _BUILDERS[_lookup(name)]


def get_meta(name: str) -> ModelMeta:
    """The :class:`ModelMeta` of the registered model ``name``."""
    return _METAS[_lookup(name)]


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_BUILDERS)
