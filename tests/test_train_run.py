"""``python -m reproduce train`` end to end on a 1/16-width FCN-32s and a tiny SBD/VOC tree:
the log, validation, snapshots, resume (bit-identical), refusal, SIGTERM, the report."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from safetensors.numpy import load_file

from reproduce.__main__ import main as reproduce_main
from reproduce.training.run import TrainOptions, TrainStopped, train

from train_trees import make_sbd_voc, random_init

# The LR is raised (--init gives weights of ordinary scale, not the VGG's): set via the recipe?
COMMON = ["--width-divisor", "16", "--test-interval", "2", "--snapshot", "2", "--quiet"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = make_sbd_voc(tmp_path_factory.mktemp("data"))
    init = random_init("fcn32s", tmp_path_factory.mktemp("init") / "init.safetensors")
    return root, init


def _run(tree, out, *extra):
    root, init = tree
    return reproduce_main(["train", "fcn32s", "--data", str(root), "--out", str(out),
                           "--init", str(init), *COMMON, *extra])


def _log(out):
    return [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]


def test_train_writes_log_snapshots_final_and_report(tree, tmp_path):
    out = tmp_path / "fcn32s"
    assert _run(tree, out, "--iters", "4") == 0
    log = _log(out)
    assert [r["iter"] for r in log] == [1, 2, 3, 4]
    assert all(len(r["samples"]) == 1 and r["lr"] == pytest.approx(1e-10) for r in log)
    assert [("val" in r) for r in log] == [False, True, False, True]
    assert set(log[1]["val"]) >= {"pixel_acc", "mean_acc", "mean_iu", "fw_iu", "loss"}
    # the samples are upstream's order: Python 2.7 randint from seed 1337 over train.txt
    from reproduce.training.sampling import SampleOrder
    ids = (tree[0] / "benchmark_RELEASE" / "dataset" / "train.txt").read_text().split()
    assert [r["samples"][0] for r in log] == SampleOrder(ids, 1337).ids(0, 4)
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == ["iter_2.safetensors", "iter_2.solverstate.safetensors",
                     "iter_4.safetensors", "iter_4.solverstate.safetensors"]
    from port.models import fcn32s
    model = fcn32s(weights=out / "final.safetensors")
    final = load_file(out / "final.safetensors")
    assert np.array_equal(model.state_dict()["score_fr.weight"].numpy(), final["score_fr.weight"])
    report = json.loads((out / "report.json").read_text())
    assert report["outputs"]["score"]["metrics"]["mean_iu"] == pytest.approx(100 * log[-1]["val"]["mean_iu"])
    assert (out / "report.md").is_file()
    from reproduce.report import has_matplotlib
    assert (out / "curves.png").is_file() == has_matplotlib()


def test_resume_is_bit_identical_to_an_uninterrupted_run(tree, tmp_path):
    straight, split = tmp_path / "a" / "fcn32s", tmp_path / "b" / "fcn32s"
    assert _run(tree, straight, "--iters", "4", "--iter-size", "2") == 0
    assert _run(tree, split, "--iters", "2", "--iter-size", "2") == 0
    assert _run(tree, split, "--iters", "4", "--iter-size", "2", "--resume") == 0
    a, b = load_file(straight / "final.safetensors"), load_file(split / "final.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert _log(straight) == _log(split)
    assert len(_log(split)[0]["samples"]) == 2


def test_resume_refuses_a_snapshot_of_another_run(tree, tmp_path, capsys):
    out = tmp_path / "fcn32s"
    assert _run(tree, out, "--iters", "2") == 0
    assert _run(tree, out, "--iters", "4", "--seed", "5", "--resume") == 1
    err = capsys.readouterr().err
    assert "snapshot of another run" in err and "seed" in err and "\n" == err[-1] and err.count("\n") == 1


def test_sigterm_writes_a_snapshot_and_stops(tree, tmp_path):
    root, init = tree
    out = tmp_path / "fcn32s"
    fired = []

    def log(text):  # the first validation's line: a SIGTERM arrives mid-run
        if not fired and "mean IU" in text:
            fired.append(text)
            signal.raise_signal(signal.SIGTERM)

    opts = TrainOptions("fcn32s", root, out, init=str(init), width_divisor=16, iters=6,
                        snapshot=0, test_interval=1, progress=False, log=log)
    with pytest.raises(TrainStopped) as stopped:
        train(opts)
    assert stopped.value.signum == signal.SIGTERM
    assert stopped.value.snapshot.name == "iter_1.safetensors"
    assert [r["iter"] for r in _log(out)] == [1]
    assert not (out / "final.safetensors").exists()


def test_bad_input_is_one_line(tree, tmp_path, capsys):
    root, _ = tree
    assert reproduce_main(["train", "fcn32s", "--data", str(root), "--out", str(tmp_path / "o"),
                           "--init", str(tmp_path / "missing.caffemodel"), "--quiet"]) == 1
    assert "missing.caffemodel: file not found" in capsys.readouterr().err
    assert reproduce_main(["train", "nyud-fcn32s-color-d", "--data", str(root), "--out",
                           str(tmp_path / "o")]) == 1
    assert reproduce_main(["train", "fcn16s", "--data", str(root), "--out", str(tmp_path / "fcn16s"),
                           "--width-divisor", "16", "--quiet"]) == 1
    assert "train fcn32s first" in capsys.readouterr().err
