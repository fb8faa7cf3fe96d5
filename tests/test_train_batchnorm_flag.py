"""``reproduce train --train-batchnorm`` (issue 21 item 3): FCN-ResNet's recipe freezes BatchNorm
at the classifier's statistics; the flag trains it on batch statistics (Caffe's TRAIN default),
a different recipe said in the log, the weights' metadata, the report and the training verdict;
refused for a net without BatchNorm and on resuming a run of the other setting."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from reproduce.__main__ import main as reproduce_main

from train_trees import make_sbd_voc

MODEL = "fcn_resnet50_32s"
COMMON = ["--width-divisor", "16", "--test-interval", "0", "--snapshot", "1", "--quiet",
          "--device", "cpu"]


def _resnet_init(path):
    """1/16-width FCN-ResNet-50 weights with classifier-like BatchNorm statistics (the sums
    and a scale factor of 1, so the stored statistics are themselves) and He-scaled convolutions."""
    from port.models import train_net
    from reproduce.training.recipes import get_recipe
    from reproduce.training.run import save_weights
    net = train_net(MODEL, width_divisor=16)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".mean"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".variance"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif name.endswith(".scale_factor"):
                p.fill_(1.0)
            elif p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p[0].numel()) ** 0.5)
            elif name.endswith(".weight"):  # a Scale layer's scale
                p.fill_(1.0)
    return save_weights(net, path, get_recipe(MODEL), 16, {})


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = make_sbd_voc(tmp_path_factory.mktemp("data"), n_train=2, n_val=1)
    return root, _resnet_init(tmp_path_factory.mktemp("init") / "init.safetensors")


def _train(tree, out, *extra):
    root, init = tree
    return reproduce_main(["train", MODEL, "--data", str(root), "--out", str(out), "--init",
                           str(init), *COMMON, *extra])


@pytest.fixture(scope="module")
def runs(tree, tmp_path_factory):
    """One iteration each, frozen (the recipe) and --train-batchnorm, and what each printed."""
    import contextlib
    import io
    folder = tmp_path_factory.mktemp("runs")
    printed = {}
    for name, extra in (("frozen", ()), ("trained", ("--train-batchnorm",))):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert _train(tree, folder / name, "--iters", "1", *extra) == 0
        printed[name] = out.getvalue()
    return folder, printed


def _statistics(weights):
    return {k: v for k, v in weights.items()
            if k.endswith((".mean", ".variance", ".scale_factor"))}


def test_the_flag_unsets_use_global_stats_in_the_train_net_only():
    from port.models import net_spec, train_net
    from port.net.engine import CaffeNet
    from reproduce.training.recipes import batchnorm_layers, with_batch_statistics
    netdef = net_spec(MODEL, "train", width_divisor=16).netdef()
    names = batchnorm_layers(netdef)
    assert names and all(netdef.layer(n).batch_norm_param.use_global_stats for n in names)
    trained = with_batch_statistics(netdef)
    assert all(not trained.layer(n).batch_norm_param.has("use_global_stats") for n in names)
    assert all(netdef.layer(n).batch_norm_param.use_global_stats for n in names)  # a copy
    frozen_net = train_net(MODEL, width_divisor=16)
    net = CaffeNet(with_batch_statistics(frozen_net.netdef), "TRAIN",
                   input_shapes=frozen_net.input_shapes)
    layers = dict(net.named_modules())
    assert all(layers[n].use_global_stats is False for n in names)
    assert all(dict(frozen_net.named_modules())[n].use_global_stats is True for n in names)
    # the Scale layers learn in either setting (the recipe's train net: Caffe's defaults)
    scale = next(l for l in trained.layers if l.type == "Scale")
    assert scale.params == netdef.layer(scale.name).params == []


def test_trained_batchnorm_moves_the_sums_and_frozen_keeps_them(tree, runs):
    folder, printed = runs
    init = load_file(tree[1])
    assert "BatchNorm: frozen at the classifier's statistics" in printed["frozen"]
    frozen = load_file(folder / "frozen" / "final.safetensors")
    stats = _statistics(init)
    assert stats and all(np.array_equal(frozen[k], v) for k, v in stats.items())  # bit-identical
    report = json.loads((folder / "frozen" / "report.json").read_text())
    assert not any(r.startswith("BATCHNORM:") for r in report["not_a_reproduction"])
    assert report["training"]["train_batchnorm"] is False
    # a cast net's verdict: the project's own recipe, in one line (reproduce.verdict.cast_reason)
    assert report["not_a_reproduction"][-1].startswith("THE PROJECT'S OWN RECIPE: fcn_resnet50_32s")
    assert not any("NOT THE RELEASED WEIGHTS" in r or "nothing to compare with" in r
                   for r in report["not_a_reproduction"])
    md = (folder / "frozen" / "report.md").read_text().splitlines()
    assert md[2] == "**Not a reproduction of the project's own recipe:**"

    out = folder / "trained"
    assert "BatchNorm: batch statistics, the moving sums updated each forward pass" in \
        printed["trained"]
    trained = load_file(out / "final.safetensors")
    for key, value in stats.items():  # every layer's sums moved in the one forward pass
        assert not np.array_equal(trained[key], value), key
    factors = [v for k, v in trained.items() if k.endswith(".scale_factor")]
    assert all(np.array_equal(f, factors[0]) for f in factors) and factors[0][0] > 1.0
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["train_batchnorm"] is True
    assert report["training"]["batchnorm"].startswith("batch statistics")
    shortfall = [r for r in report["not_a_reproduction"] if r.startswith("BATCHNORM:")]
    assert len(shortfall) == 1 and "--train-batchnorm" in shortfall[0]
    assert shortfall[0] in report["training"]["not_a_reproduction"]
    md = (out / "report.md").read_text()
    assert "- BatchNorm: batch statistics" in md and f"- {shortfall[0]}" in md
    from port.weights import read_metadata
    meta = read_metadata(out / "final.safetensors")
    assert meta["batchnorm"].startswith("batch statistics")
    assert shortfall[0] in json.loads(meta["not_a_reproduction"])
    assert json.loads((out / "init.json").read_text())["batchnorm"].startswith("batch statistics")


def test_resume_keeps_the_setting(tree, runs, tmp_path, capsys):
    import shutil
    out, frozen = tmp_path / "trained", tmp_path / "frozen"
    shutil.copytree(runs[0] / "trained", out)
    shutil.copytree(runs[0] / "frozen", frozen)
    capsys.readouterr()
    assert _train(tree, out, "--iters", "2", "--resume") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "snapshot of a run with --train-batchnorm, this run is " \
        "without it: resume with the same setting" in err
    assert _train(tree, frozen, "--iters", "2", "--resume", "--train-batchnorm") == 1
    assert "snapshot of a run without --train-batchnorm" in capsys.readouterr().err
    assert _train(tree, out, "--iters", "2", "--resume", "--train-batchnorm") == 0
    assert "trained 1 iteration (2 to 2; resumed at 1)" in capsys.readouterr().out


def test_refused_for_a_net_without_batchnorm(tree, tmp_path, capsys):
    root, _ = tree
    out = tmp_path / "fcn8s"
    assert reproduce_main(["train", "fcn8s", "--data", str(root), "--out", str(out),
                           "--train-batchnorm", *COMMON]) == 1
    printed = capsys.readouterr()
    assert printed.err.count("\n") == 1 and printed.out == ""  # before the run's first line
    assert "--train-batchnorm: fcn8s has no BatchNorm layer" in printed.err
    assert not out.exists()


def test_help_names_the_flag(capsys):
    with pytest.raises(SystemExit) as done:
        reproduce_main(["train", "--help"])
    assert done.value.code == 0
    assert "--train-batchnorm" in capsys.readouterr().out


def _make_n(target, tmp_path, *variables):
    import shutil
    import subprocess
    from pathlib import Path
    if shutil.which("make") is None:
        pytest.skip("no make")
    venv = tmp_path / "venv"
    venv.mkdir(exist_ok=True)
    (venv / ".installed").touch()  # an installed venv: make -n prints only the command
    proc = subprocess.run(["make", "-s", "-n", "-C", str(Path(__file__).resolve().parents[1]),
                           target, f"VENV={venv}", f"RUNS={tmp_path / 'runs'}", "DATA=/d",
                           *variables], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if " -m reproduce " in line]


def test_make_runs_every_cast_net_and_passes_the_flag_to_each_stage(tmp_path):
    """make reproduce-<net> and make train-<net> for every cast net (issue 21 item 3);
    TRAIN_ARGS=--train-batchnorm reaches every stage of an FCN-ResNet chain."""
    from port.models.cast_meta import CAST_MODELS
    for name in CAST_MODELS:
        dashed = name.replace("_", "-")
        [line] = _make_n(f"reproduce-{dashed}", tmp_path, "WEIGHTS=w.safetensors")
        assert f" -m reproduce {dashed} " in line and "--weights w.safetensors" in line
        assert _make_n(f"train-{dashed}", tmp_path)[-1].split(" train ", 1)[1].split()[0] == dashed
    chain = _make_n("train-fcn-resnet50-8s", tmp_path, "TRAIN_ARGS=--train-batchnorm")
    assert len(chain) == 3 and all(line.endswith("--train-batchnorm") or
                                   " --train-batchnorm " in line for line in chain)
