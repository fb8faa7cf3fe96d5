"""CaffeNet against the real Caffe: every stored blob of every golden net.

Blobs: ``max|ours - caffe| / max|caffe| <= 1e-5``. Losses: Caffe's CPU SoftmaxWithLoss sums
the per-pixel terms one after another in float32 (softmax_loss_layer.cpp ``Forward_cpu``),
which by itself moves the sum by ~1e-5 relative over a few thousand pixels; so a loss is
checked twice: ours equals the exact (float64) loss of our own score blob, and Caffe's stored
loss equals that score's terms accumulated in Caffe's order and precision.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from port.net import ops
from port.caffe import load_caffemodel, load_net
from port.net.coord_map import check_crops
from port.net.engine import CaffeNet

from conftest import GOLDEN_NETS
from helpers import rel_err

TOLERANCE = 1e-5
ALL_NETS = GOLDEN_NETS + ("vgg16-v1",)


def golden_files(goldens_dir, name):
    folder = goldens_dir / name
    prototxt = folder / ("deploy.prototxt" if name == "vgg16-v1" else "net.prototxt")
    blobs = folder / ("blobs-64x64.npz" if name == "vgg16-v1" else "blobs-48x64.npz")
    return folder, prototxt, blobs


def losses(net: CaffeNet) -> dict[str, object]:
    """SoftmaxWithLoss tops -> their layer modules."""
    return {tops[0]: net.caffe_layers()[name] for name, _, tops in net.steps
            if net.caffe_layers()[name].caffe_type == "SoftmaxWithLoss"}


def loss_terms(score: np.ndarray, label: np.ndarray, layer) -> tuple[np.ndarray, float]:
    """Per-pixel ``-log(max(prob, FLT_MIN))`` (float64) over non-ignored pixels in Caffe's loop
    order (n, then h*w), and the layer's normalizer."""
    s = score.astype(np.float64)
    prob = np.exp(s - s.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    lab = label.reshape(score.shape[0], *score.shape[2:]).astype(np.int64)
    valid = lab != layer.ignore_label
    picked = np.take_along_axis(prob, np.where(valid, lab, 0)[:, None], 1)[:, 0]
    terms = -np.log(np.maximum(picked, ops.FLT_MIN))[valid]
    normalizer = {"VALID": valid.sum(), "FULL": lab.size, "BATCH_SIZE": score.shape[0], "NONE": 1}
    return terms, float(max(normalizer[layer.normalization], 1))


def check_loss(net: CaffeNet, blobs: dict, caffe_loss: np.ndarray, top: str, layer) -> None:
    score_name, label_name = next(b for name, b, t in net.steps if t[:1] == (top,))
    terms, normalizer = loss_terms(blobs[score_name].numpy(), blobs[label_name].numpy(), layer)
    exact = terms.sum() / normalizer
    assert blobs[top].item() == pytest.approx(exact, rel=1e-6), top
    caffe_order = np.add.accumulate(terms.astype(np.float32), dtype=np.float32)[-1] / np.float32(normalizer)
    assert rel_err(np.asarray(caffe_order), np.asarray(caffe_loss)) <= TOLERANCE, (top, caffe_order, caffe_loss)


def check_against(net: CaffeNet, stored) -> list[str]:
    """Run ``net`` on the stored inputs; compare every stored blob. Returns compared names."""
    with torch.no_grad():
        ours = net(return_blobs=True, **{k: stored[k] for k in net.input_names})
    loss_layers = losses(net)
    for name in stored.files:
        assert name in ours, f"Caffe blob {name!r} missing from ours"
        assert ours[name].shape == stored[name].shape, name
        if name in loss_layers:
            check_loss(net, ours, stored[name], name, loss_layers[name])
        else:
            assert rel_err(ours[name].numpy(), stored[name]) <= TOLERANCE, name
    return list(stored.files)


@pytest.mark.parametrize("name", ALL_NETS)
def test_every_blob_matches_caffe(goldens_dir, golden_nets, name):
    _, _, blobs = golden_files(goldens_dir, name)
    compared = check_against(golden_nets(name), np.load(blobs))
    assert len(compared) > len(golden_nets(name).input_names)


@pytest.mark.parametrize("name", GOLDEN_NETS)
def test_outputs_at_odd_size_match_caffe(goldens_dir, golden_nets, name):
    stored = np.load(goldens_dir / name / "outputs-97x131.npz")
    net = golden_nets(name)
    assert set(net.output_names) <= set(stored.files)
    check_against(net, stored)


@pytest.mark.parametrize("name", ALL_NETS)
def test_loaded_parameters_are_caffes(goldens_dir, golden_nets, name):
    """params.json: each blob's shape and the SHA-256 of its float32 bytes, as Caffe held them."""
    expected = json.loads((goldens_dir / name / "params.json").read_text())["layers"]
    ours = golden_nets(name).caffe_params()
    assert list(ours) == list(expected)
    for layer, params in ours.items():
        assert len(params) == len(expected[layer]), layer
        for param, blob in zip(params, expected[layer]):
            data = param.detach().numpy().astype(np.float32)
            assert int(np.prod(blob["shape"])) == data.size, layer
            assert hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest() == blob["sha256"], layer


def test_hdf5_weights_equal_binary(goldens_dir, golden_nets):
    folder = goldens_dir / "voc-fcn8s-atonce"
    h5 = folder / "weights.caffemodel.h5"
    if not h5.exists():
        pytest.skip(f"{h5} not found")
    net = CaffeNet(load_net(folder / "net.prototxt"))
    net.load_blobs(load_caffemodel(h5))
    binary = golden_nets("voc-fcn8s-atonce").state_dict()
    state = net.state_dict()
    assert list(state) == list(binary)
    for key in state:
        assert torch.equal(state[key], binary[key]), key
    check_against(net.eval(), np.load(folder / "blobs-48x64.npz"))


@pytest.mark.parametrize("name", GOLDEN_NETS)
def test_golden_crops_are_derived(goldens_dir, name):
    net = load_net(goldens_dir / name / "net.prototxt")
    derived = check_crops(net)
    assert derived == {layer.name: tuple(layer.crop_param.offset) for layer in net.layers if layer.type == "Crop"}
