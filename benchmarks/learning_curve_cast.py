"""The synthetic task's learning curve (reproduce.training.synthetic) for the nets fcnize casts:
a reduced FCN-ResNet-50 or FCN-GoogLeNet from a random classifier, Caffe's SGD, on the CPU.

Not a test: ``python benchmarks/learning_curve_cast.py --model fcn_resnet50_8s [--iters 400]
[--lr 3e-8] [--out benchmarks/results]`` writes ``<date>-learning-curve-<model>.json`` and
``.png``. The classifier is the shipped deploy net (port.models.classifiers) at
``--width-divisor`` with He-normal convolutions, Scale 1/0, and BatchNorm statistics that
Caffe's TRAIN-mode BatchNorm accumulated over 8 synthetic 224 x 224 images (a classifier's
statistics are those of its data; zero/one statistics make a deep ResNet's activations grow
without bound). The FCN's BatchNorm is frozen at them (``use_global_stats: true``), as the
FCN-ResNet recipe trains.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402

from port.caffe import load_caffemodel  # noqa: E402
from port.caffe.net import netdef_from_message  # noqa: E402
from port.caffe.writer import net_message  # noqa: E402
from port.models import classifiers as C  # noqa: E402
from port.models import get_meta  # noqa: E402
from port.net.engine import CaffeNet  # noqa: E402
from port.weights import write_net  # noqa: E402
from reproduce.training import synthetic  # noqa: E402


def random_classifier(name: str, width_divisor: int, path: Path, seed: int = 0):
    """The shipped classifier ``name`` with random weights and accumulated BatchNorm
    statistics, written at ``path`` by the project's writer and read back."""
    net = CaffeNet(C.classifier_net(name, width_divisor), "TEST")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in net.state_dict().items():
            blob = key.rsplit(".", 1)[1]
            if blob in ("mean", "bias"):
                p.zero_()
            elif blob in ("variance", "scale_factor") or p.dim() == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2.0 / p[0].numel()))
    msg = net_message(C.classifier_net(name, width_divisor))
    for layer in msg.layer:
        if layer.type == "BatchNorm":
            layer.batch_norm_param.use_global_stats = False
    train = CaffeNet(netdef_from_message(msg), "TRAIN")
    train.load_state_dict(net.state_dict())
    with torch.no_grad():
        for k in range(8):
            train(data=torch.from_numpy(synthetic.sample(k, seed=99, size=224)["data"]))
    net.load_state_dict(train.state_dict())
    write_net(net, path)
    return load_caffemodel(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="fcn_resnet50_8s")
    p.add_argument("--iters", type=int, default=400)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--lr", type=float, default=3e-8)
    p.add_argument("--width-divisor", type=int, default=16)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    meta = get_meta(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cpu-{datetime.date.today()}-learning-curve-{meta.name}"
    classifier = random_classifier(meta.classifier, args.width_divisor, stem.with_suffix(".classifier.caffemodel"))
    start = time.perf_counter()
    curve = synthetic.learn(classifier, model=meta.name, width_divisor=args.width_divisor,
                            base_lr=args.lr, iters=args.iters, every=args.every)
    seconds = time.perf_counter() - start
    stem.with_suffix(".classifier.caffemodel").unlink()
    stem.with_suffix(".json").write_text(json.dumps({"model": meta.name, "lr": args.lr, "seconds": seconds,
                                                     "width_divisor": args.width_divisor, "curve": curve},
                                                    indent=1) + "\n")
    for c in curve:
        print(f"iter {c['iter']:5d}  loss {c['loss']:9.1f}  mean IU {c['mean_iu']:.3f}")
    print(f"{seconds:.0f} s")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return 0
    from learning_curve import plot
    plot(curve, stem, f"{meta.name} / {args.width_divisor} from a random classifier, squares on noise, Caffe SGD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
