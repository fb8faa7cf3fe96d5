"""Training with TRAIN-mode BatchNorm replayed against Caffe's SGDSolver (caffe-goldens README,
"Training with BatchNorm"): ``batchnorm-train/batch1`` (one sample per pass, released-model
statistics, ``use_global_stats: false`` written) and ``batch2`` (two samples, the option unset,
Caffe's zero blobs). Every blob after every iteration -- BatchNorm's three blobs included, which
the solver never updates but each forward pass does, ``iter_size`` times per iteration -- within
the README's rule, every pass's loss within 1e-4, the TEST net afterwards within 1e-5 per blob,
and a snapshot taken mid-run resuming to the same blobs bit for bit."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from port.caffe import load_caffemodel, load_net
from port.net.engine import CaffeNet
from port.net.layers import BatchNorm
from port.training.solver import Solver, SolverParameter

from helpers import rel_err
from test_engine_goldens import TOLERANCE
from test_solver_goldens import npz_feed

CASES = ("batch1", "batch2")
SNAPSHOT_AT = 3


def started_solver(folder) -> tuple[Solver, dict[str, np.ndarray]]:
    param = SolverParameter.read(folder / "solver.prototxt")
    solver = Solver(param, npz_feed(folder / "data.npz"))
    init_net = load_caffemodel(folder / "init.caffemodel")
    solver.net.load_blobs(init_net)
    init = {f"{n}.{i}": np.asarray(b, np.float32) for n, bs in init_net.blobs().items() for i, b in enumerate(bs)}
    return solver, init


@pytest.fixture(scope="module")
def runs(goldens_dir, tmp_path_factory):
    """Each case run once for its 6 iterations: blobs and losses after each, a snapshot after
    iteration :data:`SNAPSHOT_AT`."""
    cache = {}

    def get(case):
        if case not in cache:
            folder = goldens_dir / "batchnorm-train" / case
            solver, init = started_solver(folder)
            snapshot = tmp_path_factory.mktemp(case) / f"iter{SNAPSHOT_AT}.safetensors"
            blobs, losses = [], []
            for it in range(1, solver.param.max_iter + 1):
                losses += solver.step(1)
                blobs.append(solver.blobs())
                if it == SNAPSHOT_AT:
                    solver.snapshot(snapshot)
            cache[case] = dict(folder=folder, solver=solver, init=init, blobs=blobs, losses=losses,
                               snapshot=snapshot)
        return cache[case]
    return get


def statistics_keys(net: CaffeNet) -> set[str]:
    return {f"{name}.{i}" for name, m in net.caffe_layers().items() if isinstance(m, BatchNorm)
            for i in range(3)}


@pytest.mark.parametrize("case", CASES)
def test_every_blob_and_loss_follows_caffe_every_iteration(runs, case):
    run = runs(case)
    folder, solver, init = run["folder"], run["solver"], run["init"]
    golden = json.loads((folder / "losses.json").read_text())["passes"]
    stats = statistics_keys(solver.net)
    assert len(stats) == 6
    # the solver holds no BatchNorm blob (Caffe's lr_mult 0), yet they are the net's weights
    learned = {id(p) for group in solver.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in learned for m in solver.net.caffe_layers().values() if isinstance(m, BatchNorm)
                   for p in m.caffe_params())
    for it, (ours, passes) in enumerate(zip(run["blobs"], run["losses"]), 1):
        assert len(passes) == solver.param.iter_size == len(golden[it - 1])
        for a, b in zip(passes, golden[it - 1]):
            assert abs(a - b) <= 1e-4 * abs(b), (it, a, b)
        ref = np.load(folder / f"params-iter{it}.npz")
        assert set(ref.files) == set(ours) and stats <= set(ours)
        for key in ref.files:
            caffe, mine, w0 = ref[key], ours[key], init[key]
            assert mine.shape == caffe.shape and mine.dtype == np.float32, key
            if key == "up.0":  # the frozen bilinear upsampling
                assert mine.tobytes() == w0.tobytes() == caffe.tobytes()
                continue
            assert not np.array_equal(caffe, w0), key  # every other blob moves, statistics too
            tol = max(1e-3 * np.abs(caffe - w0).max(), 1e-6 * np.abs(caffe).max())
            assert np.abs(mine - caffe).max() <= tol, (it, key)


@pytest.mark.parametrize("case", CASES)
def test_statistics_update_once_per_forward_pass(runs, case):
    """blob2 = 0.999 blob2 + 1 once per pass: after i iterations of iter_size passes, 2 i
    times from the start (float32 recursion, Caffe's arithmetic)."""
    run = runs(case)
    passes = run["solver"].param.iter_size
    for name in ("bn1", "bn2"):
        factor = np.float32(run["init"][f"{name}.2"][0])
        for it, blobs in enumerate(run["blobs"], 1):
            for _ in range(passes):
                factor = np.float32(factor * np.float32(0.999)) + np.float32(1)
            assert blobs[f"{name}.2"][0] == pytest.approx(factor, rel=1e-6), (name, it)


@pytest.mark.parametrize("case", CASES)
def test_test_net_after_training_matches_caffe(runs, case):
    """test.prototxt in the TEST phase (stored statistics, ``use_global_stats`` written or by
    phase) with Caffe's params-iter6: every blob within 1e-5; with our own trained blobs the
    outputs agree as closely as the weights do."""
    folder = runs(case)["folder"]
    net = CaffeNet(load_net(folder / "test.prototxt"), "TEST").eval()
    assert all(m.use_global_stats for m in net.caffe_layers().values() if isinstance(m, BatchNorm))
    ref = np.load(folder / f"params-iter{runs(case)['solver'].param.max_iter}.npz")
    with torch.no_grad():
        for layer, params in net.caffe_params().items():
            for i, p in enumerate(params):
                p.copy_(torch.from_numpy(ref[f"{layer}.{i}"]))
    stored = np.load(folder / "test-after.npz")
    with torch.no_grad():
        ours = net(return_blobs=True, **{k: stored[k] for k in net.input_names})
    for name in stored.files:
        assert rel_err(ours[name].numpy(), stored[name]) <= TOLERANCE, name
    before = {k: p.detach().clone() for k, p in net.state_dict().items()}
    with torch.no_grad():
        net(**{k: stored[k] for k in net.input_names})
    assert all(torch.equal(before[k], p) for k, p in net.state_dict().items())  # TEST: no update


@pytest.mark.parametrize("case", CASES)
def test_snapshot_resumes_bit_for_bit(runs, case):
    """A snapshot carries the BatchNorm blobs (updated by the forward passes, not by the
    solver): restored into a fresh solver, the remaining iterations give the same blobs."""
    run = runs(case)
    solver, _ = started_solver(run["folder"])
    solver.restore(run["snapshot"])
    assert solver.iter == SNAPSHOT_AT and solver.blobs().keys() == run["blobs"][0].keys()
    assert all(np.array_equal(v, run["blobs"][SNAPSHOT_AT - 1][k]) for k, v in solver.blobs().items())
    for ours in run["blobs"][SNAPSHOT_AT:]:
        solver.step(1)
        assert all(v.tobytes() == ours[k].tobytes() for k, v in solver.blobs().items())


def test_fillers_start_batchnorm_at_caffes_zeros(goldens_dir):
    """Without a caffemodel (fill_net, as Caffe's LayerSetUp): the three BatchNorm blobs are
    0, as batch2's init.caffemodel holds them; the Scale layers take their fillers."""
    from port.net.fillers import fill_net
    folder = goldens_dir / "batchnorm-train" / "batch2"
    solver = Solver(SolverParameter.read(folder / "solver.prototxt"), npz_feed(folder / "data.npz"))
    used = fill_net(solver.net, seed=5)
    assert used["bn1"] == used["bn2"] == ["constant"] * 3
    assert used["scale1"] == ["uniform", "gaussian"]
    init = np.load(folder / "init.npz")
    for name in ("bn1", "bn2"):
        for i, p in enumerate(solver.net.caffe_layers()[name].caffe_params()):
            assert p.detach().numpy().tobytes() == init[f"{name}.{i}"].tobytes()
    weight = solver.net.caffe_layers()["scale1"].weight.detach()
    assert 0.5 <= float(weight.min()) and float(weight.max()) <= 1.5 and weight.std() > 0
