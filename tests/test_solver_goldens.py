"""Caffe's SGDSolver replayed: weights after every iteration within the goldens' tolerance per
blob, frozen blobs bit-identical, every pass's loss within 1e-4 relative (caffe-goldens README,
"Training"): solver-zoo/step-l2, solver-zoo/multistep-l1-clip and train-voc-fcn32s."""
from __future__ import annotations

import json

import numpy as np
import pytest

from port.caffe import load_caffemodel
from port.training.solver import Solver, SolverParameter

CASES = ("solver-zoo/step-l2", "solver-zoo/multistep-l1-clip", "train-voc-fcn32s")


def npz_feed(path):
    data = np.load(path)
    tops = sorted({f.rstrip("0123456789") for f in data.files})
    return lambda k: {t: data[f"{t}{k}"] for t in tops}


def check_against_golden(folder, blobs_after, losses, init):
    """The README's agreement rule for every iteration given; returns the worst err / tol."""
    golden = json.loads((folder / "losses.json").read_text())["passes"]
    frozen = {f"{l.name}.{i}" for l in load_caffemodel(folder / "init.caffemodel").layers
              for i, spec in enumerate(l.params) if float(spec.lr_mult) == 0 and i < len(l.blobs)}
    worst = 0.0
    for it, (ours, passes) in enumerate(zip(blobs_after, losses), 1):
        assert len(passes) == len(golden[it - 1])
        for a, b in zip(passes, golden[it - 1]):
            assert abs(a - b) <= 1e-4 * abs(b), (it, a, b)
        ref = np.load(folder / f"params-iter{it}.npz")
        assert set(ref.files) == set(ours)
        for key in ref.files:
            caffe, mine, w0 = ref[key], ours[key], init[key]
            assert mine.shape == caffe.shape and mine.dtype == np.float32
            if key in frozen:
                assert mine.tobytes() == w0.tobytes() == caffe.tobytes(), key
                continue
            tol = max(1e-3 * np.abs(caffe - w0).max(), 1e-6 * np.abs(caffe).max())
            err = np.abs(mine - caffe).max()
            assert err <= tol, (it, key, err, tol)
            worst = max(worst, err / tol)
    return worst


@pytest.mark.parametrize("case", CASES)
def test_weights_and_losses_follow_caffe_every_iteration(goldens_dir, case):
    folder = goldens_dir / case
    param = SolverParameter.read(folder / "solver.prototxt")
    solver = Solver(param, npz_feed(folder / "data.npz"))
    init_net = load_caffemodel(folder / "init.caffemodel")
    solver.net.load_blobs(init_net)
    init = {f"{n}.{i}": np.asarray(b, np.float32) for n, bs in init_net.blobs().items() for i, b in enumerate(bs)}
    iters = param.max_iter
    blobs, losses = [], []
    for _ in range(iters):
        losses += solver.step(1)
        blobs.append(solver.blobs())
    assert solver.iter == iters and solver.passes == iters * param.iter_size
    check_against_golden(folder, blobs, losses, init)
