"""Protobuf text format: the upstream nets and the goldens' nets parse with their facts."""
from __future__ import annotations

import math
import re

import pytest

from port.caffe import CaffeFormatError, load_net, parse_text, read_prototxt


def _nets(root, pattern="*.prototxt"):
    return sorted(p for p in root.glob(f"*/{pattern}") if p.name != "solver.prototxt")


def _layer_count(path) -> int:
    """Layers counted from the raw text, independently of the parser."""
    return len(re.findall(r"^layers? \{", path.read_text(), re.M))


def test_every_upstream_and_golden_net_parses(upstream_dir, goldens_dir):
    nets = _nets(upstream_dir) + _nets(goldens_dir)
    assert len(nets) > 30
    for path in nets:
        net = load_net(path)
        assert len(net.layers) == _layer_count(path), path
        tops = re.findall(r'^\s*top: "([^"]+)"', path.read_text(), re.M)
        assert [t for layer in net.layers for t in layer.top] == tops, path


def test_every_solver_parses(upstream_dir):
    for path in upstream_dir.glob("*/solver.prototxt"):
        solver = read_prototxt(path, "SolverParameter")
        assert solver.test_net and solver.train_net
        base_lr = float(re.search(r"base_lr:\s*(\S+)", path.read_text()).group(1))
        assert math.isclose(solver.base_lr, base_lr, rel_tol=1e-7)  # float32, as Caffe holds it


def test_voc_fcn8s_crop_offsets(upstream_dir):
    path = upstream_dir / "voc-fcn8s" / "val.prototxt"
    crops = [layer for layer in load_net(path).layers if layer.type == "Crop"]
    assert [layer.crop_param.offset for layer in crops] == [[5], [9], [31]]
    written = [int(x) for x in re.findall(r"offset: (\d+)", path.read_text())]
    assert [o for layer in crops for o in layer.crop_param.offset] == written
    assert [layer.crop_param.axis for layer in crops] == [2, 2, 2]  # caffe.proto default


def test_atonce_scale_fillers(upstream_dir):
    net = load_net(upstream_dir / "voc-fcn8s-atonce" / "val.prototxt")
    scales = {l.name: l.scale_param.filler for l in net.layers if l.type == "Scale"}
    assert set(scales) == {"scale_pool4", "scale_pool3"}
    assert scales["scale_pool4"].type == "constant"
    assert scales["scale_pool4"].value == pytest.approx(0.01, rel=1e-7)
    assert scales["scale_pool3"].value == pytest.approx(0.0001, rel=1e-7)
    assert net.layer("scale_pool4").params[0].lr_mult == 0


def test_nyud_eltwise_coeffs(upstream_dir):
    net = load_net(upstream_dir / "nyud-fcn32s-color-hha" / "test.prototxt")
    eltwise = [l for l in net.layers if l.type == "Eltwise"]
    assert eltwise and all(l.eltwise_param.coeff == [0.5, 0.5] for l in eltwise)
    assert all(l.eltwise_param.operation == "SUM" for l in eltwise)


def test_params_pooling_and_python_layer(upstream_dir):
    net = load_net(upstream_dir / "voc-fcn32s" / "val.prototxt")
    conv = net.layer("conv1_1")
    assert conv.params[0].lr_mult == 1 and conv.params[1].lr_mult == 2
    assert conv.params[1].decay_mult == 0
    assert conv.convolution_param.pad == [100] and conv.convolution_param.num_output == 64
    assert net.layer("pool1").pooling_param.pool == "MAX"
    assert net.layer("data").python_param.module == "voc_layers"
    assert "seg11valid" in net.layer("data").python_param.param_str


def test_deploy_inputs(upstream_dir, goldens_dir):
    assert load_net(upstream_dir / "voc-fcn8s" / "deploy.prototxt").inputs["data"][1] == 3
    v1 = load_net(goldens_dir / "vgg16-v1" / "deploy.prototxt")
    dims = [int(x) for x in re.findall(r"input_dim: (\d+)", (goldens_dir / "vgg16-v1" / "deploy.prototxt").read_text())]
    assert v1.inputs == {"data": tuple(dims)}


def test_v1_upgrade_names_and_params(goldens_dir):
    net = load_net(goldens_dir / "vgg16-v1" / "deploy.prototxt")
    assert net.layer("conv1_1").type == "Convolution"
    assert net.layer("relu1_1").type == "ReLU"
    assert net.layer("fc6").type == "InnerProduct"
    assert {l.type for l in net.layers} <= {"Convolution", "ReLU", "Pooling", "InnerProduct",
                                            "Dropout", "Softmax"}
    assert net.layer("conv1_1").params == [type(net.layer("conv1_1").params[0])(1.0, 1.0),
                                           type(net.layer("conv1_1").params[0])(2.0, 0.0)]


def test_syntax_variants():
    msg = parse_text("""
        name: 'n' "et"  # adjacent strings concatenate
        layer < name: "a\\x41\\101\\n" type: "Eltwise" loss_weight: [1, -inf, nan, 1e3, .5]
                eltwise_param: { operation: MAX } >;
        layer { name: "b" type: "Convolution" convolution_param { pad: 0x10 pad: 010 kernel_size: [3, 3] } }
        input_dim: -1
    """)
    assert msg.name == "net"
    a, b = msg.layer
    assert a.name == "aAA\n" and a.eltwise_param.operation == "MAX"
    assert a.loss_weight[:2] == [1.0, -math.inf] and math.isnan(a.loss_weight[2])
    assert a.loss_weight[3:] == [1000.0, 0.5]
    assert b.convolution_param.pad == [16, 8] and b.convolution_param.kernel_size == [3, 3]
    assert msg.input_dim == [-1]


def test_defaults_like_protobuf():
    layer = parse_text('layer { name: "p" type: "Pooling" }').layer[0]
    assert layer.pooling_param.pool == "MAX" and layer.pooling_param.stride == 1
    assert not layer.has("pooling_param") and layer.bottom == []
    assert layer.convolution_param.bias_term is True
    assert layer.dropout_param.dropout_ratio == 0.5


def test_include_exclude_filtering():
    net = load_net_from("""
        layer { name: "a" type: "ReLU" include { phase: TRAIN } }
        layer { name: "b" type: "ReLU" include { phase: TEST } }
        layer { name: "c" type: "ReLU" exclude { phase: TEST } }
        layer { name: "d" type: "ReLU" include { phase: TEST stage: "deploy" } }
        layer { name: "e" type: "ReLU" }
    """)
    assert [l.name for l in net.for_phase("TEST").layers] == ["b", "e"]
    assert [l.name for l in net.for_phase("TRAIN").layers] == ["a", "c", "e"]
    assert [l.name for l in net.for_phase("TEST", stages=["deploy"]).layers] == ["b", "d", "e"]


def load_net_from(text: str):
    from port.caffe.net import netdef_from_message
    return netdef_from_message(parse_text(text))


@pytest.mark.parametrize("text, where, what", [
    ('layer { name: "a" ', "1:19", "expected '}'"),
    ('layer { nmae: "a" }', "1:9", "no field 'nmae'"),
    ('layer { name "a" }', "1:14", "expected ':'"),
    ('layer { convolution_param { num_output: -3 } }', "1:41", "out of range"),
    ('layer { convolution_param { num_output: 1.5 } }', "1:41", "expected an integer"),
    ('layer { pooling_param { pool: MEAN } }', "1:31", "MAX, AVE, STOCHASTIC"),
    ('layer { name: "a\\q" }', "1:15", "unknown escape"),
    ('layer { name: 3 }', "1:15", "quoted string"),
    ('name: "x" }', "1:11", "field name"),
    ('layer { top: ["a",, "b"] }', "1:19", "quoted string"),
    ('layer { top: ["a" "b" }', "1:23", "expected ',' or ']'"),
    ('name: @', "1:7", "unexpected character"),
])
def test_text_errors_name_line_col(text, where, what):
    with pytest.raises(CaffeFormatError) as err:
        parse_text(text, path="net.prototxt")
    assert str(err.value).startswith("net.prototxt: ")
    assert what in str(err.value)
    assert err.value.where == where


def test_deep_nesting_is_an_error_not_a_crash():
    text = "layer { " * 5000 + "}" * 5000
    with pytest.raises(CaffeFormatError):
        parse_text(text)
