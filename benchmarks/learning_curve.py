"""The learning curve of issue 12's synthetic task (reproduce.training.synthetic): a reduced
FCN-8s from a transplanted random classifier, Caffe's SGD, on the CPU.

Not a test: ``python benchmarks/learning_curve.py [--iters 1000] [--out benchmarks/results]``
writes ``<date>-learning-curve.json`` and ``.png`` (loss and held-out mean IU per iteration).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from port.caffe import load_caffemodel  # noqa: E402
from reproduce.training import synthetic  # noqa: E402


def plot(curve: list[dict], stem: Path, title: str, loss_label: str = "loss (sum over pixels)") -> None:
    """The loss and held-out mean IU of ``curve`` drawn at ``stem``.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    its = [c["iter"] for c in curve]
    loss_ax.plot(its[1:], [c["loss"] for c in curve[1:]], color="tab:blue", label=loss_label)
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("loss", color="tab:blue")
    iu_ax = loss_ax.twinx()
    iu_ax.plot(its, [c["mean_iu"] for c in curve], color="tab:red", label="held-out mean IU")
    iu_ax.axhline(curve[0]["mean_iu"], color="grey", ls="--", lw=1, label="chance (all background)")
    iu_ax.set_ylabel("mean IU", color="tab:red")
    iu_ax.set_ylim(0, 1)
    handles = loss_ax.get_legend_handles_labels()[0] + iu_ax.get_legend_handles_labels()[0]
    iu_ax.legend(handles, [h.get_label() for h in handles], loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=100)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--classifier", type=Path,
                   default=REPO.parent / "shared" / "caffe-goldens" / "vgg16-v1-224" / "weights.caffemodel")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    curve = synthetic.learn(load_caffemodel(args.classifier), iters=args.iters, every=args.every)
    stem = args.out / f"cpu-{datetime.date.today()}-learning-curve"
    stem.with_suffix(".json").write_text(json.dumps(curve, indent=1) + "\n")
    plot(curve, stem, "FCN-8s / 16 from a random transplanted classifier, squares on noise, Caffe SGD")
    for c in curve:
        print(f"iter {c['iter']:5d}  loss {c['loss']:9.1f}  mean IU {c['mean_iu']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
