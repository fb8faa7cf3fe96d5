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
