"""Benchmark: BatchNorm + Scale folded into their convolution (``port.run.fold``) in ``cpu-fast``.

ResNet-50 at full width (the unchanged deploy net of ``../shared/classifiers/resnet-50``) with
seeded random weights made as the caffe-goldens make them (convolutions He-normal, Scale weights
U(0.5, 1.5) and biases N(0, 0.1), BatchNorm per layer a factor s ~ U(0.5, 5), per channel
mean N(0, 0.5) x s and variance U(0.5, 2) x s), 1 x 3 x 224 x 224, strict fp32 on the CPU.
Variants run interleaved (one forward of each per round), best round counts: ``strict-fp32``
(the reference), ``cpu-fast`` without the folding, ``cpu-fast``. Agreement: the max relative
error of every named blob (max|a - b| / max|b|) against ``strict-fp32``, the worst reported.

Not a test: ``python benchmarks/bench_fold.py [--repeat 5] [--size 224]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from port.caffe import load_net  # noqa: E402
from port.net.engine import CaffeNet  # noqa: E402
from port.net.layers import BatchNorm, Convolution, InnerProduct, Scale  # noqa: E402
from port.run import fold, speed  # noqa: E402

NET = REPO.parent / "shared" / "classifiers" / "resnet-50" / "ResNet-50-deploy.prototxt"


def randomize(net: CaffeNet, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for module in net.caffe_layers().values():
            values = []
            if isinstance(module, (Convolution, InnerProduct)):
                w = module.weight
                values.append(rng.normal(0, np.sqrt(2 / (w.numel() / w.shape[0])), tuple(w.shape)))
                if module.bias_term:
                    values.append(rng.normal(0, 0.1, tuple(module.bias.shape)))
            elif isinstance(module, Scale):
                values.append(rng.uniform(0.5, 1.5, tuple(module.weight.shape)))
                if module.bias_term:
                    values.append(rng.normal(0, 0.1, tuple(module.bias.shape)))
            elif isinstance(module, BatchNorm):
                s, c = rng.uniform(0.5, 5), module.channels
                values += [rng.normal(0, 0.5, c) * s, rng.uniform(0.5, 2, c) * s, [s]]
            for param, value in zip(module.caffe_params(), values):
                param.copy_(torch.as_tensor(np.asarray(value, np.float32)))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    speed.set_threads()
    net = CaffeNet(load_net(NET), input_shapes={"data": (1, 3, args.size, args.size)})
    randomize(net)
    x = torch.from_numpy(np.random.default_rng(1).normal(0, 50, (1, 3, args.size, args.size)).astype(np.float32))
    print(f"ResNet-50, 1x3x{args.size}x{args.size}, {torch.get_num_threads()} threads, "
          f"{len(fold.foldable(net))} BatchNorm(+Scale) chains foldable")
    with mock.patch.object(speed, "fold_batchnorm", lambda model: model):
        unfolded = speed.Runner("cpu-fast", net, "cpu")
    variants = {"strict-fp32": speed.Runner("strict-fp32", net, "cpu"),
                "cpu-fast without folding": unfolded,
                "cpu-fast (folded)": speed.Runner("cpu-fast", net, "cpu")}
    blobs, times = {}, {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, runner in variants.items():
            start = time.perf_counter()
            out = runner(data=x, return_blobs=True)
            times[name].append(time.perf_counter() - start)
            blobs[name] = {k: v.float().contiguous() for k, v in out.items()}
    reference = blobs["strict-fp32"]
    base = min(times["strict-fp32"])
    print("| variant | best s | vs strict-fp32 | worst blob rel. err vs strict-fp32 (blob) |")
    print("|---|---|---|---|")
    for name in variants:
        worst = max((rel_err(blobs[name][k], reference[k]), k) for k in reference)
        print(f"| {name} | {min(times[name]):.3f} | {base / min(times[name]):.2f}x | {worst[0]:.1e} ({worst[1]}) |")


if __name__ == "__main__":
    main()
