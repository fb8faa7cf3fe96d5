"""Analysis (no timing): how much of the FCN trunk's work is on constant values.

``conv1_1``'s ``pad: 100`` surrounds the image with zeros, so its output far from the image
is the per-channel constant ``relu(bias)``, and every later layer maps a constant region to a
constant region, shrunk by its kernel. The non-constant set of each map is
``(outer rows x all) u (all x outer cols) u (image rows x image cols)`` (the outer band comes
from the zero padding of the later convolutions), kept per axis here. A forward that computed
only the non-constant outputs (and filled the rest with the constant, computed once per
channel) would do the FLOPs printed in the last column, with outputs equal up to fp32
summation order. Run: ``python benchmarks/analyze_padding.py [--model fcn8s] [--size 375x500]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from port.net import ops  # noqa: E402
from port.models import get_model  # noqa: E402


def step(size: int, outer: list[bool], inner: list[bool], kind: str, k: int, s: int, p: int):
    """One layer along one axis: (out size, outer band, image-dependent band)."""
    if kind == "Pooling":  # windows clipped to the input: no padding effect
        n = ops.pool_output_size(size, k, s, p)
        win = [range(max(0, o * s - p), min(size, o * s - p + k)) for o in range(n)]
        return n, [any(outer[i] for i in w) for w in win], [any(inner[i] for i in w) for w in win]
    n = ops.conv_output_size(size, k, s, p)
    win = [range(o * s - p, o * s - p + k) for o in range(n)]
    out = [any(i < 0 or i >= size or outer[i] for i in w) for w in win]
    return n, out, [any(0 <= i < size and inner[i] for i in w) for w in win]


def analyse(name: str, size: tuple[int, int]) -> list[tuple[str, float, int, int]]:
    """(layer, non-constant fraction, FLOPs, FLOPs on non-constant outputs) per trunk layer."""
    with torch.device("meta"):
        model = get_model(name)
    layers = model.caffe_layers()
    records = {name: layers[name].geometry() for name, _, _ in model.steps}
    first = next(r for r in records.values() if r.kind == "Convolution")
    pad = first.pad[0]
    axes = []
    for n in size:  # conv1_1 reads the zero-padded image: only the image is non-constant
        padded = n + 2 * pad
        axes.append((padded, [False] * padded, [pad <= i < pad + n for i in range(padded)]))
    rows, blob = [], first.bottoms[0]
    for r in records.values():
        if r.bottoms[:1] != (blob,) or r.kind not in ("Convolution", "Pooling", "ReLU", "Dropout", "LRN"):
            continue
        if r.kind in ("ReLU", "Dropout", "LRN"):  # pointwise per position: constants stay constant
            continue
        p = 0 if r is first else r.pad[0]
        axes = [step(a[0], a[1], a[2], r.kind, r.kernel[0], r.stride[0], p) for a in axes]
        blob = r.tops[0]
        if r.kind == "Convolution":
            (h, ro, ri), (w, co, ci) = axes
            nonconst = sum(1 for y in range(h) for x in range(w) if ro[y] or co[x] or (ri[y] and ci[x]))
            weight = getattr(model, r.name).weight.shape
            per_output = 2 * weight[1] * weight[2] * weight[3] * weight[0]
            rows.append((r.name, nonconst / (h * w), per_output * h * w, per_output * nonconst))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="fcn8s")
    parser.add_argument("--size", default="375x500")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    rows = analyse(args.model, size)
    print(f"{args.model} at {size[0]}x{size[1]}: trunk convolutions on the padded input")
    print("| layer | non-constant outputs | GFLOP | GFLOP on non-constant outputs |\n|---|---|---|---|")
    for name, frac, flops, needed in rows:
        print(f"| {name} | {100 * frac:.0f}% | {flops / 1e9:.1f} | {needed / 1e9:.1f} |")
    total, needed = sum(r[2] for r in rows), sum(r[3] for r in rows)
    print(f"| all | {100 * needed / total:.0f}% | {total / 1e9:.1f} | {needed / 1e9:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
