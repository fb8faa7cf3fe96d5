"""Caffemodels Caffe wrote: every blob equals what Caffe loaded (params.json), V1 included."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from port.caffe import load_caffemodel, load_net, write_caffemodel_h5
from port.caffe.synth import divide_width, param_shapes

from conftest import GOLDEN_NETS

ALL_GOLDENS = GOLDEN_NETS + ("vgg16-v1",)


def _expected(goldens_dir, net):
    return json.loads((goldens_dir / net / "params.json").read_text())


@pytest.mark.parametrize("net", ALL_GOLDENS)
def test_blobs_equal_params_json(goldens_dir, net):
    model = load_caffemodel(goldens_dir / net / "weights.caffemodel")
    expected = _expected(goldens_dir, net)
    blobs = model.blobs()
    assert list(blobs) == list(expected["layers"])  # Caffe's layer order
    for name, records in expected["layers"].items():
        assert len(blobs[name]) == len(records), name
        for i, (arr, rec) in enumerate(zip(blobs[name], records)):
            assert arr.dtype == np.float32 and list(arr.shape) == rec["shape"], (name, i)
            assert hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() == rec["sha256"], (name, i)
            assert float(arr.sum(dtype=np.float64)) == pytest.approx(rec["sum"], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("net", GOLDEN_NETS)
def test_caffemodel_carries_its_net(goldens_dir, net):
    model = load_caffemodel(goldens_dir / net / "weights.caffemodel")
    proto = load_net(goldens_dir / net / "net.prototxt")
    # Caffe saves the instantiated net: the prototxt's layers plus its inserted Split layers
    saved = [l.name for l in model.layers if l.type != "Split"]
    assert saved == [l.name for l in proto.for_phase("TEST").layers]
    for layer in proto.layers:
        assert model.layer(layer.name).type == layer.type
        assert model.layer(layer.name).top == layer.top


def test_v1_legacy_blobs_take_the_layer_shape(goldens_dir):
    """InnerProduct weights stored 1 x 1 x out x in load as (out, in), as Caffe holds them."""
    model = load_caffemodel(goldens_dir / "vgg16-v1" / "weights.caffemodel")
    fc8 = model.layer("fc8")
    assert fc8.type == "InnerProduct"
    legacy = fc8.msg.blobs[0]
    assert not legacy.has("shape") and (legacy.num, legacy.channels) == (1, 1)
    assert fc8.blobs[0].shape == (legacy.height, legacy.width)
    assert fc8.blobs[1].shape == (fc8.msg.blobs[1].width,)
    assert model.layer("conv1_1").params[1].lr_mult == 2  # blobs_lr -> param.lr_mult


def test_blobs_are_zero_copy_views_of_the_file(goldens_dir):
    model = load_caffemodel(goldens_dir / "voc-fcn8s" / "weights.caffemodel")
    weight = model.layer("fc6").blobs[0]
    assert not weight.flags.owndata and weight.base is not None
    assert weight.flags.writeable  # copy-on-write map: writable, the file is never changed


def test_hdf5_gives_exactly_the_caffemodel_blobs(goldens_dir):
    folder = goldens_dir / "voc-fcn8s-atonce"
    h5 = load_caffemodel(folder / "weights.caffemodel.h5").blobs()
    binary = load_caffemodel(folder / "weights.caffemodel").blobs()
    assert sorted(h5) == sorted(binary)
    for name, blobs in binary.items():
        assert [b.shape for b in h5[name]] == [b.shape for b in blobs]
        assert all(a.tobytes() == b.tobytes() for a, b in zip(h5[name], blobs)), name


def test_hdf5_with_net_keeps_definitions_and_order(goldens_dir):
    folder = goldens_dir / "voc-fcn8s-atonce"
    proto = load_net(folder / "net.prototxt")
    model = load_caffemodel(folder / "weights.caffemodel.h5", net=proto)
    assert [l.name for l in model.layers] == [l.name for l in proto.layers]
    assert list(model.blobs()) == list(_expected(goldens_dir, "voc-fcn8s-atonce")["layers"])


def test_hdf5_writer_round_trip(goldens_dir, tmp_path):
    model = load_caffemodel(goldens_dir / "voc-fcn8s" / "weights.caffemodel")
    write_caffemodel_h5(tmp_path / "w.caffemodel.h5", model)
    again = load_caffemodel(tmp_path / "w.caffemodel.h5").blobs()
    for name, blobs in model.blobs().items():
        assert all(a.tobytes() == b.tobytes() and a.shape == b.shape for a, b in zip(again[name], blobs))


@pytest.mark.parametrize("net", GOLDEN_NETS)
def test_synth_shapes_match_what_caffe_made(goldens_dir, net):
    expected = {k: [tuple(r["shape"]) for r in v] for k, v in _expected(goldens_dir, net)["layers"].items()}
    assert param_shapes(load_net(goldens_dir / net / "net.prototxt").for_phase("TEST")) == expected


def test_divide_width_makes_the_goldens_net(upstream_dir, goldens_dir):
    full = load_net(upstream_dir / "voc-fcn8s" / "deploy.prototxt")
    expected = {k: [tuple(r["shape"]) for r in v] for k, v in _expected(goldens_dir, "voc-fcn8s")["layers"].items()}
    assert param_shapes(divide_width(full, 16)) == expected
    assert full.layer("conv1_1").convolution_param.num_output == 64  # the source is unchanged
