"""Proof: every goldens net, loaded into its explicit builder at 1/16 width, computes every
blob Caffe computed (48x64) and every output (97x131), losses included, and agrees with the
generic :class:`port.net.engine.CaffeNet` built from the same prototxt."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from port.net import ops
from port.caffe import load_caffemodel, load_net
from port.convert import convert
from port.net.engine import CaffeNet
from port.models import get_model

from conftest import GOLDEN_NETS
from helpers import rel_err

#: Goldens folder -> registered builder.
BUILDERS = {
    "voc-fcn32s": "fcn32s", "voc-fcn16s": "fcn16s", "voc-fcn8s": "fcn8s",
    "voc-fcn8s-atonce": "fcn8s_atonce", "voc-fcn-alexnet": "fcn_alexnet",
    "siftflow-fcn8s": "siftflow_fcn8s", "nyud-fcn32s-color-hha": "nyud_fcn32s_color_hha",
    "nyud-fcn32s-color-d": "nyud_fcn32s_color_d",
}
#: The goldens' widths (README: backbone / 16; NYUD's 40 classes become 10).
WIDTH_DIVISOR = 16
TOLERANCE = 1e-5
#: float32 unit roundoff. Caffe's SoftmaxWithLoss adds its per-pixel terms one by one in float32
#: (softmax_loss_layer.cpp), whose rounding error is bounded by (n-1) u times the (positive)
#: sum; ops.softmax_with_loss sums pairwise, closer to the exact value. Measured at 48x64:
#: Caffe 182406.89, exact (float64) 182404.88, ours 182404.89 (voc-fcn8s-atonce).
UNIT_ROUNDOFF = 2.0 ** -24


def builder_kwargs(folder: str) -> dict:
    return {"num_classes": 10} if folder.startswith("nyud") else {}


def load_builder(goldens_dir, folder, tmp_path, weights_file="weights.caffemodel"):
    """The builder filled from the goldens' caffemodel through the converter."""
    path = goldens_dir / folder / weights_file
    prototxt = goldens_dir / folder / "net.prototxt" if weights_file.endswith(".h5") else None
    report = convert(path, prototxt, out=tmp_path / f"{folder}.safetensors")
    model = get_model(BUILDERS[folder], weights=report.out, width_divisor=WIDTH_DIVISOR,
                      **builder_kwargs(folder))
    return model.eval()


@pytest.fixture(scope="module")
def builders(goldens_dir, tmp_path_factory):
    """Each goldens net's builder, converted and loaded once for the module."""
    cache: dict[str, torch.nn.Module] = {}

    def get(folder: str) -> torch.nn.Module:
        if folder not in cache:
            cache[folder] = load_builder(goldens_dir, folder, tmp_path_factory.mktemp(folder))
        return cache[folder]
    return get


def run(model, arrays):
    inputs = {n: torch.from_numpy(arrays[n]) for n in model.input_names}
    with torch.no_grad():
        return model(**inputs, return_blobs=True)


def loss_layers(goldens_dir, folder):
    """(score blob, label blob, loss blob, normalization) of each SoftmaxWithLoss of the net."""
    net = load_net(goldens_dir / folder / "net.prototxt")
    return [(l.bottom[0], l.bottom[1], l.top[0],
             ops.loss_normalization(normalize=bool(l.loss_param.normalize)), int(l.loss_param.ignore_label))
            for l in net.layers if l.type == "SoftmaxWithLoss"]


def check_losses(goldens_dir, folder, blobs, arrays):
    checked = 0
    for score, label, loss, normalization, ignore in loss_layers(goldens_dir, folder):
        labels = torch.from_numpy(arrays[label])
        ours = ops.softmax_with_loss(blobs[score], labels, ignore, normalization)
        terms = int((labels != ignore).sum())
        assert rel_err(ours, arrays[loss]) <= TOLERANCE + (terms - 1) * UNIT_ROUNDOFF, loss
        checked += 1
    return checked


@pytest.mark.parametrize("folder", GOLDEN_NETS)
def test_every_blob_at_48x64(folder, goldens_dir, builders):
    model = builders(folder)
    arrays = np.load(goldens_dir / folder / "blobs-48x64.npz")
    blobs = run(model, arrays)
    inputs_and_losses = set(model.input_names) | {l[1] for l in loss_layers(goldens_dir, folder)} | {
        l[2] for l in loss_layers(goldens_dir, folder)}
    assert set(arrays.files) - inputs_and_losses <= set(blobs), "a Caffe blob the builder does not expose"
    for name, value in blobs.items():
        assert tuple(value.shape) == arrays[name].shape, name
        assert rel_err(value, arrays[name]) <= TOLERANCE, name
    assert check_losses(goldens_dir, folder, blobs, arrays) == len(loss_layers(goldens_dir, folder))


@pytest.mark.parametrize("folder", GOLDEN_NETS)
def test_outputs_at_97x131(folder, goldens_dir, builders):
    model = builders(folder)
    arrays = np.load(goldens_dir / folder / "outputs-97x131.npz")
    blobs = run(model, arrays)
    for output in model.meta.outputs:
        assert tuple(blobs[output].shape[2:]) == arrays[model.input_names[0]].shape[2:]
        if output in arrays.files:
            assert rel_err(blobs[output], arrays[output]) <= TOLERANCE, output
    check_losses(goldens_dir, folder, blobs, arrays)
    assert any(name in arrays.files for name in model.meta.outputs) or loss_layers(goldens_dir, folder)


def test_hdf5_weights_give_the_same_blobs(goldens_dir, tmp_path):
    folder = "voc-fcn8s-atonce"
    model = load_builder(goldens_dir, folder, tmp_path, "weights.caffemodel.h5")
    arrays = np.load(goldens_dir / folder / "blobs-48x64.npz")
    blobs = run(model, arrays)
    assert all(rel_err(v, arrays[k]) <= TOLERANCE for k, v in blobs.items())


@pytest.mark.parametrize("folder", GOLDEN_NETS)
def test_builder_agrees_with_generic_graph(folder, goldens_dir, builders):
    model = builders(folder)
    graph = CaffeNet(load_net(goldens_dir / folder / "net.prototxt"))
    graph.load_blobs(load_caffemodel(goldens_dir / folder / "weights.caffemodel"))
    arrays = np.load(goldens_dir / folder / "blobs-48x64.npz")
    ours = run(model, arrays)
    with torch.no_grad():
        generic = graph(return_blobs=True, **{n: torch.from_numpy(arrays[n]) for n in graph.input_names})
    common = set(ours) & set(generic)
    assert common == set(ours)
    for name in common:
        scale = generic[name].abs().max().clamp(min=1e-30)
        assert float((ours[name] - generic[name]).abs().max() / scale) <= TOLERANCE, name
