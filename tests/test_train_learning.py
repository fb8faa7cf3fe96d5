"""The recipe learns: a reduced FCN-8s from a transplanted random classifier reaches a mean IU
well above chance on a synthetic task in a few hundred CPU iterations (reproduce.training.synthetic)."""
from __future__ import annotations

import math

import pytest

from port.caffe import load_caffemodel
from reproduce.training import synthetic


def test_a_reduced_fcn_learns_squares_on_noise(goldens_dir):
    classifier = load_caffemodel(goldens_dir / "vgg16-v1-224" / "weights.caffemodel")
    curve = synthetic.learn(classifier, iters=800, every=200)
    chance = curve[0]["mean_iu"]           # untrained: the background everywhere
    final = curve[-1]["mean_iu"]
    assert 0.3 < chance < 0.5
    assert final > 0.65 and final > chance + 0.2, curve
    assert all(math.isfinite(p["loss"]) for p in curve[1:])
    assert curve[-1]["loss"] < 0.5 * curve[1]["loss"]
