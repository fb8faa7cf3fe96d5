"""port.run.devices: the CPU's name for reports, read from /proc/cpuinfo or sysctl (a fake text
and a fake sysctl here), never the bare architecture where the system names the model."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest
import torch

from port.run import devices
from port.run.devices import cpuinfo_cpu_name

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU           E5-2680 v4 @ 2.40GHz
flags\t\t: fpu vme

processor\t: 1
model name\t: Intel(R) Xeon(R) CPU           E5-2680 v4 @ 2.40GHz
"""
ARM32 = """processor\t: 0
Processor\t: ARMv7 Processor rev 4 (v7l)
BogoMIPS\t: 38.40

Hardware\t: BCM2835
Revision\t: a02082
"""
ARM64 = """processor\t: 0
BogoMIPS\t: 50.00
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


def test_cpuinfo_names_the_model():
    assert cpuinfo_cpu_name(X86) == "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz"
    assert cpuinfo_cpu_name(ARM32) == "ARMv7 Processor rev 4 (v7l)"  # not the index line
    assert cpuinfo_cpu_name(ARM32.replace("Processor\t: ARMv7 Processor rev 4 (v7l)\n", "")) == "BCM2835"
    assert cpuinfo_cpu_name(ARM64) is None and cpuinfo_cpu_name("") is None


def test_cpu_device_name_is_the_model_not_the_architecture(monkeypatch):
    devices.cpu_name.cache_clear()
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a[0], 0, stdout="Apple M2 Pro\n", stderr=""))
    assert devices.device_name(torch.device("cpu")) == "Apple M2 Pro"
    devices.cpu_name.cache_clear()
    monkeypatch.setattr(platform, "system", lambda: "Plan9")
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert devices.device_name(torch.device("cpu")) == platform.machine()
    devices.cpu_name.cache_clear()


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="no /proc/cpuinfo (not Linux)")
def test_on_linux_the_name_comes_from_proc_cpuinfo():
    devices.cpu_name.cache_clear()
    expected = cpuinfo_cpu_name(Path("/proc/cpuinfo").read_text(errors="replace"))
    assert devices.cpu_name() == (expected or platform.processor() or platform.machine())
    if expected:
        assert devices.cpu_name() != platform.machine()
