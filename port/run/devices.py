"""Which torch device a run may use, checked before any work starts.

One place for the check that ``python -m port forward``/``selfcheck`` and ``python -m
reproduce`` make of ``--device``: a :class:`DeviceError` that names the device, why it cannot
run here and what can, instead of PyTorch's assertion from deep inside the first layer.
"""
from __future__ import annotations

import platform
import sys

import torch

from port.errors import PortError

__all__ = ["DeviceError", "available_devices", "check_device", "device_name"]


class DeviceError(PortError):
    """A torch device that this PyTorch build or this machine cannot run on."""


def available_devices() -> list[str]:
    """The devices a run can use here: ``cpu``, each visible CUDA device, ``mps``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def _unavailable(device: torch.device) -> str | None:
    """Why ``device`` cannot run here, or None when it can."""
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            return "this PyTorch was built without CUDA"
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index is not None and device.index < count or device.index is None and count:
            return None
        return f"{count} CUDA device(s) visible"
    if device.type == "mps" and torch.backends.mps.is_available():
        return None
    return f"no {device.type} device is available"


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a :class:`torch.device`, checked up front: a :class:`DeviceError` naming
    it and the available devices, instead of PyTorch's assertion deep inside a run."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise DeviceError(f"device {str(name)!r} is not a torch device name; "
                          f"available: {', '.join(available_devices())}") from err
    reason = _unavailable(device)
    if reason is not None:
        raise DeviceError(f"device {str(name)!r}: {reason}; available: {', '.join(available_devices())}")
    return device


def device_name(device: torch.device) -> str:
    """What a report calls ``device``: the GPU's name, else the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def device_usable(name: str, prog: str) -> bool:
    """:func:`check_device` for a command line: True when ``name`` can run, else False after
    printing the one-line reason, prefixed by the command ``prog``, to stderr."""
    try:
        check_device(name)
    except DeviceError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return False
    return True
