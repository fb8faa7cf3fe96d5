"""``torchrun`` training: 2 gloo CPU processes with iter_size 1 take the steps of one process
with iter_size 2 over the same sample sequence; rank 0 alone writes (the TensorBoard events too).

With one thread per process each pass's diffs are the same bits in either run, and the sum of
two ranks' diffs is one fp32 addition either way (``a + b == b + a``), so the weights and losses
are equal bit for bit; more ranks or threads reorder the sums (fp32 summation order)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

from reproduce.__main__ import main as reproduce_main

from train_trees import make_sbd_voc, random_init

REPO = Path(__file__).resolve().parents[1]


def test_two_processes_equal_one_with_twice_the_iter_size(tmp_path):
    root = make_sbd_voc(tmp_path / "data")
    init = random_init("fcn32s", tmp_path / "init.safetensors")
    common = ["fcn32s", "--data", str(root), "--init", str(init), "--width-divisor", "16",
              "--iters", "2", "--test-interval", "2", "--snapshot", "0", "--quiet",
              "--device", "cpu"]
    single = tmp_path / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert reproduce_main(["train", *common, "--out", str(single), "--iter-size", "2"]) == 0
    finally:
        torch.set_num_threads(threads)
    multi = tmp_path / "multi"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "-m", "reproduce", "train", *common,
                           "--out", str(multi), "--iter-size", "1",
                           "--tensorboard", str(tmp_path / "board")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    a, b = load_file(single / "final.safetensors"), load_file(multi / "final.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    la = [json.loads(l) for l in (single / "train_log.jsonl").read_text().splitlines()]
    lb = [json.loads(l) for l in (multi / "train_log.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in la] == [r["samples"] for r in lb] and len(lb[0]["samples"]) == 2
    assert [r["loss"] for r in lb] == [r["loss"] for r in la]
    assert lb[-1]["val"]["images"] == la[-1]["val"]["images"] == 3
    assert json.loads((multi / "report.json").read_text())["world_size"] == 2
    # --tensorboard: rank 0 alone writes, the overlays gathered from both ranks' shards
    [events] = (tmp_path / "board").iterdir()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(events))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [
        (r["iter"], float(np.float32(r["loss"]))) for r in lb]
    assert len(acc.Tags()["images"]) == 3
