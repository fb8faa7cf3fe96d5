"""Where a mode's end-to-end GPU time goes: a cold pass, a warm pass, the forward alone.

``python3 benchmarks/gpu_passes.py [--modes fast-tf32,...] [--batching bucketed|batch1]``
runs each mode in a fresh child process (nothing cached from another mode) over the synthetic
seg11valid-like set of ``gpu_check.py`` (736 JPEGs, 122 sizes, FCN-8s full width, random
weights), three times:

1. ``cold``: the first end-to-end pass, as ``python -m reproduce`` runs once: DataLoader
   workers decoding JPEGs, pinned non-blocking copies, the GPU confusion matrix; every new
   input size makes cuDNN choose and build its plans and the allocator grow;
2. ``warm``: the same pass again in the same process (plans and memory cached);
3. ``forward``: the forward and argmax alone over the same batches, preloaded on the GPU.

``cold - warm`` is the per-size set-up, ``warm - forward`` the data pipeline's share.
Mode names are ``port.run.speed.MODES``; a ``+nondet`` suffix turns cudnn.deterministic off,
``+benchmark`` turns cudnn.benchmark on. ``gpu_check.py``'s throughput section runs its rows
through this script's child.
Figures go to ``$OUT`` (else ``benchmarks/out/``) as ``gpu_passes.json`` and ``.md``;
``--quick`` runs it tiny on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402

import gpu_check as G  # noqa: E402
from port.run import speed  # noqa: E402

#: Suffixes of a mode name that change one cuDNN knob of a ``port.run.speed`` mode.
SUFFIXES = {"+nondet": {"cudnn_deterministic": False}, "+benchmark": {"cudnn_benchmark": True}}


def mode_named(name: str) -> speed.SpeedMode:
    """``port.run.speed.MODES[name]``, or a named variant: ``fast-tf32+nondet``, ``...+benchmark``."""
    base, changes = name, {}
    while (suffix := next((x for x in SUFFIXES if base.endswith(x)), None)) is not None:
        base, changes = base[:-len(suffix)], {**changes, **SUFFIXES[suffix]}
    if base not in speed.MODES:
        raise SystemExit(f"gpu_passes: unknown mode {base!r}; known: {', '.join(speed.MODES)}")
    return replace(speed.MODES[base], name=name, **changes) if changes else speed.MODES[base]


def forward_only(model, mode, batches, cfg) -> float:
    """Seconds for forward + argmax over ``batches`` already on the device."""
    G.sync(cfg.device)
    start = time.perf_counter()
    with speed.backend_flags(mode), torch.inference_mode():
        for x in batches:
            with speed.autocast(mode, cfg.device):
                score = model(x)
            score.argmax(1)
    G.sync(cfg.device)
    return time.perf_counter() - start


def first_calls(model, mode, cfg, sizes: list[tuple[int, int]], batch: int) -> dict[str, list[float]]:
    """Host milliseconds of each top-level layer at its first and second call for each new
    input size (the device drained around every layer), summed over ``sizes``."""
    times: dict[str, list[float]] = {}
    marks: dict[str, float] = {}

    def before(name):
        def hook(module, args):
            G.sync(cfg.device)
            marks[name] = time.perf_counter()
        return hook

    def after(name):
        def hook(module, args, out):
            G.sync(cfg.device)
            times.setdefault(name, [0.0, 0.0])[calls[0]] += 1e3 * (time.perf_counter() - marks[name])
        return hook
    handles = [h for name, m in model.named_children()
               for h in (m.register_forward_pre_hook(before(name)), m.register_forward_hook(after(name)))]
    calls = [0]
    with speed.backend_flags(mode), torch.inference_mode():
        for h, w in sizes:
            x = speed.to_input(torch.randn(batch, 3, h, w, device=cfg.device), mode)
            for calls[0] in (0, 1):
                with speed.autocast(mode, cfg.device):
                    model(x)
    for handle in handles:
        handle.remove()
    return times


def child(args) -> int:
    cfg = G.make_config(args)
    folder = Path(args.child)
    sizes = [tuple(s) for s in json.loads((folder / "sizes.json").read_text())]
    mode = mode_named(args.modes)
    if args.reserve_gb:  # the caching allocator keeps this block: no cudaMalloc per new size
        torch.empty(int(args.reserve_gb * 2**30), dtype=torch.uint8, device=cfg.device)
    indices = list(range(len(sizes)))
    batches = G.buckets(sizes, cfg.batch) if args.batching == "bucketed" else None
    model = speed.prepare_model(G.build_model(cfg), mode, cfg.device)
    result = {"mode": mode.name, "batching": args.batching, "images": len(sizes)}
    passes = args.passes.split(",")
    for label in ("cold", "warm"):
        if label in passes:
            r = G.run_pass(model, mode, G.loader_for(folder, indices, batches, cfg), cfg, G.Deadline(args.budget))
            result[label] = {k: r[k] for k in ("seconds", "images_per_s", "images", "mean_iu", "stopped_early")}
    if "forward" in passes:
        result["forward"] = forward_pass(model, mode, folder, indices, batches, cfg)
    if args.first_calls:  # sizes none of the passes used
        new = [(h + 1, w - 3) for h, w in sorted(set(sizes))[:args.first_calls]]
        result["first_calls_ms"] = first_calls(model, mode, cfg, new, cfg.batch if batches else 1)
    print(json.dumps(result))
    return 0


def forward_pass(model, mode, folder: Path, indices: list[int], batches, cfg) -> dict:
    """The forward and argmax alone over the same batches, preloaded on the device."""
    data = G.JpegSet(folder, indices)
    groups = batches or [[i] for i in indices]
    inputs = [speed.to_input(torch.stack([data[i][0] for i in g]).to(cfg.device), mode) for g in groups]
    seconds = forward_only(model, mode, inputs, cfg)
    return {"seconds": seconds, "images_per_s": len(indices) / seconds, "images": len(indices)}


def markdown(env: dict, rows: list[dict]) -> str:
    lines = [f"## Cold, warm and forward-only passes ({env.get('gpu', env['device'])}, torch {env['torch']})", "",
             f"FCN-8s width/{env['width_divisor']}, random weights, {env['images']} synthetic seg11valid-like images "
             f"({env['sizes']} sizes), each mode in a fresh process"
             + (f"; TORCH_CUDNN_V8_API_DISABLED={env['TORCH_CUDNN_V8_API_DISABLED']}" if env.get("TORCH_CUDNN_V8_API_DISABLED") else "")
             + ".", "",
             "| mode | batching | cold s | cold images/s | warm s | warm images/s | forward s | forward images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | {r['batching']} | {r['error']} | | | | | |")
            continue
        cells = [f"{r[p]['seconds']:.2f} | {r[p]['images_per_s']:.1f}" if p in r else "- | -"
                 for p in ("cold", "warm", "forward")]
        lines.append(f"| {r['mode']} | {r['batching']} | " + " | ".join(cells) + " |")
    for r in rows:
        if r.get("first_calls_ms"):
            ms = r["first_calls_ms"]
            top = sorted(ms.items(), key=lambda kv: kv[1][0] - kv[1][1], reverse=True)[:8]
            lines += ["", f"{r['mode']} ({r['batching']}): host ms per layer, first / second call at new sizes, "
                      f"all layers {sum(v[0] for v in ms.values()):.1f} / {sum(v[1] for v in ms.values()):.1f}: "
                      + ", ".join(f"{k} {a:.1f}/{b:.1f}" for k, (a, b) in top)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="fast-tf32,fast-tf32-conv5-fp32")
    parser.add_argument("--batching", default="bucketed", help="bucketed, batch1, or both (comma-separated)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per pass (default 120)")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per child (default 150)")
    parser.add_argument("--reserve-gb", type=float, default=0.0,
                        help="allocate and free this many GiB first, so the allocator holds them")
    parser.add_argument("--first-calls", type=int, default=0,
                        help="then time each layer's first and second call at this many new sizes")
    parser.add_argument("--set", type=Path, help="folder for the synthetic set, kept and reused (default: a temporary one)")
    parser.add_argument("--passes", default="cold,warm,forward", help="which passes (default all three)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.compile_budget = None  # gpu_check's Config wants it; nothing is compiled here
    if args.child:
        return child(args)
    cfg = G.make_config(args)
    if cfg.device == "cpu" and not cfg.quick:
        print("gpu_passes: no CUDA device; run with --quick for the tiny CPU run", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        mode_named(m)
    out = G.output_dir()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_passes_") as tmp:
        if args.set:  # a set written by an earlier run (same sizes, same seed) is reused
            tmp = str(args.set)
            args.set.mkdir(parents=True, exist_ok=True)
        listed = Path(tmp) / "sizes.json"
        sizes = [tuple(v) for v in json.loads(listed.read_text())] if listed.exists() else G.write_set(Path(tmp), cfg)
        listed.write_text(json.dumps(sizes))
        env = {**G.environment(cfg), "sizes": len(set(sizes)),
               "TORCH_CUDNN_V8_API_DISABLED": os.environ.get("TORCH_CUDNN_V8_API_DISABLED", "")}
        for batching in args.batching.split(","):
            for m in modes:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", tmp, "--modes", m,
                       "--batching", batching, "--budget", str(args.budget), "--reserve-gb", str(args.reserve_gb),
                       "--passes", args.passes,
                       "--first-calls", str(args.first_calls)] + \
                      (["--quick"] if args.quick else []) + (["--cpu"] if args.cpu else [])
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                    lines = [v for v in proc.stdout.splitlines() if v.startswith("{")]
                    rows.append(json.loads(lines[-1]) if proc.returncode == 0 and lines else
                                {"mode": m, "batching": batching,
                                 "error": "child failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]})
                except subprocess.TimeoutExpired:
                    rows.append({"mode": m, "batching": batching, "error": f"timed out after {args.timeout:.0f} s"})
                print(json.dumps(rows[-1]), flush=True)
    (out / "gpu_passes.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    text = markdown(env, rows)
    (out / "gpu_passes.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
