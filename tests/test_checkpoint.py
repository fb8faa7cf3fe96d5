"""Checkpoints: atomic, validated, refused when from another run; a real subprocess killed by a
real signal part-way resumes to the metrics of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from port.fileio import atomic_open
from reproduce.checkpoint import (
    Checkpoint, CheckpointError, CheckpointMismatchError, RunIdentity, load_checkpoint,
    save_checkpoint,
)
BAD_INDEX = 6          # the image the killed run is stopped at

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 120


def _identity(**change) -> RunIdentity:
    values = dict(model="fcn8s", dataset="voc", split="seg11valid", weights_sha256="ab" * 32,
                  preprocessing="voc:p:sha256=0", precision="strict-fp32",
                  num_classes=(("score", 3),))
    values.update(change)
    return RunIdentity(**values)


def test_round_trip_and_refusals(tmp_path):
    matrix = np.arange(9, dtype=np.int64).reshape(3, 3)
    loss_sum = sum(np.random.default_rng(0).random(7) * 10)  # float64 with a full mantissa
    ckpt = Checkpoint(_identity(), {"score": matrix}, ["a", "b"], [{"id": "c", "path": None,
                                                                     "error": "x"}], 1.5,
                      {"score": (loss_sum, 2)})
    path = save_checkpoint(ckpt, tmp_path)
    back = load_checkpoint(path)
    np.testing.assert_array_equal(back.confusion["score"], matrix)
    assert back.loss == {"score": (loss_sum, 2)}   # the float64 sum, bit for bit
    assert (back.identity, back.done, back.skipped) == (ckpt.identity, ckpt.done, ckpt.skipped)
    back.check_resumable(_identity(), ["a", "b", "c"], path)
    for field, value in [("weights_sha256", "cd" * 32), ("split", "val"),
                         ("preprocessing", "voc:q:sha256=1")]:
        with pytest.raises(CheckpointMismatchError, match=field):
            back.check_resumable(_identity(**{field: value}), ["a", "b"], path)
    with pytest.raises(CheckpointError, match="not in this run"):
        back.check_resumable(_identity(), ["a"], path)


def test_malformed_checkpoints_are_refused(tmp_path):
    path = save_checkpoint(Checkpoint(_identity(), {"score": np.zeros((3, 3), np.int64)}),
                           tmp_path)
    raw = json.loads(path.read_text())
    raw["confusion"]["score"] = [[1, 2], [3, 4]]
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="3x3"):
        load_checkpoint(path)
    path.write_text("{trunc")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    raw["confusion"]["score"] = np.zeros((3, 3), int).tolist()
    for loss in ({"score": [-1.0, 2]}, {"other": [1.0, 2]}, {"score": "x"}):
        path.write_text(json.dumps({**raw, "loss": loss}))
        with pytest.raises(CheckpointError, match="loss"):
            load_checkpoint(path)
    path.write_text(json.dumps({**raw, "version": raw["version"] - 1}))
    with pytest.raises(CheckpointError, match="version"):
        load_checkpoint(path)


def test_the_shared_atomic_writer_leaves_the_old_file_on_failure(tmp_path):
    """The project's one atomic writer, which checkpoints, reports and predictions use."""
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write(b"half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_checkpoint_file_mode_follows_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = save_checkpoint(Checkpoint(_identity(), {"score": np.zeros((3, 3), np.int64)}),
                               tmp_path / "out")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask   # not mkstemp's 0600


DRIVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from reproduce import resolve as R
    from reproduce.__main__ import main
    gate, marker, release = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    original = R.load_item
    def gated(dataset, item_id):
        if item_id == gate:          # hold this image until the test has sent its signal
            marker.write_text("reached")
            while not release.exists():
                time.sleep(0.02)
        return original(dataset, item_id)
    R.load_item = gated
    sys.exit(main(sys.argv[4:]))
""")


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"driver ended or stalled: {proc.communicate()}")
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_killed_run_resumes_to_the_same_metrics(net_argv, voc_tree, caffemodel, net_run,
                                                tmp_path, signum):
    from reproduce.__main__ import main
    root, ids = voc_tree
    out = tmp_path / "out"
    argv = net_argv(caffemodel, root, out, "--checkpoint-every", "2",
                    "--overlays", "0")
    marker, release = tmp_path / "reached", tmp_path / "release"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, ids[BAD_INDEX], str(marker),
                             str(release), *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(marker, proc)
    proc.send_signal(signum)
    release.touch()
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 128 + signum, err
    ckpt = json.loads((out / "checkpoint.json").read_text())
    assert ckpt["done"] == ids[:BAD_INDEX + 1]  # the image in flight finished, then it stopped
    assert not (out / "report.json").exists()
    assert ckpt["loss"]["score"][1] == BAD_INDEX + 1  # the loss of each image done, once
    assert main(argv + ["--resume"]) == 0
    resumed = json.loads((out / "report.json").read_text())
    whole = json.loads((net_run / "report" / "report.json").read_text())
    assert resumed["resumed_from_images"] == BAD_INDEX + 1
    assert resumed["outputs"]["score"]["scores"] == whole["outputs"]["score"]["scores"]
    assert whole["outputs"]["score"]["scores"]["loss"] is not None  # the loss resumed too


def test_resume_refuses_other_weights(net_argv, make_caffemodel, voc_tree, caffemodel, tmp_path,
                                      capsys):
    from reproduce.__main__ import main
    out = tmp_path / "out"
    first = net_argv(caffemodel, voc_tree[0], out, "--limit", "1", "--overlays", "0")
    assert main(first) == 0
    other = make_caffemodel(tmp_path / "other.caffemodel", seed=2)
    code = main(net_argv(other, voc_tree[0], out, "--limit", "1", "--resume"))
    assert code == 1 and "weights_sha256" in capsys.readouterr().err


def test_resume_keeps_the_overlays_of_images_done_before_the_stop(net_argv, voc_tree, caffemodel,
                                                                   net_run, tmp_path):
    """A run stopped after 6 images (a corrupt 7th), fixed and resumed: the report has the
    overlays of all the first N images, those before the stop drawn again from the same
    weights, equal to a run that never stopped."""
    import shutil
    from PIL import Image
    from reproduce.__main__ import main
    root, ids = voc_tree
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(root, data)
    bad = data / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{ids[BAD_INDEX]}.jpg"
    good = bad.read_bytes()
    bad.write_bytes(b"not a jpeg")
    argv = net_argv(caffemodel, data, out, "--overlays", "8", "--checkpoint-every", "0")
    assert main(argv) == 1
    assert json.loads((out / "checkpoint.json").read_text())["done"] == ids[:BAD_INDEX]
    bad.write_bytes(good)
    assert main(argv + ["--resume"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_from_images"] == BAD_INDEX
    assert sorted(report["files"]["overlays"]) == sorted(f"overlays/{i}.png" for i in ids[:8])
    whole = json.loads((net_run / "report" / "report.json").read_text())
    for rel in whole["files"]["overlays"]:   # the uninterrupted run drew the first 2
        np.testing.assert_array_equal(np.array(Image.open(out / rel)),
                                      np.array(Image.open(net_run / "report" / rel)))
