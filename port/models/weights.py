"""Converted weights, as ``port.models`` users import them: the names of :mod:`port.weights`,
the one home of reading, writing and checking weights files (its docstring documents the
layout and the metadata). Kept so that ``port.models.weights`` / ``port.models.load_weights``
imports keep working; the project's own code imports :mod:`port.weights`.
"""
from __future__ import annotations

from port.weights import (  # noqa: F401  (re-exported names)
    BLOB_NAMES, BUILDER, BUILDER_KWARGS, CANDIDATES, FORMAT, FORMAT_KEY, NET_NAME, SOURCE_NAME,
    SOURCE_SHA256, WeightsError, WeightsMismatchError, builder_kwargs, load_state_strict,
    load_weights, read_metadata, resolve_kwargs,
)

__all__ = ["BLOB_NAMES", "BUILDER", "BUILDER_KWARGS", "CANDIDATES", "FORMAT", "FORMAT_KEY",
           "NET_NAME", "SOURCE_NAME", "SOURCE_SHA256", "WeightsError", "WeightsMismatchError",
           "builder_kwargs", "load_state_strict", "load_weights", "read_metadata", "resolve_kwargs"]
