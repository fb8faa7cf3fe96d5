"""A small synthetic segmentation task to show that the training recipe learns, on a CPU.

Squares of one colour on Gaussian noise (labels: 1 inside the square, 0 elsewhere), 64 x 64.
A reduced FCN (a released net at ``width_divisor`` 16, two classes) starts as upstream
``solve.py`` starts it: a classifier transplanted into the train net (here the legacy V1
VGG16 of ``caffe-goldens/vgg16-v1-224``, random He-scaled weights: a "classifier" that has
learned nothing) and ``interp`` on the frozen upsamplings, then Caffe's SGD with upstream's
momentum 0.99, weight decay 5e-4 and the unnormalized (summed) loss. Chance is the mean IU of
predicting the background everywhere.

Public API: before a long GPU run, a user checks in minutes on a CPU that the recipe (the
transplant, interp, Caffe's SGD as upstream sets it) learns on their install with ``learn``;
``benchmarks/learning_curve.py`` records its curve in ``benchmarks/RESULTS.md`` and
``tests/test_train_learning.py`` checks it goes well above chance.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from port.caffe import parse_text
from port.models import net_spec
from port.training.solver import Solver, SolverParameter
from port.training.surgery import init_from

SIZE = 64
#: The square's colour offset (BGR, on N(0, 40) noise) and its side range in pixels.
COLOUR = (120.0, -80.0, 40.0)
SIDES = (14, 30)
NOISE_STD = 40.0


def sample(k: int, seed: int = 0, size: int = SIZE) -> dict[str, np.ndarray]:
    """The k-th image and label of the sequence ``seed`` (a pure function of both)."""
    rng = np.random.default_rng(seed * 100003 + k)
    image = rng.normal(0, NOISE_STD, (1, 3, size, size)).astype(np.float32)
    label = np.zeros((1, 1, size, size), np.float32)
    side = int(rng.integers(*SIDES))
    y, x = rng.integers(0, size - side, 2)
    image[:, :, y:y + side, x:x + side] += np.array(COLOUR, np.float32)[None, :, None, None]
    label[..., y:y + side, x:x + side] = 1
    return {"data": image, "label": label}


def mean_iu(net: Any, images: int = 20, seed: int = 7) -> float:
    """Mean IU of ``net``'s ``score`` on held-out images (another seed), as score.py counts."""
    net.eval()
    hist = np.zeros((2, 2))
    with torch.no_grad():
        for k in range(images):
            s = sample(k, seed)
            pred = net(return_blobs=True, **s)["score"][0].argmax(0).numpy().ravel()
            hist += np.bincount(2 * s["label"][0, 0].astype(int).ravel() + pred, minlength=4).reshape(2, 2)
    net.train()
    with np.errstate(invalid="ignore"):
        iu = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    return float(np.nanmean(iu))


def learn(classifier: Any, *, model: str = "fcn8s", base_lr: float = 5e-10, iters: int = 800,
          every: int = 100, seed: int = 1, width_divisor: int = 16) -> list[dict[str, float]]:
    """Train ``model`` (at ``width_divisor``, two classes) from ``classifier`` (a parsed
    caffemodel) on the task; the curve: iteration, mean loss of the last ``every`` iterations,
    held-out mean IU (iteration 0: before training)."""
    netdef = net_spec(model, "train", num_classes=2, width_divisor=width_divisor).netdef()
    shapes = {"data": (1, 3, SIZE, SIZE), "label": (1, 1, SIZE, SIZE)}
    net, _ = init_from(netdef, classifier, seed=seed, do_interp=True, input_shapes=shapes)
    text = (f'base_lr: {base_lr} lr_policy: "fixed" momentum: 0.99 weight_decay: 0.0005 '
            f'max_iter: {iters} random_seed: {seed}')
    solver = Solver(SolverParameter.from_message(parse_text(text, "SolverParameter")),
                    feed=lambda k: sample(k), net=net)
    curve = [{"iter": 0, "loss": float("nan"), "mean_iu": mean_iu(net)}]
    for done in range(every, iters + 1, every):
        losses = solver.step(every)
        curve.append({"iter": done, "loss": float(np.mean([np.mean(p) for p in losses])),
                      "mean_iu": mean_iu(net)})
    return curve
