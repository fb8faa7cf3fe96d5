"""Benchmark: read a full-width FCN-8s caffemodel (about 538 MB) into numpy arrays.

Prints, for the same file in the same run: ``cat FILE > /dev/null`` from a warm page cache,
our read (zero-copy views of an mmap), and our read plus touching every float (summing each
blob, which pages the whole file in), each timed in a fresh process with its peak RSS.
Not a test: run by hand (``python benchmarks/bench_read.py``); the figures go to
benchmarks/RESULTS.md.

Without ``--file`` the caffemodel is written first with ``port.caffe.synth`` from the
upstream ``voc-fcn8s/deploy.prototxt`` (full width, random weights) into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PROTOTXT = REPO.parent / "shared" / "upstream" / "voc-fcn8s" / "deploy.prototxt"

# Runs in a fresh interpreter so that its peak RSS is the read's alone.
CHILD = r"""
import json, resource, sys, time
def peak_rss():
    # VmHWM belongs to this process image; ru_maxrss survives fork+exec from a big parent
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
from port.caffe import load_caffemodel
import numpy as np
t1 = time.perf_counter()
net = load_caffemodel(sys.argv[1])
blobs = [b for bl in net.blobs().values() for b in bl]
t2 = time.perf_counter()
touch = sys.argv[2] == "touch"
total = sum(float(np.add.reduce(b, axis=None, dtype=np.float64)) for b in blobs) if touch else 0.0
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "read_s": t2 - t1, "touch_s": t3 - t2,
                  "params": sum(b.size for b in blobs), "blobs": len(blobs),
                  "maxrss_bytes": peak_rss()}))
"""


def time_cat(path: Path, repeat: int) -> float:
    """Best wall time of ``cat FILE > /dev/null`` over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(f"cat '{path}' > /dev/null", shell=True, check=True)
        best = min(best, time.perf_counter() - t)
    return best


def run_child(path: Path, mode: str, repeat: int) -> dict:
    """The best of ``repeat`` fresh-process reads (by read + touch time)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, str(path), mode], env=env,
                                      check=True, capture_output=True, text=True).stdout)
            for _ in range(repeat)]
    return min(runs, key=lambda r: r["read_s"] + r["touch_s"])


def make_file(folder: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from port.caffe import load_net
    from port.caffe.synth import make_caffemodel
    path = folder / "fcn8s-full.caffemodel"
    t = time.perf_counter()
    make_caffemodel(load_net(DEFAULT_PROTOTXT), path, seed=0)
    print(f"wrote {path} ({path.stat().st_size:,} bytes) in {time.perf_counter() - t:.1f} s")
    return path


def report(path: Path, repeat: int) -> None:
    size = path.stat().st_size
    time_cat(path, 1)  # warm the page cache
    cat_s = time_cat(path, repeat)
    views = run_child(path, "views", repeat)
    touched = run_child(path, "touch", repeat)
    mib = 2 ** 20
    print(f"file: {path} {size:,} bytes ({size / mib:.0f} MiB), {touched['params']:,} parameters "
          f"in {touched['blobs']} blobs; best of {repeat}, warm page cache, {os.cpu_count()} cores")
    print("| what | time (s) | peak RSS (MiB) | RSS / file size |")
    print("|---|---|---|---|")
    print(f"| cat FILE > /dev/null | {cat_s:.3f} | - | - |")
    for label, r, t in (("load_caffemodel (zero-copy views)", views, views["read_s"]),
                        ("load_caffemodel + sum every blob", touched, touched["read_s"] + touched["touch_s"])):
        print(f"| {label} | {t:.3f} | {r['maxrss_bytes'] / mib:.0f} | {r['maxrss_bytes'] / size:.2f} |")
    print(f"(python + numpy + port.caffe import: {views['import_s']:.3f} s, not counted)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file", type=Path, help="an existing caffemodel (default: write one)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.file:
        report(args.file, args.repeat)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        report(make_file(Path(tmp)), args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
