"""Which torch device a run may use, checked before any work starts.

One place for the check that ``python -m port forward``/``selfcheck`` and ``python -m
reproduce`` make of ``--device``: a :class:`DeviceError` that names the device, why it cannot
run here and what can, instead of PyTorch's assertion from deep inside the first layer.
"""
from __future__ import annotations

import functools
import platform
import subprocess
import sys
from pathlib import Path

import torch

from port.errors import PortError

__all__ = ["DeviceError", "available_devices", "default_device", "check_device", "device_name", "cpu_name", "cpuinfo_cpu_name"]


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


def default_device() -> str:
    """The default ``--device`` of every command that runs a net on data (evaluation, the
    demo, training): ``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


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


#: The /proc/cpuinfo fields that name the CPU, best first: x86's ``model name``; on 32-bit ARM
#: kernels ``Processor`` (the core, e.g. ``ARMv7 Processor rev 4 (v7l)``; the lower-case
#: ``processor`` lines are only indices), then ``Hardware`` (the SoC or board).
CPUINFO_NAME_FIELDS = ("model name", "Processor", "Hardware")


def cpuinfo_cpu_name(text: str) -> str | None:
    """The CPU's name in the text of Linux ``/proc/cpuinfo`` (the first value of the first of
    :data:`CPUINFO_NAME_FIELDS` present, runs of spaces collapsed), or None when it names
    none (e.g. arm64 kernels, which list only implementer and part numbers)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), " ".join(value.split()))
    return next((fields[key] for key in CPUINFO_NAME_FIELDS if key in fields), None)


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name: Linux ``/proc/cpuinfo`` (:func:`cpuinfo_cpu_name`), macOS
    ``sysctl -n machdep.cpu.brand_string``; else, or where those say nothing,
    ``platform.processor()`` (empty on Linux) or ``platform.machine()`` (``x86_64``)."""
    name = None
    system = platform.system()
    if system == "Linux":
        try:
            name = cpuinfo_cpu_name(Path("/proc/cpuinfo").read_text(errors="replace"))
        except OSError:
            pass
    elif system == "Darwin":
        try:
            done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5, check=False)
            name = " ".join(done.stdout.split()) if done.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            pass
    return name or platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """What a report calls ``device``: the GPU's name, else the CPU's (:func:`cpu_name`)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def device_usable(name: str, prog: str) -> bool:
    """:func:`check_device` for a command line: True when ``name`` can run, else False after
    printing the one-line reason, prefixed by the command ``prog``, to stderr."""
    try:
        check_device(name)
    except DeviceError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return False
    return True
