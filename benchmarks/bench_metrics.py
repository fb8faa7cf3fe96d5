"""How fast ``ConfusionMatrix.update`` counts, with and without striped bins.

``python3 benchmarks/bench_metrics.py [--device cuda] [--repeat 50]`` times one ``update`` of
21-class VOC-sized maps (375x500) at batch 1 and in an equal-size batch of 16, for label and
prediction maps that are uniform over the classes and for skewed ones (three quarters of the
pixels background, as in VOC, so most atomic adds hit one bin), each with ``stripes=1`` (one
copy of the bins) and the device's default (``reproduce.metrics.GPU_STRIPES`` on a GPU). The
reference in the same run is ``stripes=1``. Every variant's matrix is checked equal to the
reference's. On the CPU the default is one stripe, so there the rows show what striping would
cost. Prints a markdown table; ``--json FILE`` also writes the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from reproduce.metrics import GPU_STRIPES, ConfusionMatrix  # noqa: E402

NUM_CLASSES, VOID, SIZE = 21, 255, (375, 500)


def maps(batch: int, skewed: bool, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction and label maps (labels with a void border); skewed: 3/4 background."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *SIZE)
    label = torch.randint(0, NUM_CLASSES, shape, generator=g)
    pred = torch.randint(0, NUM_CLASSES, shape, generator=g)
    if skewed:
        label[torch.rand(shape, generator=g) < 0.75] = 0
        pred[torch.rand(shape, generator=g) < 0.75] = 0
    label[:, :2], label[:, -2:] = VOID, VOID
    return pred.to(device), label.to(torch.uint8).to(device)


def time_update(cm: ConfusionMatrix, pred, label, repeat: int) -> float:
    """Seconds per ``update``, the device drained before and after."""
    cm.update(pred, label)  # warm-up: allocator, offsets
    if pred.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        cm.update(pred, label)
    if pred.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    default = ConfusionMatrix(NUM_CLASSES, args.device).stripes
    rows = []
    for batch in (1, 16):
        for skewed in (False, True):
            pred, label = maps(batch, skewed, args.device)
            reference = ConfusionMatrix(NUM_CLASSES, args.device, stripes=1)
            ref_s = time_update(reference, pred, label, args.repeat)
            for stripes in sorted({1, default, GPU_STRIPES}):
                cm = ConfusionMatrix(NUM_CLASSES, args.device, stripes=stripes)
                s = ref_s if stripes == 1 else time_update(cm, pred, label, args.repeat)
                if stripes != 1 and not torch.equal(cm.matrix, reference.matrix):  # same updates
                    raise SystemExit(f"bench_metrics: stripes={stripes} counted differently")
                rows.append({"batch": batch, "labels": "3/4 background" if skewed else "uniform",
                             "stripes": stripes, "ms": 1e3 * s, "mpixels_per_s": batch * SIZE[0] * SIZE[1] / s / 1e6,
                             "vs_one_stripe": ref_s / s})
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    print(f"## ConfusionMatrix.update, {NUM_CLASSES} classes, {SIZE[0]}x{SIZE[1]} ({name}, torch {torch.__version__})\n")
    print("| batch | maps | stripes | ms per update | Mpixel/s | vs 1 stripe |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['labels']} | {r['stripes']} | {r['ms']:.3f} | {r['mpixels_per_s']:.0f} | {r['vs_one_stripe']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
