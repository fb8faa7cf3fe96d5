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
