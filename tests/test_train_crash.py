"""``reproduce train --resume`` after what a crash or a full disk leaves behind: a torn last
log line, a damaged log record, a damaged solver state, a damaged snapshot weights file. Each
is one line; the resume goes on from what is intact, never silently from the init."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from port.models.weights import read_metadata

from reproduce.__main__ import main as reproduce_main

from train_trees import sbd_voc_and_init
from helpers import train_log

COMMON = ["--width-divisor", "16", "--test-interval", "0", "--snapshot", "2", "--quiet",
          "--device", "cpu"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A 4-iteration run with snapshots at 2 and 4 (copied by each test before damaging it)."""
    root, init = sbd_voc_and_init(tmp_path_factory)
    out = tmp_path_factory.mktemp("run") / "fcn32s"
    assert _train(root, init, out, 4) == 0
    return root, init, out


def _train(root, init, out, iters, *extra):
    return reproduce_main(["train", "fcn32s", "--data", str(root), "--out", str(out), "--init",
                           str(init), "--iters", str(iters), *COMMON, *extra])


def _copy(first_run, tmp_path):
    root, init, out = first_run
    mine = tmp_path / "fcn32s"
    shutil.copytree(out, mine)
    return root, init, mine


def test_a_torn_last_log_line_is_dropped_and_the_resume_goes_on(first_run, tmp_path, capsys):
    root, init, out = _copy(first_run, tmp_path)
    with open(out / "train_log.jsonl", "a") as fh:
        fh.write('{"iter": 5, "loss": ')  # a kill during the append
    capsys.readouterr()
    assert _train(root, init, out, 5, "--resume") == 0
    printed = capsys.readouterr()
    torn = [line for line in printed.out.splitlines() if "torn last record" in line]
    assert len(torn) == 1 and "train_log.jsonl:5" in torn[0]
    assert [r["iter"] for r in train_log(out)] == [1, 2, 3, 4, 5]


def test_a_damaged_log_record_elsewhere_is_one_line_naming_file_and_line(first_run, tmp_path, capsys):
    root, init, out = _copy(first_run, tmp_path)
    lines = (out / "train_log.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10] + "#garbage"
    (out / "train_log.jsonl").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert _train(root, init, out, 5, "--resume") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train_log.jsonl:2: damaged log record" in err


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_solver_state_is_named_and_the_newest_intact_one_taken(first_run, tmp_path,
                                                                         capsys, damage):
    root, init, out = _copy(first_run, tmp_path)
    state = out / "snapshots" / "iter_4.solverstate.safetensors"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 64)
    capsys.readouterr()
    assert _train(root, init, out, 5, "--resume") == 0
    printed = capsys.readouterr().out.splitlines()
    named = [line for line in printed if "iter_4.solverstate.safetensors: damaged snapshot" in line]
    assert len(named) == 1
    assert any("newest intact snapshot, iter_2.solverstate.safetensors" in line for line in printed)
    assert [r["iter"] for r in train_log(out)] == [1, 2, 3, 4, 5]
    assert "trained 3 iterations (3 to 5; resumed at 2)" in "\n".join(printed)


def test_every_solver_state_damaged_says_how_to_start_over(first_run, tmp_path, capsys):
    root, init, out = _copy(first_run, tmp_path)
    for state in (out / "snapshots").glob("*.solverstate.safetensors"):
        state.write_bytes(state.read_bytes()[:100])
    before = (out / "train_log.jsonl").read_bytes()
    capsys.readouterr()
    assert _train(root, init, out, 5, "--resume") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "every snapshot is damaged" in err and "without --resume" in err
    assert (out / "train_log.jsonl").read_bytes() == before  # nothing restarted from the init


def test_a_damaged_weights_file_beside_an_intact_state_is_said_and_written_again(first_run,
                                                                                 tmp_path, capsys):
    root, init, out = _copy(first_run, tmp_path)
    weights = out / "snapshots" / "iter_4.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) // 3])
    capsys.readouterr()
    assert _train(root, init, out, 5, "--resume") == 0
    printed = capsys.readouterr().out
    assert f"{weights}: damaged" in printed and "the solver state holds the weights" in printed
    # written again from the restored net: the same tensors and metadata as before the damage
    again, (before, before_meta) = load_file(weights), _tensors_and_meta(intact, tmp_path)
    assert again.keys() == before.keys() and all(np.array_equal(again[k], before[k]) for k in again)
    assert read_metadata(weights) == before_meta


def _tensors_and_meta(data: bytes, tmp_path):
    copy = tmp_path / "intact.safetensors"
    copy.write_bytes(data)
    return load_file(copy), read_metadata(copy)
