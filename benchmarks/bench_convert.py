"""Benchmark: convert a full-width FCN-8s caffemodel (about 538 MB) to safetensors and load it.

The caffemodel is written once with the project's writer (``port.caffe.synth``: the upstream
``voc-fcn8s/deploy.prototxt``, full width, seeded random weights) into ``.bench/`` (git-ignored)
and reused by later runs. Each measurement runs in a fresh interpreter so that its peak RSS
(``getrusage`` ``ru_maxrss``) is its own, from a warm page cache, best of ``--repeat``:

- references: ``cat FILE > /dev/null`` and ``cp FILE COPY``;
- read: ``load_caffemodel`` (blobs as zero-copy views) plus touching every float;
- convert: ``port.convert.convert`` (read, strict fill, SHA-256, safetensors write);
- load: ``fcn8s(weights=...)`` (build the model, load the safetensors strictly);
- the whole command, process start and imports included: ``python -m port convert FILE -o OUT``
  against ``cp FILE COPY && sync COPY`` (the copy's data on disk, as convert's fsync puts it)
  plus a bare ``python -c pass``, and the imports alone (``python -c "import port.convert"``,
  ``python -c "import torch"``), interleaved round by round (a shared machine's load falls on
  each alike; best and median of the rounds, each round's ratio, the load average), the
  modules loaded from bytecode as an installed package's are (``--no-bytecode``:
  compiled in every run, as where ``PYTHONDONTWRITEBYTECODE`` is set). The output is removed before each run (untimed), so no run pays for replacing an
  existing file.

Not a test: ``python benchmarks/bench_convert.py [--repeat 3] [--json FILE]``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTOTXT = REPO.parent / "shared" / "upstream" / "voc-fcn8s" / "deploy.prototxt"
BENCH_DIR = REPO / ".bench"
MIB = 2 ** 20

# Each child prints one JSON line: phase timings (s) and its peak RSS (bytes).
CHILD = r"""
import json, resource, sys, time
what, src, out = sys.argv[1:4]
t0 = time.perf_counter()
import numpy as np, torch
from port.caffe import load_caffemodel
from port.convert import convert, sha256_file
from port.models import fcn8s
r = {"import_s": time.perf_counter() - t0}
t = time.perf_counter()
if what == "baseline":  # the interpreter with these imports: subtracted to show each job's own memory
    r["total_s"] = 0.0
elif what == "read":
    net = load_caffemodel(src)
    r["read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    total = sum(float(np.add.reduce(b, axis=None, dtype=np.float64)) for bl in net.blobs().values() for b in bl)
    r["touch_s"] = time.perf_counter() - t
    r["total_s"] = r["read_s"] + r["touch_s"]
elif what == "sha256":
    sha256_file(src)
    r["total_s"] = time.perf_counter() - t
elif what == "convert":
    convert(src, out=out)
    r["total_s"] = time.perf_counter() - t
elif what == "load":
    model = fcn8s(weights=out)
    r["total_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with torch.device("meta"):
        fcn8s()
    r["build_on_meta_s"] = time.perf_counter() - t
r["maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(r))
"""


def best_shell(command: str, repeat: int, after: str = "") -> float:
    """Best wall time of a shell command over ``repeat`` runs (``after`` runs untimed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, shell=True, check=True)
        best = min(best, time.perf_counter() - start)
        if after:
            subprocess.run(after, shell=True, check=True)
    return best


def timed_shell(command: str, after: str = "") -> tuple[float, float]:
    """(wall, CPU seconds: user + system of the command's processes) of one run of a shell
    command (``after`` runs untimed). CPU time is what a shared machine's load slows least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, shell=True, check=True)
    wall = time.perf_counter() - start
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    if after:
        subprocess.run(after, shell=True, check=True)
    return wall, (used.ru_utime - before.ru_utime) + (used.ru_stime - before.ru_stime)


def child(what: str, src: Path, out: Path, repeat: int) -> dict:
    """The best of ``repeat`` fresh-process runs of ``what`` (by total time); peak RSS of it."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runs = []
    for _ in range(repeat):
        proc = subprocess.run([sys.executable, "-c", CHILD, what, str(src), str(out)], env=env,
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{what} child failed:\n{proc.stderr[-2000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return min(runs, key=lambda r: r["total_s"])


def whole_process(src: Path, repeat: int, other_repo: Path | None = None, bytecode: bool = True) -> dict:
    """Wall times of whole processes (best and median of ``repeat``; each round's command /
    reference ratio, min and median; the load average before and after): the convert command against
    ``cp`` + ``sync`` of the copy + a bare interpreter, and the imports on their own. The
    commands are interleaved (each round runs every one once), so a load that comes and goes
    on a shared machine falls on all of them alike rather than on one. ``other_repo``: another
    checkout's command too (``other_command_s``), e.g. the one before a change.

    ``bytecode``: the project's modules load from compiled bytecode, as an installed package's
    do (a cache under ``.bench/pycache`` via ``PYTHONPYCACHEPREFIX``, filled by an untimed first
    round; no checkout is written into), even where the environment sets
    ``PYTHONDONTWRITEBYTECODE``; without it every run compiles them from source."""
    src = src.resolve()  # the commands run in their checkouts
    out, copy = src.with_name(src.stem + "-cli.safetensors"), src.with_name(src.name + ".copy")
    cache = BENCH_DIR / "pycache"
    python = (f"env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX='{cache}' '{sys.executable}'" if bytecode
              else f"env PYTHONDONTWRITEBYTECODE=1 '{sys.executable}'")
    # ``python -m`` puts the working folder first on sys.path: each command runs in its checkout
    env = f"cd '{REPO}' && PYTHONPATH='{REPO}'"
    commands = {  # name: (command, untimed clean-up after it)
        "python_pass_s": (f"{python} -c pass", ""),
        "cp_sync_s": (f"cp '{src}' '{copy}' && sync '{copy}'", f"rm -f '{copy}'"),
        "import_convert_s": (f"{env} {python} -c 'import port.convert'", ""),
        "import_torch_s": (f"{python} -c 'import torch'", ""),
        "command_s": (f"{env} {python} -m port convert '{src}' -o '{out}' > /dev/null", f"rm -f '{out}'"),
    }
    if other_repo is not None:
        commands["other_command_s"] = (f"cd '{other_repo}' && PYTHONPATH='{other_repo}' {python} -m port convert "
                                       f"'{src}' -o '{out}' "
                                       f"> /dev/null", f"rm -f '{out}'")
    subprocess.run(f"rm -f '{out}' '{copy}'", shell=True, check=True)
    best_shell(f"cat '{src}' > /dev/null", 1)  # warm the page cache
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    if bytecode:  # untimed: fills the bytecode cache
        for command, after in commands.values():
            best_shell(command, 1, after=after)
    load_before = os.getloadavg()[0]
    for _ in range(repeat):
        for name, (command, after) in commands.items():
            wall, used = timed_shell(command, after)
            walls[name].append(wall)
            cpus[name].append(used)
    figures = {name: min(values) for name, values in walls.items()}
    figures["reference_s"] = figures["cp_sync_s"] + figures["python_pass_s"]
    figures.update({name[:-2] + "_cpu_s": min(values) for name, values in cpus.items()})
    figures["reference_cpu_s"] = figures["cp_sync_cpu_s"] + figures["python_pass_cpu_s"]
    # medians, and each round's command / reference (a load that changes between rounds
    # falls on both of a round alike)
    figures.update({name[:-2] + "_median_s": statistics.median(values) for name, values in walls.items()})
    references = [cp + bare for cp, bare in zip(walls["cp_sync_s"], walls["python_pass_s"])]
    figures["reference_median_s"] = statistics.median(references)
    for name in ("command_s", "other_command_s"):
        if name in walls:
            ratios = [wall / ref for wall, ref in zip(walls[name], references)]
            figures[name[:-2] + "_ratio_min"] = min(ratios)
            figures[name[:-2] + "_ratio_median"] = statistics.median(ratios)
    figures["load_before"], figures["load_after"] = load_before, os.getloadavg()[0]
    figures["rounds"] = repeat
    return figures


def caffemodel(folder: Path) -> Path:
    """The full-width FCN-8s caffemodel in ``folder``, written with ``port.caffe`` if absent."""
    sys.path.insert(0, str(REPO))
    from port.caffe import load_net
    from port.caffe.synth import make_caffemodel
    path = folder / "fcn8s-full.caffemodel"
    if path.is_file():
        print(f"reusing {path} ({path.stat().st_size:,} bytes)")
        return path
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    make_caffemodel(load_net(PROTOTXT), path, seed=0)
    print(f"wrote {path} ({path.stat().st_size:,} bytes) in {time.perf_counter() - start:.1f} s")
    return path


def measure(src: Path, repeat: int) -> dict:
    out = src.with_suffix(".safetensors")
    copy = src.with_name(src.name + ".copy")
    best_shell(f"cat '{src}' > /dev/null", 1)  # warm the page cache
    figures = {"file_bytes": src.stat().st_size,
               "cat_s": best_shell(f"cat '{src}' > /dev/null", repeat),
               "cp_s": best_shell(f"cp '{src}' '{copy}'", repeat, after=f"rm -f '{copy}'")}
    for what in ("baseline", "read", "sha256", "convert", "load"):
        figures[what] = child(what, src, out, repeat)
    figures["safetensors_bytes"] = out.stat().st_size
    figures["whole_process"] = whole_process(src, repeat)
    return figures


def report(f: dict) -> list[str]:
    size, ref = f["file_bytes"], f["cat_s"] + f["cp_s"]
    rows = [f"file: {size:,} bytes ({size / MIB:.0f} MiB); warm page cache; {os.cpu_count()} CPUs; "
            f"best of the runs; each Python figure in a fresh process (import time not counted)",
            "| what | time (s) | vs cat | vs cat + cp | peak RSS (MiB) | RSS / file | (RSS - baseline) / file |",
            "|---|---|---|---|---|---|---|",
            f"| cat FILE > /dev/null | {f['cat_s']:.3f} | 1.00 | - | - | - | - |",
            f"| cp FILE COPY | {f['cp_s']:.3f} | {f['cp_s'] / f['cat_s']:.2f} | - | - | - | - |",
            f"| baseline: python + numpy + torch + port imports | - | - | - | "
            f"{f['baseline']['maxrss_bytes'] / MIB:.0f} | - | - |"]
    base = f["baseline"]["maxrss_bytes"]
    labels = {"read": "read: load_caffemodel (views)", "sha256": "SHA-256 of the file (part of convert)",
              "convert": "convert: read -> safetensors (whole)", "load": "load: fcn8s(weights=...)"}
    for what, label in labels.items():
        r = f[what]
        rows.append(f"| {label} | {r['total_s']:.3f} | {r['total_s'] / f['cat_s']:.2f} | "
                    f"{r['total_s'] / ref:.2f} | {r['maxrss_bytes'] / MIB:.0f} | {r['maxrss_bytes'] / size:.2f} | "
                    f"{(r['maxrss_bytes'] - base) / size:.2f} |")
    read = f["read"]
    rows.append(f"\nread: {read['read_s']:.3f} s to views + {read['touch_s']:.3f} s touching every float; "
                f"load: model built on the meta device in {f['load']['build_on_meta_s']:.3f} s")
    w = f["whole_process"]
    rows += ["", "whole processes (wall time, imports included):",
             "| what | time (s) | vs (cp + sync + python -c pass) |", "|---|---|---|",
             f"| python -c pass | {w['python_pass_s']:.3f} | - |",
             f"| cp FILE COPY && sync COPY | {w['cp_sync_s']:.3f} | - |",
             f"| reference: the two above | {w['reference_s']:.3f} | 1.00 |",
             f"| python -c 'import torch' | {w['import_torch_s']:.3f} | {w['import_torch_s'] / w['reference_s']:.2f} |",
             f"| python -c 'import port.convert' | {w['import_convert_s']:.3f} | "
             f"{w['import_convert_s'] / w['reference_s']:.2f} |",
             f"| **python -m port convert FILE -o OUT** | **{w['command_s']:.3f}** | "
             f"**{w['command_s'] / w['reference_s']:.2f}** |"]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=BENCH_DIR, help="where the files go (.bench/)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--whole-process-only", action="store_true",
                        help="only the whole-command figures (python -m port convert vs cp + sync)")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="with --whole-process-only: compile the modules in every run (no bytecode cache)")
    parser.add_argument("--other-repo", type=Path,
                        help="with --whole-process-only: also time this checkout's command in the same rounds")
    args = parser.parse_args(argv)
    if args.whole_process_only:
        w = whole_process(caffemodel(args.folder), args.repeat, args.other_repo, bytecode=not args.no_bytecode)
        print("\n".join(f"{k}: {v:.3f}" for k, v in w.items()))
        print(f"command / reference: {w['command_s'] / w['reference_s']:.2f} (best walls), "
              f"{w['command_median_s'] / w['reference_median_s']:.2f} (median walls), per round "
              f"{w['command_ratio_min']:.2f} min / {w['command_ratio_median']:.2f} median; "
              f"{w['command_cpu_s'] / w['reference_cpu_s']:.2f} (CPU seconds); load average "
              f"{w['load_before']:.1f} -> {w['load_after']:.1f}")
        if args.json:
            args.json.write_text(json.dumps(w, indent=1))
        return 0
    figures = measure(caffemodel(args.folder), args.repeat)
    print("\n".join(report(figures)))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
