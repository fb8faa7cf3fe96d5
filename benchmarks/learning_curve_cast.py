"""The synthetic task's learning curve (reproduce.training.synthetic) for the nets fcnize casts:
a reduced FCN-ResNet or FCN-GoogLeNet from a random classifier, Caffe's SGD, on the CPU.

Not a test: ``python benchmarks/learning_curve_cast.py --model fcn_resnet50_8s [--iters 400]
[--lr 3e-8] [--scale 1] [--seed 1] [--momentum M] [--out benchmarks/results]`` writes
``<date>-learning-curve-<model>.json`` and ``.png``. The classifier is
``synthetic.random_classifier``: the shipped deploy net (port.models.classifiers) at
``--width-divisor`` with He-normal convolutions, Scale 1/0, and BatchNorm statistics that
Caffe's TRAIN-mode BatchNorm accumulated over 8 synthetic 224 x 224 images. The FCN's
BatchNorm is frozen at them (``use_global_stats: true``), as the FCN-ResNet recipe trains.
A net scored at stride 32 only (fcn_googlenet, fcn_resnet*_32s) needs ``--scale 2`` (the
synthetic module's docstring says why). ``--lr`` is for the net's own loss: FCN-ResNet sums
it over the pixels (upstream's VGG recipe), FCN-GoogLeNet averages it (the paper's AlexNet and
GoogLeNet recipe), whence rates 4 orders of magnitude apart.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from port.models import get_meta  # noqa: E402
from port.models.released import SUM_OVER_BATCH  # noqa: E402
from reproduce.training import recipes, synthetic  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="fcn_resnet50_8s")
    p.add_argument("--iters", type=int, default=400)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--lr", type=float, default=3e-8)
    p.add_argument("--width-divisor", type=int, default=16)
    p.add_argument("--scale", type=int, default=1, help="the task's scale (2 for a net scored at stride 32 only)")
    p.add_argument("--seed", type=int, default=1, help="the classifier's (seed - 1) and the FCN's fillers' seed")
    p.add_argument("--momentum", type=float, default=None, help="default: the net's recipe's")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = get_meta(args.model)
    if args.momentum is None:
        args.momentum = recipes.get_recipe(meta.name).solver.momentum
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cpu-{datetime.date.today()}-learning-curve-{meta.name}"
    classifier = synthetic.random_classifier(meta.classifier, args.width_divisor,
                                             stem.with_suffix(".classifier.caffemodel"), seed=args.seed - 1)
    start = time.perf_counter()
    curve = synthetic.learn(classifier, model=meta.name, width_divisor=args.width_divisor,
                            base_lr=args.lr, iters=args.iters, every=args.every, seed=args.seed,
                            scale=args.scale, momentum=args.momentum)
    seconds = time.perf_counter() - start
    stem.with_suffix(".classifier.caffemodel").unlink()
    stem.with_suffix(".json").write_text(json.dumps({"model": meta.name, "lr": args.lr, "scale": args.scale, "seed": args.seed,
                                                     "momentum": args.momentum,
                                                     "threads": args.threads, "seconds": seconds,
                                                     "width_divisor": args.width_divisor, "curve": curve},
                                                    indent=1) + "\n")
    for c in curve:
        print(f"iter {c['iter']:5d}  loss {c['loss']:9.4g}  mean IU {c['mean_iu']:.3f}")
    print(f"{seconds:.0f} s")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return 0
    from learning_curve import plot
    summed = meta.loss_normalization == SUM_OVER_BATCH
    plot(curve, stem, f"{meta.name} / {args.width_divisor} from a random classifier, squares on noise "
         f"(scale {args.scale}), Caffe SGD", "loss (sum over pixels)" if summed else "loss (mean over pixels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
