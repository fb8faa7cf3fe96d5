"""A small synthetic segmentation task to show that the training recipe learns, on a CPU.

Squares of one colour on Gaussian noise (labels: 1 inside the square, 0 elsewhere), 64 x 64.
A reduced FCN (a released net at ``width_divisor`` 16, two classes) starts as upstream
``solve.py`` starts it: a classifier transplanted into the train net (here the legacy V1
VGG16 of ``caffe-goldens/vgg16-v1-224``, random He-scaled weights: a "classifier" that has
learned nothing) and ``interp`` on the frozen upsamplings, then Caffe's SGD with the net's own
recipe's momentum (upstream's 0.99 for the VGG nets), weight decay 5e-4 and the net's own loss
(upstream's unnormalized, summed loss for the VGG nets). Chance is the mean IU of
predicting the background everywhere.

Public API: before a long GPU run, a user checks in minutes on a CPU that the recipe (the
transplant, interp, Caffe's SGD as upstream sets it) learns on their install with ``learn``;
``benchmarks/learning_curve.py`` records its curve in ``benchmarks/RESULTS.md`` and
``tests/test_train_learning.py`` checks it goes well above chance.

The task's ``scale`` multiplies the image and the squares' sides together (the same task, seen
larger). A net whose only score is at stride 32 (FCN-32s, FCN-GoogLeNet, FCN-ResNet-*-32s) needs
``scale`` 2: at scale 1 its score has one value per 32 x 32 pixels, wider than most squares
(14 to 30 pixels), and seen through that coarse score and the fixed bilinear upsampling hardly
any pixel is more likely inside a square than outside, so the loss's optimum is close to the
background everywhere: the loss stays near the background prior's and the mean IU at chance for
hundreds of iterations (measured in ``benchmarks/RESULTS.md``: FCN-ResNet-50-8s learns at scale
1, its own 32s cast and FCN-32s do not in 400 and 800 iterations, FCN-GoogLeNet reaches 0.53
after 2000; at scale 2 FCN-ResNet-50-32s and FCN-GoogLeNet pass 0.75 in 400). At scale 2 the
squares are 28 to 58 pixels, one or two score cells.

:func:`random_classifier`: the cast nets' classifiers (:mod:`port.models.classifiers`) with
random weights, the "classifier that has learned nothing" of the cast nets' learning check
(``benchmarks/learning_curve_cast.py``, ``tests/test_train_learning_cast.py``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from port.caffe import NetDef, load_caffemodel, parse_text
from port.models import classifiers, net_spec
from port.net import fillers
from port.net.engine import CaffeNet
from port.training.solver import Solver, SolverParameter
from port.training.surgery import init_from
from port.weights import write_net
from reproduce.training import recipes

SIZE = 64
#: The square's colour offset (BGR, on N(0, 40) noise) and its side range in pixels.
COLOUR = (120.0, -80.0, 40.0)
SIDES = (14, 30)
NOISE_STD = 40.0


def sample(k: int, seed: int = 0, size: int | None = None, scale: int = 1) -> dict[str, np.ndarray]:
    """The k-th image and label of the sequence ``seed`` (a pure function of its arguments) at
    ``scale``: an image of ``size`` (default ``SIZE * scale``) pixels a side, squares of
    ``SIDES * scale``."""
    size = SIZE * scale if size is None else size
    rng = np.random.default_rng(seed * 100003 + k)
    image = rng.normal(0, NOISE_STD, (1, 3, size, size)).astype(np.float32)
    label = np.zeros((1, 1, size, size), np.float32)
    side = int(rng.integers(*SIDES)) * scale
    y, x = rng.integers(0, size - side, 2)
    image[:, :, y:y + side, x:x + side] += np.array(COLOUR, np.float32)[None, :, None, None]
    label[..., y:y + side, x:x + side] = 1
    return {"data": image, "label": label}


def mean_iu(net: Any, images: int = 20, seed: int = 7, scale: int = 1) -> float:
    """Mean IU of ``net``'s ``score`` on held-out images (another seed), as score.py counts."""
    net.eval()
    hist = np.zeros((2, 2))
    with torch.no_grad():
        for k in range(images):
            s = sample(k, seed, scale=scale)
            pred = net(return_blobs=True, **s)["score"][0].argmax(0).numpy().ravel()
            hist += np.bincount(2 * s["label"][0, 0].astype(int).ravel() + pred, minlength=4).reshape(2, 2)
    net.train()
    with np.errstate(invalid="ignore"):
        iu = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    return float(np.nanmean(iu))


def learn(classifier: Any, *, model: str = "fcn8s", base_lr: float = 5e-10, iters: int = 800,
          every: int = 100, seed: int = 1, width_divisor: int = 16, scale: int = 1,
          images: int = 20, momentum: float | None = None) -> list[dict[str, float]]:
    """Train ``model`` (at ``width_divisor``, two classes) from ``classifier`` (a parsed
    caffemodel) on the task at ``scale``, with ``momentum`` (default: the model's own recipe's,
    :func:`reproduce.training.recipes.get_recipe`: upstream's 0.99 for the VGG nets and
    FCN-ResNet, the paper's 0.9 for FCN-GoogLeNet) and the model's own loss (summed or
    averaged); the curve: iteration, mean loss of the last ``every`` iterations, mean IU on
    ``images`` held-out images (iteration 0: before training)."""
    if momentum is None:
        momentum = recipes.get_recipe(model).solver.momentum
    netdef = net_spec(model, "train", num_classes=2, width_divisor=width_divisor).netdef()
    size = SIZE * scale
    shapes = {"data": (1, 3, size, size), "label": (1, 1, size, size)}
    net, _ = init_from(netdef, classifier, seed=seed, do_interp=True, input_shapes=shapes)
    text = (f'base_lr: {base_lr} lr_policy: "fixed" momentum: {momentum} weight_decay: 0.0005 '
            f'max_iter: {iters} random_seed: {seed}')
    solver = Solver(SolverParameter.from_message(parse_text(text, "SolverParameter")),
                    feed=lambda k: sample(k, scale=scale), net=net)
    curve = [{"iter": 0, "loss": float("nan"), "mean_iu": mean_iu(net, images, scale=scale)}]
    for done in range(every, iters + 1, every):
        losses = solver.step(every)
        curve.append({"iter": done, "loss": float(np.mean([np.mean(p) for p in losses])),
                      "mean_iu": mean_iu(net, images, scale=scale)})
    return curve


def random_classifier(name: str, width_divisor: int, path: Path, seed: int = 0) -> NetDef:
    """The shipped classifier ``name`` (:data:`port.models.classifiers.CLASSIFIERS`) at
    ``width_divisor`` with random weights, written at ``path`` (a ``.caffemodel``) by the
    project's writer and read back as a parsed caffemodel for :func:`learn`: the classifier as
    Caffe would start its ILSVRC training, before it has learned anything.

    Each blob from the filler its prototxt writes (:func:`port.net.fillers.fill_`; GoogLeNet's
    deploy net writes ``xavier`` weights and constant 0.2 biases, 0 on its classifier); where it
    writes none (MSRA's ResNet deploy nets write no filler, and Caffe's default, constant 0,
    would make a dead net), weights He-normal (Caffe's ``msra``: variance 2 / fan-in), biases
    and BatchNorm's mean 0, Scale, BatchNorm's variance and scale factor 1. He-normal on
    GoogLeNet instead leaves its deep activations 50 times apart from one seed to the next
    (the max-pooling branch of each inception module adds to them; at width / 16, root mean
    square 6 to 300 at ``inception_5b/output``), and the largest diverge in training
    (``benchmarks/RESULTS.md``). BatchNorm's statistics are then those Caffe's TRAIN-mode
    BatchNorm accumulates over 8 synthetic 224 x 224 images (a classifier's statistics are
    those of its data; zero/one statistics make a deep ResNet's activations grow without
    bound); a net without BatchNorm (GoogLeNet) skips that pass. ``seed`` seeds one
    ``torch.Generator`` drawn in net order, weight before bias."""
    netdef = classifiers.classifier_net(name, width_divisor)
    net = CaffeNet(netdef, "TEST")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer_name, module in net.caffe_layers().items():
            layer = module.layer
            params = module.caffe_params()
            if not params:
                continue
            specs = fillers.layer_fillers(layer, module)
            for index, (p, spec) in enumerate(zip(params, specs)):
                if spec is not None:
                    fillers.fill_(p, spec, g, f"layer {layer_name!r} blob {index}")
                elif layer.type == "BatchNorm":
                    p.fill_(1.0 if index > 0 else 0.0)
                elif index == 0 and p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2.0 / p[0].numel()))
                else:
                    p.fill_(1.0 if layer.type == "Scale" and index == 0 else 0.0)
    if recipes.batchnorm_layers(netdef):
        # TRAIN-mode BatchNorm on batch statistics: --train-batchnorm's train net
        train = CaffeNet(recipes.with_batch_statistics(netdef), "TRAIN")
        train.load_state_dict(net.state_dict())
        with torch.no_grad():
            for k in range(8):
                train(data=torch.from_numpy(sample(k, seed=99, size=224)["data"]))
        net.load_state_dict(train.state_dict())
    write_net(net, path)
    return load_caffemodel(path)
