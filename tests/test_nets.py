"""The nets written out (port.models.nets, port.net.spec) against upstream's own prototxts,
and the prototxt writer (port.caffe.text_writer) against the upstream files byte for byte."""
from __future__ import annotations

import glob
from pathlib import Path

import pytest

from port.caffe import parse_text, read_prototxt
from port.caffe.text_writer import format_text, write_prototxt
from port.models import nets
from port.net.spec import NetSpec, SpecError

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"
pytestmark = pytest.mark.skipif(not UPSTREAM.is_dir(), reason="../shared/upstream not present")

#: upstream folder -> (the net function, its test-phase file, its train-phase file)
NETS = {
    "voc-fcn32s": (lambda **k: nets.voc_fcn(32, **k), "val", "train"),
    "voc-fcn16s": (lambda **k: nets.voc_fcn(16, **k), "val", "train"),
    "voc-fcn8s": (lambda **k: nets.voc_fcn(8, **k), "val", "train"),
    "voc-fcn8s-atonce": (lambda **k: nets.voc_fcn(8, at_once=True, **k), "val", "train"),
    "voc-fcn-alexnet": (nets.voc_fcn_alexnet, "val", "train"),
    "siftflow-fcn32s": (lambda **k: nets.siftflow_fcn(32, **k), "test", "trainval"),
    "siftflow-fcn16s": (lambda **k: nets.siftflow_fcn(16, **k), "test", "trainval"),
    "siftflow-fcn8s": (lambda **k: nets.siftflow_fcn(8, **k), "test", "trainval"),
    "nyud-fcn32s-color": (lambda **k: nets.nyud_fcn32s("color", **k), "test", "trainval"),
    "nyud-fcn32s-hha": (lambda **k: nets.nyud_fcn32s("hha", **k), "test", "trainval"),
    "nyud-fcn32s-color-d": (nets.nyud_fcn32s_color_d, "test", "trainval"),
    "nyud-fcn32s-color-hha": (nets.nyud_fcn32s_color_hha, "test", "trainval"),
    "pascalcontext-fcn32s": (lambda **k: nets.pascalcontext_fcn(32, **k), "val", "train"),
    "pascalcontext-fcn16s": (lambda **k: nets.pascalcontext_fcn(16, **k), "val", "train"),
    "pascalcontext-fcn8s": (lambda **k: nets.pascalcontext_fcn(8, **k), "val", "train"),
}
CASES = [(folder, phase) for folder in NETS for phase in ("test", "train")] + [("voc-fcn8s", "deploy")]


def _written(folder: str, phase: str):
    fn, test, train = NETS[folder]
    kwargs = {"test": {}, "train": {"train": True}, "deploy": {"deploy": True}}[phase]
    file = {"test": test, "train": train, "deploy": "deploy"}[phase]
    return fn(**kwargs), UPSTREAM / folder / f"{file}.prototxt"


@pytest.mark.parametrize("folder, phase", CASES)
def test_net_equals_upstream_prototxt_layer_for_layer(folder, phase):
    spec, path = _written(folder, phase)
    upstream = read_prototxt(path)
    mine = spec.to_proto()
    assert [l.name for l in mine.layer] == [l.name for l in upstream.layer]
    for ours, theirs in zip(mine.layer, upstream.layer):
        # every field: type, bottoms, tops, param {}, *_param incl. the data layer's param_str,
        # crop offsets (derived by coord_map, never typed in), loss_param
        assert ours == theirs, f"{path.name}: layer {theirs.name!r}\n ours   {ours}\n theirs {theirs}"


@pytest.mark.parametrize("folder, phase", [c for c in CASES if c[1] != "deploy"])
def test_written_prototxt_is_upstreams_text_byte_for_byte(folder, phase):
    spec, path = _written(folder, phase)
    assert format_text(spec.to_proto()) == path.read_text()


@pytest.mark.parametrize("path", sorted(glob.glob(str(UPSTREAM / "*" / "*.prototxt"))),
                         ids=lambda p: "/".join(Path(p).parts[-2:]))
def test_every_upstream_file_reads_back_equal_after_writing(path, tmp_path):
    kind = "SolverParameter" if Path(path).name == "solver.prototxt" else "NetParameter"
    msg = read_prototxt(path, kind)
    out = tmp_path / "out.prototxt"
    write_prototxt(out, msg)
    assert parse_text(out.read_text(), kind) == msg


def test_widths_divide_the_trunk_but_not_the_classes():
    net = nets.voc_fcn(8, width_divisor=16, num_classes=5).netdef()
    assert net.layer("conv1_1").convolution_param.num_output == 4
    assert net.layer("fc6").convolution_param.num_output == 256
    assert net.layer("score_pool3").convolution_param.num_output == 5
    with pytest.raises(ValueError, match="width_divisor"):
        nets.voc_fcn(8, width_divisor=3)
    with pytest.raises(ValueError, match="num_geo_classes"):
        nets.siftflow_fcn(8, num_geo_classes=0)


@pytest.mark.parametrize("pad", [5, 7])
def test_crop_offsets_follow_the_geometry(pad):
    """The derived offset moves with the geometry (nothing typed in): a 3x3 stride-2
    convolution maps data x to y with x = 2y + 1 - pad, a 3x3 stride-2 deconvolution maps y
    to z = 2y + 1, so the crop of z to the data starts at ``pad``."""
    n = NetSpec()
    n.Input("input", tops=["data"], input_param=dict(shape=dict(dim=[1, 3, 32, 32])))
    n.Convolution("conv", "data", num_output=2, kernel_size=3, stride=2, pad=pad)
    n.Deconvolution("up", "conv", convolution_param=dict(num_output=2, kernel_size=3, stride=2))
    n.crop("score", "up", "data")
    layer = n.to_proto().layer[-1]
    assert list(layer.crop_param.offset) == [pad] and layer.crop_param.axis == 2


def test_spec_rules_follow_net_spec():
    n = NetSpec("tiny")
    n.Input("input", tops=["data"], input_param=dict(shape=dict(dim=[1, 3, 4, 4])))
    top = n.Convolution("c", "data", num_output=2, kernel_size=3, weight_filler=dict(type="xavier"),
                        param=[dict(lr_mult=1)], include=dict(phase="TRAIN"))
    relu = n.ReLU("r", top, in_place=True)
    layer = n.to_proto().layer[1]
    assert relu == "c" and list(layer.convolution_param.kernel_size) == [3]  # lone value -> list
    assert layer.convolution_param.weight_filler.type == "xavier"
    assert layer.include[0].phase == "TRAIN" and layer.param[0].lr_mult == 1.0
    assert n.to_proto().name == "tiny"
    with pytest.raises(SpecError, match="no field 'kernal_size'"):
        n.Convolution("d", "data", kernal_size=3)
    with pytest.raises(SpecError, match="written twice"):
        n.ReLU("r", "c")
    with pytest.raises(SpecError, match="integer"):
        n.Convolution("e", "data", num_output=2.5)


def test_prototxt_command_writes_upstreams_files(tmp_path, capsys):
    from port.__main__ import main
    out = tmp_path / "train.prototxt"
    assert main(["prototxt", "fcn8s", "--phase", "train", "-o", str(out)]) == 0
    assert out.read_text() == (UPSTREAM / "voc-fcn8s" / "train.prototxt").read_text()
    capsys.readouterr()
    assert main(["prototxt", "siftflow-fcn16s"]) == 0  # the test net to stdout, dashed name
    assert capsys.readouterr().out == (UPSTREAM / "siftflow-fcn16s" / "test.prototxt").read_text()
    assert main(["prototxt", "fcn8s", "--phase", "deploy", "-o", str(out)]) == 0
    deploy = read_prototxt(out)
    assert list(deploy.layer) == list(read_prototxt(UPSTREAM / "voc-fcn8s" / "deploy.prototxt").layer)


def test_prototxt_command_bad_input_is_one_line(tmp_path, capsys):
    from port.__main__ import main
    assert main(["prototxt", "fcn9s"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean" in err
    assert main(["prototxt", "fcn8s", "--width-divisor", "3"]) == 1
    assert "width_divisor" in capsys.readouterr().err


def test_train_net_is_upstreams_train_prototxt_in_the_train_phase():
    """The builder's TRAIN-phase net: data and label in, Caffe's loss out (normalize: false,
    the sum over pixels), Dropout active in training mode only, the deploy net's parameters."""
    import torch
    from port.cli.selfcheck import randomize
    from port.models import get_model, train_net
    from port.net import ops
    net = randomize(train_net("fcn32s", width_divisor=16), seed=1)
    deploy = get_model("fcn32s", width_divisor=16)
    assert net.phase == "TRAIN" and net.input_names == ("data", "label") and net.output_names == ("loss",)
    assert set(net.state_dict()) == set(deploy.state_dict())
    assert not net.upscore.weight.requires_grad and net.fc6.weight.requires_grad
    deploy.load_state_dict(net.state_dict())
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(1, 3, 37, 45, generator=gen) * 50
    label = torch.randint(0, 21, (1, 1, 37, 45), generator=gen).float()
    label[..., :5] = 255
    net.eval()
    with torch.no_grad():
        loss = net(data, label)["loss"]
        expected = ops.softmax_with_loss(deploy(data), label, 255, ops.loss_normalization(normalize=False))
        assert torch.allclose(loss, expected, rtol=1e-5)
        net.train()
        torch.manual_seed(0)
        assert not torch.equal(net(data, label, return_blobs=True)["fc7"],
                               deploy(data, return_blobs=True)["fc7"])  # dropout at work
