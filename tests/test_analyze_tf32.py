"""benchmarks/analyze_tf32.py: the TF32 rounding it emulates and the bookkeeping around it."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from port.run import speed


@pytest.fixture(scope="module")
def analyze():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "analyze_tf32.py"
    spec = importlib.util.spec_from_file_location("analyze_tf32", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_to_tf32_rounds_to_nearest_even_on_10_mantissa_bits(analyze):
    assert analyze.to_tf32 is speed.to_tf32  # the emulation rounds as the split mode does
    ulp = 2.0 ** -10
    x = torch.tensor([1.0, 1 + ulp, 1 + ulp / 2, 1 + 3 * ulp / 2, 1 + 0.7 * ulp, -(1 + 3 * ulp / 2), 0.0])
    expected = torch.tensor([1.0, 1 + ulp, 1.0, 1 + 2 * ulp, 1 + ulp, -(1 + 2 * ulp), 0.0])
    assert torch.equal(analyze.to_tf32(x), expected)
    # against a float64 transcription: scale each value's mantissa to 10 bits, round half to even
    values = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 300
    v = values.double().numpy()
    exponent = np.floor(np.log2(np.abs(v)))
    reference = np.round(v / 2.0 ** (exponent - 10)) * 2.0 ** (exponent - 10)
    np.testing.assert_array_equal(analyze.to_tf32(values).double().numpy(), reference)


def test_emulation_rounds_only_the_named_layers_and_restores_them(analyze):
    from port.models import get_model
    from port.cli.selfcheck import randomize
    model = randomize(get_model("fcn8s", width_divisor=16), seed=0).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with analyze.Tf32Emulation(model, weights=["conv5_1"], inputs=[]):
        assert torch.equal(model.conv5_1.weight, analyze.to_tf32(before["conv5_1.weight"]))
        assert not torch.equal(model.conv5_1.weight, before["conv5_1.weight"])
        assert torch.equal(model.conv4_1.weight, before["conv4_1.weight"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_quick_analysis_reports_every_group(analyze):
    result = analyze.analyse(16, (48, 64), 1)
    groups = [r["group"] for r in result["rows"]]
    assert groups[:3] == ["all layers", "all layers, weights only", "all layers, inputs only"]
    assert {"conv5", "all but conv5", "trunk (conv1-conv5)"} <= set(groups)
    assert groups[-1].startswith("all layers but conv5's weights")
    for r in result["rows"]:
        assert r["pixels"] == 48 * 64 and 0 <= r["flipped"] <= r["pixels"]
        assert r["agreement"] == pytest.approx(1 - r["flipped"] / r["pixels"])
    assert "| all but conv5 |" in analyze.markdown(result)
