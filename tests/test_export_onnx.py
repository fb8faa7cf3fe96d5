"""ONNX and torch.export files of the released nets (1/16 width, random weights) serve every
input size: at odd and even sizes each output is within 1e-5 relative of the strict fp32
module and its argmax identical, from onnxruntime (CPU) and from the ExportedProgram, also
loaded back with ``torch.export.load``. Each net is exported once and every size runs
against that one file.

Which nets: an export costs seconds (all ten structure families -- VOC 32s/16s/8s/at-once,
AlexNet, the four NYUDv2 inputs, PASCAL-Context -- took 78 s of CPU, 3 minutes on the shared
2-core box), so by default the nets that hold every layer type and topology of the fifteen:
FCN-8s at-once (VGG16 trunk, both skips with their Scale, Crop and Eltwise; FCN-32s/16s/8s and
PASCAL-Context are its sub-structures), FCN-AlexNet (LRN, grouped convolutions, 3x3/2 ceil
pooling), NYUDv2 color-HHA (two inputs, fused scores) and, through the command line with
``--net``, SIFT Flow's two score heads. ``FCN_PORT_EXPORT_ALL=1`` exports all fifteen released
nets and loads each ``.pt2`` back."""
from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install '.[export]')")
pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install '.[export]')")
ort = pytest.importorskip("onnxruntime", reason="running the ONNX files needs onnxruntime (pip install '.[export]')")

import torch  # noqa: E402

from port.__main__ import main as port_main  # noqa: E402
from port.caffe.text_writer import write_prototxt  # noqa: E402
from port.export import (AXES, ONNX_OPSET, Deployable, export_program, min_size,  # noqa: E402
                         write_onnx, write_pt2)
from port.models import get_model, list_models, net_spec  # noqa: E402

from train_trees import random_init  # noqa: E402

SIZES = ((37, 53), (64, 64), (101, 77))
EVERY = bool(os.environ.get("FCN_PORT_EXPORT_ALL"))
NETS = tuple(list_models()) if EVERY else ("fcn8s_atonce", "fcn_alexnet", "nyud_fcn32s_color_hha")
#: Nets whose saved .pt2 is loaded back (loading costs seconds).
LOADED_BACK = set(NETS) if EVERY else {"nyud_fcn32s_color_hha"}


def random_net(name: str, seed: int = 0):
    """The released net at 1/16 width with random weights of a moderate scale (every parameter)."""
    net = get_model(name, width_divisor=16).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            fan = max(1, p[0].numel()) if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) * ((0.5 / fan) ** 0.5 if p.dim() > 1 else 0.1))
    return net


def strict(net, inputs):
    """The strict fp32 module's outputs: the engine's plain path (autograd on, so no prepared
    inference form runs), in Caffe's output order."""
    with torch.enable_grad():
        return [t.detach().numpy() for t in Deployable(net)(*inputs)]


def assert_same(got, want, what):
    """Within 1e-5 of the largest score (``max|a-b| / max|b|``), and the same argmax wherever
    the top two scores are further apart than that (where an upsampled score map crosses from
    one class to another they tie, and float rounding may pick either)."""
    assert len(got) == len(want), what
    for a, b in zip(got, want):
        a = np.asarray(a)
        assert a.shape == b.shape, what
        scale = np.abs(b).max()
        assert np.abs(a - b).max() / scale <= 1e-5, what
        top2 = np.sort(b, axis=1)[:, -2:]
        decided = top2[:, 1] - top2[:, 0] > 2e-5 * scale
        assert decided.mean() > 0.99, what  # the exemption stays the rare tie
        assert np.array_equal(a.argmax(1)[decided], b.argmax(1)[decided]), what


def sizes_for(net):
    lowest = min_size(net)
    return SIZES + ((lowest, lowest + 3),)  # the smallest size the file declares, too


def run_everywhere(net, onnx_path, programs, seed=1):
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    for height, width in sizes_for(net):
        inputs = [torch.randn(1, net.input_shapes[n][1], height, width, generator=gen) * 50
                  for n in net.input_names]
        want = strict(net, inputs)
        got = session.run(list(net.output_names), {n: x.numpy() for n, x in zip(net.input_names, inputs)})
        assert_same(got, want, f"onnxruntime at {height}x{width}")
        for label, program in programs:
            with torch.no_grad():
                assert_same([t.numpy() for t in program(*inputs)], want, f"{label} at {height}x{width}")


@pytest.mark.parametrize("name", NETS)
def test_one_file_serves_every_size(name, tmp_path):
    net = random_net(name)
    program = export_program(net)
    # The plain path was traced: no prepared (oneDNN packed) convolution in the graph.
    assert not any("mkldnn" in str(node.target) for node in program.graph.nodes)
    onnx_path = write_onnx(program, tmp_path / f"{name}.onnx", net.input_names, net.output_names)
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    assert any(o.domain in ("", "ai.onnx") and o.version == ONNX_OPSET for o in model.opset_import)
    assert [i.name for i in model.graph.input] == list(net.input_names)
    assert [o.name for o in model.graph.output] == list(net.output_names)
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_value == 1 and [d.dim_param for d in dims[2:]] == list(AXES)
    programs = [("ExportedProgram", program.module())]
    if name in LOADED_BACK:
        pt2 = write_pt2(program, tmp_path / f"{name}.pt2")
        programs.append(("ExportedProgram loaded back", torch.export.load(str(pt2)).module()))
    run_everywhere(net, onnx_path, programs)


def test_command_line_exports_a_prototxt_net(tmp_path, capsys):
    """``--net`` with SIFT Flow's deploy prototxt (two score heads): the weights file of
    `reproduce train` through the command line, as ONNX (``FCN_PORT_EXPORT_ALL``: as .pt2 too,
    the format told by the suffix)."""
    weights = random_init("siftflow_fcn16s", tmp_path / "w.safetensors", seed=2)
    proto = tmp_path / "deploy.prototxt"
    write_prototxt(proto, net_spec("siftflow_fcn16s", "deploy", width_divisor=16).to_proto())
    onnx_path, pt2 = tmp_path / "s.onnx", tmp_path / "s.pt2"
    assert port_main(["export", str(weights), "--net", str(proto), "--format", "onnx", "-o", str(onnx_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {onnx_path}"]
    programs = []
    if EVERY:
        assert port_main(["export", str(weights), "--net", str(proto), "-o", str(pt2)]) == 0
        programs.append(("ExportedProgram loaded back", torch.export.load(str(pt2)).module()))
    from port.export import load_net
    net = load_net(weights, net_path=proto)
    assert len(net.output_names) == 2
    run_everywhere(net, onnx_path, programs)


def test_a_net_that_cannot_be_exported_says_which_layer(tmp_path, capsys):
    weights = random_init("fcn32s", tmp_path / "w.safetensors")
    val = tmp_path / "val.prototxt"
    write_prototxt(val, net_spec("fcn32s", "test", width_divisor=16).to_proto())
    assert port_main(["export", str(weights), "--net", str(val), "-o", str(tmp_path / "v.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(Python)" in err and "deploy" in err
    assert not (tmp_path / "v.onnx").exists()
    # A suffix that does not fit the format, and --phase TRAIN with onnx: refused before any work.
    assert port_main(["export", str(weights), "--model", "fcn32s", "--format", "pt2",
                      "-o", str(tmp_path / "x.onnx")]) == 1
    assert "must end in .pt2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        port_main(["export", str(weights), "--model", "fcn32s", "--format", "onnx", "--phase", "TRAIN",
                   "-o", str(tmp_path / "x.onnx")])
    assert exit_.value.code == 2


def test_the_command_prints_what_it_wrote_and_nothing_of_torchs_internals(tmp_path):
    """A fresh process, as a user runs it (PyTorch's ONNX exporter logs its missing torchvision
    operators once per process, and its pytree code warns of its own deprecated ``LeafSpec``):
    the command's output is its one line, and standard error stays empty."""
    import subprocess
    import sys
    weights = random_init("fcn32s", tmp_path / "w.safetensors")
    out = tmp_path / "n.onnx"
    run = subprocess.run([sys.executable, "-m", "port", "export", str(weights), "--model", "fcn32s",
                          "--format", "onnx", "-o", str(out)], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONWARNINGS": "default"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"wrote {out}"]
    assert run.stderr == ""
    assert onnx.load(str(out)).graph.output[0].name == "score"
