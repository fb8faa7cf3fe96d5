"""The nets fcnize casts learn too (issue 21 item 3): a reduced FCN-ResNet-50-8s and a reduced
FCN-GoogLeNet, each from its shipped classifier with random weights
(``synthetic.random_classifier``), rise clearly from chance on the synthetic task in a few
hundred CPU iterations (``reproduce.training.synthetic``; the full curves are
``benchmarks/learning_curve_cast.py``'s, in ``benchmarks/RESULTS.md``).

FCN-GoogLeNet is scored at stride 32 only, so it learns the task at scale 2 (at scale 1 the
loss's optimum is the background everywhere: the synthetic module's docstring). The settings
are the smallest that learned on each of 10 seeds (RESULTS.md); the checks compare with chance
as measured here, never with a number a run achieved.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from port.models import get_meta
from reproduce.training import synthetic

IMAGES = 10  # held-out images per evaluation

#: (model, width divisor, task scale, base_lr for the net's own loss, iterations)
CASES = [
    ("fcn_resnet50_8s", 16, 1, 5e-8, 300),   # summed loss, momentum 0.99 (its recipe's)
    ("fcn_googlenet", 8, 2, 5e-3, 300),      # averaged loss, momentum 0.9 (the paper's)
]


def chance(scale: int) -> float:
    """Mean IU of the background everywhere on the held-out images: background IU, and 0 for
    the squares (as score.py counts: nanmean over the two classes)."""
    background = [1 - synthetic.sample(k, 7, scale=scale)["label"].mean() for k in range(IMAGES)]
    return float(np.mean(background)) / 2


@pytest.mark.parametrize("model, divisor, scale, lr, iters", CASES, ids=[c[0] for c in CASES])
def test_a_reduced_cast_net_learns_squares_on_noise(tmp_path, model, divisor, scale, lr, iters):
    classifier = synthetic.random_classifier(get_meta(model).classifier, divisor,
                                             tmp_path / "classifier.caffemodel")
    curve = synthetic.learn(classifier, model=model, width_divisor=divisor, scale=scale,
                            base_lr=lr, iters=iters, every=iters // 2, images=IMAGES)
    start, final = curve[0]["mean_iu"], curve[-1]["mean_iu"]
    # untrained, the zero-initialised score predicts the background everywhere: chance
    assert start == pytest.approx(chance(scale), abs=1e-6)
    assert final > start + 0.15, curve
    assert all(math.isfinite(p["loss"]) for p in curve[1:])
    assert curve[-1]["loss"] < curve[1]["loss"], curve
