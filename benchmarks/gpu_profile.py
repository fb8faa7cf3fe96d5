"""Where strict fp32 spends its GPU time: per Caffe layer, per cuDNN setting.

``python3 benchmarks/gpu_profile.py [--size 375x500] [--repeat 5] [--quick]`` times each layer
of a full-width FCN-8s (seeded random weights) with CUDA events around every module, under
strict fp32 as the harness runs it, then with ``cudnn.deterministic`` off and with
``cudnn.benchmark`` on (one input size, so its search is paid once, in the warm-up), and lists
the top kernels of the strict run from ``torch.profiler``. It feeds the open question of
issue 5 (strict fp32 at 64.5 images/s on an H200 against a 70 images/s target): which layers
hold the time, and whether any cuDNN setting that keeps IEEE fp32 arithmetic helps.

Figures go to ``$OUT`` (else ``benchmarks/out/``) as ``gpu_profile.json`` and ``.md``.
``--quick`` runs the same code tiny on the CPU (1/16 width) so the script is testable anywhere.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):  # the repo and gpu_check's helpers, not installed
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402

from port.run import speed  # noqa: E402
from port.models import get_model  # noqa: E402
from port.cli.selfcheck import randomize  # noqa: E402

#: The cuDNN settings compared, all IEEE fp32 (TF32 off): strict as the harness runs it, then
#: one knob changed at a time.
SETTINGS = ("strict", "nondeterministic", "benchmark")


class LayerTimer:
    """CUDA events (or wall clock on the CPU) around every child module's forward."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.device, self.marks, self.handles = device, {}, []
        for name, module in model.named_children():
            self.handles.append(module.register_forward_pre_hook(self._start(name)))
            self.handles.append(module.register_forward_hook(self._stop(name)))

    def _now(self):
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _start(self, name):
        return lambda module, args: self.marks.setdefault(name, []).append([self._now(), None])

    def _stop(self, name):
        def hook(module, args, output):
            self.marks[name][-1][1] = self._now()
        return hook

    def ms(self) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            span = lambda a, b: a.elapsed_time(b)  # noqa: E731
        else:
            span = lambda a, b: (b - a) * 1e3  # noqa: E731
        return {name: sum(span(a, b) for a, b in pairs) / len(pairs) for name, pairs in self.marks.items()}

    def remove(self):
        for handle in self.handles:
            handle.remove()


def set_cudnn(setting: str) -> None:
    speed.set_backend_flags(speed.STRICT)
    if setting == "nondeterministic":
        torch.backends.cudnn.deterministic = False
    elif setting == "benchmark":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_setting(model, x, setting: str, repeat: int, device: torch.device) -> dict:
    set_cudnn(setting)
    with torch.no_grad():
        for _ in range(2):  # warm-up: cuDNN plans (and the benchmark search) are paid here
            model(x)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeat):
            model(x)
        sync(device)
        total = (time.perf_counter() - start) / repeat
        timer = LayerTimer(model, device)
        for _ in range(repeat):
            model(x)
        layers = timer.ms()
        timer.remove()
    return {"ms_per_image": total * 1e3, "images_per_s": 1.0 / total, "layers_ms": layers}


def top_kernels(model, x, device: torch.device, count: int = 25) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile
    set_cudnn("strict")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.no_grad(), profile(activities=activities) as prof:
        for _ in range(3):
            model(x)
        sync(device)
    key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)[:count]
    return [{"name": e.key[:90], "calls": e.count, "total_ms": getattr(e, key, 0) / 1e3 / 3}
            for e in rows]


def loop(model, device: torch.device, count: int, scale: float, per_image_sync: bool) -> dict:
    """Images/s of the evaluation loop without the JPEG pipeline: pinned host tensors of
    seg11valid-like sizes copied in, strict fp32 forward, argmax, ConfusionMatrix on the
    device; ``per_image_sync`` adds the host wait that the old counting made per image."""
    import numpy as np
    from gpu_check import NUM_CLASSES, image_sizes
    from reproduce.metrics import ConfusionMatrix
    rng = np.random.default_rng(0)
    items = [(torch.randn(1, 3, h, w).mul_(50), torch.randint(0, NUM_CLASSES, (1, h, w)))
             for h, w in image_sizes(count, scale, rng)]
    if device.type == "cuda":
        items = [(x.pin_memory(), y.pin_memory()) for x, y in items]
    cm = ConfusionMatrix(NUM_CLASSES, device=device)
    with speed.backend_flags(speed.STRICT), torch.inference_mode():
        model(items[0][0].to(device))  # warm-up
        sync(device)
        start = time.perf_counter()
        for x, y in items:
            pred = model(x.to(device, non_blocking=True)).argmax(1)
            cm.update(pred, y.to(device, non_blocking=True))
            if per_image_sync:
                sync(device)
        cm.compute()
        elapsed = time.perf_counter() - start
    return {"images": count, "seconds": elapsed, "images_per_s": count / elapsed,
            "per_image_sync": per_image_sync}


def markdown(result: dict) -> str:
    env, lines = result["environment"], []
    lines += [f"## Strict fp32 per layer ({env['device']}, {env['size']}, FCN-8s width/{env['width_divisor']})", ""]
    lines += ["| setting | ms per image | images/s |", "|---|---|---|"]
    lines += [f"| {s} | {r['ms_per_image']:.2f} | {r['images_per_s']:.1f} |" for s, r in result["settings"].items()]
    strict = result["settings"].get("strict", {}).get("layers_ms", {})
    lines += ["", "| layer | " + " | ".join(f"{s} ms" for s in result["settings"]) + " |",
              "|---|" + "---|" * len(result["settings"])]
    for name in sorted(strict, key=strict.get, reverse=True):
        cells = " | ".join(f"{r['layers_ms'].get(name, float('nan')):.3f}" for r in result["settings"].values())
        lines.append(f"| {name} | {cells} |")
    if result.get("loop"):
        lines += ["", "### Evaluation loop, strict fp32, seg11valid-like sizes (no JPEG decoding)", "",
                  "| per-image host wait | images | s | images/s |", "|---|---|---|---|"]
        lines += [f"| {r['per_image_sync']} | {r['images']} | {r['seconds']:.2f} | {r['images_per_s']:.1f} |"
                  for r in result["loop"]]
    lines += ["", "### Top kernels, strict (per image)", "", "| kernel | calls | ms |", "|---|---|---|"]
    lines += [f"| `{k['name']}` | {k['calls']} | {k['total_ms']:.3f} |" for k in result["kernels"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="375x500", help="input HxW (default 375x500)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny run on the CPU (1/16 width)")
    parser.add_argument("--loop", type=int, default=0,
                        help="also time the evaluation loop on this many seg11valid-like images")
    parser.add_argument("--only-loop", action="store_true", help="skip the per-layer profile")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.quick:
        print("gpu_profile: no CUDA device; use --quick for the tiny CPU run", file=sys.stderr)
        return 2
    divisor = 16 if args.quick else 1
    height, width = (int(v) for v in args.size.split("x"))
    if args.quick:
        height, width = max(height // 8, 1), max(width // 8, 1)
    model = randomize(get_model("fcn8s", width_divisor=divisor), seed=0).eval().to(device)
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0)).mul_(50).to(device)
    settings, kernels, loops = {}, [], []
    with speed.backend_flags(speed.STRICT):  # the process's flags come back afterwards
        if not args.only_loop:
            settings = {s: time_setting(model, x, s, args.repeat, device) for s in SETTINGS}
            kernels = top_kernels(model, x, device)
        for per_image_sync in ((True, False) if args.loop else ()):
            loops.append(loop(model, device, args.loop, 1 / 8 if args.quick else 1.0, per_image_sync))
    env = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "size": f"{height}x{width}", "width_divisor": divisor,
           "repeat": args.repeat}
    result = {"environment": env, "settings": settings, "kernels": kernels, "loop": loops}
    out = Path(os.environ.get("OUT") or REPO / "benchmarks" / "out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_profile.json").write_text(json.dumps(result, indent=1))
    (out / "gpu_profile.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
