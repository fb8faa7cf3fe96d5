"""``python -m port export``: safetensors -> caffemodel in Caffe's blob shapes; port.caffe reads
it back equal and ``convert`` turns it back into the same tensors."""
from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from port.__main__ import COMMANDS
from port.__main__ import main as port_main
from port.caffe import load_caffemodel
from port.caffe.text_writer import write_prototxt
from port.models import net_spec

from train_trees import random_init


@pytest.mark.parametrize("model", ["fcn8s", "siftflow_fcn16s"])
def test_export_round_trips(model, tmp_path):
    weights = random_init(model, tmp_path / "w.safetensors", seed=3)
    proto = tmp_path / "deploy.prototxt"
    write_prototxt(proto, net_spec(model, "deploy", width_divisor=16).to_proto())
    out = tmp_path / "w.caffemodel"
    assert COMMANDS["export"][0] == "port.cli.export"
    assert port_main(["export", str(weights), "--net", str(proto), "-o", str(out)]) == 0
    state = load_file(weights)
    blobs = load_caffemodel(out).blobs()
    assert {f"{n}.{('weight', 'bias')[i]}" for n, bs in blobs.items() for i in range(len(bs))} == set(state)
    for name, bs in blobs.items():
        for i, blob in enumerate(bs):
            assert np.array_equal(np.asarray(blob), state[f"{name}.{('weight', 'bias')[i]}"])
    from port.convert import convert
    back = tmp_path / "back.safetensors"
    convert(out, proto, back)
    again = load_file(back)
    assert again.keys() == state.keys() and all(np.array_equal(again[k], state[k]) for k in state)


def test_export_of_a_train_prototxt_and_bad_input(tmp_path, capsys):
    weights = random_init("fcn32s", tmp_path / "w.safetensors")
    proto = tmp_path / "train.prototxt"
    write_prototxt(proto, net_spec("fcn32s", "train", width_divisor=16).to_proto())
    assert port_main(["export", str(weights), "--net", str(proto), "-o", str(tmp_path / "t.caffemodel"),
                      "--phase", "TRAIN"]) == 0
    assert "score_fr" in load_caffemodel(tmp_path / "t.caffemodel").blobs()
    capsys.readouterr()
    other = tmp_path / "deploy8.prototxt"
    write_prototxt(other, net_spec("fcn8s", "deploy", width_divisor=16).to_proto())
    assert port_main(["export", str(weights), "--net", str(other), "-o", str(tmp_path / "x.caffemodel")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err
    assert port_main(["export", str(weights), "--net", str(other), "-o", str(tmp_path / "x.bin")]) == 1


def test_explicit_caffemodel_format_and_a_suffix_that_does_not_fit(tmp_path, capsys):
    weights = random_init("fcn32s", tmp_path / "w.safetensors")
    out = tmp_path / "w.caffemodel"
    assert port_main(["export", str(weights), "--model", "fcn32s", "--format", "caffemodel", "-o", str(out)]) == 0
    assert "score_fr" in load_caffemodel(out).blobs()
    capsys.readouterr()
    assert port_main(["export", str(weights), "--model", "fcn32s", "-o", str(tmp_path / "w.bin")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".onnx" in err and ".pt2" in err


def test_pool_sizes_in_the_export_friendly_form_equal_caffes():
    """pool_output_size's ceil division written as PyTorch writes it, and the shortcut that
    max pooling without padding and kernel >= stride is PyTorch's ceil_mode pooling, hold for
    every size (against Caffe's ceil formula and PyTorch's own output size)."""
    import math

    import torch
    import torch.nn.functional as F

    from port.net import ops
    for kernel in range(1, 5):
        for stride in range(1, kernel + 1):
            for size in range(kernel, 70):
                caffe = math.ceil((size - kernel) / stride) + 1
                assert ops.pool_output_size(size, kernel, stride) == caffe
                x = torch.zeros(1, 1, size, size + 1)
                y = ops.pool2d(x, kernel, stride)
                assert tuple(y.shape[2:]) == (caffe, ops.pool_output_size(size + 1, kernel, stride))
                assert F.max_pool2d(x, kernel, stride, ceil_mode=True).shape == y.shape


@pytest.mark.parametrize("kind", ["SoftmaxWithLoss", "Accuracy"])
def test_a_net_with_a_loss_or_accuracy_is_refused_naming_the_layer(kind, tmp_path):
    from port.caffe import load_net
    from port.export import export_refusal
    from port.load import build_net
    proto = tmp_path / "net.prototxt"
    proto.write_text(
        'layer { name: "input" type: "Input" top: "data" top: "label"\n'
        '  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }\n'
        'layer { name: "score" type: "Convolution" bottom: "data" top: "score"\n'
        '  convolution_param { num_output: 2 kernel_size: 1 } }\n'
        f'layer {{ name: "judge" type: "{kind}" bottom: "score" bottom: "label" top: "out" }}\n')
    refusal = export_refusal(build_net(load_net(proto), "TEST"))
    assert refusal is not None and f"layer 'judge' ({kind}): needs labels" in refusal
