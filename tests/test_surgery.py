"""Surgery against Caffe's own: the legacy VGG16 (widths / 16) transplanted into the voc-fcn32s
train net plus interp must equal the init.caffemodel Caffe saved, bit for bit; and the rules
(coerce, refuse, drop, keep fillers; interp's conditions and its choice by structure)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from port.caffe import load_caffemodel, load_net, parse_text
from port.caffe.net import netdef_from_message
from port.net import ops
from port.net.engine import CaffeNet
from port.training import surgery
from port.net.fillers import fill
from port.training.surgery import SurgeryError, init_from, interp, transplant
from helpers import upsample_filt


@pytest.fixture(scope="module")
def voc(goldens_dir):
    folder = goldens_dir / "train-voc-fcn32s"
    src = load_caffemodel(goldens_dir / "vgg16-v1-224" / "weights.caffemodel")
    net, report = init_from(load_net(folder / "train.prototxt"), src, seed=0, do_interp=True)
    return folder, net, report


def test_transplant_and_interp_equal_caffes_init_bit_for_bit(voc):
    folder, net, report = voc
    expected = json.loads((folder / "transplant.json").read_text())
    caffe = load_caffemodel(folder / "init.caffemodel").blobs()
    ours = net.caffe_params()
    assert set(caffe) == set(ours)
    for key, what in expected.items():
        assert report.entries[key] == what, key
    checked = 0
    for name, blobs in caffe.items():
        for index, blob in enumerate(blobs):
            key = f"{name}.{index}"
            mine = ours[name][index].detach().numpy()
            assert mine.shape == blob.shape, key
            what = report.entries[key]
            if what.split()[0] in ("copied", "coerced") or "interp" in what:
                assert mine.tobytes() == np.ascontiguousarray(blob, np.float32).tobytes(), key
                checked += 1
            else:  # filled: score_fr has no filler in the prototxt -> Caffe's default constant 0
                assert what == "filled" and key not in expected
                assert np.array_equal(mine, blob), key
    assert checked == sum(1 for k in expected if "." in k)


def test_report_lists_every_blob(voc):
    _, net, report = voc
    kinds = report.by_kind()
    assert kinds["coerced"] == ["fc6.0", "fc7.0"]
    assert "fc8" in kinds["dropped"] and {"score_fr.0", "score_fr.1"} <= set(kinds["filled"])
    assert report.entries["upscore.0"] == "filled + interp"
    assert ops.is_bilinear(net.upscore.weight)


NET = """
name: "dst"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 9 dim: 9 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "constant" value: 7 } } }
layer { name: "b" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "up" type: "Deconvolution" bottom: "b" top: "up" param { lr_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 4 stride: 2 bias_term: false } }
layer { name: "upg" type: "Deconvolution" bottom: "up" top: "upg" param { lr_mult: 0 }
  convolution_param { num_output: 4 group: 4 kernel_size: 3 stride: 2 bias_term: false } }
layer { name: "learned" type: "Deconvolution" bottom: "upg" top: "learned"
  convolution_param { num_output: 4 kernel_size: 2 stride: 2 bias_term: false } }
"""


def _src(layers):
    text = "".join(f'layer {{ name: "{n}" type: "Convolution" }}\n' for n in layers)
    src = netdef_from_message(parse_text(text))
    for layer in src.layers:
        layer.blobs = layers[layer.name]
    return src


def test_rules_copy_coerce_drop_and_keep_fillers():
    net = CaffeNet(netdef_from_message(parse_text(NET)))
    rng = np.random.default_rng(0)
    src = _src({"b": [rng.standard_normal((4, 3)).astype(np.float32),
                      rng.standard_normal(4).astype(np.float32), np.ones(2, np.float32)],
                "gone": [np.ones(3, np.float32)]})
    from port.net.fillers import fill_net
    fill_net(net, 0)
    report = transplant(net, src)
    assert report.entries == {"a.0": "filled", "a.1": "filled", "b.0": "coerced (4, 3) -> (4, 3, 1, 1)",
                              "b.1": "copied", "up.0": "filled", "upg.0": "filled",
                              "learned.0": "filled", "b.2": "dropped", "gone": "dropped"}
    assert torch.all(net.a.weight == 7)
    assert np.array_equal(net.b.weight.detach().numpy().reshape(4, 3), src.layer("b").blobs[0])


def test_count_mismatch_names_layer_blob_and_shapes_and_changes_nothing():
    net = CaffeNet(netdef_from_message(parse_text(NET)))
    before = net.b.bias.detach().clone()
    src = _src({"b": [np.ones((4, 3, 2), np.float32), np.full(4, 5, np.float32)]})
    with pytest.raises(SurgeryError, match=r"layer 'b' blob 0: source shape \(4, 3, 2\).*shape \(4, 3, 1, 1\)"):
        transplant(net, src)
    assert torch.equal(net.b.bias, before)


def test_interp_chooses_frozen_deconvolutions_by_structure():
    net = CaffeNet(netdef_from_message(parse_text(NET)))
    assert surgery.frozen_deconvolutions(net) == ["up", "upg"]
    with torch.no_grad():
        net.up.weight.fill_(3.0)
    assert interp(net) == ["up", "upg"]
    k4 = ops.bilinear_kernel(4)
    for i in range(4):
        for j in range(4):
            assert torch.equal(net.up.weight[i, j], k4 if i == j else torch.full((4, 4), 3.0))
        assert torch.equal(net.upg.weight[i, 0], ops.bilinear_kernel(3))  # one output per group
    assert torch.all(net.learned.weight == 0)
    # upstream's upsample_filt in numpy, float64 assigned into float32
    assert np.array_equal(k4.numpy(), upsample_filt(4).astype(np.float32))


def test_interp_refuses_what_upstream_refuses():
    text = NET.replace("kernel_size: 4 stride: 2", "kernel_h: 4 kernel_w: 2 stride: 2")
    net = CaffeNet(netdef_from_message(parse_text(text)), check_crops=False)
    with pytest.raises(SurgeryError, match="'up'.*square"):
        interp(net, ["up"])
    net = CaffeNet(netdef_from_message(parse_text(NET)))
    with pytest.raises(SurgeryError, match="'learned'.*same or"):
        interp(_Narrow(), ["learned"])
    with pytest.raises(SurgeryError, match="no parameterised layer 'nope'"):
        interp(net, ["nope"])


class _Narrow:
    """A net whose 'learned' weight has 4 inputs and 2 outputs (neither equal nor one)."""

    def __init__(self):
        self.params = {"learned": [torch.nn.Parameter(torch.zeros(4, 2, 2, 2))]}

    def caffe_params(self):
        return self.params


def test_bilinear_filler_and_interp_agree_on_the_diagonal():
    assert torch.equal(fill((1, 1, 4, 4), {"type": "bilinear"})[0, 0], ops.bilinear_kernel(4))


def test_vgg16_into_the_upstream_fcn8s_train_net(goldens_dir, upstream_dir):
    """Any upstream train net (here voc-fcn8s at widths / 16): the classifier coerced, the
    skips filled, the three frozen upsamplings bilinear, chosen by structure."""
    from port.caffe.synth import divide_width
    dst = divide_width(load_net(upstream_dir / "voc-fcn8s" / "train.prototxt"), 16)
    src = load_caffemodel(goldens_dir / "vgg16-v1-224" / "weights.caffemodel")
    net, report = init_from(dst, src, seed=1, do_interp=True)
    assert net.phase == "TRAIN" and net.input_names == ("data", "label")
    kinds = report.by_kind()
    assert kinds["coerced"] == ["fc6.0", "fc7.0"] and kinds["dropped"] == ["fc8"]
    assert {k.split(".")[0] for k in kinds["filled"] if report.entries[k] == "filled"} == \
        {"score_fr", "score_pool4", "score_pool3"}
    assert [k for k, v in report.entries.items() if v.endswith("interp")] == \
        ["upscore2.0", "upscore_pool4.0", "upscore8.0"]
    for name in ("upscore2", "upscore_pool4", "upscore8"):
        assert ops.is_bilinear(getattr(net, name).weight)
    assert np.array_equal(net.fc7.weight.detach().numpy().reshape(256, 256), src.layer("fc7").blobs[0])


def test_builders_and_interp_start_frozen_upsamplings_by_one_rule():
    """port.models.zoo.init_unweighted (a builder without weights) and surgery.interp pick the
    same layers and leave the same weights, also where the shapes are not a plain diagonal:
    ``upg`` has one output per group (every ``[i, 0]``)."""
    from port.models.zoo import init_unweighted
    built, operated = (CaffeNet(netdef_from_message(parse_text(NET))) for _ in range(2))
    assert init_unweighted(built) == interp(operated) == ["up", "upg"]
    for name, params in built.caffe_params().items():
        for mine, theirs in zip(params, operated.caffe_params()[name]):
            assert torch.equal(mine, theirs), name
    assert torch.equal(built.upg.weight[:, 0], ops.bilinear_kernel(3).expand(4, 3, 3))
    assert torch.equal(built.up.weight, ops.bilinear_weight(4, 4))


def test_builders_leave_what_interp_refuses():
    """A non-square frozen Deconvolution: interp raises (upstream's check) before it changes any
    weight; the builder's start keeps its zeros and still sets the others."""
    from port.models.zoo import init_unweighted
    text = NET.replace("kernel_size: 3 stride: 2", "kernel_h: 3 kernel_w: 2 stride: 2")
    net = CaffeNet(netdef_from_message(parse_text(text)), check_crops=False)
    with pytest.raises(SurgeryError, match="'upg'.*square"):
        interp(net)
    assert torch.all(net.up.weight == 0)
    assert init_unweighted(net) == ["up"]
    assert torch.all(net.upg.weight == 0) and torch.equal(net.up.weight, ops.bilinear_weight(4, 4))


def test_init_from_sizes_the_data_layers_of_the_net_it_builds(tmp_path):
    """init_from sizes the Python data layers of the TRAIN net CaffeNet builds, the prototxt's
    own ``state { stage }`` included: a data layer that stage leaves out is not sized, so its
    ``label`` is not named as an input the net lacks."""
    from helpers import OWN_STAGE_NET
    from port.caffe import load_net as read_net
    from port.training.surgery import init_from
    prototxt = tmp_path / "train.prototxt"
    prototxt.write_text(OWN_STAGE_NET)
    net, report = init_from(read_net(prototxt), seed=1)
    assert net.input_names == ("data",)
    assert set(report.entries) == {"conv.0", "conv.1"}
