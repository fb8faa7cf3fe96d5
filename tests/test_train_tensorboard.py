"""``python -m reproduce train --tensorboard DIR`` on a 1/16-width FCN-32s and a tiny SBD/VOC
tree: the event files read back with TensorBoard's own ``EventAccumulator`` hold the numbers
``train_log.jsonl`` and the report recorded, at the solver's iterations, with the overlays as
images; a ``--resume`` continues the same stream (what the stopped run wrote past its snapshot
dropped); without the package the run goes on and says how to get it in one line."""
from __future__ import annotations

import importlib.abc
import json
import sys

import numpy as np
import pytest

from reproduce.__main__ import main as reproduce_main
from reproduce.training import tensorboard as TB

from train_trees import sbd_voc_and_init
from helpers import train_log

pytest.importorskip("tensorboard")  # the `test` extra installs it: this checks the real thing

COMMON = ["--width-divisor", "16", "--test-interval", "2", "--snapshot", "2", "--quiet",
          "--device", "cpu"]


def _train(tree, out, *extra):
    root, init = tree
    return reproduce_main(["train", "fcn32s", "--data", str(root), "--out", str(out),
                           "--init", str(init), *COMMON, *extra])


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _steps_values(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _f32(values):
    return [float(np.float32(v)) for v in values]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return sbd_voc_and_init(tmp_path_factory)


@pytest.fixture(scope="module")
def resumed(tree, tmp_path_factory):
    """A run of 3 iterations (validations at 2 and 3, the last; a snapshot at 2), then the same
    run resumed to 4: it starts again from the snapshot at 2, so the first run's iteration 3
    (and its validation) is not part of the run any more."""
    base = tmp_path_factory.mktemp("tb")
    out, board = base / "fcn32s", base / "board"
    assert _train(tree, out, "--iters", "3", "--tensorboard", str(board)) == 0
    first = _events(board)
    first_log = train_log(out)
    assert _train(tree, out, "--iters", "4", "--resume", "--tensorboard", str(board)) == 0
    return out, board, first, first_log


def test_training_scalars_are_the_logs_at_each_iteration(resumed):
    out, board, first, first_log = resumed
    for acc, log in ((first, first_log), (_events(board), train_log(out))):
        assert [r["iter"] for r in log] == list(range(1, len(log) + 1))
        assert _steps_values(acc, "train/loss") == list(zip(
            [r["iter"] for r in log], _f32(r["loss"] for r in log)))
        assert _steps_values(acc, "train/lr") == list(zip(
            [r["iter"] for r in log], _f32(r["lr"] for r in log)))


def test_smoothed_loss_is_caffes_running_mean_restarted_by_the_resume(resumed):
    """Caffe's ``smoothed_loss_`` over ``average_loss`` (20 in upstream's solvers) iterations,
    restarted by each ``step()`` call: the mean of the losses so far in this call."""
    out, board, _, _ = resumed
    losses = [r["loss"] for r in train_log(out)]
    expected = [np.mean(losses[:i]) for i in (1, 2)] + [np.mean(losses[2:i]) for i in (3, 4)]
    got = _steps_values(_events(board), "train/smoothed_loss")
    assert [s for s, _ in got] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in got], expected, rtol=1e-6)


def test_validation_metrics_are_the_logs_and_the_reports(resumed):
    out, board, first, first_log = resumed
    log, acc = train_log(out), _events(board)
    for events, records in ((first, first_log), (acc, log)):
        validated = [r for r in records if "val" in r]
        assert len(validated) == 2
        for metric in TB.METRICS:
            assert _steps_values(events, f"val/{metric}") == list(zip(
                [r["iter"] for r in validated], _f32(r["val"][metric] for r in validated)))
    # the resumed stream: validations at 2 and 4; the first run's validation at 3 is dropped
    assert [s for s, _ in _steps_values(acc, "val/mean_iu")] == [2, 4]
    # per-class IU of the last validation: the report's (a class with no IU has no scalar)
    report = json.loads((out / "report.json").read_text())["outputs"]["score"]
    per_class = dict(zip(report["classes"], report["scores"]["per_class_iu"]))
    tags = set(acc.Tags()["scalars"])
    assert any(v is not None for v in per_class.values())
    for name, iu in per_class.items():
        tag = f"val_class_iu/{name}"
        if iu is None:
            assert tag not in tags
        else:
            assert acc.Scalars(tag)[-1].step == 4
            assert acc.Scalars(tag)[-1].value == np.float32(iu)


def test_validation_overlays_are_images_at_each_validation(resumed):
    out, board, _, _ = resumed
    acc = _events(board)
    report = json.loads((out / "report.json").read_text())
    drawn = report["files"]["overlays"]           # the report draws the same ones
    tags = acc.Tags()["images"]
    assert len(tags) == len(drawn) == TB.OVERLAYS
    for tag in tags:
        images = acc.Images(tag)
        assert [i.step for i in images] == [2, 4]
        assert all(i.width > 0 and i.height > 0 and i.encoded_image_string.startswith(b"\x89PNG")
                   for i in images)
    assert sorted(t.split("/", 1)[1] for t in tags) == sorted(
        p.split("/")[-1][:-len(".png")] for p in drawn)


class _NoTensorBoard(importlib.abc.MetaPathFinder):
    """What an environment without the package answers for ``tensorboard`` and below it."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def test_without_tensorboard_the_run_goes_on_and_says_how_to_get_it(tree, tmp_path, monkeypatch,
                                                                    capsys):
    """The import fails as it does where the package is missing: the modules already imported
    forgotten, a finder says ``No module named 'tensorboard'`` as the import system does, and
    ``torch.utils.tensorboard`` (imported again) fails on its ``import tensorboard``."""
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith("tensorboard.")
                 or m.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoTensorBoard()] + sys.meta_path)
    with pytest.raises(ModuleNotFoundError, match="No module named 'tensorboard'"):
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    out, board = tmp_path / "fcn32s", tmp_path / "board"
    capsys.readouterr()
    assert _train(tree, out, "--iters", "2", "--tensorboard", str(board)) == 0
    printed = capsys.readouterr()
    said = [line for line in (printed.out + printed.err).splitlines() if "TensorBoard" in line]
    assert len(said) == 1 and TB.INSTALL in said[0], said
    assert "Traceback" not in printed.out + printed.err
    assert not board.exists()
    assert [r["iter"] for r in train_log(out)] == [1, 2] and (out / "report.json").is_file()


def test_several_outputs_are_named_after_the_group(tmp_path):
    """SIFT Flow's two scored outputs: each metric and class IU under its output's name
    (``val/score_sem/mean_iu``, ``val_class_iu/score_geo/<class>``); a class without an IU (NaN) has none."""
    from types import SimpleNamespace
    from torch.utils.tensorboard import SummaryWriter
    from reproduce.harness import Task
    tasks = (Task("score_sem", "sem", ("sky", "tree", "road")), Task("score_geo", "geo",
                                                                      ("sky", "horizontal", "vertical")))
    rng = np.random.default_rng(0)
    per_class = {"score_sem": (0.25, float("nan"), 0.5), "score_geo": (0.75, 0.125, 0.0)}
    val = {"outputs": {t.output: {m: float(rng.random()) for m in TB.METRICS} for t in tasks}}
    val["outputs"]["score_geo"]["loss"] = None                 # an output without a loss layer
    result = SimpleNamespace(overlays={}, scores={o: SimpleNamespace(per_class_iu=v)
                                                  for o, v in per_class.items()})
    record = {"iter": 7, "loss": 1.5, "lr": 1e-10, "val": val}
    board = TB.TensorBoardLog(SummaryWriter(str(tmp_path)), tasks, lambda: (record, result))
    board.on_iteration_end(SimpleNamespace(smoothed_loss=2.5), [1.5])
    board.close()
    acc = _events(tmp_path)
    for task in tasks:
        for metric in TB.METRICS:
            tag, value = f"val/{task.output}/{metric}", val["outputs"][task.output][metric]
            assert (_steps_values(acc, tag) == [(7, np.float32(value))] if value is not None
                    else tag not in acc.Tags()["scalars"])
        for name, iu in zip(task.class_names, per_class[task.output]):
            tag = f"val_class_iu/{task.output}/{name}"
            assert (tag not in acc.Tags()["scalars"] if np.isnan(iu)
                    else _steps_values(acc, tag) == [(7, iu)])
    assert _steps_values(acc, "train/smoothed_loss") == [(7, 2.5)]
    assert not any(t.startswith("val/mean") for t in acc.Tags()["scalars"])
