"""The small pure parts of benchmarks/gpu_passes.py and benchmarks/bench_metrics.py (nothing
here is timed; the scripts' figures are in benchmarks/RESULTS.md)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from port.run import speed

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # gpu_passes imports gpu_check as a sibling
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_passes_mode_names():
    passes = _load("gpu_passes")
    assert passes.mode_named("fast-tf32-conv5-split") is speed.FAST_TF32_SPLIT5
    nondet = passes.mode_named("fast-tf32+nondet")
    assert nondet.cudnn_deterministic is False and nondet.tf32 and nondet.name == "fast-tf32+nondet"
    with speed.backend_flags(nondet):
        import torch
        assert torch.backends.cudnn.deterministic is False
    with pytest.raises(SystemExit, match="unknown mode 'bogus'"):
        passes.mode_named("bogus+nondet")


def test_bench_metrics_checks_every_stripe_count_against_one_copy(tmp_path, capsys):
    """One repeat on the CPU: the script itself raises if a striped matrix differs."""
    bench = _load("bench_metrics")
    assert bench.main(["--device", "cpu", "--repeat", "1", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "| 16 | 3/4 background | 128 |" in out and "| 1 | uniform | 1 |" in out
    assert (tmp_path / "m.json").read_text().count('"stripes"') == 8


def test_gpu_check_throughput_modes_are_names_gpu_passes_knows():
    """gpu_check runs each throughput row through gpu_passes's child by mode name."""
    passes, check = _load("gpu_passes"), _load("gpu_check")
    for mode in check.THROUGHPUT_MODES:
        assert passes.mode_named(mode.name) == mode
    assert passes.mode_named("fast-tf32+benchmark").cudnn_benchmark
