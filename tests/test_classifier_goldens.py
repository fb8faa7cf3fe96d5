"""Classifiers with BatchNorm, LRN and Concat against the real Caffe (caffe-goldens README,
"Classifiers with BatchNorm, LRN and Concat" and "BatchNorm and Scale options"):
``resnet50-div8`` and ``googlenet-div8`` (every blob at 224 x 224, the outputs at an odd size,
the trunk up to the final pooling at 257 x 301) and ``batchnorm-zoo`` (every BatchNorm and Scale
option, both sizes, and the blobs ``bn_batch`` updates during its forward pass); the weights
through every path (caffemodel, ``port.load``, ``port.convert``, export); the unchanged deploy
nets of ``../shared/classifiers`` built by the engine."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from port.caffe import load_caffemodel, load_net, parse_text
from port.caffe.net import NetDef, netdef_from_message
from port.net.engine import BlobMismatchError, CaffeNet
from port.net.layers import BATCH_NORM_BLOBS, BatchNorm, CaffeGraphError
from port.net.ops import CaffeSemanticsError

from test_engine_goldens import TOLERANCE, check_against
from helpers import golden_net, rel_err

CLASSIFIERS = ("resnet50-div8", "googlenet-div8")
#: Each classifier's odd-size outputs file and its final pooling (the classifier's input).
ODD_SIZE = {"resnet50-div8": "outputs-211x199.npz", "googlenet-div8": "outputs-241x227.npz"}
FINAL_POOL = {"resnet50-div8": "pool5", "googlenet-div8": "pool5/7x7_s1"}
ZOO = "batchnorm-zoo"
ZOO_SIZES = ("blobs-23x31.npz", "blobs-40x52.npz")


@pytest.mark.parametrize("name", CLASSIFIERS + (ZOO,))
def test_loaded_parameters_are_caffes(goldens_dir, name):
    """params.json (shapes, SHA-256 of the float32 bytes) before any forward pass: BatchNorm's
    three blobs in Caffe's order, Scale's 0-axis blobs (``num_axes: 0``) as shape ()."""
    expected = json.loads((goldens_dir / name / "params.json").read_text())["layers"]
    ours = golden_net(goldens_dir, name).caffe_params()
    assert list(ours) == list(expected)
    for layer, params in ours.items():
        assert len(params) == len(expected[layer]), layer
        for param, blob in zip(params, expected[layer]):
            data = param.detach().numpy().astype(np.float32)
            assert list(data.shape) == blob["shape"], layer
            assert hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest() == blob["sha256"], layer


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_blob_matches_caffe(goldens_dir, golden_nets, name):
    stored = np.load(goldens_dir / name / "blobs-224x224.npz")
    compared = check_against(golden_nets(name), stored)
    types = {m.caffe_type for m in golden_nets(name).caffe_layers().values()}
    assert len(compared) > 70
    expected = {"BatchNorm", "Scale", "Eltwise"} if name.startswith("resnet") else {"LRN", "Concat"}
    assert expected <= types


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_outputs_at_odd_size_match_caffe(goldens_dir, golden_nets, name):
    """At a size where the ceil-rounded poolings take their extra window and the final 7 x 7
    pooling still comes out 1 x 1: the classifier's input, its output and ``prob``."""
    stored = np.load(goldens_dir / name / ODD_SIZE[name])
    assert set(golden_nets(name).output_names) <= set(stored.files)
    assert FINAL_POOL[name] in stored.files
    check_against(golden_nets(name), stored)


def up_to(netdef: NetDef, last: str) -> NetDef:
    """The net run only up to layer ``last`` (Caffe's ``forward(end=last)``)."""
    names = [layer.name for layer in netdef.layers]
    return NetDef(netdef.msg, netdef.layers[:names.index(last) + 1], netdef.path)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_trunk_at_a_size_the_classifier_refuses(goldens_dir, golden_nets, name):
    """At 257 x 301 the InnerProduct's weights do not fit (Caffe aborts; here one error naming
    the layer and both shapes); the net up to its final pooling gives Caffe's blobs (what an FCN computes)."""
    stored = np.load(goldens_dir / name / "trunk-257x301.npz")
    net = golden_nets(name)
    with torch.device("meta"):
        whole = CaffeNet(net.netdef, input_shapes={"data": stored["data"].shape})
    with pytest.raises(BlobMismatchError, match=r"\(1 problem: (fc1000|loss3/classifier)\.weight: shape"):
        whole.load_blobs(load_caffemodel(goldens_dir / name / "weights.caffemodel"))
    trunk = CaffeNet(up_to(net.netdef, FINAL_POOL[name]))
    assert not trunk.load_state_dict(net.state_dict(), strict=False).missing_keys
    assert trunk.output_names == (FINAL_POOL[name],)
    assert check_against(trunk.eval(), stored) == list(stored.files)


@pytest.mark.parametrize("blobs", ZOO_SIZES)
def test_every_batchnorm_and_scale_option_matches_caffe(goldens_dir, golden_nets, blobs):
    stored = np.load(goldens_dir / ZOO / blobs)
    net = golden_nets(ZOO)
    check_against(net, stored)
    layers = net.caffe_layers()
    # the options the golden covers, as the layers read them
    assert [layers[n].use_global_stats for n in ("bn_global", "bn_default", "bn_zero", "bn_batch")] == \
        [True, True, True, False]
    assert layers["bn_default"].eps == pytest.approx(1e-3) and layers["bn_zero"].scale_factor.item() == 0
    assert tuple(layers["sc_scalar"].weight.shape) == () and tuple(layers["sc_cxx"].weight.shape) == (8, 1, 1)
    assert tuple(layers["sc_nc"].weight.shape) == (2, 8)
    chan = layers["sc_chan"].caffe_params()  # two bottoms: the bias is the only blob
    assert len(chan) == 1 and chan[0] is layers["sc_chan"].bias
    assert layers["se"].caffe_params() == [] and tuple(layers["sc_fc"].weight.shape) == (10,)


def test_batch_statistics_update_the_blobs_once_per_forward_pass(goldens_dir):
    """``bn_batch`` (``use_global_stats: false`` in a TEST net) normalises with its batch's
    statistics and, as Caffe's forward does, updates its three blobs:
    blob2 = f blob2 + 1, blob0 = f blob0 + mean, blob1 = f blob1 + m / (m - 1) var, f = 0.999,
    m = N H W; written here in float64 from Caffe's own ``conv1`` blob."""
    net = golden_net(goldens_dir, ZOO)
    layer = net.caffe_layers()["bn_batch"]
    before = [p.detach().double().numpy().copy() for p in layer.caffe_params()]
    assert before[2][0] != 0  # a released model's factor, so that the decay shows
    expected = before
    for blobs in ZOO_SIZES:
        stored = np.load(goldens_dir / ZOO / blobs)
        with torch.no_grad():
            net(**{k: stored[k] for k in net.input_names})
        x = stored["conv1"].astype(np.float64)
        m = x.size // x.shape[1]
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
        f = float(np.float32(0.999))
        expected = [f * expected[0] + mean, f * expected[1] + m / (m - 1) * var, f * expected[2] + 1]
        for param, want in zip(layer.caffe_params(), expected):
            np.testing.assert_allclose(param.detach().numpy(), want, rtol=1e-5, atol=1e-6)
    others = net.caffe_layers()["bn_global"].caffe_params()
    fresh = golden_net(goldens_dir, ZOO).caffe_layers()["bn_global"].caffe_params()
    assert all(torch.equal(a, b) for a, b in zip(others, fresh))  # global statistics never move


def test_batchnorm_statistics_are_never_learned(goldens_dir, golden_nets):
    """Caffe's ``LayerSetUp`` adds ``param { lr_mult: 0 }`` for each blob: frozen here, in the
    layer's definition (what the solver reads), and the parsed net is left unchanged."""
    net = golden_nets("resnet50-div8")
    bn = net.caffe_layers()["bn_conv1"]
    assert [name for name, _ in bn.named_parameters()] == list(BATCH_NORM_BLOBS)
    assert not any(p.requires_grad for p in bn.caffe_params())
    assert [float(s.lr_mult) for s in bn.layer.params] == [0.0, 0.0, 0.0]
    assert net.netdef.layer("bn_conv1").params == []
    assert all(p.requires_grad for p in net.caffe_layers()["scale_conv1"].caffe_params())


def _bn_net(extra: str = "", phase: str = "TEST", shape=(2, 3, 4, 5)) -> CaffeNet:
    dims = " ".join(f"dim: {d}" for d in shape)
    text = f"""
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" {extra} }}
"""
    return CaffeNet(netdef_from_message(parse_text(text)), phase)


def test_use_global_stats_defaults_by_phase_and_learned_statistics_are_refused():
    assert _bn_net().bn.use_global_stats and not _bn_net(phase="TRAIN").bn.use_global_stats
    assert _bn_net("batch_norm_param { use_global_stats: true }", "TRAIN").bn.use_global_stats
    net = _bn_net('param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }')
    assert [float(s.lr_mult) for s in net.bn.layer.params] == [0.0] * 3
    with pytest.raises(CaffeGraphError, match=r"'bn'.*param 1 has lr_mult 1.*lr_mult 0"):
        _bn_net("param { lr_mult: 0 } param { lr_mult: 1 }")
    with pytest.raises(CaffeSemanticsError, match="channel axis"):
        _bn_net(shape=(4,))
    two_d = _bn_net(shape=(3, 6))  # N x C: statistics over N only
    assert [tuple(p.shape) for p in two_d.bn.caffe_params()] == [(6,), (6,), (1,)]
    assert all(float(p.abs().sum()) == 0 for p in two_d.bn.caffe_params())  # Caffe's zeros


def test_scale_factor_zero_means_zero_statistics():
    net = _bn_net()
    x = torch.randn(2, 3, 4, 5)
    with torch.no_grad():
        net.bn.mean.fill_(3.0), net.bn.variance.fill_(7.0)  # factor stays 0
        torch.testing.assert_close(net(data=x)["bn"], x / torch.sqrt(torch.tensor(1e-5)))
        net.bn.scale_factor.fill_(2.0)
        torch.testing.assert_close(net(data=x)["bn"], (x - 1.5) / torch.sqrt(torch.tensor(3.5 + 1e-5)))


def test_bias_layer_one_and_two_bottoms():
    """bias_layer.cpp: a learned bias over ``axis``/``num_axes`` (its filler, default constant
    0), or the second bottom's values added along ``axis``."""
    net = CaffeNet(netdef_from_message(parse_text("""
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }
layer { name: "vec" type: "Input" top: "vec" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "b1" type: "Bias" bottom: "data" top: "b1"
        bias_param { axis: 1 num_axes: -1 filler { type: "constant" value: 0.5 } } }
layer { name: "b0" type: "Bias" bottom: "data" top: "b0" }
layer { name: "b2" type: "Bias" bottom: "b1" bottom: "vec" top: "b2" bias_param { axis: 0 } }
""")))
    layers = net.caffe_layers()
    assert tuple(layers["b1"].bias.shape) == (3, 4, 5) and bool((layers["b1"].bias.detach() == 0.5).all())
    assert tuple(layers["b0"].bias.shape) == (3,) and not layers["b0"].bias.detach().any()
    assert layers["b2"].caffe_params() == []
    x, vec = torch.randn(2, 3, 4, 5), torch.randn(2, 3)
    with torch.no_grad():
        out = net(data=x, vec=vec)
    torch.testing.assert_close(out["b2"], x + 0.5 + vec[:, :, None, None])


@pytest.mark.parametrize("option", ["kernel_size: 2", "stride: 2", "pad: 1", "round_mode: FLOOR"])
def test_pooling_options_caffe_refuses_or_the_port_does_not_run(option):
    """pooling_layer.cpp LayerSetUp: global pooling takes no kernel size, pad 0 and stride 1
    only; ``round_mode: FLOOR`` (Caffe's later option) is refused rather than run as CEIL."""
    pool = "kernel_size: 3" if "FLOOR" in option else "global_pooling: true"
    text = f"""
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 2 dim: 5 dim: 5 }} }} }}
layer {{ name: "gap" type: "Pooling" bottom: "data" top: "gap" pooling_param {{ pool: AVE {pool} {option} }} }}
"""
    with pytest.raises(CaffeGraphError, match="'gap'.*(global_pooling|round_mode FLOOR)"):
        CaffeNet(netdef_from_message(parse_text(text)))


def test_weights_through_load_convert_and_export(goldens_dir, golden_nets, tmp_path):
    """The three BatchNorm blobs travel every weights path: ``port.load`` of the caffemodel,
    ``port.convert`` to safetensors and back, and the caffemodel writer (Caffe's own format;
    Scale's 0-axis blobs too)."""
    from port.weights import write_net
    from port.convert import convert
    from port.load import load_net_and_weights
    for name in ("resnet50-div8", ZOO):
        folder = goldens_dir / name
        reference = golden_nets(name).state_dict() if name != ZOO else golden_net(goldens_dir, ZOO).state_dict()
        loaded, _ = load_net_and_weights(folder / "net.prototxt", folder / "weights.caffemodel")
        convert(folder / "weights.caffemodel", folder / "net.prototxt", out=tmp_path / f"{name}.safetensors")
        converted, _ = load_net_and_weights(folder / "net.prototxt", tmp_path / f"{name}.safetensors")
        write_net(loaded, tmp_path / f"{name}.caffemodel")
        exported = CaffeNet(load_net(folder / "net.prototxt"))
        exported.load_blobs(load_caffemodel(tmp_path / f"{name}.caffemodel"))
        for net in (loaded, converted, exported):
            state = net.state_dict()
            assert list(state) == list(reference)
            assert all(torch.equal(state[k], reference[k]) for k in state), name
    assert any(k.endswith(".scale_factor") for k in reference)


@pytest.mark.parametrize("mode", ["cpu-fast", "strict-fp32-canvas"])
def test_run_modes_keep_the_classifiers_outputs(goldens_dir, golden_nets, mode):
    from port.run.speed import Runner
    for name in ("resnet50-div8",):
        stored = np.load(goldens_dir / name / ODD_SIZE[name])
        out = Runner(mode, golden_nets(name), "cpu")(data=torch.from_numpy(stored["data"]))
        for key, value in out.items():
            assert rel_err(value.float().numpy(), stored[key]) <= TOLERANCE, (name, key)


def test_unchanged_classifier_deploy_nets_build(shared_dir):
    """The released deploy nets (ResNet-50/101/152 with net-level input/input_dim, GoogLeNet,
    AlexNet, CaffeNet with an Input layer) build at their declared input, shapes inferred
    (on the meta device: nothing allocated). Every ResNet BatchNorm holds (C,), (C,), (1,)
    blobs for the C channels of the convolution before it, with a Scale of C after it."""
    folder = shared_dir / "classifiers"
    prototxts = sorted(folder.glob("*/*.prototxt"))
    if len(prototxts) < 6:
        pytest.skip(f"classifier deploy nets not found under {folder}")
    for path in prototxts:
        with torch.device("meta"):
            net = CaffeNet(load_net(path))
        batch = net.input_shapes["data"][0]
        assert net.output_names == ("prob",) and net.blob_shapes["prob"] == (batch, 1000), path
        layers, shapes = net.caffe_layers(), net.blob_shapes
        norms = [n for n, m in layers.items() if isinstance(m, BatchNorm)]
        assert bool(norms) == ("resnet" in path.parent.name), path
        steps = {name: (bottoms, tops) for name, bottoms, tops in net.steps}
        for n in norms:
            bottom = steps[n][0][0]
            producer = next(name for name, (_, tops) in steps.items() if bottom in tops)
            channels = layers[producer].weight.shape[0]
            assert [tuple(p.shape) for p in layers[n].caffe_params()] == [(channels,), (channels,), (1,)]
            assert layers[n].use_global_stats
            follower = [name for name, (bottoms, _) in steps.items() if bottoms == (bottom,)][1]
            assert layers[follower].caffe_type == "Scale"
            assert tuple(layers[follower].weight.shape) == (channels,)
        assert shapes["data"] == net.input_shapes["data"]


def test_folded_batchnorm_keeps_every_resnet_blob(goldens_dir, golden_nets):
    """cpu-fast folds each in-place BatchNorm (+ Scale) into its convolution
    (port.run.fold): every blob still within 1e-5 of Caffe's; the net itself is unchanged, and
    a BatchNorm that is not in place or runs on its batch's statistics is left alone."""
    from port.run.fold import Folded, fold_batchnorm, foldable
    net = golden_nets("resnet50-div8")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    norms = [n for n, m in net.caffe_layers().items() if isinstance(m, BatchNorm)]
    chains = foldable(net)
    assert [bn for _, bn, _ in chains] == norms and all(scale for _, _, scale in chains)
    folded = fold_batchnorm(net)
    assert all(isinstance(folded.caffe_layers()[n], Folded) for n in norms)
    assert folded.caffe_layers()["res2a_branch1"].bias_term and not net.caffe_layers()["res2a_branch1"].bias_term
    check_against(folded, np.load(goldens_dir / "resnet50-div8" / "blobs-224x224.npz"))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    zoo = golden_nets(ZOO)
    assert foldable(zoo) == [] and fold_batchnorm(zoo) is zoo  # bn_global, bn_batch: not in place


def test_classifier_stored_without_its_input_converts_with_batchnorm_blobs(goldens_dir, golden_nets, tmp_path):
    """A released classifier stores its layers but no input shape (as the ILSVRC caffemodels
    do): converted without a prototxt, BatchNorm's three blobs take the engine's names, and the
    file loads into the deploy net."""
    from port.caffe import write_caffemodel
    from port.convert import convert
    from port.load import load_net_and_weights
    folder = goldens_dir / "resnet50-div8"
    msg = load_caffemodel(folder / "weights.caffemodel").msg.copy()
    msg.set("layer", [layer for layer in msg.layer if layer.type != "Input"])
    write_caffemodel(tmp_path / "stored.caffemodel", msg)
    report = convert(tmp_path / "stored.caffemodel", out=tmp_path / "stored.safetensors")
    assert "declares no input for data" in " ".join(report.notes)
    loaded, _ = load_net_and_weights(folder / "net.prototxt", tmp_path / "stored.safetensors")
    reference = golden_nets("resnet50-div8").state_dict()
    assert list(loaded.state_dict()) == list(reference)
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())
