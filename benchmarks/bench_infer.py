"""Benchmark: CPU inference, strict fp32, FCN-8s / FCN-32s / FCN-AlexNet at 375x500.

Every figure is measured in the same run against a straightforward PyTorch FCN-8s written
below as other ports write it (an ``nn.Conv2d`` stack with in-place ReLUs,
``nn.MaxPool2d(ceil_mode=True)``, ``nn.ConvTranspose2d``, crops by slicing), loaded with the
same random weights. Variants run interleaved (one forward of each per round) so that a busy
machine slows them alike; the best round counts. Also printed: each variant's agreement with
the straightforward model (max relative error of ``score``, argmax agreement). Caffe's own
CPU forward (1.70-1.80 s for FCN-8s at this size on this machine) is quoted, not measured.

Not a test: ``python benchmarks/bench_infer.py [--repeat 3] [--compile] [--json FILE]``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from port.net.layers import ReLU  # noqa: E402
from port.run import canvas, speed  # noqa: E402
from port.models import get_model  # noqa: E402
from port.cli.selfcheck import randomize  # noqa: E402

#: Caffe's CPU forward of FCN-8s at 375x500 on this machine (issue 5), seconds; quoted.
CAFFE_FCN8S_S = (1.70, 1.80)
SIZE = (375, 500)
PLAIN_FAST = "port cpu-fast without the canvas (channels_last + prepacked + fused ReLU)"
FAST = "port cpu-fast (channels_last + prepacked + fused ReLU + constant canvas)"
INPUT_STD = 50.0  # mean-subtracted 0-255 pixels


# -- the straightforward reference ------------------------------------------------------------
class StraightforwardFCN8s(nn.Module):
    """FCN-8s as PyTorch ports usually write it: layer names of voc-fcn8s so the same state
    dict loads; crop offsets 5, 9, 31 typed in."""

    STAGES = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))

    def __init__(self, n: int = 21):
        super().__init__()
        self.plan = []
        for stage, (c_in, c_out, convs) in enumerate(self.STAGES, 1):
            for i in range(1, convs + 1):
                name = f"{stage}_{i}"
                pad = 100 if name == "1_1" else 1
                setattr(self, f"conv{name}", nn.Conv2d(c_in if i == 1 else c_out, c_out, 3, padding=pad))
                setattr(self, f"relu{name}", nn.ReLU(inplace=True))
                self.plan.append((f"conv{name}", f"relu{name}"))
            setattr(self, f"pool{stage}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            self.plan.append(f"pool{stage}")
        self.fc6, self.relu6, self.drop6 = nn.Conv2d(512, 4096, 7), nn.ReLU(inplace=True), nn.Dropout2d()
        self.fc7, self.relu7, self.drop7 = nn.Conv2d(4096, 4096, 1), nn.ReLU(inplace=True), nn.Dropout2d()
        self.score_fr = nn.Conv2d(4096, n, 1)
        self.score_pool4, self.score_pool3 = nn.Conv2d(512, n, 1), nn.Conv2d(256, n, 1)
        self.upscore2 = nn.ConvTranspose2d(n, n, 4, stride=2, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(n, n, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(n, n, 16, stride=8, bias=False)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        h, pools = data, {}
        for step in self.plan:
            if isinstance(step, str):
                h = pools[step] = getattr(self, step)(h)
            else:
                h = getattr(self, step[1])(getattr(self, step[0])(h))
        h = self.drop6(self.relu6(self.fc6(h)))
        h = self.drop7(self.relu7(self.fc7(h)))
        up2 = self.upscore2(self.score_fr(h))
        p4 = self.score_pool4(pools["pool4"])[:, :, 5:5 + up2.size(2), 5:5 + up2.size(3)]
        up4 = self.upscore_pool4(up2 + p4)
        p3 = self.score_pool3(pools["pool3"])[:, :, 9:9 + up4.size(2), 9:9 + up4.size(3)]
        up8 = self.upscore8(up4 + p3)
        return up8[:, :, 31:31 + data.size(2), 31:31 + data.size(3)].contiguous()


# -- timing ----------------------------------------------------------------------------------
def interleaved(fns: dict[str, Callable[[], torch.Tensor]], repeat: int) -> dict[str, list[float]]:
    """Seconds per call of each function: one warm-up call each, then ``repeat`` rounds of
    one call each, in turn."""
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()
        for _ in range(repeat):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def agreement(ref: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    """(max |got - ref| / max |ref|, fraction of pixels whose argmax class agrees)."""
    got = got.float().contiguous()
    rel = float((got - ref).abs().max() / ref.abs().max())
    return rel, float((got.argmax(1) == ref.argmax(1)).double().mean())


def flops_of(name: str, size: tuple[int, int]) -> int:
    with torch.device("meta"):
        model = get_model(name)
    return speed.count_flops(model, data=torch.empty(1, 3, *size, device="meta"))[0]


# -- variants --------------------------------------------------------------------------------
def inplace_relu(model: nn.Module) -> nn.Module:
    """The model with its ReLU modules in place (Caffe's ReLUs are all in place)."""
    for module in model.modules():
        if type(module) in (nn.ReLU, ReLU):
            module.inplace = True
    return model


def port_variants(model: nn.Module, x: torch.Tensor, args) -> tuple[dict, dict]:
    """(name -> forward, name -> note) of the port model's speed variants."""
    import copy
    cl = x.contiguous(memory_format=torch.channels_last)
    v = {"port eager, NCHW (default)": (lambda m=model: m(x))}
    m_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    v["port channels_last"] = lambda m=m_cl: m(cl)
    m_cli = inplace_relu(copy.deepcopy(m_cl))
    v["port channels_last + in-place ReLU"] = lambda m=m_cli: m(cl)
    m_pk = speed.prepack_cpu(model)
    v["port prepacked + fused ReLU, NCHW"] = lambda m=m_pk: m(x)
    plain_fast = speed.prepare_model(model, dataclasses.replace(speed.CPU_FAST, skip_constant=False))
    v[PLAIN_FAST] = lambda m=plain_fast: m(cl)
    fast = speed.prepare_model(model, speed.CPU_FAST)
    v[FAST] = lambda m=fast: m(cl)
    v["port strict-fp32-canvas (NCHW, constant canvas skipped)"] = (
        lambda m=speed.prepare_model(model, speed.STRICT_CANVAS): m(x))
    notes = {"constant canvas": "trunk convolutions %.1f -> %.1f GFLOP at %dx%d" % (
        *(f / 1e9 for f in canvas.canvas_flops(model, SIZE)), *SIZE)}
    if args.compile:
        result = speed.compile_model(copy.deepcopy(m_cl), {"data": cl}, budget_s=args.compile_budget)
        notes["torch.compile"] = (f"compiled, warm-up {result.warmup_s:.0f} s" if result.compiled
                                  else result.reason)
        if result.compiled:
            v["port channels_last + torch.compile (inductor, freezing)"] = lambda m=result.model: m(data=cl)
    return v, notes


def fcn8s_section(args) -> dict:
    torch.manual_seed(0)
    model = randomize(get_model("fcn8s"), seed=0).eval()
    ref_model = StraightforwardFCN8s().eval()
    ref_model.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(1)) * INPUT_STD
    cl = x.contiguous(memory_format=torch.channels_last)
    fns = {"straightforward PyTorch FCN-8s (reference)": lambda: ref_model(x),
           "straightforward, channels_last": lambda: ref_model(cl)}
    variants, notes = port_variants(model, x, args)
    fns.update(variants)
    with torch.inference_mode():
        ref = ref_model(x)
        agree = {k: agreement(ref, fn()) for k, fn in fns.items()}
    times = interleaved(fns, args.repeat)
    return {"fns": list(fns), "times": times, "agree": agree, "notes": notes,
            "flops": flops_of("fcn8s", SIZE)}


def other_section(name: str, args) -> dict:
    model = randomize(get_model(name), seed=0).eval()
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(1)) * INPUT_STD
    fast = speed.prepare_model(model, speed.CPU_FAST)
    plain_fast = speed.prepare_model(model, dataclasses.replace(speed.CPU_FAST, skip_constant=False))
    cl = speed.to_input(x, speed.CPU_FAST)
    fns = {f"{name} port eager, NCHW (default)": lambda: model(x),
           f"{name} port cpu-fast without the canvas": lambda: plain_fast(cl),
           f"{name} port cpu-fast (constant canvas)": lambda: fast(cl)}
    with torch.inference_mode():
        ref = model(x)
        agree = {k: agreement(ref, fn()) for k, fn in fns.items()}
    return {"fns": list(fns), "times": interleaved(fns, args.repeat), "agree": agree,
            "flops": flops_of(name, SIZE)}


# -- report ----------------------------------------------------------------------------------
def table(section: dict, reference: str) -> list[str]:
    best = {k: min(v) for k, v in section["times"].items()}
    gflop = section["flops"] / 1e9
    rows = ["| variant | best s | median s | images/s | GFLOP/s | speed-up vs reference | "
            "max rel err vs reference | argmax agreement |", "|---|---|---|---|---|---|---|---|"]
    for k in section["fns"]:
        rel, arg = section["agree"][k]
        rows.append(f"| {k} | {best[k]:.3f} | {statistics.median(section['times'][k]):.3f} | "
                    f"{1 / best[k]:.3f} | {gflop / best[k]:.0f} | {best[reference] / best[k]:.2f}x | "
                    f"{rel:.2e} | {100 * arg:.4f}% |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: the CPUs allowed)")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (slow warm-up)")
    parser.add_argument("--compile-budget", type=float, default=240.0, help="seconds for its warm-up")
    parser.add_argument("--skip-others", action="store_true", help="FCN-8s only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    threads = speed.set_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs, load average "
          f"{load:.1f} at start; input 1x3x{SIZE[0]}x{SIZE[1]}, strict fp32, best of {args.repeat}")
    sections = {"fcn8s": fcn8s_section(args)}
    ref = "straightforward PyTorch FCN-8s (reference)"
    print(f"\nFCN-8s, {sections['fcn8s']['flops'] / 1e9:.1f} GFLOP (convolutions and deconvolutions)")
    print("\n".join(table(sections["fcn8s"], ref)))
    for k, v in sections["fcn8s"]["notes"].items():
        print(f"note: {k}: {v}")
    best = {k: min(v) for k, v in sections["fcn8s"]["times"].items()}
    caffe = sum(CAFFE_FCN8S_S) / 2
    print(f"\ncpu-fast vs straightforward: {best[ref] / best[FAST]:.2f}x; vs Caffe's quoted "
          f"{CAFFE_FCN8S_S[0]}-{CAFFE_FCN8S_S[1]} s: {caffe / best[FAST]:.2f}x; constant canvas vs "
          f"cpu-fast without it: {best[PLAIN_FAST] / best[FAST]:.2f}x")
    if not args.skip_others:
        for name in ("fcn32s", "fcn_alexnet"):
            sections[name] = other_section(name, args)
            print(f"\n{name}, {sections[name]['flops'] / 1e9:.1f} GFLOP")
            print("\n".join(table(sections[name], f"{name} port eager, NCHW (default)")))
    if args.json:
        args.json.write_text(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "fns"}
                                         for k, v in sections.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
