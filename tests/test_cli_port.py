"""``python -m port convert|forward|selfcheck`` end to end on small nets in tmp_path."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from port.__main__ import main
from port.caffe import load_net
from port.caffe.synth import make_caffemodel

NET = "voc-fcn8s-atonce"


@pytest.fixture
def small_net(goldens_dir, tmp_path):
    """The goldens' at-once net (1/16 width) with a fresh seeded caffemodel in tmp_path."""
    prototxt = goldens_dir / NET / "net.prototxt"
    caffemodel = tmp_path / "net.caffemodel"
    make_caffemodel(load_net(prototxt), caffemodel, seed=7)
    return prototxt, caffemodel


def test_convert_then_forward_graph_and_builder_agree(small_net, goldens_dir, tmp_path, capsys):
    prototxt, caffemodel = small_net
    weights = tmp_path / "net.safetensors"
    assert main(["convert", str(caffemodel), "--net", str(prototxt), "-o", str(weights)]) == 0
    assert "model: fcn8s_atonce" in capsys.readouterr().out  # issue 19.9: one name, --model
    inputs = goldens_dir / NET / "blobs-48x64.npz"
    graph_out, family_out = tmp_path / "graph.npz", tmp_path / "family.npz"
    assert main(["forward", str(caffemodel), "--net", str(prototxt), "--inputs", str(inputs),
                 "--out", str(graph_out), "--blobs", "all"]) == 0
    assert main(["forward", str(weights), "--model", "fcn8s_atonce", "--inputs", str(inputs),
                 "--out", str(family_out), "--blobs", "all"]) == 0
    graph, family = np.load(graph_out), np.load(family_out)
    assert set(family.files) <= set(graph.files) and "score" in family.files and "loss" in graph.files
    for name in family.files:
        scale = max(np.abs(graph[name]).max(), 1e-30)
        assert np.abs(family[name] - graph[name]).max() / scale <= 1e-5, name


def test_forward_writes_only_outputs_by_default(goldens_dir, tmp_path):
    folder = goldens_dir / "voc-fcn8s"
    out = tmp_path / "out.npz"
    assert main(["forward", str(folder / "weights.caffemodel"), "--net", str(folder / "net.prototxt"),
                 "--inputs", str(folder / "outputs-97x131.npz"), "--out", str(out)]) == 0
    result, caffe = np.load(out), np.load(folder / "outputs-97x131.npz")
    assert result.files == ["score"]
    assert np.abs(result["score"] - caffe["score"]).max() / np.abs(caffe["score"]).max() <= 1e-5


def test_forward_reports_missing_inputs(small_net, tmp_path, capsys):
    prototxt, caffemodel = small_net
    inputs = tmp_path / "in.npz"
    np.savez(inputs, label=np.zeros((1, 1, 8, 8), np.float32))
    assert main(["forward", str(caffemodel), "--net", str(prototxt), "--inputs", str(inputs),
                 "--out", str(tmp_path / "o.npz")]) == 1
    assert "data" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


def test_convert_reports_errors(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "absent.caffemodel"), "-o", str(tmp_path / "o.safetensors")]) == 1
    assert "not found" in capsys.readouterr().err


def test_selfcheck_on_cpu(capsys):
    assert main(["selfcheck", "--model", "fcn16s", "--width-divisor", "16", "--size", "40x52",
                 "--max-error", "1e-4"]) == 0
    out = capsys.readouterr().out
    assert "score: max relative error" in out and "argmax agreement" in out


def test_selfcheck_rejects_bad_size():
    with pytest.raises(SystemExit):
        main(["selfcheck", "--size", "big"])


def test_module_entry_point(small_net, tmp_path):
    prototxt, caffemodel = small_net
    out = tmp_path / "cli.safetensors"
    result = subprocess.run([sys.executable, "-m", "port", "convert", str(caffemodel), "--net", str(prototxt),
                             "-o", str(out)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.is_file() and "converted" in result.stdout


@pytest.mark.parametrize("command", [["selfcheck", "--model", "fcn32s", "--width-divisor", "16"],
                                     ["forward", "absent.safetensors", "--model", "fcn32s", "--inputs", "absent.npz",
                                      "--out", "never.npz"]])
def test_unavailable_device_is_one_line_exit_1(command, tmp_path, capsys, monkeypatch):
    """A device this machine lacks is bad input (exit 1, one line), as every bad input is."""
    import torch
    monkeypatch.chdir(tmp_path)
    device = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"  # one past the last
    assert main([*command, "--device", device]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"device {device!r}" in err and "available: cpu" in err
    assert main([*command, "--device", "nonsense"]) == 1
    assert "is not a torch device name" in capsys.readouterr().err
    assert not (tmp_path / "never.npz").exists()


def test_convert_error_names_only_the_failing_file(small_net, tmp_path, capsys):
    prototxt, caffemodel = small_net
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: \n")
    assert main(["convert", str(caffemodel), "--net", str(bad), "-o", str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"python -m port convert: {bad}: cannot read: ") and str(caffemodel) not in err
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(caffemodel.read_bytes()[:1000])
    assert main(["convert", str(cut), "--net", str(prototxt), "-o", str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count(str(cut)) == 1 and str(prototxt) not in err


@pytest.mark.parametrize("flags, mode", [(["--precision", "strict-fp32-canvas"], "strict-fp32-canvas"),
                                         (["--tf32"], "fast-tf32"), ([], "cpu-fast")])
def test_selfcheck_precision_modes(flags, mode, capsys):
    """--precision names any mode (--tf32 is --precision fast-tf32); on the CPU the default
    is cpu-fast, checked against strict fp32."""
    assert main(["selfcheck", "--model", "fcn16s", "--width-divisor", "16", "--size", "40x52",
                 "--max-error", "1e-4", *flags]) == 0
    out = capsys.readouterr().out
    assert f"in {mode} vs strict fp32" in out


def test_selfcheck_unknown_precision_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["selfcheck", "--precision", "fast-fp8"])
    assert info.value.code == 2 and "cpu-fast" in capsys.readouterr().err


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("via", ["builder", "prototxt"])
@pytest.mark.parametrize("shape", [(1, 1, 20, 24), (3, 20, 24)])
def test_forward_input_of_the_wrong_shape_names_the_input_blob(via, shape, small_net, tmp_path, capsys):
    """A 1-channel or 3-D image is the input's mistake: one line naming the blob 'data' and the
    shape expected, not a traceback and not the weights (through a prototxt)."""
    prototxt, caffemodel = small_net
    weights = caffemodel
    if via == "builder":
        weights = tmp_path / "w.safetensors"
        assert main(["convert", str(caffemodel), "--net", str(prototxt), "-o", str(weights)]) == 0
        capsys.readouterr()
    inputs = tmp_path / "in.npz"
    np.savez(inputs, data=np.zeros(shape, np.float32), label=np.zeros((1, 1, 20, 24), np.float32))
    net = ["--model", "fcn8s_atonce"] if via == "builder" else ["--net", str(prototxt)]
    assert main(["forward", str(weights), *net, "--inputs", str(inputs), "--out", str(tmp_path / "o.npz")]) == 1
    err = _one_line(capsys)
    assert "input blob 'data' must be N x 3 x H x W" in err and str(shape) in err
    assert "blob 0" not in err


def test_a_bottom_typo_names_the_prototxt_and_its_line(small_net, tmp_path, capsys):
    prototxt, caffemodel = small_net
    text = prototxt.read_text().replace('bottom: "pool1"', 'bottom: "poool1"', 1)
    typo = tmp_path / "typo.prototxt"
    typo.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if '"poool1"' in l)
    inputs = tmp_path / "in.npz"
    np.savez(inputs, data=np.zeros((1, 3, 20, 24), np.float32), label=np.zeros((1, 1, 20, 24), np.float32))
    for command in (["convert", str(caffemodel), "--net", str(typo), "-o", str(tmp_path / "o.safetensors")],
                    ["forward", str(caffemodel), "--net", str(typo), "--inputs", str(inputs), "--out", str(tmp_path / "o.npz")]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert f"{typo}: " in err and "'poool1'" in err, err
        # the layer's own line:col, the line of its 'layer {' (at or above the typo's line)
        found = int(err.split(f"{typo}: ")[1].split(":")[0])
        assert line - 10 < found <= line
        assert str(caffemodel) not in err.splitlines()[0]


def test_forward_refuses_a_missing_output_folder(small_net, tmp_path, capsys):
    prototxt, caffemodel = small_net
    out = tmp_path / "absent" / "o.npz"
    assert main(["forward", str(caffemodel), "--net", str(prototxt), "--inputs", str(tmp_path / "in.npz"),
                 "--out", str(out)]) == 1
    assert "does not exist" in _one_line(capsys)
    assert not out.parent.exists()


@pytest.mark.parametrize("name", ["fcn8s-atonce", "FCN8s_AtOnce", "voc-fcn8s-atonce"])
def test_model_names_in_any_case_with_dashes(name):
    from port.models import get_meta
    assert get_meta(name).name == "fcn8s_atonce"


def test_an_unknown_model_name_suggests_near_ones(tmp_path, capsys):
    inputs = tmp_path / "in.npz"
    np.savez(inputs, data=np.zeros((1, 3, 8, 8), np.float32))
    assert main(["forward", str(tmp_path / "w.safetensors"), "--model", "FCN8", "--inputs", str(inputs),
                 "--out", str(tmp_path / "o.npz")]) == 1
    assert "did you mean 'fcn8s'" in _one_line(capsys)


def test_the_old_convert_order_gets_the_new_one_in_its_message(small_net, capsys):
    prototxt, caffemodel = small_net
    with pytest.raises(SystemExit) as info:
        main(["convert", str(prototxt), str(caffemodel)])
    assert info.value.code == 2 and f"--net {prototxt}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["convert", "forward", "selfcheck", "prototxt", "inspect"])
def test_help_is_plain_text(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "``" not in out and "python -m port" in out


def test_no_command_prints_usage_to_stderr_and_version(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert "usage: python -m port" in captured.err and captured.out == ""
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("fcn-port ")


# -- issue 19 items 8, 9, 12, 13 and issue 22 item 2 --------------------------------------------
def test_inspect_of_an_empty_file_is_one_line_and_fails(tmp_path, capsys):
    empty = tmp_path / "empty.prototxt"
    empty.write_bytes(b"")
    assert main(["inspect", str(empty)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{empty}: empty file (0 bytes)" in err


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04truncated", b"\x93NUMPY"])
def test_forward_with_an_empty_or_damaged_inputs_file_is_one_line(content, small_net, tmp_path, capsys):
    prototxt, caffemodel = small_net
    inputs = tmp_path / "in.npz"
    inputs.write_bytes(content)
    assert main(["forward", str(caffemodel), "--net", str(prototxt), "--inputs", str(inputs),
                 "--out", str(tmp_path / "o.npz")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(inputs) in err and "Traceback" not in err
    assert not (tmp_path / "o.npz").exists()


def test_convert_takes_model_and_the_old_builder_name_hidden(small_net, tmp_path, capsys):
    _, caffemodel = small_net
    for option in ("--model", "--builder"):
        out = tmp_path / f"{option[2:]}.safetensors"
        assert main(["convert", str(caffemodel), option, "fcn8s_atonce", "-o", str(out)]) == 0
        captured = capsys.readouterr()
        assert f"-> {out}" in captured.out
        assert ("--builder is now --model" in captured.err) == (option == "--builder")
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    help_text = capsys.readouterr().out
    assert "--model NAME" in help_text and "--builder" not in help_text


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_convert_beside_a_caffemodel_in_a_read_only_folder_is_one_line(small_net, tmp_path, capsys):
    _, caffemodel = small_net
    folder = tmp_path / "ro"
    folder.mkdir()
    source = folder / "net.caffemodel"
    source.write_bytes(caffemodel.read_bytes())
    folder.chmod(0o555)
    try:
        assert main(["convert", str(source)]) == 1
    finally:
        folder.chmod(0o755)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err and "-o FILE" in err
    assert sorted(os.listdir(folder)) == ["net.caffemodel"]


def test_convert_without_o_says_where_it_wrote(small_net, tmp_path, capsys):
    _, caffemodel = small_net
    assert main(["convert", str(caffemodel)]) == 0
    assert f"-> {tmp_path / 'net.safetensors'}" in capsys.readouterr().out


def test_convert_into_an_unwritable_place_is_one_line(small_net, tmp_path, capsys, monkeypatch):
    """A folder the user cannot write (simulated: root may write anywhere) fails in one line."""
    import port.weights
    _, caffemodel = small_net

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(port.weights, "atomic_open", refuse)
    assert main(["convert", str(caffemodel)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write: Permission denied" in err and "-o FILE" in err
    assert not (tmp_path / "net.safetensors").exists()


@pytest.mark.parametrize("argv, words", [
    (["prototxt", "fcn8s", "--num-geo-classes", "3"], "--num-geo-classes: fcn8s has no geometric head"),
    (["prototxt", "fcn8s", "--width-divisor", "3"], "--width-divisor 3: width_divisor must be"),
    (["selfcheck", "--model", "fcn8s", "--width-divisor", "3"], "--width-divisor 3: width_divisor must be"),
    (["selfcheck", "--model", "fcn8z"], "did you mean 'fcn8s'"),
])
def test_a_bad_argument_value_is_one_line_through_fail(argv, words, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and err.startswith(f"python -m port {argv[0]}: ")


@pytest.mark.parametrize("command", ["solve", "transplant", "export", "selfcheck"])
def test_help_starts_with_the_whole_usage_line(command, capsys):
    """solve's and transplant's help once began with an unclosed quote (a usage line that wraps),
    export's ended in a stray '...: weights'; every option has a help text."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    description = out.split("\n\n")[1]
    assert "``" not in out and "`" not in description and description.startswith(f"python -m port {command}")
    assert not description.rstrip().endswith(": weights")
    if command == "selfcheck":
        assert "seed of the random weights and inputs" in " ".join(out.split())


def test_help_and_converting_import_no_more_than_they_use(small_net, tmp_path):
    """--help of every command imports no torch, and none but fcnize's (its choices are
    fcnize's strides and datasets) imports numpy (a behaviour, read from sys.modules in a fresh
    interpreter, never a time)."""
    from port.__main__ import COMMANDS
    code = ("import sys, contextlib, io\nfrom port.__main__ import main\n"
            "for name in sys.argv[1:]:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n            main([name, '--help'])\n        except SystemExit:\n            pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy'}))")
    for commands, imported in (([c for c in COMMANDS if c != "fcnize"], "[]"), (["fcnize"], "['numpy']")):
        proc = subprocess.run([sys.executable, "-c", code, *commands], capture_output=True, text=True,
                              cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().splitlines()[-1] == imported, commands
