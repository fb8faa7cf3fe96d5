"""``python -m reproduce train`` end to end on a 1/16-width FCN-32s and a tiny SBD/VOC tree:
the log, validation, snapshots, resume (bit-identical), refusal, SIGTERM, the report."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from safetensors.numpy import load_file

from port.load import sha256_file
from reproduce.__main__ import main as reproduce_main
from reproduce.training.run import TrainOptions, TrainStopped, train

from train_trees import sbd_voc_and_init
from helpers import train_log

# The LR is raised (--init gives weights of ordinary scale, not the VGG's): set via the recipe?
COMMON = ["--width-divisor", "16", "--test-interval", "2", "--snapshot", "2", "--quiet",
          "--device", "cpu"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return sbd_voc_and_init(tmp_path_factory)


def _run(tree, out, *extra):
    root, init = tree
    return reproduce_main(["train", "fcn32s", "--data", str(root), "--out", str(out),
                           "--init", str(init), *COMMON, *extra])


def test_train_writes_log_snapshots_final_and_report(tree, tmp_path, capsys):
    out = tmp_path / "fcn32s"
    capsys.readouterr()
    assert _run(tree, out, "--iters", "4") == 0
    _check_lines_and_verdict(tree, out, capsys.readouterr().out.splitlines())
    log = train_log(out)
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


def test_resume_is_bit_identical_to_an_uninterrupted_run(tree, tmp_path, capsys):
    straight, split = tmp_path / "a" / "fcn32s", tmp_path / "b" / "fcn32s"
    assert _run(tree, straight, "--iters", "4", "--iter-size", "2") == 0
    assert _run(tree, split, "--iters", "2", "--iter-size", "2") == 0
    capsys.readouterr()
    assert _run(tree, split, "--iters", "4", "--iter-size", "2", "--resume") == 0
    printed = capsys.readouterr().out  # what this process ran, not the iterations before
    assert "trained 2 iterations (3 to 4; resumed at 2)" in printed
    assert "schedule: iterations 3 to 4" in printed.splitlines()[0]
    a, b = load_file(straight / "final.safetensors"), load_file(split / "final.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert train_log(straight) == train_log(split)
    assert len(train_log(split)[0]["samples"]) == 2


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
    assert [r["iter"] for r in train_log(out)] == [1]
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


def _check_lines_and_verdict(tree, out, printed):
    """The first line names device, precision, net, init and schedule; the lr is logged as the
    recipe writes it; mean IU in percent; a toy run lists what it lacks of the recipe."""
    from reproduce.training.recipes import get_recipe
    first = printed[0]
    assert first.startswith("training fcn32s at 1/16 width on cpu (") and "strict-fp32" in first
    assert f"init: {tree[1]}" in first and "schedule: 4 iterations (upstream's 100000)" in first
    recipe = get_recipe("fcn32s")
    assert str(np.float32(recipe.solver.base_lr)) in (out / "train_log.jsonl").read_text()
    assert any(line.startswith("iteration 2: mean IU ") and line.endswith(" %") for line in printed)
    assert any(line.startswith("split sbd train: the dataset folder's own list")
               and ", 5 images (ids SHA-256 " in line for line in printed)
    assert any(line.startswith("final mean IU ") and " %; report: " in line for line in printed)
    report = json.loads((out / "report.json").read_text())
    reasons = report["not_a_reproduction"]
    assert report["reproduction"] is False
    assert any(r.startswith("SCHEDULE: 4 iterations") for r in reasons)
    assert any(r.startswith("WIDTH: the net at 1/16 width") for r in reasons)
    assert any(r.startswith(f"INIT: {tree[1]} is not the released classifier") for r in reasons)
    training = report["training"]
    assert training["iterations"] == 4 and training["width_divisor"] == 16
    assert training["init_sources"][0]["sha256"] == sha256_file(tree[1])
    assert training["train_list"]["ids_sha256"] and training["train_list"]["images"] == 5
    assert report["weights_sha256"] == sha256_file(out / "final.safetensors")
    md = (out / "report.md").read_text().splitlines()
    assert md[2] == "**Not a reproduction of the upstream recipe:**"
    shortfalls = training["not_a_reproduction"]
    assert shortfalls == reasons[:len(shortfalls)]  # the training's first
    assert md[4:4 + len(shortfalls)] == [f"- {r}" for r in shortfalls]
    assert any(line.startswith("- iterations: 4 (recipe: 100000)") for line in md)
    assert any(f"SHA-256 `{sha256_file(tree[1])}`" in line for line in md if line.startswith("- init:"))
    # the final weights carry the verdict, so a next stage started from them inherits it
    from port.models.weights import read_metadata
    assert json.loads(read_metadata(out / "final.safetensors")["not_a_reproduction"]) == \
        training["not_a_reproduction"]


def test_a_complete_recipe_is_a_reproduction_and_each_shortfall_is_named():
    from types import SimpleNamespace
    from reproduce.training.recipes import get_recipe, with_overrides
    from reproduce.training.report import training_shortfalls
    recipe = get_recipe("fcn32s")
    listed = {"dataset": "sbd", "split": "train", "kind": "dataset", "images": 8498,
              "ids_sha256": "x"}
    auto = SimpleNamespace(init="auto", width_divisor=1)
    classifier = {"sources": [{"file": "VGG_ILSVRC_16_layers.caffemodel", "sha256": "y"}]}
    assert training_shortfalls(recipe, auto, recipe.iterations, 1, classifier, listed, {}) == []
    # two processes of iter_size 1 where the recipe has 1: twice the passes
    assert training_shortfalls(recipe, auto, recipe.iterations, 2, classifier, listed, {})[0] \
        .startswith("SCHEDULE: 2 passes an iteration")
    assert training_shortfalls(with_overrides(recipe, iter_size=2), auto, recipe.iterations, 1,
                               classifier, listed, {})[0].startswith("SCHEDULE: 2 passes")
    bad = training_shortfalls(recipe, auto, recipe.iterations, 1, classifier, listed,
                              {"train": [{"id": "a"}]})
    assert bad == ["TRAINING LIST: 1 bad items left out (--skip-bad)"]
    stage = get_recipe("fcn16s")
    made = {"sources": [{"file": "fcn32s/final.safetensors", "verdict": []}]}
    assert training_shortfalls(stage, auto, stage.iterations, 1, made, listed, {}) == []
    toy = {"sources": [{"file": "fcn32s/final.safetensors", "verdict": ["WIDTH: 1/16"]}]}
    assert training_shortfalls(stage, auto, stage.iterations, 1, toy, listed, {}) == \
        ["INIT: fcn32s/final.safetensors is not a reproduction: WIDTH: 1/16"]


def _damaged_tree(tree, tmp_path):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(tree[0], root)
    return root


def test_lists_are_checked_before_the_first_iteration_and_skip_bad_records(tree, tmp_path, capsys):
    root = _damaged_tree(tree, tmp_path)
    val = root / "VOCdevkit" / "VOC2011" / "JPEGImages" / "2011_000001.jpg"
    val.unlink()
    sbd = root / "benchmark_RELEASE" / "dataset" / "img" / "2008_000002.jpg"
    from PIL import Image
    Image.new("RGB", (12, 10)).save(sbd)  # its label is another size
    out = tmp_path / "fcn32s"
    argv = ["train", "fcn32s", "--data", str(root), "--out", str(out), "--init", str(tree[1]),
            *COMMON, "--iters", "1"]
    capsys.readouterr()
    assert reproduce_main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2008_000002" in err and "--skip-bad" in err
    assert not (out / "train_log.jsonl").exists()  # before the first iteration
    sbd.unlink()
    (root / "benchmark_RELEASE" / "dataset" / "img" / "2008_000002.jpg").write_bytes(b"")
    assert reproduce_main(argv) == 1
    assert "2008_000002.jpg" in capsys.readouterr().err
    assert reproduce_main([*argv, "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "left 2008_000002 out of the training list" in printed
    assert "left 2011_000001 out of the validation list" in printed
    report = json.loads((out / "report.json").read_text())
    skipped = report["training"]["skipped"]
    assert [s["id"] for s in skipped["train"]] == ["2008_000002"]
    assert [s["id"] for s in skipped["val"]] == ["2011_000001"]
    assert report["training"]["skip_bad"] is True and report["images"] == 2
    assert "TRAINING LIST: 1 bad items left out (--skip-bad)" in report["not_a_reproduction"]
    assert all(r["samples"][0] != "2008_000002" for r in train_log(out))


def test_a_failed_classifier_download_hints_train_s_own_option(tree, tmp_path, monkeypatch, capsys):
    """The hint names --init FILE; the hinted command line runs; make passes INIT as --init."""
    import functools
    import requests
    from port.hub import download

    class Offline(requests.Session):
        def get(self, url, *args, **kwargs):
            raise requests.ConnectionError("offline")

    monkeypatch.delenv("FCN_PORT_MIRRORS", raising=False)
    monkeypatch.setattr(download, "fetch", functools.partial(download.fetch, session=Offline(),
                                                             retries=0, progress=False))
    root, init = tree
    argv = ["train", "fcn32s", "--data", str(root), "--out", str(tmp_path / "fcn32s"), *COMMON,
            "--iters", "1", "--cache", str(tmp_path / "cache")]
    capsys.readouterr()
    assert reproduce_main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "or pass your copy with --init FILE (make: INIT=FILE)" in err
    assert "http://www.robots.ox.ac.uk (" in err and "https://www.robots.ox.ac.uk (" in err
    assert reproduce_main([*argv, "--init", str(init)]) == 0  # the hinted command line
    import subprocess
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    dry = subprocess.run(["make", "-n", "-C", str(repo), "train-fcn32s", f"INIT={init}",
                          f"RUNS={tmp_path / 'runs'}", f"DATA={root}"],
                         capture_output=True, text=True, check=True).stdout
    assert f"--init {init}" in dry


def test_device_defaults_as_evaluation(monkeypatch):
    from reproduce.training import cli
    from reproduce.training.run import TrainOptions, default_device
    assert cli.parser().parse_args(["fcn32s", "--data", "d", "--out", "o"]).device is None
    assert TrainOptions("fcn32s", "d", "o").device is None
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert default_device() == "cuda"
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert default_device() == "cpu"


def test_train_help_and_near_names(capsys):
    with pytest.raises(SystemExit):
        reproduce_main(["--help"])
    assert "python -m reproduce train MODEL" in capsys.readouterr().out.replace("\n", " ")
    assert reproduce_main(["train", "fcn8z", "--data", ".", "--out", "o"]) == 1
    assert "did you mean fcn8s?" in capsys.readouterr().err


def test_curves_legend_names_the_loss():
    pytest.importorskip("matplotlib")
    from reproduce.training.report import curves_figure
    records = [{"iter": 1, "loss": 2.0}, {"iter": 2, "loss": 1.5, "val": {"mean_iu": 0.25}}]
    fig = curves_figure(records, 62.7, "t")
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels[0] == "loss (train)" and labels[1] == "mean IU (val, %)" and "published" in labels[2]
