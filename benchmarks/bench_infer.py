"""Benchmark: CPU inference, strict fp32, FCN-8s / FCN-32s / FCN-AlexNet at 375x500.

Every figure is measured in the same run against a straightforward PyTorch net written below
as other ports write it (an ``nn.Conv2d`` stack with in-place ReLUs,
``nn.MaxPool2d(ceil_mode=True)``, ``nn.ConvTranspose2d``, crops by slicing), loaded with the
same random weights. Variants run interleaved (one forward of each per round) so that a busy
machine slows them alike; the best round counts. Also printed: each variant's agreement with
the straightforward model (max relative error of ``score``, argmax agreement). Caffe's own
CPU forward (1.70-1.80 s for FCN-8s at this size on this machine) is quoted, not measured.

Sections (``--sections``): ``default`` (issue 22: the module a builder returns, called in eval
mode under ``torch.no_grad()``, against ``Runner("cpu-fast")``, the plain path it ran before
and the straightforward net, for FCN-8s, FCN-32s and FCN-AlexNet), ``variants`` (FCN-8s, each
piece of cpu-fast apart), ``others`` (FCN-32s and FCN-AlexNet, cpu-fast with and without the
canvas). ``--memory`` measures the peak RSS of one forward of each way in fresh processes.

Not a test: ``python benchmarks/bench_infer.py [--repeat 3] [--sections default,variants,others]
[--memory] [--compile] [--json FILE]``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if "--repo" in sys.argv[:-1]:  # --memory's probes import port from the checkout named
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--repo") + 1]).resolve()))
elif str(REPO) not in sys.path:
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


class StraightforwardFCN32s(StraightforwardFCN8s):
    """FCN-32s the same way: the VGG16 trunk, fc6, fc7, score_fr, one 64/32 upsampling, the
    crop offset 19 typed in."""

    def __init__(self, n: int = 21):
        super().__init__(n)
        del self.score_pool4, self.score_pool3, self.upscore2, self.upscore_pool4, self.upscore8
        self.upscore = nn.ConvTranspose2d(n, n, 64, stride=32, bias=False)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        h = data
        for step in self.plan:
            h = getattr(self, step)(h) if isinstance(step, str) else getattr(self, step[1])(getattr(self, step[0])(h))
        h = self.drop7(self.relu7(self.fc7(self.drop6(self.relu6(self.fc6(h))))))
        up = self.upscore(self.score_fr(h))
        return up[:, :, 19:19 + data.size(2), 19:19 + data.size(3)].contiguous()


class StraightforwardFCNAlexNet(nn.Module):
    """FCN-AlexNet the same way (voc-fcn-alexnet: CaffeNet's order, pool before LRN, grouped
    conv2/4/5, fc6 6x6, one 63/32 upsampling, the crop offset 18 typed in)."""

    def __init__(self, n: int = 21):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4, padding=100)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6, self.fc7 = nn.Conv2d(256, 4096, 6), nn.Conv2d(4096, 4096, 1)
        self.score_fr = nn.Conv2d(4096, n, 1)
        self.upscore = nn.ConvTranspose2d(n, n, 63, stride=32, bias=False)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.norm = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)
        self.relu, self.drop = nn.ReLU(inplace=True), nn.Dropout2d()

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.pool(self.relu(self.conv1(data))))
        h = self.norm(self.pool(self.relu(self.conv2(h))))
        h = self.relu(self.conv5(self.relu(self.conv4(self.relu(self.conv3(h))))))
        h = self.drop(self.relu(self.fc7(self.drop(self.relu(self.fc6(self.pool(h)))))))
        up = self.upscore(self.score_fr(h))
        return up[:, :, 18:18 + data.size(2), 18:18 + data.size(3)].contiguous()


STRAIGHTFORWARD = {"fcn8s": StraightforwardFCN8s, "fcn32s": StraightforwardFCN32s,
                   "fcn_alexnet": StraightforwardFCNAlexNet}


# -- timing ----------------------------------------------------------------------------------
#: The clock ``interleaved`` reads: wall time, or (``--clock process``) the CPU seconds of the
#: whole process, which other processes on a shared machine disturb far less (with
#: ``--threads 1``: no thread waits for another).
CLOCK = {"wall": time.perf_counter, "process": time.process_time}
clock = time.perf_counter


def interleaved(fns: dict[str, Callable[[], torch.Tensor]], repeat: int) -> dict[str, list[float]]:
    """Seconds per call of each function: one warm-up call each, then ``repeat`` rounds of
    one call each, in turn."""
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()
        for _ in range(repeat):
            for name, fn in fns.items():
                start = clock()
                fn()
                times[name].append(clock() - start)
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


def plainly(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``fn`` on the engine's plain path (``speed.plain_path``): a copy of a net in eval mode
    without autograd would otherwise run the default prepared path (issue 22)."""
    def run():
        with speed.plain_path():
            return fn()
    return run


def port_variants(model: nn.Module, x: torch.Tensor, args) -> tuple[dict, dict]:
    """(name -> forward, name -> note) of the port model's speed variants (each piece on the
    plain path, so that it runs alone)."""
    import copy
    cl = x.contiguous(memory_format=torch.channels_last)
    v = {"port plain path, NCHW (the default before issue 22)": (lambda m=model: m(x))}
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
    return {k: plainly(fn) for k, fn in v.items()}, notes


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
    fns = {f"{name} port plain path, NCHW": plainly(lambda: model(x)),
           f"{name} port cpu-fast without the canvas": plainly(lambda: plain_fast(cl)),
           f"{name} port cpu-fast (constant canvas)": plainly(lambda: fast(cl))}
    with torch.inference_mode():
        ref = model(x)
        agree = {k: agreement(ref, fn()) for k, fn in fns.items()}
    return {"fns": list(fns), "times": interleaved(fns, args.repeat), "agree": agree,
            "flops": flops_of(name, SIZE)}


# -- the default path (issue 22) ---------------------------------------------------------------
DEFAULT = "default module (eval, torch.no_grad())"
RUNNER = 'Runner("cpu-fast")'
PLAIN = "plain path (the default before; speed.plain_path())"
STRAIGHT = "straightforward PyTorch"


def default_section(name: str, args) -> dict:
    """The module a builder returns, as a user calls it, against cpu-fast, its own plain path
    and the straightforward net of the same weights, interleaved."""
    model = randomize(get_model(name), seed=0).eval()
    straight = STRAIGHTFORWARD[name]().eval()
    straight.load_state_dict(model.state_dict())
    runner = speed.Runner("cpu-fast", model)
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(1)) * INPUT_STD

    def default():
        with torch.no_grad():
            return model(x)
    fns = {STRAIGHT: lambda: straight(x), DEFAULT: default, RUNNER: lambda: runner(x),
           PLAIN: plainly(lambda: model(x))}
    with torch.inference_mode():
        ref = straight(x)
        agree = {k: agreement(ref, fn()) for k, fn in fns.items()}
    return {"fns": list(fns), "times": interleaved(fns, args.repeat), "agree": agree,
            "flops": flops_of(name, SIZE)}


def ways(section: dict):
    """Each way a section timed, in order: ``(way, best times of every way, its median, max rel
    err, argmax agreement)`` (what both tables print a row of)."""
    best = {k: min(v) for k, v in section["times"].items()}
    for k in section["fns"]:
        yield (k, best, statistics.median(section["times"][k]), *section["agree"][k])


def default_table(sections: dict[str, dict]) -> list[str]:
    rows = ["| model | way | best s | median s | vs straightforward | default vs this | "
            "max rel err vs straightforward | argmax agreement |", "|---|---|---|---|---|---|---|---|"]
    for name, section in sections.items():
        for k, best, median, rel, arg in ways(section):
            rows.append(f"| {name} | {k} | {best[k]:.3f} | {median:.3f} | "
                        f"{best[STRAIGHT] / best[k]:.2f}x | {best[k] / best[DEFAULT]:.3f} | {rel:.1e} | "
                        f"{100 * arg:.4f}% |")
    return rows


# -- memory ------------------------------------------------------------------------------------
WAYS = ("plain", "default", "runner")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(name: str, way: str, forwards: int = 2) -> dict:
    """In this process: the model built with random weights, then ``forwards`` calls the
    ``way`` a user runs it (``plain``: the plain path, ``default``: eval + no_grad,
    ``runner``: ``Runner("cpu-fast")``, made after the build); the peak RSS from the end of
    the build on (the high-water mark reset, Linux ``clear_refs``) and the RSS left after."""
    model = randomize(get_model(name), seed=0).eval()
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(1)) * INPUT_STD
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    plain = getattr(speed, "plain_path", contextlib.nullcontext)  # an older checkout has none
    built = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    run = {"plain": lambda: model(x), "default": lambda: model(x)}.get(way)
    if way == "runner":  # its preparation counts
        runner = speed.Runner("cpu-fast", model)
        run = lambda: runner(x)  # noqa: E731
    with torch.no_grad(), plain() if way == "plain" else contextlib.nullcontext():
        for _ in range(forwards):
            run()
    return {"model": name, "way": way, "weights_mib": weights / 2**20, "rss_built_mib": built / 1024,
            "peak_mib": _status_kib("VmHWM") / 1024, "rss_after_mib": _status_kib("VmRSS") / 1024}


def memory_table(models: list[str], repo: Path) -> list[str]:
    """Each (model, way) in a fresh process (``--memory-probe``) with ``repo``'s ``port``."""
    rows = ["| model | way | weights MiB | RSS after building MiB | peak RSS after that (2 forwards) MiB | "
            "RSS after them MiB | peak over the plain path MiB |", "|---|---|---|---|---|---|---|"]
    for name in models:
        plain_peak = None
        for way in WAYS:
            out = subprocess.run([sys.executable, __file__, "--memory-probe", way, "--model", name,
                                  "--repo", str(repo)], check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            plain_peak = r["peak_mib"] if way == "plain" else plain_peak
            rows.append(f"| {name} | {way} | {r['weights_mib']:.0f} | {r['rss_built_mib']:.0f} | "
                        f"{r['peak_mib']:.0f} | {r['rss_after_mib']:.0f} | {r['peak_mib'] - plain_peak:+.0f} |")
    return rows


# -- report ----------------------------------------------------------------------------------
def table(section: dict, reference: str) -> list[str]:
    gflop = section["flops"] / 1e9
    rows = ["| variant | best s | median s | images/s | GFLOP/s | speed-up vs reference | "
            "max rel err vs reference | argmax agreement |", "|---|---|---|---|---|---|---|---|"]
    for k, best, median, rel, arg in ways(section):
        rows.append(f"| {k} | {best[k]:.3f} | {median:.3f} | "
                    f"{1 / best[k]:.3f} | {gflop / best[k]:.0f} | {best[reference] / best[k]:.2f}x | "
                    f"{rel:.2e} | {100 * arg:.4f}% |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: the CPUs allowed)")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (slow warm-up)")
    parser.add_argument("--compile-budget", type=float, default=240.0, help="seconds for its warm-up")
    parser.add_argument("--skip-others", action="store_true", help="FCN-8s only (no 'others' section)")
    parser.add_argument("--sections", default="default,variants,others",
                        help="comma-separated: default, variants, others (default: all)")
    parser.add_argument("--models", default="fcn8s,fcn32s,fcn_alexnet", help="models of the default section")
    parser.add_argument("--clock", choices=list(CLOCK), default="wall",
                        help="wall time (default), or the process's CPU seconds (steadier on a shared machine)")
    parser.add_argument("--memory", action="store_true", help="also the peak RSS of each way, fresh processes")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose port --memory measures")
    parser.add_argument("--memory-probe", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="fcn8s", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.model, args.memory_probe)))
        return 0
    global clock
    clock = CLOCK[args.clock]
    chosen = set(args.sections.split(","))
    unknown = chosen - {"default", "variants", "others"}
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}")
    threads = speed.set_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs, load average "
          f"{load:.1f} at start; input 1x3x{SIZE[0]}x{SIZE[1]}, strict fp32, best of {args.repeat}, "
          f"{args.clock} clock")
    sections: dict = {}
    if "default" in chosen:
        defaults = {name: default_section(name, args) for name in args.models.split(",")}
        sections["default"] = defaults
        print("\nThe default path: each model's builder module in eval mode under torch.no_grad()")
        print("\n".join(default_table(defaults)))
        if args.memory:
            print("\n".join(["", "Peak RSS, one fresh process per row:"] + memory_table(list(defaults), args.repo)))
    if "variants" not in chosen:
        return _write_json(args, sections)
    sections["fcn8s"] = fcn8s_section(args)
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
    if not args.skip_others and "others" in chosen:
        for name in ("fcn32s", "fcn_alexnet"):
            sections[name] = other_section(name, args)
            print(f"\n{name}, {sections[name]['flops'] / 1e9:.1f} GFLOP")
            print("\n".join(table(sections[name], f"{name} port plain path, NCHW")))
    return _write_json(args, sections)


def _write_json(args, sections: dict) -> int:
    def figures(section: dict) -> dict:
        return {k: v for k, v in section.items() if k != "fns"}
    if args.json:
        out = {k: ({m: figures(s) for m, s in v.items()} if k == "default" else figures(v))
               for k, v in sections.items()}
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
