"""Converted weights: the safetensors layout ``port.convert`` writes and the strict loading of
it into a family model.

A converted file holds one tensor per Caffe parameter blob, named ``{layer}.weight`` (blob 0)
and ``{layer}.bias`` (blob 1), in Caffe's blob layouts, plus string metadata (keys below). No
pickle is involved at any point.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from port.errors import PortError

#: Metadata keys of a converted file.
FORMAT_KEY, FORMAT = "format", "fcn-port-weights/1"
SOURCE_SHA256, SOURCE_NAME, NET_NAME = "source_sha256", "source_name", "net_name"
BUILDER, CANDIDATES, BUILDER_KWARGS = "builder", "candidate_builders", "builder_kwargs"
#: Parameter name of each Caffe blob index.
BLOB_NAMES = ("weight", "bias")


class WeightsError(PortError):
    """Weights that cannot be loaded as asked: unreadable file, conflicting metadata, or
    parameters that do not match the model (every mismatch listed)."""


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (no tensors read)."""
    from safetensors import safe_open
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own error types
        raise WeightsError(f"{path}: not a safetensors file ({err}); convert a caffemodel "
                           f"first with `python -m port convert`") from err


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state dict, metadata)`` of a converted safetensors file, on the CPU. The tensors are
    safetensors' zero-copy views of the file mapped copy-on-write: nothing is read until used,
    writing to one changes memory only, never the file."""
    from safetensors.torch import load_file
    metadata = read_metadata(path)
    return load_file(str(path)), metadata


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    return path


def builder_kwargs(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The builder arguments a file was converted for (``num_classes``, ``width_divisor``...)."""
    raw = metadata.get(BUILDER_KWARGS, "")
    try:
        return dict(json.loads(raw)) if raw else {}
    except (ValueError, TypeError) as err:
        raise WeightsError(f"metadata {BUILDER_KWARGS!r} is not a JSON object: {raw!r}") from err


def resolve_kwargs(path: str | os.PathLike | None, builder: str, requested: Mapping[str, Any],
                   defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Builder arguments: the caller's where given, else the file's, else the defaults.
    A caller's value that conflicts with the file's, or a file converted for another
    structure than ``builder``'s, raises :class:`WeightsError` naming both."""
    if path is None:
        return {k: defaults[k] if requested[k] is None else requested[k] for k in defaults}
    metadata = read_metadata(path)
    candidates = [c for c in metadata.get(CANDIDATES, "").split(",") if c]
    if candidates and builder not in candidates:
        raise WeightsError(f"{path}: converted for builder {metadata.get(BUILDER) or candidates[0]!r} "
                           f"(same structure: {', '.join(candidates)}), not {builder!r}")
    stored = builder_kwargs(metadata)
    resolved = {}
    for key, default in defaults.items():
        given = requested.get(key)
        if given is not None and key in stored and stored[key] != given:
            raise WeightsError(f"{path}: converted with {key}={stored[key]!r}, but {builder} was "
                               f"asked for {key}={given!r}; omit {key} to use the file's")
        resolved[key] = given if given is not None else stored.get(key, default)
    return resolved


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` (which may be built on the ``meta`` device): every
    parameter filled, every tensor used, shapes equal; otherwise one :class:`WeightsError`
    listing each mismatch. The model's parameters take the tensors themselves, not copies."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = [f"  {k}: missing (expected shape {expected[k]})" for k in expected if k not in state]
    problems += [f"  {k}: unexpected tensor of shape {tuple(v.shape)}" for k, v in state.items()
                 if k not in expected]
    problems += [f"  {k}: shape {tuple(v.shape)}, expected {expected[k]}" for k, v in state.items()
                 if k in expected and tuple(v.shape) != expected[k]]
    if problems:
        raise WeightsError(f"{source}: weights do not fit {type(model).__name__} "
                           f"({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n"
                           + "\n".join(problems))
    # assign: the parameters become the given tensors (for a file, views of its mapping)
    # instead of copies, so the weights are in memory once; requires_grad stays the model's.
    current = model.state_dict(keep_vars=True)
    model.load_state_dict({k: _placed(v, current[k]) for k, v in state.items()}, strict=True, assign=True)


def _placed(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float32 on ``like``'s device (the CPU for a model built on ``meta``);
    no copy when it is there already."""
    device = torch.device("cpu") if like.is_meta else like.device
    return tensor.to(device=device, dtype=torch.float32)
