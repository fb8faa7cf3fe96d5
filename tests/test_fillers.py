"""Caffe's fillers (filler.hpp): distributions by their moments, the fan rules, the bilinear
kernel bit for bit against the blob Caffe's own BilinearFiller wrote, and fill_net's choice of
filler per layer type."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from port.caffe import load_caffemodel, parse_text
from port.net.engine import CaffeNet
from port.caffe.net import netdef_from_message
from port.net import fillers
from port.net.fillers import FillerError, fan_in_out, fill, fill_net


def _gen(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_constant_default_is_zero_and_value():
    assert torch.equal(fill((3, 4)), torch.zeros(3, 4))
    assert torch.equal(fill((2,), {"type": "constant", "value": 0.25}), torch.full((2,), 0.25))


def test_uniform_moments_and_bounds():
    x = fill((200, 500), {"type": "uniform", "min": -2.0, "max": 3.0}, _gen(1)).double()
    assert x.min() >= -2 and x.max() <= 3
    assert abs(x.mean() - 0.5) < 0.02 and abs(x.var() - 25 / 12) < 0.03


def test_gaussian_moments_and_sparse_mask():
    x = fill((100, 1000), {"type": "gaussian", "mean": 1.5, "std": 0.5}, _gen(2)).double()
    assert abs(x.mean() - 1.5) < 0.005 and abs(x.std() - 0.5) < 0.005
    # sparse: each value kept with probability sparse / shape[0]
    y = fill((20, 5000), {"type": "gaussian", "std": 1.0, "sparse": 5}, _gen(3))
    kept = (y != 0).double().mean().item()
    assert abs(kept - 5 / 20) < 0.01
    assert abs(y[y != 0].double().std().item() - 1.0) < 0.02
    with pytest.raises(FillerError, match="probability"):
        fill((2, 3), {"type": "gaussian", "sparse": 5})
    with pytest.raises(FillerError, match="gaussian filler only"):
        fill((2, 3), {"type": "uniform", "sparse": 1})


def test_fan_rules_are_filler_hpp_integer_divisions():
    assert fan_in_out((64, 3, 7, 7)) == (3 * 49, 64 * 49)
    assert fan_in_out((10, 7)) == (7, 10)
    assert fan_in_out((5,)) == (1, 5)  # one axis: fan_out = count
    assert fan_in_out((6, 4, 3)) == (12, 18)


@pytest.mark.parametrize("norm", ["FAN_IN", "FAN_OUT", "AVERAGE"])
def test_xavier_and_msra_scales_follow_the_fan_rule(norm):
    shape = (40, 60, 3, 3)
    fan_in, fan_out = 60 * 9, 40 * 9
    n = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[norm]
    x = fill(shape, {"type": "xavier", "variance_norm": norm}, _gen(4)).double()
    bound = math.sqrt(3 / n)
    assert x.abs().max() <= bound * (1 + 1e-6) and x.abs().max() > 0.99 * bound
    assert abs(x.var().item() - bound ** 2 / 3) < 0.03 * bound ** 2 / 3
    m = fill(shape, {"type": "msra", "variance_norm": norm}, _gen(5)).double()
    assert abs(m.std().item() - math.sqrt(2 / n)) < 0.02 * math.sqrt(2 / n)
    assert abs(m.mean().item()) < 0.01 * math.sqrt(2 / n) * 5


def test_positive_unitball_rows_sum_to_one():
    x = fill((7, 3, 4), {"type": "positive_unitball"}, _gen(6))
    assert (x >= 0).all()
    assert torch.allclose(x.reshape(7, -1).sum(1), torch.ones(7), atol=1e-6)


def test_bilinear_equals_caffes_own_filler(goldens_dir):
    """solver-zoo's up2 (grouped, frozen) was filled by Caffe's BilinearFiller."""
    blob = load_caffemodel(goldens_dir / "solver-zoo" / "step-l2" / "init.caffemodel").layer("up2").blobs[0]
    ours = fill(blob.shape, {"type": "bilinear"}).numpy()
    assert ours.tobytes() == np.ascontiguousarray(blob, dtype=np.float32).tobytes()
    odd = fill((1, 1, 3, 3), {"type": "bilinear"})[0, 0]
    # f = 2, c = 0.5: ramp (1 - |x/2 - 1/2|) = 0.5, 1, 0.5
    assert torch.equal(odd, torch.tensor([[.25, .5, .25], [.5, 1, .5], [.25, .5, .25]]))
    with pytest.raises(FillerError, match="square"):
        fill((1, 1, 3, 4), {"type": "bilinear"})


def test_errors_name_the_blob():
    with pytest.raises(FillerError, match="layer 'x' blob 0: unknown filler type 'nope'"):
        fill((2,), {"type": "nope"}, where="layer 'x' blob 0")
    with pytest.raises(FillerError, match="std must be > 0"):
        fill((2,), {"type": "gaussian", "std": 0.0})
    with pytest.raises(FillerError, match="min"):
        fill((2,), {"type": "uniform", "min": 1.0, "max": 0.0})


NET = """
name: "f"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 6 kernel_size: 3
    weight_filler { type: "msra" } bias_filler { type: "constant" value: 0.5 } } }
layer { name: "nob" type: "Convolution" bottom: "conv" top: "nob"
  convolution_param { num_output: 4 kernel_size: 1 bias_term: false } }
layer { name: "sc" type: "Scale" bottom: "nob" top: "sc" scale_param { bias_term: true } }
layer { name: "sc2" type: "Scale" bottom: "sc" top: "sc2"
  scale_param { filler { type: "uniform" min: 2 max: 3 } bias_term: true bias_filler { type: "constant" value: -1 } } }
layer { name: "up" type: "Deconvolution" bottom: "sc2" top: "up"
  convolution_param { num_output: 4 group: 4 kernel_size: 4 stride: 2 bias_term: false weight_filler { type: "bilinear" } } }
layer { name: "ip" type: "InnerProduct" bottom: "up" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
"""


def test_fill_net_uses_each_layers_fillers_and_is_seeded():
    net = CaffeNet(netdef_from_message(parse_text(NET)))
    used = fill_net(net, seed=7)
    assert used == {"conv": ["msra", "constant"], "nob": ["constant"], "sc": ["constant", "constant"],
                    "sc2": ["uniform", "constant"], "up": ["bilinear"], "ip": ["xavier", "constant"]}
    assert torch.all(net.conv.bias == 0.5) and net.conv.weight.std() > 0
    assert torch.all(net.nob.weight == 0)
    assert torch.all(net.sc.weight == 1) and torch.all(net.sc.bias == 0)  # Scale's default: 1
    assert torch.all((net.sc2.weight >= 2) & (net.sc2.weight <= 3)) and torch.all(net.sc2.bias == -1)
    assert torch.all(net.ip.bias == 0)
    again = CaffeNet(netdef_from_message(parse_text(NET)))
    fill_net(again, seed=7)
    for a, b in zip(net.parameters(), again.parameters()):
        assert torch.equal(a, b)
    other = CaffeNet(netdef_from_message(parse_text(NET)))
    fill_net(other, seed=8)
    assert not torch.equal(other.conv.weight, net.conv.weight)


def test_layer_without_filler_rule_is_refused():
    layer = netdef_from_message(parse_text('layer { name: "p" type: "PReLU" bottom: "x" top: "y" }')).layers[0]
    with pytest.raises(FillerError, match="layer 'p'.*PReLU"):
        fillers.layer_fillers(layer)


def test_training_names_are_the_engines_fillers():
    """port.training.fillers keeps its names (reproduce.training imports fill_net from it); they
    are port.net.fillers' objects, the one home of Caffe's fillers."""
    from port.training import fillers as training_fillers
    for name in training_fillers.__all__:
        assert getattr(training_fillers, name) is getattr(fillers, name), name


def test_scale_layer_starts_at_its_constant_filler():
    """scale_layer.cpp: the scale's filler, constant 1 when unset; the engine applies a constant
    filler at construction (the random ones are fill_net's)."""
    text = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "s1" type: "Scale" bottom: "data" top: "s1" }
layer { name: "s2" type: "Scale" bottom: "s1" top: "s2" scale_param { filler { type: "constant" value: 0.25 } } }
layer { name: "s3" type: "Scale" bottom: "s2" top: "s3" scale_param { filler { type: "gaussian" std: 5 } } }
"""
    net = CaffeNet(netdef_from_message(parse_text(text)))
    assert torch.all(net.s1.weight == 1) and torch.all(net.s2.weight == 0.25)
    assert torch.all(net.s3.weight == 0)  # not filled until fill_net
    fill_net(net, seed=0)
    assert torch.all(net.s1.weight == 1) and torch.all(net.s2.weight == 0.25) and net.s3.weight.std() > 0
