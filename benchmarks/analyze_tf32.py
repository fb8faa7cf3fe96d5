"""Analysis (no timing): which layers' TF32 rounding flips FCN-8s argmaxes, emulated on the CPU.

TF32 tensor cores (cuDNN with ``allow_tf32``) read fp32 operands rounded to a 10-bit mantissa
and accumulate in fp32. This script rounds the input and the weight of the convolutions and
deconvolutions of one group of layers that way (round to nearest even), runs every other layer
in plain fp32, and reports the share of output pixels whose argmax equals plain fp32's: the
argmax agreement that ``benchmarks/gpu_check.py`` measures for the ``tf32`` and ``fast-tf32``
modes on a GPU, broken down by layer group. Same net and images as ``gpu_check.py``: FCN-8s
with seeded random weights (the selfcheck recipe) on its synthetic photos-like images.

It answers whether a mixed mode (TF32 for most layers, fp32 for the few that matter) could
keep the speed of TF32 and agree with strict fp32 on >= 99.9% of pixels (issue 5). It also
prints the spread of the top-2 score margins, relative to the largest score, that decide how
many pixels any rounding can flip.

Run: ``python3 benchmarks/analyze_tf32.py [--size 375x500] [--images 6] [--json FILE]``
(full width, ~3 minutes on 2 cores); ``--quick`` is a tiny run (1/16 width, 48x64).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gpu_check import smooth_noise  # noqa: E402
from port.models import get_model  # noqa: E402
from port.net.layers import Convolution  # noqa: E402
from port.models.preprocess import preprocess_voc  # noqa: E402
from port.cli.selfcheck import randomize  # noqa: E402
from port.run.speed import CONV5, to_tf32  # noqa: E402


def layer_groups(model: torch.nn.Module) -> dict[str, list[str]]:
    """Named groups of the net's convolution and deconvolution layers."""
    layers = [n for n, m in model.named_modules() if isinstance(m, Convolution)]
    stages = {f"conv{k}": [n for n in layers if n.startswith(f"conv{k}_")] for k in range(1, 6)}
    head = [n for n in layers if not n.startswith("conv")]
    groups = {"all layers": layers, **stages, "fc6, fc7, score*, upscore*": head,
              "trunk (conv1-conv5)": [n for s in stages.values() for n in s]}
    groups["all but conv5"] = [n for n in layers if n not in stages["conv5"]]
    return groups


class Tf32Emulation:
    """While active, rounds to TF32 the weights of the layers named in ``weights`` and the
    inputs of those named in ``inputs``."""

    def __init__(self, model: torch.nn.Module, weights: list[str], inputs: list[str]):
        modules = dict(model.named_modules())
        self.weight_modules = [modules[n] for n in weights]
        self.input_modules = [modules[n] for n in inputs]
        self.saved, self.handles = [], []

    def __enter__(self):
        for m in self.weight_modules:
            self.saved.append((m, m.weight.data))
            m.weight.data = to_tf32(m.weight.data)
        for m in self.input_modules:
            self.handles.append(m.register_forward_pre_hook(lambda mod, args: (to_tf32(args[0]), *args[1:])))
        return self

    def __exit__(self, *exc):
        for m, w in self.saved:
            m.weight.data = w
        for h in self.handles:
            h.remove()


def images(n: int, size: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(preprocess_voc(smooth_noise(size, 3, rng)))[None] for _ in range(n)]


def analyse(width_divisor: int, size: tuple[int, int], count: int) -> dict:
    model = randomize(get_model("fcn8s", width_divisor=width_divisor), seed=0).eval()
    xs = images(count, size)
    with torch.no_grad():
        scores = [model(x) for x in xs]
        refs = [s.argmax(1) for s in scores]
        top = torch.cat([(s.topk(2, dim=1).values.diff(dim=1).neg() / s.abs().amax()).flatten() for s in scores])
        rows = []
        plans = [(g, names, names) for g, names in layer_groups(model).items()]
        everything = plans[0][1]
        plans[1:1] = [("all layers, weights only", everything, []),
                      ("all layers, inputs only", [], everything)]
        plans.append(("all layers but conv5's weights (fast-tf32-conv5-split)",
                      [n for n in everything if n not in CONV5], everything))
        for label, weights, inputs in plans:
            names = sorted(set(weights) | set(inputs))
            with Tf32Emulation(model, weights, inputs):
                flipped = sum(int((model(x).argmax(1) != r).sum()) for x, r in zip(xs, refs))
            pixels = sum(r.numel() for r in refs)
            rows.append({"group": label, "layers": len(names), "flipped": flipped, "pixels": pixels,
                         "agreement": 1 - flipped / pixels})
    quantiles = {f"{q:g}": float(top.quantile(q)) for q in (0.001, 0.01, 0.1, 0.5)}
    return {"width_divisor": width_divisor, "size": list(size), "images": count, "rows": rows,
            "relative_top2_margin_quantiles": quantiles, "torch": torch.__version__}


def markdown(result: dict) -> str:
    h, w = result["size"]
    lines = [f"FCN-8s width/{result['width_divisor']}, random weights, {result['images']} synthetic images of {h}x{w}; "
             "TF32 emulated on the CPU for one group of layers, the rest fp32.", "",
             "| TF32 in | layers | pixels flipped | argmax agreement with fp32 |", "|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['group']} | {r['layers']} | {r['flipped']} of {r['pixels']} | {100 * r['agreement']:.4f}% |")
    q = result["relative_top2_margin_quantiles"]
    lines += ["", "Top-2 score margin / largest |score|, quantiles: " + ", ".join(f"{k}: {v:.2e}" for k, v in q.items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="375x500", help="image HxW (default 375x500)")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--width-divisor", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1/16 width, 2 images of 48x64")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.images, args.width_divisor = "48x64", 2, 16
    size = tuple(int(v) for v in args.size.lower().split("x"))
    result = analyse(args.width_divisor, size, args.images)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
