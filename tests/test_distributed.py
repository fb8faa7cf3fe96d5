"""Sharding without duplicates, and torchrun with gloo on CPUs giving exactly the confusion
matrix of a single process (13 images: not a multiple of 2 or 3 processes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reproduce.distributed import DistContext, DistributedError, all_reduce_sum, shard

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300


@pytest.mark.parametrize("n", [0, 1, 7, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_cover_every_id_exactly_once(n, world):
    ids = [f"id{i}" for i in range(n)]
    shards = [shard(ids, r, world) for r in range(world)]
    assert sorted(i for s in shards for i in s) == sorted(ids)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(DistributedError):
        shard(ids, world, world)


def test_single_process_collectives_are_identities():
    t = torch.arange(4, dtype=torch.int64)
    assert torch.equal(all_reduce_sum(t, DistContext()), t)


@pytest.mark.parametrize("nproc", [2, 3])
def test_torchrun_gloo_matches_one_process_exactly(net_argv, voc_tree, caffemodel, net_run,
                                                   tmp_path, nproc):
    n_images = len(voc_tree[1])
    assert n_images % nproc != 0
    out = tmp_path / "out"
    argv = net_argv(caffemodel, voc_tree[0], out, "--checkpoint-every", "4",
                    "--overlays", "2")
    # the same thread count as the single-process reference, so every image sees equal math
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", "-m", "reproduce", *argv],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    single = json.loads((net_run / "report" / "report.json").read_text())
    assert report["world_size"] == nproc
    assert report["images"] == n_images
    np.testing.assert_array_equal(np.array(report["outputs"]["score"]["scores"]["confusion"]),
                                  np.array(single["outputs"]["score"]["scores"]["confusion"]))
    assert report["outputs"]["score"]["metrics"] == single["outputs"]["score"]["metrics"]
    # the loss: float64 sums all-reduced (equal up to the order of the ranks' partial sums)
    assert single["outputs"]["score"]["loss"] is not None
    assert report["outputs"]["score"]["loss"] == pytest.approx(single["outputs"]["score"]["loss"],
                                                               rel=1e-12)
    ckpt = json.loads((out / "checkpoint.json").read_text())
    assert sorted(ckpt["done"]) == sorted(voc_tree[1])  # every id once, none repeated
    assert ckpt["loss"]["score"][1] == n_images          # every rank's losses counted once
    assert len(report["files"]["overlays"]) == 2         # gathered from the ranks to rank 0


def test_a_bad_item_on_another_rank_is_named_on_rank_0(net_argv, voc_tree, caffemodel, tmp_path):
    """The corrupt image is in rank 1's shard; rank 0's error names its id and path."""
    import shutil
    root, ids = voc_tree
    nproc, bad_index = 2, 7
    assert bad_index % nproc == 1                   # shard(ids, 1, 2) holds it
    shutil.copytree(root, tmp_path / "data")
    bad = tmp_path / "data" / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{ids[bad_index]}.jpg"
    bad.write_bytes(b"not a jpeg at all")
    argv = net_argv(caffemodel, tmp_path / "data", tmp_path / "out", "--limit",
                    str(bad_index + 2), "--overlays", "0")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    logs = tmp_path / "logs"   # each rank's stderr in its own file: <run>/attempt_0/<rank>/
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", "--log-dir", str(logs), "--redirects", "3",
                           "-m", "reproduce", *argv],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode != 0
    rank0 = [p.read_text() for p in logs.rglob("stderr.log") if p.parent.name == "0"]
    assert len(rank0) == 1, proc.stderr[-4000:]
    named = [line for line in rank0[0].splitlines() if "bad item" in line]
    assert named and ids[bad_index] in named[0] and str(bad) in named[0], rank0[0][-4000:]
    assert "on rank 1" in named[0]
    ckpt = json.loads((tmp_path / "out" / "checkpoint.json").read_text())
    assert ids[bad_index] not in ckpt["done"] and len(ckpt["done"]) == len(set(ckpt["done"]))


@pytest.mark.parametrize("env,message", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK=5 is outside WORLD_SIZE=2"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "", "MASTER_PORT": ""}, "cannot join"),
])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_bad_torchrun_setting_is_one_line(monkeypatch, tmp_path, capsys, env, message, command):
    from reproduce.__main__ import main as reproduce_main
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if value:
            monkeypatch.setenv(key, value)
    argv = (["train", "fcn32s", "--quiet"] if command == "train" else ["fcn32s"])
    code = reproduce_main(argv + ["--data", str(tmp_path), "--out", str(tmp_path / "o"),
                                  "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and message in err and "Traceback" not in err
