"""port.net.engine.CaffeNet on small synthetic nets written as prototxt text."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from port.net import ops
from port.caffe import netdef_from_message, parse_text
from port.net.engine import BlobMismatchError, CaffeNet
from port.net.layers import SUPPORTED_LAYER_TYPES, CaffeGraphError


def net_from(text: str):
    return netdef_from_message(parse_text(text, "NetParameter", "<test>"), "<test>")


TINY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 9 dim: 11 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 9 dim: 11 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "drop1" type: "Dropout" bottom: "pool1" top: "pool1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "score" type: "Convolution" bottom: "pool1" top: "score" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "up" type: "Deconvolution" bottom: "score" top: "up" param { lr_mult: 0 }
        convolution_param { num_output: 3 kernel_size: 4 stride: 2 bias_term: false } }
layer { name: "crop" type: "Crop" bottom: "up" top: "cropped" bottom: "data" crop_param { axis: 2 offset: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "cropped" bottom: "label" top: "loss"
        loss_param { ignore_label: 255 normalize: false } }
layer { name: "acc" type: "Accuracy" bottom: "cropped" bottom: "label" top: "acc" include { phase: TRAIN } }
"""


def tiny_net(seed: int = 0) -> CaffeNet:
    net = CaffeNet(net_from(TINY))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net


def tiny_reference(net: CaffeNet, data: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same net written out with plain torch calls, Caffe's semantics spelled out."""
    conv1 = F.leaky_relu(F.conv2d(data, net.conv1.weight, net.conv1.bias, padding=2), 0.1)
    pool1 = F.max_pool2d(conv1, 2, 2, ceil_mode=True)  # no padding: ceil mode is Caffe's rounding
    score = F.conv2d(pool1, net.score.weight, net.score.bias)
    up = F.conv_transpose2d(score, net.up.weight, stride=2)
    cropped = up[:, :, 2:2 + data.shape[2], 2:2 + data.shape[3]]  # coord_map derives 2
    prob = torch.softmax(cropped, 1)
    lab = label[:, 0].long()
    valid = lab != 255
    # softmax_loss_layer.cpp: -log(max(prob, FLT_MIN))
    nll = -torch.log(prob.gather(1, torch.where(valid, lab, 0)[:, None])[:, 0].clamp(min=ops.FLT_MIN))
    loss = nll[valid].sum() / data.shape[0]  # normalize: false -> BATCH_SIZE
    return {"conv1": conv1, "pool1": pool1, "score": score, "up": up, "cropped": cropped, "loss": loss}


def test_forward_matches_plain_torch_and_caffe_blob_semantics():
    net = tiny_net()
    gen = torch.Generator().manual_seed(1)
    data, label = torch.randn(1, 3, 9, 11, generator=gen), torch.randint(0, 3, (1, 1, 9, 11), generator=gen).float()
    label[0, 0, 0, :4] = 255
    with torch.no_grad():
        blobs = net(return_blobs=True, data=data, label=label)
        outputs = net(data=data, label=label)
        ref = tiny_reference(net, data, label)
    for name, value in ref.items():  # conv1 holds the ReLU'd value, pool1 the Dropout'd one
        torch.testing.assert_close(blobs[name], value, rtol=1e-5, atol=1e-5)
    assert set(blobs) == {"data", "label", *ref}
    assert list(outputs) == ["loss"] and net.output_names == ("loss",)
    assert net.input_names == ("data", "label")


def test_parameter_names_frozen_deconv_and_phase_rules():
    net = tiny_net()
    assert set(net.state_dict()) == {"conv1.weight", "conv1.bias", "score.weight", "score.bias", "up.weight"}
    assert net.up.weight.shape == (3, 3, 4, 4)  # Deconvolution: (C_in, C_out/group, kh, kw)
    assert not net.up.weight.requires_grad and net.conv1.weight.requires_grad
    assert "acc" not in net.caffe_layers()  # include { phase: TRAIN }
    train = CaffeNet(net_from(TINY), phase="TRAIN")
    assert "acc" in train.caffe_layers() and set(train.output_names) == {"acc", "loss"}


def test_dropout_identity_at_test_even_in_training_mode():
    net = tiny_net().train()
    data, label = torch.randn(1, 3, 9, 11), torch.zeros(1, 1, 9, 11)
    blobs = net(return_blobs=True, data=data, label=label)
    torch.testing.assert_close(blobs["pool1"], ops.pool2d(blobs["conv1"], 2, 2))


def test_pooling_output_shape_uses_caffe_rounding():
    net = tiny_net()
    with torch.no_grad():
        blobs = net(return_blobs=True, data=torch.randn(1, 3, 8, 10), label=torch.zeros(1, 1, 8, 10))
    conv = ops.conv_output_size(8, 3, 1, 2), ops.conv_output_size(10, 3, 1, 2)
    assert blobs["pool1"].shape[2:] == tuple(ops.pool_output_size(s, 2, 2) for s in conv)


def test_load_blobs_is_strict_and_lists_every_mismatch():
    net = tiny_net()
    source = tiny_net(seed=5)
    blobs = {name: [p.detach().numpy().copy() for p in params] for name, params in source.caffe_params().items()}

    class Layer:
        def __init__(self, name, arrays):
            self.name, self.blobs = name, arrays

    class Model:
        def __init__(self, mapping):
            self.layers = [Layer(n, a) for n, a in mapping.items()]
            self.path = "model.caffemodel"

    net.load_blobs(Model(blobs))
    for a, b in zip(net.parameters(), source.parameters()):
        torch.testing.assert_close(a, b)
    bad = dict(blobs)
    bad["conv1"] = [blobs["conv1"][0][:2], blobs["conv1"][1]]
    bad["extra"] = [np.zeros(3, np.float32)]
    del bad["score"]
    with pytest.raises(BlobMismatchError) as err:
        net.load_blobs(Model(bad))
    text = str(err.value)
    # issue 20: one fit check (port.weights), one line; every problem in .problems
    problems = err.value.problems
    assert "model.caffemodel" in text and "\n" not in text and "4 problems" in text and len(problems) == 4
    assert "conv1.weight: shape (2, 3, 3, 3), expected (4, 3, 3, 3)" in problems
    assert "score.weight: missing (expected shape (3, 4, 1, 1))" in problems and "score.bias: missing (expected shape (3,))" in problems
    assert any(p.startswith("extra.weight: unexpected") for p in problems)


def test_unknown_type_and_missing_bottom_errors():
    text = TINY.replace('type: "ReLU"', 'type: "PReLU"')
    with pytest.raises(CaffeGraphError, match="'relu1': unknown type 'PReLU'; supported types: .*Convolution"):
        CaffeNet(net_from(text))
    assert "Python" in SUPPORTED_LAYER_TYPES and "Crop" in SUPPORTED_LAYER_TYPES
    with pytest.raises(CaffeGraphError, match="'score'.*\\['nothing'\\]"):
        CaffeNet(net_from(TINY.replace('bottom: "pool1" top: "score"', 'bottom: "nothing" top: "score"')))


def test_python_data_layer_and_net_level_inputs():
    python = TINY.replace(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 9 dim: 11 } } }\n'
        'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 9 dim: 11 } } }',
        'layer { name: "data" type: "Python" top: "data" top: "label" python_param { module: "voc_layers" } }')
    with pytest.raises(CaffeGraphError, match="input blob 'data'.*input_shapes"):
        CaffeNet(net_from(python))
    with pytest.raises(CaffeGraphError, match="'pyloss': a Python layer with bottoms"):
        CaffeNet(net_from(python + 'layer { name: "pyloss" type: "Python" bottom: "score" top: "l2" }'),
                 input_shapes={"data": (1, 3, 9, 11), "label": (1, 1, 9, 11)})
    net = CaffeNet(net_from(python), input_shapes={"data": (1, 3, 9, 11), "label": (1, 1, 9, 11)})
    assert net.input_names == ("data", "label") and net.conv1.weight.shape == (4, 3, 3, 3)
    legacy = net_from('name: "v" input: "data" input_dim: 1 input_dim: 2 input_dim: 4 input_dim: 4 '
                      'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                      'inner_product_param { num_output: 5 } }')
    ip = CaffeNet(legacy)
    assert ip.input_names == ("data",) and ip.ip.weight.shape == (5, 32)
    x = torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(ip(data=x)["ip"], F.linear(x.flatten(1), ip.ip.weight, ip.ip.bias))
    with pytest.raises(CaffeGraphError, match="missing \\['data'\\], unknown \\['dat'\\]"):
        ip(dat=x)


MISC = """
name: "misc"
input: "a" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
input: "b" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
layer { name: "split" type: "Split" bottom: "a" top: "a1" top: "a2" }
layer { name: "sum" type: "Eltwise" bottom: "a1" bottom: "b" top: "sum" eltwise_param { coeff: 0.5 coeff: -1 } }
layer { name: "prod" type: "Eltwise" bottom: "a2" bottom: "b" top: "prod" eltwise_param { operation: PROD } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "prod" top: "cat" }
layer { name: "scale" type: "Scale" bottom: "cat" top: "scaled" scale_param { bias_term: true } }
layer { name: "scale2" type: "Scale" bottom: "sum" bottom: "sum" top: "square" scale_param { axis: 0 } }
layer { name: "lrn" type: "LRN" bottom: "scaled" top: "lrn" lrn_param { local_size: 3 alpha: 0.1 beta: 0.5 } }
layer { name: "prob" type: "Softmax" bottom: "lrn" top: "prob" }
layer { name: "flat" type: "Flatten" bottom: "prob" top: "flat" }
layer { name: "reshape" type: "Reshape" bottom: "flat" top: "reshaped" reshape_param { shape { dim: 0 dim: -1 dim: 10 } } }
layer { name: "silence" type: "Silence" bottom: "square" }
"""


def test_misc_layers_match_torch():
    net = CaffeNet(net_from(MISC))
    assert net.scale.weight.shape == (6,) and torch.equal(net.scale.weight, torch.ones(6))  # Caffe's filler 1
    with torch.no_grad():
        net.scale.weight.copy_(torch.arange(1.0, 7.0))
        net.scale.bias.fill_(0.25)
        a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
        blobs = net(return_blobs=True, a=a, b=b)
    cat = torch.cat([0.5 * a - b, a * b], 1)
    scaled = cat * torch.arange(1.0, 7.0)[:, None, None] + 0.25
    prob = torch.softmax(F.local_response_norm(scaled, 3, 0.1, 0.5, 1.0), 1)
    torch.testing.assert_close(blobs["scaled"], scaled)
    torch.testing.assert_close(blobs["square"], (0.5 * a - b) ** 2)
    torch.testing.assert_close(blobs["prob"], prob)
    torch.testing.assert_close(blobs["reshaped"], prob.reshape(2, -1, 10))
    assert net.output_names == ("reshaped",)  # Silence consumed "square"
    assert set(net.state_dict()) == {"scale.weight", "scale.bias"}


def test_compiles_without_graph_breaks():
    net = tiny_net().eval()
    data, label = torch.randn(1, 3, 9, 11), torch.zeros(1, 1, 9, 11)
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(data=data, label=label)["loss"], net(data=data, label=label)["loss"])


def test_a_written_crop_offset_that_disagrees_with_the_geometry_is_refused(goldens_dir):
    """CaffeNet checks every Crop against coord_map's derivation (issue 3): a prototxt whose
    offset was edited away from the derived one must not run silently."""
    from port.net.coord_map import CropMismatchError, derive_crop_offsets

    text = (goldens_dir / "voc-fcn32s" / "net.prototxt").read_text()
    derived = derive_crop_offsets(net_from(text))["score"][0]
    wrong = text.replace(f"offset: {derived}", f"offset: {derived + 1}")
    assert wrong != text
    with pytest.raises(CropMismatchError, match="score"):
        CaffeNet(net_from(wrong))
    # The check can be turned off for a deliberately unusual net.
    assert CaffeNet(net_from(wrong), check_crops=False).output_names == ("loss",)


# -- shape inference: Caffe's Reshape arithmetic, checked against real forwards ---------------
def real_blob_shapes(net: CaffeNet) -> dict[str, tuple[int, ...]]:
    """Every blob's shape after a forward on real zero tensors of the net's input shapes
    (zero labels are valid class indices)."""
    shapes = net.blob_shapes
    with torch.no_grad():
        blobs = net(return_blobs=True, **{n: torch.zeros(shapes[n]) for n in net.input_names})
    return {name: tuple(t.shape) for name, t in blobs.items()}


@pytest.mark.parametrize("text", [TINY, MISC], ids=["tiny", "misc"])
def test_inferred_shapes_equal_a_real_forward_on_synthetic_nets(text):
    net = CaffeNet(net_from(text))
    assert net.blob_shapes == real_blob_shapes(net)


ODD_SIZE = (37, 53)


def golden_net_and_sizes(goldens_dir, name):
    """A golden net's prototxt and the input shapes to build it at: an odd size for the FCNs
    (not the declared one), the declared size for vgg16-v1 (its InnerProducts fix it)."""
    from port.caffe import load_net
    if name == "vgg16-v1":
        return load_net(goldens_dir / name / "deploy.prototxt"), None
    net = load_net(goldens_dir / name / "net.prototxt")
    return net, {k: (*shape[:2], *ODD_SIZE) for k, shape in net.inputs.items()}


@pytest.mark.parametrize("name", ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce",
                                  "voc-fcn-alexnet", "siftflow-fcn8s", "nyud-fcn32s-color-hha",
                                  "nyud-fcn32s-color-d", "vgg16-v1"])
def test_inferred_shapes_equal_a_real_forward_on_golden_nets(goldens_dir, name):
    netdef, sizes = golden_net_and_sizes(goldens_dir, name)
    net = CaffeNet(netdef, input_shapes=sizes)
    inferred = net.blob_shapes
    assert inferred == real_blob_shapes(net)
    assert len(inferred) > len(net.input_names) + 10
    if sizes:  # the size-dependent formulas were exercised: the score is cropped to the input
        assert all(inferred[out][2:] == ODD_SIZE for out in net.output_names if len(inferred[out]) == 4)


def errors(call):
    with pytest.raises(ops.CaffeSemanticsError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize("layer, shapes", [
    ("crop", [(1, 3, 10, 10), (1, 1, 9, 11)]),    # offset 2 + 11 > 10 on axis 3
    ("crop", [(1, 3, 10, 10), (1, 3, 9)]),        # reference with fewer axes
    ("conv1", [(1, 5, 9, 11)]),                   # 5 channels, weights for 3
    ("up", [(1, 4, 3, 3)]),                       # deconvolution weight for 3 channels
    ("pool1", [(1, 4, 1, 0)]),                    # pooling output size < 1
    ("loss", [(1, 3, 9, 11), (1, 1, 9, 10)]),     # label count
])
def test_output_shapes_raise_what_the_forward_raises(layer, shapes):
    module = tiny_net().caffe_layers()[layer]
    from_shapes = errors(lambda: module.output_shapes(shapes))
    from_forward = errors(lambda: module(*[torch.zeros(s) for s in shapes]))
    assert from_shapes == from_forward and repr(layer) in from_shapes


@pytest.mark.parametrize("layer, shapes", [
    ("sum", [(2, 3, 4, 5), (2, 3, 4, 6)]),        # Eltwise shapes differ
    ("scale", [(2, 5, 4, 5)]),                    # Scale parameter for 6 channels
])
def test_misc_output_shapes_raise_what_the_forward_raises(layer, shapes):
    module = CaffeNet(net_from(MISC)).caffe_layers()[layer]
    from_shapes = errors(lambda: module.output_shapes(shapes))
    assert from_shapes == errors(lambda: module(*[torch.zeros(s) for s in shapes]))


def test_construction_refuses_what_caffe_reshape_refuses():
    up = ops.deconv_output_size(ops.pool_output_size(ops.conv_output_size(9, 3, 1, 2), 2, 2), 4, 2)
    with pytest.raises(ops.CaffeSemanticsError, match=f"'crop': crop on axis 2: offset 6 \\+ reference size 9 "
                                                      f"exceeds input size {up}"):
        CaffeNet(net_from(TINY.replace("offset: 2", "offset: 6")), check_crops=False)
    even = MISC.replace("local_size: 3", "local_size: 4")
    with pytest.raises(ops.CaffeSemanticsError, match="'lrn': LRN only supports odd local_size, got 4"):
        CaffeNet(net_from(even))
    ragged = MISC.replace('bottom: "prod" top: "cat"', 'bottom: "flat_a" top: "cat"')
    ragged = ragged.replace('layer { name: "cat"', 'layer { name: "fa" type: "Flatten" bottom: "a2" top: "flat_a" }\n'
                            'layer { name: "cat"')
    concat = "'cat': Concat bottom 1 has shape \\(2, 60\\), bottom 0 has \\(2, 3, 4, 5\\)"
    with pytest.raises(ops.CaffeSemanticsError, match=concat):
        CaffeNet(net_from(ragged))
    with pytest.raises(ops.CaffeSemanticsError, match="'prob': softmax axis 4 out of range"):
        CaffeNet(net_from(MISC.replace('top: "prob" }', 'top: "prob" softmax_param { axis: 4 } }')))
    with pytest.raises(ops.CaffeSemanticsError, match="'flat': flatten end_axis 1 is before axis 2"):
        CaffeNet(net_from(MISC.replace('top: "flat" }', 'top: "flat" flatten_param { axis: 2 end_axis: 1 } }')))


def test_built_on_meta_allocates_nothing_and_infers_the_same_shapes():
    """port.convert builds the net under torch.device("meta") to size and check parameters."""
    with torch.device("meta"):
        meta = CaffeNet(net_from(TINY))
    real = CaffeNet(net_from(TINY))
    assert all(p.is_meta for p in meta.parameters()) and meta.blob_shapes == real.blob_shapes
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in real.state_dict().items()}


def test_named_params_warn_that_they_are_not_shared():
    text = TINY.replace('layer { name: "score" type: "Convolution" bottom: "pool1" top: "score" ',
                        'layer { name: "score" type: "Convolution" bottom: "pool1" top: "score" '
                        'param { name: "shared_w" } ')
    assert text != TINY
    with pytest.warns(UserWarning, match="'score'.*shared_w.*not shared"):
        CaffeNet(net_from(text))
