"""`python -m port solve` and `python -m port transplant` on the goldens, in their layout, and
bad input as one line with exit 1."""
from __future__ import annotations

import json

import numpy as np
import pytest

from port.__main__ import COMMANDS
from port.__main__ import main as port_main
from port.caffe import load_caffemodel

from test_solver_goldens import check_against_golden


def _init(folder):
    return {f"{n}.{i}": np.asarray(b, np.float32)
            for n, bs in load_caffemodel(folder / "init.caffemodel").blobs().items() for i, b in enumerate(bs)}


def test_commands_are_registered():
    assert COMMANDS["solve"][0] == "port.cli.solve" and COMMANDS["transplant"][0] == "port.cli.transplant"


def test_solve_writes_the_goldens_layout_and_matches_caffe(goldens_dir, tmp_path, capsys):
    folder = goldens_dir / "solver-zoo" / "multistep-l1-clip"
    out = tmp_path / "run"
    assert port_main(["solve", str(folder / "solver.prototxt"), "--weights", str(folder / "init.caffemodel"),
                      "--inputs", str(folder / "data.npz"), "--iters", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("iteration ") == 6 and "lr = 0.15" in printed  # 0.5 * 0.3 after stepvalue 2
    assert sorted(p.name for p in out.iterdir()) == ["losses.json"] + [f"params-iter{i}.npz" for i in range(1, 7)]
    losses = json.loads((out / "losses.json").read_text())["passes"]
    blobs = [dict(np.load(out / f"params-iter{i}.npz")) for i in range(1, 7)]
    check_against_golden(folder, blobs, losses, _init(folder))


def test_solve_resumes_from_a_snapshot(goldens_dir, tmp_path):
    folder = goldens_dir / "solver-zoo" / "step-l2"
    common = [str(folder / "solver.prototxt"), "--weights", str(folder / "init.caffemodel"),
              "--inputs", str(folder / "data.npz")]
    assert port_main(["solve", *common, "--iters", "3", "--out", str(tmp_path / "a"),
                      "--snapshot", str(tmp_path / "s.safetensors")]) == 0
    assert port_main(["solve", *common, "--iters", "3", "--out", str(tmp_path / "b"),
                      "--restore", str(tmp_path / "s.safetensors")]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir())[1:] == [f"params-iter{i}.npz" for i in (4, 5, 6)]
    straight = tmp_path / "c"
    assert port_main(["solve", *common, "--iters", "6", "--out", str(straight)]) == 0
    for i in (4, 5, 6):
        a, b = np.load(tmp_path / "b" / f"params-iter{i}.npz"), np.load(straight / f"params-iter{i}.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert json.loads((tmp_path / "b" / "losses.json").read_text())["passes"] == \
        json.loads((straight / "losses.json").read_text())["passes"][3:]


def test_transplant_outputs_equal_caffes_init(goldens_dir, tmp_path, capsys):
    folder = goldens_dir / "train-voc-fcn32s"
    src = goldens_dir / "vgg16-v1-224" / "weights.caffemodel"
    caffe = load_caffemodel(folder / "init.caffemodel").blobs()
    out = tmp_path / "init.caffemodel"
    assert port_main(["transplant", str(src), "--net", str(folder / "train.prototxt"), "-o", str(out),
                      "--interp", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = json.loads((folder / "transplant.json").read_text())
    assert {k: report[k] for k in expected} == expected
    ours = load_caffemodel(out).blobs()
    assert set(ours) == set(caffe)
    for name, blobs in caffe.items():
        for a, b in zip(ours[name], blobs):
            assert a.shape == b.shape and a.tobytes() == np.ascontiguousarray(b, np.float32).tobytes(), name
    st = tmp_path / "init.safetensors"
    assert port_main(["transplant", str(src), "--net", str(folder / "train.prototxt"), "-o", str(st),
                      "--interp", "--seed", "3"]) == 0
    assert "coerced (256, 1568) -> (256, 32, 7, 7)" in capsys.readouterr().out
    from safetensors.numpy import load_file
    state = load_file(str(st))
    assert state["fc6.weight"].tobytes() == caffe["fc6"][0].tobytes() and "upscore.weight" in state
    # the safetensors output trains the same as the caffemodel it equals
    a, b = tmp_path / "a", tmp_path / "b"
    for weights, run in ((out, a), (st, b)):
        assert port_main(["solve", str(folder / "solver.prototxt"), "--weights", str(weights), "--inputs",
                          str(folder / "data.npz"), "--iters", "1", "--out", str(run)]) == 0
    ra, rb = np.load(a / "params-iter1.npz"), np.load(b / "params-iter1.npz")
    assert all(np.array_equal(ra[k], rb[k]) for k in ra.files)


@pytest.mark.parametrize("args,message", [
    (["solve", "{f}/solver.prototxt", "--weights", "{f}/nope.caffemodel", "--inputs", "{f}/data.npz",
      "--iters", "1", "--out", "{t}/o"], "nope.caffemodel: weights file not found"),
    (["solve", "{f}/solver.prototxt", "--weights", "{f}/init.caffemodel", "--inputs", "{f}/data.npz",
      "--iters", "7", "--out", "{t}/o"], "missing ['data6', 'label6']"),
    (["solve", "{f}/solver.prototxt", "--weights", "{f}/init.caffemodel", "--inputs", "{f}/train.prototxt",
      "--iters", "1", "--out", "{t}/o"], "cannot read input arrays"),
    (["solve", "{f}/train.prototxt", "--weights", "{f}/init.caffemodel", "--inputs", "{f}/data.npz",
      "--iters", "1", "--out", "{t}/o"], "train.prototxt:"),
    (["solve", "{f}/solver.prototxt", "--weights", "{t}/bad.safetensors", "--inputs", "{f}/data.npz",
      "--iters", "1", "--out", "{t}/o"], "bad.safetensors: not a safetensors file"),
    (["transplant", "{f}/init.caffemodel", "--net", "{f}/train.prototxt", "-o", "{t}/x.pth"],
     "must end in .safetensors or .caffemodel"),
    (["transplant", "{f}/data.npz", "--net", "{f}/train.prototxt", "-o", "{t}/x.safetensors"], "data.npz"),
    (["transplant", "{f}/init.caffemodel", "--net", "{f}/nope.prototxt", "-o", "{t}/x.safetensors"],
     "nope.prototxt: destination net not found"),
])
def test_bad_input_is_one_line_and_exit_1(goldens_dir, tmp_path, capsys, args, message):
    folder = goldens_dir / "solver-zoo" / "step-l2"
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    argv = [a.format(f=folder, t=tmp_path) for a in args]
    assert port_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and "Traceback" not in err, err


def test_transplant_refuses_a_count_mismatch(goldens_dir, tmp_path, capsys):
    """A destination whose fc6 cannot hold the source's fc6: layer, blob and both shapes."""
    folder = goldens_dir / "train-voc-fcn32s"
    text = (folder / "train.prototxt").read_text().replace("num_output: 256", "num_output: 128", 1)
    net = tmp_path / "train.prototxt"
    net.write_text(text)
    code = port_main(["transplant", str(goldens_dir / "vgg16-v1-224" / "weights.caffemodel"), "--net", str(net),
                      "-o", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code == 1 and "layer 'fc6' blob 0: source shape (256, 1568)" in err and "(128, 32, 7, 7)" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        port_main(["solve", "x.prototxt"])
    assert info.value.code == 2


def test_bench_train_quick_runs_and_checks_the_losses_agree(upstream_dir, capsys):
    """benchmarks/bench_train.py --quick (widths / 16, 64 x 80, one round): the script itself
    fails if the port's step and the straightforward step disagree on the loss."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert out.count("port Solver") == 2 and out.count("straightforward nn.Conv2d") == 2


def test_train_without_out_runs_in_the_working_directory(tmp_path, monkeypatch):
    """Issue 19 item 1: ``reproduce train MODEL`` without ``--out`` puts its run in
    ./runs/<model> of the working directory, never in the package."""
    import reproduce.training.cli as cli
    seen = {}

    def fake_train(opts, ctx):
        seen["out"] = opts.out
        return {"iterations": 0, "resumed_from": 0, "total_iterations": 0, "seconds": 0.0}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "train", fake_train)
    monkeypatch.setattr(cli, "ran_line", lambda summary: "ran")
    assert cli.main(["fcn_googlenet", "--data", str(tmp_path), "--device", "cpu", "--quiet"]) == 0
    assert seen["out"] == tmp_path / "runs" / "fcn-googlenet"
