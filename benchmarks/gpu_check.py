"""GPU check of issue 5, as one prepared script: ``python3 benchmarks/gpu_check.py``.

Runs unchanged on a CUDA machine with PyTorch (numpy, pillow; nothing pip-installed, the repo
put on ``sys.path`` here) and finishes within a total time budget (``--budget``, default
480 s; every section has its own share and stops early, saying so, when it runs out):

1. ``python -m port selfcheck --device cuda`` in strict fp32 (TF32 off for matmul and cuDNN)
   and with ``--tf32``;
2. end-to-end throughput of FCN-8s (full width, seeded random weights: no released weights
   here) on 736 synthetic JPEGs with the size distribution of seg11valid (mostly 500 wide,
   heights 281-500, some portrait), with the data pipeline running: DataLoader workers
   decoding JPEG images and PNG labels, pinned memory, non-blocking copies, the confusion
   matrix (``reproduce.metrics.ConfusionMatrix``) on the GPU; batch 1 and equal-size buckets,
   strict fp32 and the fast modes of ``port.run.speed``, each in a fresh process (a cold pass,
   then a warm one: see ``gpu_passes.py``);
3. fast modes one knob at a time (TF32, bf16 autocast, channels_last, cudnn.benchmark,
   torch.compile) and combined (``port.run.speed``'s fast modes, the mixed ones that keep conv5 in
   fp32 included): mean IU difference to strict fp32 against the synthetic
   labels, mean IU taking strict fp32's prediction as the truth, argmax agreement, images/s.
   torch.compile runs in a child process under a hard timeout. ``strict-fp32-canvas`` is
   strict fp32 with the trunk's constant canvas computed once (``port.run.canvas``), in both tables.

``--sections throughput,modes`` runs only those sections (the budget is shared among them) and
``--modes strict-fp32,strict-fp32-canvas`` only those modes in both tables (strict fp32 always
runs in the modes table as the reference), for a short rerun of a subset.

Figures go to ``$OUT`` if set, else ``benchmarks/out/``: ``gpu_check.json`` and
``gpu_check.md`` (tables to paste into benchmarks/RESULTS.md). ``--quick`` runs the same code
paths tiny on the CPU (1/16 width, a dozen small images); CUDA-only steps are skipped there.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from port.run import speed  # noqa: E402
from port.models import get_model  # noqa: E402
from port.models.preprocess import preprocess_voc  # noqa: E402
from port.cli.selfcheck import randomize  # noqa: E402
from reproduce.metrics import ConfusionMatrix  # noqa: E402

#: seg11valid: 736 images; VOC JPEGs are at most 500 px on a side.
SET_SIZE, LONG_SIDE = 736, 500
#: Landscape share and the most common short sides of VOC images (the rest uniform 281-499).
LANDSCAPE, SHORT_SIDES, SHORT_SHARE, SHORT_RANGE = 0.78, (375, 333, 500, 334, 366), (0.5, 0.22, 0.05, 0.03, 0.03), (281, 500)
NUM_CLASSES, VOID = 21, 255
JPEG_QUALITY = 90
SEED = 0
#: Share of the total budget per section (the rest is set-up and slack).
SHARES = {"selfcheck": 0.12, "throughput": 0.45, "modes": 0.43}
#: The knobs measured one at a time, then the combined modes of port.run.speed.
KNOBS = (speed.SpeedMode("tf32", tf32=True), speed.SpeedMode("bf16-autocast", autocast="bfloat16"),
         speed.SpeedMode("channels_last", channels_last=True),
         speed.SpeedMode("cudnn.benchmark", cudnn_benchmark=True), speed.STRICT_CANVAS,
         speed.SpeedMode("torch.compile", compile=True), speed.FAST_TF32, speed.FAST_BF16,
         speed.FAST_FP16, speed.FAST_TF32_CONV5, speed.FAST_TF32_SPLIT5, speed.FAST_FP16_CONV5)
#: End-to-end modes, cheapest first; cudnn.benchmark searches again for every new input size
#: (seg11valid has many), so the fast modes leave it off and are also measured with it.
THROUGHPUT_MODES = (speed.FAST_TF32_SPLIT5, speed.FAST_TF32, speed.FAST_BF16, speed.FAST_FP16,
                    speed.FAST_FP16_CONV5, speed.FAST_TF32_CONV5, speed.STRICT, speed.STRICT_CANVAS,
                    replace(speed.FAST_BF16, name="fast-bf16+benchmark", cudnn_benchmark=True),
                    replace(speed.FAST_TF32, name="fast-tf32+benchmark", cudnn_benchmark=True))
#: The throughput rows of a default run (``--modes`` picks any of THROUGHPUT_MODES): ``--fast``,
#: its parts, strict fp32 last (it gets the time the others leave).
DEFAULT_THROUGHPUT = frozenset({"fast-tf32-conv5-split", "fast-tf32", "fast-bf16", "strict-fp32"})
#: Seconds a throughput child spends before its first pass (CUDA context, full-width model).
CHILD_START_S = 12.0
#: The sections, in the order they run; ``--sections`` picks some.
SECTIONS = tuple(SHARES)


@dataclass
class Config:
    """Sizes of the run: full on a GPU, tiny with ``--quick``."""

    device: str
    quick: bool
    images: int = SET_SIZE
    scale: float = 1.0            # image sides x scale
    width_divisor: int = 1
    batch: int = 16               # bucketed batch size
    workers: int = 8
    mode_images: int = 64         # images of one size for the fast-mode comparison
    selfcheck_args: tuple[str, ...] = ()
    budget_s: float = 480.0
    compile_budget_s: float = 120.0
    modes: frozenset[str] | None = None  # ``--modes``: the mode names to run (None: all)
    notes: list[str] = field(default_factory=list)

    def wants(self, mode: speed.SpeedMode) -> bool:
        return self.modes is None or mode.name in self.modes


def make_config(args) -> Config:
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    workers = max(1, min(8, (os.cpu_count() or 2) - 1))
    if args.quick:
        return Config(device, True, images=12, scale=1 / 8, width_divisor=16, batch=4, workers=min(2, workers),
                      mode_images=4, selfcheck_args=("--width-divisor", "16", "--size", "48x64"),
                      budget_s=args.budget or 300.0, compile_budget_s=args.compile_budget or 150.0)
    return Config(device, False, workers=workers, budget_s=args.budget or 480.0,
                  compile_budget_s=args.compile_budget or 120.0)


class Deadline:
    """Seconds left of a budget."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# -- the synthetic set -------------------------------------------------------------------------
def image_sizes(n: int, scale: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` (height, width) pairs like seg11valid's: long side 500, short side mostly one of
    VOC's common sizes, some portrait."""
    sizes = []
    for _ in range(n):
        short = (int(rng.choice(SHORT_SIDES, p=np.array(SHORT_SHARE) / sum(SHORT_SHARE)))
                 if rng.random() < sum(SHORT_SHARE) else int(rng.integers(*SHORT_RANGE)))
        h, w = (short, LONG_SIDE) if rng.random() < LANDSCAPE else (LONG_SIDE, short)
        sizes.append((max(8, round(h * scale)), max(8, round(w * scale))))
    return sizes


def smooth_noise(shape: tuple[int, int], channels: int, rng: np.random.Generator) -> np.ndarray:
    """Blobby random content (coarse noise upsampled), so JPEG decoding costs what a photo costs."""
    from PIL import Image
    coarse = rng.integers(0, 256, (max(2, shape[0] // 16), max(2, shape[1] // 16), channels), dtype=np.uint8)
    img = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse)
    return np.asarray(img.resize((shape[1], shape[0]), Image.BILINEAR))


def write_set(folder: Path, cfg: Config) -> list[tuple[int, int]]:
    """Write the JPEG images and PNG labels (classes 0-20 in blobs, a void border) to ``folder``."""
    from PIL import Image
    rng = np.random.default_rng(SEED)
    sizes = image_sizes(cfg.images, cfg.scale, rng)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(smooth_noise((h, w), 3, rng)).save(folder / f"{i:04d}.jpg", quality=JPEG_QUALITY)
        label = (smooth_noise((h, w), 1, rng).astype(np.int32) * NUM_CLASSES // 256).astype(np.uint8)
        label[:2], label[-2:], label[:, :2], label[:, -2:] = VOID, VOID, VOID, VOID
        Image.fromarray(label).save(folder / f"{i:04d}.png")
    return sizes


class JpegSet(torch.utils.data.Dataset):
    """The synthetic set read as the VOC data layer reads VOC: JPEG -> BGR minus mean, CHW."""

    def __init__(self, folder: Path, indices: list[int]):
        self.folder, self.indices = folder, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        from PIL import Image
        i = self.indices[k]
        image = np.asarray(Image.open(self.folder / f"{i:04d}.jpg").convert("RGB"))
        label = np.asarray(Image.open(self.folder / f"{i:04d}.png"))
        return torch.from_numpy(preprocess_voc(image)), torch.from_numpy(label.copy())


def buckets(sizes: list[tuple[int, int]], batch: int) -> list[list[int]]:
    """Batches of indices of equal-size images, at most ``batch`` each, largest buckets first."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(sizes):
        by_size.setdefault(s, []).append(i)
    groups = sorted(by_size.values(), key=len, reverse=True)
    return [g[j:j + batch] for g in groups for j in range(0, len(g), batch)]


# -- the model and one pass --------------------------------------------------------------------
def build_model(cfg: Config) -> torch.nn.Module:
    """FCN-8s with seeded random weights (the selfcheck recipe), on the CPU."""
    return randomize(get_model("fcn8s", width_divisor=cfg.width_divisor), seed=SEED).eval()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_pass(model, mode: speed.SpeedMode, loader, cfg: Config, deadline: Deadline,
             keep_preds: bool = False) -> dict:
    """One pass of ``loader`` through ``model`` in ``mode``: forward, argmax, confusion matrix on
    the device. Stops when the deadline passes (the figures then cover the images done)."""
    cm = ConfusionMatrix(NUM_CLASSES, device=cfg.device)
    preds, images, stopped = [], 0, False
    sync(cfg.device)
    start = time.perf_counter()
    with speed.backend_flags(mode), torch.inference_mode():
        for data, label in loader:
            x = speed.to_input(data.to(cfg.device, non_blocking=True), mode)
            with speed.autocast(mode, cfg.device):
                score = model(x)
            pred = score.argmax(1)
            cm.update(pred, label.to(cfg.device, non_blocking=True))
            if keep_preds:
                preds.append(pred.to(torch.uint8))
            images += data.shape[0]
            if deadline.left() <= 0:
                stopped = True
                break
        sync(cfg.device)
    elapsed = time.perf_counter() - start
    scores = cm.compute()
    return {"images": images, "seconds": elapsed, "images_per_s": images / elapsed if elapsed else 0.0,
            "mean_iu": scores.mean_iu, "stopped_early": stopped, "preds": preds}


def loader_for(folder: Path, indices: list[int], batches: list[list[int]] | None, cfg: Config):
    """A DataLoader over ``indices`` (batch 1) or over given equal-size ``batches``."""
    data = JpegSet(folder, indices)
    position = {i: k for k, i in enumerate(indices)}
    common = dict(num_workers=cfg.workers, pin_memory=cfg.device == "cuda",
                  persistent_workers=False, prefetch_factor=4)
    if batches is None:
        return torch.utils.data.DataLoader(data, batch_size=1, shuffle=False, **common)
    sampler = [[position[i] for i in b] for b in batches]
    return torch.utils.data.DataLoader(data, batch_sampler=sampler, **common)


# -- sections ----------------------------------------------------------------------------------
def section_selfcheck(cfg: Config, deadline: Deadline) -> dict:
    """``python -m port selfcheck`` strict and with --tf32, each in a child under a timeout."""
    out = {}
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for label, extra in (("strict fp32", ("--precision", "strict-fp32")), ("tf32", ("--precision", "fast-tf32"))):
        if cfg.device != "cuda" and not cfg.quick:
            out[label] = {"skipped": "no CUDA device"}
            continue
        cmd = [sys.executable, "-m", "port", "selfcheck", "--device", cfg.device, *cfg.selfcheck_args, *extra]
        timeout = max(1.0, deadline.left() / (2 if label == "strict fp32" else 1))
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
            out[label] = {"command": " ".join(cmd[1:]), "returncode": proc.returncode,
                          "output": (proc.stdout + proc.stderr).strip().splitlines()[-6:]}
        except subprocess.TimeoutExpired:
            out[label] = {"command": " ".join(cmd[1:]), "skipped": f"timed out after {timeout:.0f} s"}
    return out


def section_throughput(folder: Path, sizes, cfg: Config, deadline: Deadline) -> dict:
    """End-to-end images/s, batch 1 and bucketed, each (mode, batching) in a fresh process
    (``gpu_passes.py``'s child: nothing cached from another mode), a cold and a warm pass."""
    (folder / "sizes.json").write_text(json.dumps(sizes))
    names = cfg.modes if cfg.modes is not None else DEFAULT_THROUGHPUT
    plans = [(mode, b) for mode in THROUGHPUT_MODES if mode.name in names for b in ("batch1", "bucketed")]
    results = {}
    for k, (mode, batching) in enumerate(plans):
        share = deadline.left() / (len(plans) - k)  # what a plan leaves rolls over
        key = f"{mode.name}, {batching}"
        if share < 5:
            results[key] = {"skipped": "out of time"}
            continue
        cmd = [sys.executable, str(Path(__file__).resolve().with_name("gpu_passes.py")), "--child", str(folder),
               "--modes", mode.name, "--batching", batching, "--passes", "cold,warm",
               "--budget", f"{max(1.0, (share - CHILD_START_S) / 2):.1f}"] + \
            (["--quick"] if cfg.quick else []) + (["--cpu"] if cfg.device == "cpu" else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=share)
        except subprocess.TimeoutExpired:
            results[key] = {"skipped": f"did not finish within its {share:.0f} s share"}
            continue
        lines = [v for v in proc.stdout.splitlines() if v.startswith("{")]
        if proc.returncode or not lines:
            results[key] = {"skipped": "child failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
            continue
        child = json.loads(lines[-1])
        results[key] = {**child["cold"], "warm_images_per_s": child["warm"]["images_per_s"],
                        "warm_stopped_early": child["warm"]["stopped_early"]}
    return results


def _same_size_subset(sizes, n: int) -> list[int]:
    common = max(set(sizes), key=sizes.count)
    return [i for i, s in enumerate(sizes) if s == common][:n]


def compare_preds(ref: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    """Fraction of pixels where two lists of prediction maps agree."""
    same = sum(int((a == b.to(a.device)).sum()) for a, b in zip(ref, got))
    return same / sum(a.numel() for a in ref)


def miu_against(ref: list[torch.Tensor], got: list[torch.Tensor], device: str) -> float:
    """Mean IU of ``got`` taking ``ref`` (strict fp32's prediction) as the ground truth."""
    cm = ConfusionMatrix(NUM_CLASSES, device=device)
    for a, b in zip(ref, got):
        cm.update(b.to(a.device).long(), a.long())
    return cm.compute().mean_iu


def section_modes(model, folder: Path, sizes, cfg: Config, deadline: Deadline, out_dir: Path) -> dict:
    """Each knob and mode against strict fp32 on one equal-size subset, batches of ``cfg.batch``."""
    subset = _same_size_subset(sizes, cfg.mode_images)
    batches = [subset[j:j + cfg.batch] for j in range(0, len(subset), cfg.batch)]
    loader = lambda: loader_for(folder, subset, batches, cfg)  # noqa: E731
    strict = speed.prepare_model(copy.deepcopy(model), speed.STRICT, cfg.device)
    run_pass(strict, speed.STRICT, loader(), cfg, Deadline(deadline.left() / 8))  # warm-up
    ref = run_pass(strict, speed.STRICT, loader(), cfg, Deadline(deadline.left() / 4), keep_preds=True)
    results = {"subset": f"{len(subset)} images of {sizes[subset[0]][0]}x{sizes[subset[0]][1]}, batches of {cfg.batch}",
               speed.STRICT.name: _mode_row(ref, ref, cfg)}
    knobs = [m for m in KNOBS if cfg.wants(m)]
    eager = [m for m in knobs if not m.compile]
    for mode in knobs:
        if mode.compile:  # last but for the combined modes: leave them a share each
            reserve = deadline.left() * (len(knobs) - 1 - knobs.index(mode)) / len(knobs)
            budget = min(cfg.compile_budget_s, deadline.left() - reserve)
            results[mode.name] = compile_in_child(folder, subset, cfg, budget, out_dir, ref)
            continue
        share = deadline.left() / (len(eager) - eager.index(mode) + 1)
        if share < 1:
            results[mode.name] = {"skipped": "out of time"}
            continue
        m = speed.prepare_model(copy.deepcopy(model), mode, cfg.device)
        run_pass(m, mode, loader(), cfg, Deadline(share * 0.3))  # warm-up (cudnn.benchmark search)
        r = run_pass(m, mode, loader(), cfg, Deadline(share * 0.6), keep_preds=True)
        results[mode.name] = _mode_row(ref, r, cfg)
    return results


def _mode_row(ref: dict, r: dict, cfg: Config) -> dict:
    n = min(len(ref["preds"]), len(r["preds"]))
    return {"images": r["images"], "images_per_s": r["images_per_s"], "mean_iu": r["mean_iu"],
            "mean_iu_diff_vs_strict": r["mean_iu"] - ref["mean_iu"],
            "mean_iu_vs_strict_prediction": miu_against(ref["preds"][:n], r["preds"][:n], cfg.device),
            "argmax_agreement": compare_preds(ref["preds"][:n], r["preds"][:n]),
            "stopped_early": r["stopped_early"]}


# -- torch.compile in a child process (a hard timeout bounds its warm-up) ----------------------
def compile_in_child(folder: Path, subset, cfg: Config, budget: float, out_dir: Path, ref: dict) -> dict:
    if budget < 10:
        return {"skipped": f"out of time ({budget:.0f} s left)"}
    preds_file = out_dir / "compile_preds.pt"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-child", str(folder),
           "--child-out", str(preds_file), "--child-indices", ",".join(map(str, subset)),
           "--budget", str(budget)] + (["--quick"] if cfg.quick else []) + (["--cpu"] if cfg.device == "cpu" else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return {"skipped": f"compile + run did not finish within {budget:.0f} s (budget); not measured"}
    if proc.returncode or not preds_file.exists():
        return {"skipped": "compile child failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
    child = torch.load(preds_file, weights_only=True)
    preds_file.unlink()
    row = _mode_row(ref, {**child["result"], "preds": child["preds"]}, cfg)
    row["compile_warmup_s"] = child["warmup_s"]
    return row


def compile_child(args) -> int:
    """The torch.compile measurement: same model, same subset, fp32 strict flags."""
    cfg = make_config(args)
    indices = [int(i) for i in args.child_indices.split(",")]
    model = speed.prepare_model(build_model(cfg), speed.STRICT, cfg.device)
    loader = lambda: loader_for(Path(args.compile_child), indices, [indices[j:j + cfg.batch] for j in range(0, len(indices), cfg.batch)], cfg)  # noqa: E731
    first, _ = next(iter(loader()))
    with speed.backend_flags(speed.STRICT):
        result = speed.compile_model(model, {"data": first.to(cfg.device)})
    if not result.compiled:
        print(result.reason, file=sys.stderr)
        return 1
    r = run_pass(result.model, speed.STRICT, loader(), cfg, Deadline(args.budget), keep_preds=True)
    preds = [p.cpu() for p in r.pop("preds")]
    torch.save({"result": r, "preds": preds, "warmup_s": result.warmup_s}, args.child_out)
    return 0


# -- report ------------------------------------------------------------------------------------
def environment(cfg: Config) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": cfg.device,
           "cpu_count": os.cpu_count(), "quick": cfg.quick, "width_divisor": cfg.width_divisor,
           "images": cfg.images, "workers": cfg.workers, "batch": cfg.batch}
    if cfg.device == "cuda":
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"## GPU check ({env.get('gpu', env['device'])}, torch {env['torch']}, "
             f"{'QUICK CPU run' if env['quick'] else 'full run'})", "",
             f"FCN-8s width/{env['width_divisor']}, random weights; {env['images']} synthetic images, "
             f"{env['workers']} DataLoader workers, bucket batch {env['batch']}; total {results['total_s']:.0f} s.", "",
             "### selfcheck", ""]
    for label, r in results["selfcheck"].items():
        lines.append(f"- {label}: `{r.get('command', '')}` " + (r.get("skipped") or " / ".join(r.get("output", []))))
    lines += ["", "### End-to-end throughput (JPEG decode workers, pinned, non-blocking, GPU confusion matrix)", "",
              "Each row in a fresh process: the cold pass is the first over the set (cuDNN sets up each new "
              "size), the warm pass the same again.", "",
              "| mode, batching | images | cold s | cold images/s | warm images/s | mean IU (synthetic labels) | note |",
              "|---|---|---|---|---|---|---|"]
    for name, r in results["throughput"].items():
        if "skipped" in r:
            lines.append(f"| {name} | - | - | - | - | - | {r['skipped']} |")
            continue
        early = r["stopped_early"] or r["warm_stopped_early"]
        lines.append(f"| {name} | {r['images']} | {r['seconds']:.2f} | {r['images_per_s']:.1f} | "
                     f"{r['warm_images_per_s']:.1f} | {r['mean_iu']:.4f} | {'stopped early (budget)' if early else ''} |")
    modes = results["modes"]
    lines += ["", f"### Fast modes vs strict fp32 ({modes.get('subset', '')})", "",
              "| mode | images/s | mean IU diff vs strict | mean IU vs strict prediction | argmax agreement | note |",
              "|---|---|---|---|---|---|"]
    for name, r in modes.items():
        if name == "subset":
            continue
        if "skipped" in r:
            lines.append(f"| {name} | - | - | - | - | {r['skipped']} |")
            continue
        note = f"compile warm-up {r['compile_warmup_s']:.0f} s" if "compile_warmup_s" in r else ""
        lines.append(f"| {name} | {r['images_per_s']:.1f} | {r['mean_iu_diff_vs_strict']:+.2e} | "
                     f"{r['mean_iu_vs_strict_prediction']:.6f} | {100 * r['argmax_agreement']:.4f}% | {note} |")
    lines += [""] + [f"- note: {n}" for n in results["notes"]]
    return "\n".join(lines) + "\n"


def output_dir() -> Path:
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run of the same code paths (CPU is fine)")
    parser.add_argument("--cpu", action="store_true", help="use the CPU even where CUDA is available")
    parser.add_argument("--budget", type=float, help="total seconds (default 480; quick 300)")
    parser.add_argument("--compile-budget", type=float, help="seconds for torch.compile + its run (default 120)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    parser.add_argument("--modes", help="comma-separated mode names for the throughput and modes tables "
                        "(default all; strict-fp32 is always the modes table's reference)")
    parser.add_argument("--compile-child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--child-indices", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compile_child:
        return compile_child(args)
    sections = [v for v in args.sections.split(",") if v]
    known = {m.name for m in THROUGHPUT_MODES + KNOBS}
    modes = frozenset(v for v in (args.modes or "").split(",") if v) or None
    if not sections or set(sections) - set(SECTIONS):
        parser.error(f"--sections: expected some of {', '.join(SECTIONS)}, got {args.sections!r}")
    if modes and modes - known:
        parser.error(f"--modes: unknown {', '.join(sorted(modes - known))}; known: {', '.join(sorted(known))}")
    cfg = replace(make_config(args), modes=modes)
    if cfg.device == "cpu" and not cfg.quick:
        print("gpu_check: no CUDA device; run with --quick for the tiny CPU run", file=sys.stderr)
        return 2
    start, out_dir = time.monotonic(), output_dir()
    total = Deadline(cfg.budget_s)
    results = {"environment": environment(cfg), "notes": cfg.notes, **{k: {} for k in SECTIONS}}
    print(f"gpu_check: {results['environment']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        t = time.perf_counter()
        sizes = write_set(Path(tmp), cfg)
        cfg.notes.append(f"wrote {len(sizes)} JPEGs ({len(set(sizes))} distinct sizes) in {time.perf_counter() - t:.1f} s")
        model = build_model(cfg)
        runs = {"selfcheck": lambda d: section_selfcheck(cfg, d),
                "throughput": lambda d: section_throughput(Path(tmp), sizes, cfg, d),
                "modes": lambda d: section_modes(model, Path(tmp), sizes, cfg, d, out_dir)}
        todo = [k for k in SECTIONS if k in sections]
        cfg.notes.append(f"sections: {', '.join(todo)}; modes: {', '.join(sorted(modes)) if modes else 'all'}")
        for i, name in enumerate(todo):
            run = runs[name]
            remaining = sum(SHARES[k] for k in todo[i:])
            share = total.left() * SHARES[name] / remaining  # time a section leaves rolls over
            t = time.perf_counter()
            results[name] = run(Deadline(share))
            print(f"gpu_check: {name} done in {time.perf_counter() - t:.0f} s", flush=True)
    results["total_s"] = time.monotonic() - start
    (out_dir / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    (out_dir / "gpu_check.md").write_text(markdown(results))
    print(markdown(results))
    print(f"gpu_check: wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
