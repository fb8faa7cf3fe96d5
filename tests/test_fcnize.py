"""fcnize (port.models.fcnize, python -m port fcnize) against upstream's own nets, solvers and
Caffe's own starting weights: the ILSVRC VGG16 (its caffemodel's V1 layers) cast gives
voc-fcn32s/16s/8s/8s-atonce field for field, CaffeNet gives voc-fcn-alexnet up to three listed
upstream quirks (each with the option that reproduces it), the starting weights equal the
init.caffemodel Caffe saved; GoogLeNet and ResNet-50 cast with their geometry derived."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from port.caffe import load_caffemodel, load_net, read_prototxt
from port.caffe.synth import divide_width
from port.caffe.text_writer import format_text
from port.models import fcnize as F
from port.net import coord_map
from port.net.engine import CaffeNet

VOC = {  # upstream folder -> (stride, the options that reproduce it)
    "voc-fcn32s": (32, {}),
    "voc-fcn16s": (16, {"data_root": "../.."}),  # voc-fcn16s/net.py reads ../../data
    "voc-fcn8s": (8, {}),
    "voc-fcn8s-atonce": (8, {"at_once": True}),
}
#: voc-fcn-alexnet/net.py's own spelling: no param {} on the trunk, group written out, the
#: loss averaged over valid pixels.
ALEXNET_QUIRKS = dict(learned_param=False, explicit=("stride", "pad", "group"), normalize_loss=True)
FILE = {"train": "train", "val": "val", "deploy": "deploy"}


@pytest.fixture(scope="module")
def vgg16(goldens_dir):
    """The legacy V1 VGG16 caffemodel (widths / 16) as the 2014 release stores it: no input shape."""
    return load_caffemodel(goldens_dir / "vgg16-v1-224" / "weights.caffemodel")


@pytest.fixture(scope="module")
def vgg16_full(goldens_dir):
    """The V1 VGG16 deploy net at the released widths (its widths / 16 times 16, fc8's 1000 kept)."""
    net = load_net(goldens_dir / "vgg16-v1-224" / "deploy.prototxt")
    msg = net.msg.copy()
    for layer in msg.layer:
        for param in (layer.convolution_param, layer.inner_product_param):
            if param.has("num_output") and param.num_output != 1000:
                param.num_output = param.num_output * 16
    from port.caffe.net import netdef_from_message
    return netdef_from_message(msg, "VGG16 full width")


def _differences(mine, theirs) -> list[str]:
    """Each layer field where two NetParameters differ, as 'layer.field'."""
    assert [l.name for l in mine.layer] == [l.name for l in theirs.layer]
    out = []
    for a, b in zip(mine.layer, theirs.layer):
        fa, fb = dict(a.fields()), dict(b.fields())
        for key in sorted(set(fa) | set(fb)):
            if key not in fa or key not in fb or fa[key] != fb[key]:
                if hasattr(fa.get(key), "fields") and hasattr(fb.get(key), "fields"):
                    ia, ib = dict(fa[key].fields()), dict(fb[key].fields())
                    out += [f"{a.name}.{key}.{k}" for k in sorted(set(ia) | set(ib)) if ia.get(k) != ib.get(k)]
                else:
                    out.append(f"{a.name}.{key}")
    return out


@pytest.mark.parametrize("folder", list(VOC))
@pytest.mark.parametrize("form", ["train", "val"])
def test_vgg16_caffemodel_casts_to_upstreams_voc_nets(vgg16, upstream_dir, folder, form):
    stride, options = VOC[folder]
    mine = F.fcnize(vgg16, 21, stride, form, dataset="voc", **options).to_proto()
    theirs = divide_width(load_net(upstream_dir / folder / f"{form}.prototxt"), 16).msg
    assert _differences(mine, theirs) == []
    assert mine == theirs


@pytest.mark.parametrize("folder", list(VOC))
def test_full_width_vgg16_writes_upstreams_files_byte_for_byte(vgg16_full, upstream_dir, folder):
    stride, options = VOC[folder]
    casting = F.cast(vgg16_full, 21, stride, dataset="voc", **options)
    for form in ("train", "val"):
        assert format_text(casting.net(form).to_proto()) == (upstream_dir / folder / f"{form}.prototxt").read_text()
    upstream_solver = read_prototxt(upstream_dir / folder / "solver.prototxt", "SolverParameter")
    assert F.solver(casting) == upstream_solver
    if folder == "voc-fcn8s":
        assert casting.net("deploy").to_proto() == read_prototxt(upstream_dir / folder / "deploy.prototxt")


def test_what_was_derived_from_vgg16(vgg16):
    casting = F.cast(vgg16, 21, 8)
    assert casting.cast == {"fc6": (7, 7), "fc7": (1, 1)}  # from the weights: the net states no input
    assert casting.skips == {16: "pool4", 8: "pool3"} and casting.output == "fc7"
    assert casting.discarded == ["fc8", "prob"] and casting.first_conv == "conv1_1"
    # upstream's 100 is kept; it covers every size, and the rule's need is below it
    assert casting.uncovered() is None
    assert "cannot crop a negative width" in casting.uncovered(casting.own_pad)  # the score starts inside the image


def test_caffenet_casts_to_voc_fcn_alexnet_with_its_quirks(shared_dir, upstream_dir):
    caffenet = load_net(shared_dir / "classifiers" / "caffenet" / "deploy.prototxt")
    casting = F.cast(caffenet, 21, 32, dataset="voc", **ALEXNET_QUIRKS)
    for form in ("train", "val"):
        path = upstream_dir / "voc-fcn-alexnet" / f"{form}.prototxt"
        assert format_text(casting.net(form).to_proto()) == path.read_text()
    assert F.solver(casting) == read_prototxt(upstream_dir / "voc-fcn-alexnet" / "solver.prototxt", "SolverParameter")
    # the 63 x 63 upsampling is no quirk: the even kernel leaves AlexNet's score half a pixel off
    assert casting.net().netdef().layer("upscore").convolution_param.kernel_size == [63]
    # without the options: exactly upstream's own spelling and loss differ
    plain = F.fcnize(caffenet, 21, 32, "train", dataset="voc").to_proto()
    theirs = read_prototxt(upstream_dir / "voc-fcn-alexnet" / "train.prototxt")
    learned = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    expected = sorted([f"{name}.param" for name in learned]
                      + [f"{name}.convolution_param.group" for name in ("conv1", "conv3", "fc6", "fc7")]
                      + ["loss.loss_param.normalize"])
    assert sorted(_differences(plain, theirs)) == expected


def test_starting_weights_equal_caffes_init_blob_for_blob(goldens_dir, tmp_path, capsys):
    """The command on the V1 caffemodel (as its own classifier and weights): train net + init
    weights; transplant + interp + zero scores equal what Caffe saved for voc-fcn32s."""
    from port.__main__ import main
    weights = goldens_dir / "vgg16-v1-224" / "weights.caffemodel"
    out = tmp_path / "fcn32s"
    assert main(["fcnize", str(weights), "--classes", "21", "--dataset", "voc",
                 "--weights", str(weights), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fc6 (7x7)" in printed and "2 coerced" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["train.prototxt", "val.prototxt", "deploy.prototxt", "solver.prototxt", "init.caffemodel", "init.safetensors"])
    caffe = load_caffemodel(goldens_dir / "train-voc-fcn32s" / "init.caffemodel").blobs()
    ours = load_caffemodel(out / "init.caffemodel").blobs()
    from safetensors.numpy import load_file
    tensors = load_file(str(out / "init.safetensors"))
    assert set(ours) == set(caffe)
    for name, blobs in caffe.items():
        assert len(ours[name]) == len(blobs), name
        for index, blob in enumerate(blobs):
            expected = np.ascontiguousarray(blob, np.float32).tobytes()
            assert ours[name][index].tobytes() == expected, f"{name}.{index}"
            assert tensors[f"{name}.{('weight', 'bias')[index]}"].tobytes() == expected, f"{name}.{index}"
    assert load_net(out / "train.prototxt").layer("upscore").convolution_param.kernel_size == [64]


def _geometry_checks(casting, strides=(16, 8)):
    netdef = casting.net("deploy").netdef()
    maps = coord_map.maps_from(netdef, "data")
    assert F._stride(maps[casting.output]) == 32
    for stride in strides:
        assert F._stride(maps[casting.skips[stride]]) == stride
    coord_map.check_crops(netdef)  # every offset as the geometry implies
    assert casting.uncovered() is None  # every input size 1..500 gets a full-size score
    if casting.pad != casting.own_pad:  # the own pad does not do it: the smallest pad that does
        assert casting.uncovered(casting.own_pad) is not None and casting.pad > casting.own_pad
        assert casting.uncovered(casting.pad - 1) is not None
    for size in (1, 37, 500):
        assert F.spatial_sizes(netdef.layers, {"data": (size, size + 3)})["score"] == (size, size + 3)
    return netdef


def test_googlenet_casts_with_its_geometry(shared_dir):
    googlenet = load_net(shared_dir / "classifiers" / "googlenet" / "deploy.prototxt")
    casting = F.cast(googlenet, 21, 8)
    assert casting.cast == {}  # its only InnerProduct is the classifier
    assert casting.discarded == ["data", "pool5/7x7_s1", "pool5/drop_7x7_s1", "loss3/classifier", "prob"]
    assert casting.output == "inception_5b/output"
    assert casting.skips == {16: "inception_4e/output", 8: "inception_3b/output"}
    netdef = _geometry_checks(casting)
    # no cast fc6 shrinks the coarse score here: the upsampled score is cropped to the skip's
    assert netdef.layer("upscore2c").bottom == ["upscore2", "score_pool4"]


def test_resnet50_casts_with_its_geometry(shared_dir):
    resnet = load_net(shared_dir / "classifiers" / "resnet-50" / "ResNet-50-deploy.prototxt")
    casting = F.cast(resnet, 21, 8, dataset="voc")
    assert casting.discarded == ["pool5", "fc1000", "prob"]
    assert casting.output == "res5c"
    # the last residual sums of stride 16 and 8 (res4f, res3d), found by geometry
    assert casting.skips == {16: "res4f", 8: "res3d"}
    _geometry_checks(casting)
    train = casting.net("train").netdef()
    assert train.layer("score_pool4").bottom == ["res4f"] and train.layers[0].type == "Python"


def _engine_trunk_check(goldens_dir, folder, last):
    """fcnize of a div8 golden classifier with its own padding: the trunk the FCN runs equals
    what Caffe computed up to the final pooling (trunk-257x301.npz); the default cast scores
    every pixel of an odd-sized input."""
    weights = load_caffemodel(goldens_dir / folder / "weights.caffemodel")
    trunk = np.load(goldens_dir / folder / "trunk-257x301.npz")
    casting = F.cast(weights, 5, 32)
    own = F.cast(weights, 5, 32, pad=casting.own_pad)
    from port.training.surgery import init_from
    for c, shape in ((own, (257, 301)), (casting, (45, 61))):
        net, _ = init_from(c.net("deploy").netdef(), weights, do_interp=True,
                           input_shapes={"data": (1, 3, *shape)},
                           require=[layer.name for layer in c.layers])
        net.eval()
        data = torch.from_numpy(trunk["data"]) if shape == (257, 301) else torch.zeros(1, 3, *shape)
        with torch.no_grad():
            blobs = net(data, return_blobs=True)
        if c is own:
            got, want = blobs[last].numpy(), trunk[last]
            assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
        else:
            assert tuple(blobs["score"].shape) == (1, 5, *shape)


def test_googlenet_fcn_runs_in_the_engine(goldens_dir):
    _engine_trunk_check(goldens_dir, "googlenet-div8", "inception_5b/output")


def test_resnet50_fcn_runs_in_the_engine(goldens_dir):
    from port.net.layers import LAYER_TYPES
    if "BatchNorm" not in LAYER_TYPES:
        pytest.skip("the engine has no BatchNorm layer yet (issue 21 item 1)")
    _engine_trunk_check(goldens_dir, "resnet50-div8", "res5c")


def test_maps_from_gives_each_blobs_stride(vgg16):
    maps = coord_map.maps_from(vgg16, "data")
    assert [F._stride(maps[b]) for b in ("conv1_1", "pool1", "pool3", "conv4_3", "pool4", "pool5")] == \
        [1, 2, 8, 8, 16, 32]
    assert "fc6" not in maps and "fc8" not in maps  # an InnerProduct has no coordinate map


# -- bad input: one clear line --------------------------------------------------------------

MLP = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 10 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 2 } }
"""
SHALLOW = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 64 dim: 64 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 32 stride: 32 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 8 } }
layer { name: "cls" type: "InnerProduct" bottom: "fc" top: "cls" inner_product_param { num_output: 2 } }
"""


def _cli(argv, capsys):
    from port.__main__ import main
    code = main(["fcnize", *map(str, argv)])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("text, stride, message", [
    (MLP, 32, "InnerProduct before any Convolution or Pooling: no spatial layer"),
    (SHALLOW, 16, "--stride 16: the trunk has no blob of stride 16"),
    (SHALLOW.replace("kernel_size: 32 stride: 32", "kernel_size: 3 stride: 2"), 32, "has stride 2, not stride 32"),
])
def test_a_classifier_that_does_not_cast_is_one_line(tmp_path, capsys, text, stride, message):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    code, err = _cli([path, "--classes", 3, "--stride", stride, "--out", tmp_path / "out"], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and message in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_weights_that_do_not_fit_are_one_line_and_write_nothing(goldens_dir, shared_dir, tmp_path, capsys):
    vgg = goldens_dir / "vgg16-v1-224" / "deploy.prototxt"
    out = tmp_path / "out"
    # the 64 x 64 VGG16 (fc6 sees 2 x 2): its fc6 cannot fill the 7 x 7 convolution
    code, err = _cli([vgg, "--classes", 21, "--weights", goldens_dir / "vgg16-v1" / "weights.caffemodel",
                      "--out", out], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "layer 'fc6' blob 0" in err
    # another classifier's weights: the trunk would keep its fillers
    code, err = _cli([vgg, "--classes", 21, "--weights", goldens_dir / "googlenet-div8" / "weights.caffemodel",
                      "--out", out], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "no blobs for layer(s) 'conv1_1'" in err
    assert not out.exists()


def test_usage_errors_exit_2(goldens_dir, tmp_path, capsys):
    from port.__main__ import main
    vgg = str(goldens_dir / "vgg16-v1-224" / "deploy.prototxt")
    for argv in (["--classes", "21", "--at-once", "--out", str(tmp_path)],
                 ["--classes", "21", "--stride", "4", "--out", str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_:
            main(["fcnize", vgg, *argv])
        assert exit_.value.code == 2
    capsys.readouterr()


def test_command_without_a_dataset_writes_input_layers_and_leaves_no_temporaries(goldens_dir, tmp_path, capsys):
    vgg = goldens_dir / "vgg16-v1-224" / "deploy.prototxt"  # the prototxt: an input shape, no weights
    code, err = _cli([vgg, "--classes", 5, "--stride", 16, "--out", tmp_path], capsys)
    assert code == 0 and err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.prototxt", "solver.prototxt",
                                                          "train.prototxt", "val.prototxt"]
    train = load_net(tmp_path / "train.prototxt")
    assert train.inputs == {"data": (1, 3, 500, 500), "label": (1, 1, 500, 500)}
    assert train.layer("fc6").convolution_param.kernel_size == [7]  # from the stated 224 x 224 input
    assert train.layer("score_pool4").bottom == ["pool4"] and train.layer("loss").bottom == ["score", "label"]
    net = CaffeNet(train, "TRAIN", input_shapes={"data": (1, 3, 37, 29), "label": (1, 1, 37, 29)})
    assert net.blob_shapes["score"] == (1, 5, 37, 29)
    solver = read_prototxt(tmp_path / "solver.prototxt", "SolverParameter")
    assert solver.base_lr == np.float32(1e-12) and solver.train_net == "train.prototxt"


def test_help_is_plain_text(capsys):
    from port.__main__ import main
    with pytest.raises(SystemExit) as info:
        main(["fcnize", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "``" not in out and "python -m port fcnize" in out


def test_options_that_cannot_apply_are_refused(vgg16):
    with pytest.raises(F.FcnizeError, match="explicit"):
        F.cast(vgg16, 21, explicit=("stride", "dilation"))
    with pytest.raises(F.FcnizeError, match="stride 32 has none"):
        F.cast(vgg16, 21, 32, at_once=True)
    with pytest.raises(F.FcnizeError, match="num_classes must be a positive integer"):
        F.cast(vgg16, 0)
    with pytest.raises(F.FcnizeError, match="dataset 'sbd'"):
        F.cast(vgg16, 21, dataset="sbd")


ALL_CONV = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 64 dim: 64 } } }
""" + "".join(f"""
layer {{ name: "c{i}" type: "Convolution" bottom: "{'data' if i == 1 else f'c{i - 1}'}" top: "c{i}"
  convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 pad: 1 }} }}
layer {{ name: "r{i}" type: "ReLU" bottom: "c{i}" top: "c{i}" }}""" for i in range(1, 6)) + """
layer { name: "gap" type: "Pooling" bottom: "c5" top: "gap" pooling_param { pool: AVE global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "gap" top: "flat" }
layer { name: "cls" type: "InnerProduct" bottom: "flat" top: "cls" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "cls" top: "prob" }
"""


def test_an_all_convolutional_trunk_skips_from_its_convolutions():
    """No pooling or merge of stride 16/8: the skips read the last convolution of that stride;
    the global pooling and the Flatten before the classifier go."""
    from port.caffe import parse_text
    from port.caffe.net import netdef_from_message
    casting = F.cast(netdef_from_message(parse_text(ALL_CONV), "allconv.prototxt"), 3, 8)
    assert casting.discarded == ["data", "gap", "flat", "cls", "prob"] and casting.cast == {}
    assert casting.output == "c5" and casting.skips == {16: "c4", 8: "c3"}
    _geometry_checks(casting)


def test_the_fc_kernel_needs_an_input_size_or_weights(goldens_dir, tmp_path, capsys):
    text = (goldens_dir / "vgg16-v1-224" / "deploy.prototxt").read_text()
    path = tmp_path / "noinput.prototxt"
    path.write_text("\n".join(line for line in text.splitlines() if not line.startswith("input")))
    code, err = _cli([path, "--classes", 21, "--out", tmp_path / "out"], capsys)
    assert code == 1 and "layer 'fc6': the map it sees is unknown" in err and "--input-size" in err
    code, err = _cli([path, "--classes", 21, "--input-size", 224, "--out", tmp_path / "out"], capsys)
    assert code == 0 and load_net(tmp_path / "out" / "train.prototxt").layer("fc6").convolution_param.kernel_size == [7]
