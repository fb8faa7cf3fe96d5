"""``python -m reproduce train MODEL --data DIR --out DIR [--init FILE|auto] ...``: train a
released net by upstream's recipe (``reproduce.training.run``). Under ``torchrun`` every rank
runs this command (gloo on CPUs, NCCL on GPUs); rank 0 writes the files. Exit status: 0 done,
1 bad input (one line), 2 usage, 128+N stopped by signal N after a snapshot (``--resume``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

# At the top, unlike port/cli: `python -m reproduce` imports torch before dispatching anyway.
from port.errors import EXIT_BAD_INPUT, PortError
from port.run.devices import default_device
from reproduce import distributed as dist_
from reproduce.resolve import default_run_dir
from reproduce.training.recipes import recipe_names
from reproduce.training.run import TrainOptions, TrainStopped, ran_line, train

PROG = "python -m reproduce train"
EXIT_SIGNAL_BASE = 128


def parser() -> argparse.ArgumentParser:
    models = ", ".join(n.replace("_", "-") for n in recipe_names())
    p = argparse.ArgumentParser(prog=PROG, description="Train a released FCN as upstream "
                                "solve.py does (its solver.prototxt, data layer, init, schedule).",
                                epilog=f"models: {models}")
    p.add_argument("model", help="the net to train (dashes or underscores)")
    p.add_argument("--data", type=Path, required=True, help="a folder at or above every dataset "
                   "the recipe needs (training and validation)")
    p.add_argument("--out", type=Path, help="run folder (train_log.jsonl, snapshots/, "
                   "final.safetensors, report.md, curves.png; default: ./runs/MODEL)")
    p.add_argument("--init", default="auto", help="auto (the recipe's: ILSVRC classifier "
                   "transplanted, or the previous stage's OUT/../<stage>/final.safetensors), or "
                   "a .caffemodel/.h5/.safetensors copied/transplanted by layer name, e.g. your copy "
                   "of the classifier the recipe downloads (default auto)")
    p.add_argument("--width-divisor", type=int, default=1, help="train net widths / N (default 1)")
    p.add_argument("--iters", type=int, help="iterations (default: the recipe's rounds x step)")
    p.add_argument("--snapshot", type=int, help="snapshot every N iterations (default: solver.prototxt's)")
    p.add_argument("--test-interval", type=int, help="validate every N iterations (default: "
                   "solve.py's step); 0: only at the end")
    p.add_argument("--iter-size", type=int, help="passes per iteration per process (default: the recipe's)")
    p.add_argument("--seed", type=int, help="the data layer's seed (default 1337, upstream's)")
    p.add_argument("--train-batchnorm", action="store_true", help="BatchNorm on each batch's "
                   "statistics, its moving sums updated (nets with BatchNorm: fcn-resnet*; the "
                   "recipe freezes them at the classifier's): another recipe, said in the report")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, "
                   "else cpu; under torchrun cuda is cuda:LOCAL_RANK)")
    p.add_argument("--resume", action="store_true", help="continue from the newest intact "
                   "snapshot in OUT")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images or labels "
                   "out of the training and validation lists (each recorded in the report) "
                   "instead of stopping before the first iteration")
    p.add_argument("--cache", type=Path, help="download and conversion cache (default: $FCN_PORT_CACHE, else "
                   "$XDG_CACHE_HOME/fcn-port, else ~/.cache/fcn-port)")
    p.add_argument("--tensorboard", type=Path, metavar="DIR", help="also write TensorBoard "
                   "event files to DIR (tensorboard --logdir DIR): training loss, smoothed loss "
                   "and learning rate at each iteration; validation metrics, per-class IU and "
                   "a few overlays (also drawn in the report) at each validation; with --resume "
                   "the same stream goes on. Needs pip install 'fcn-port[tensorboard]'; "
                   "without it the run goes on without them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = args.out or default_run_dir(args.model)
    opts = TrainOptions(model=args.model, data=args.data, out=out, init=args.init,
                        width_divisor=args.width_divisor, iters=args.iters,
                        snapshot=args.snapshot, test_interval=args.test_interval,
                        iter_size=args.iter_size, seed=args.seed, device=args.device,
                        resume=args.resume, skip_bad=args.skip_bad, cache=args.cache,
                        progress=not args.quiet, tensorboard=args.tensorboard,
                        train_batchnorm=args.train_batchnorm)
    device = args.device or default_device()
    ctx = dist_.DistContext()
    try:
        ctx = dist_.setup("cuda" if device.startswith("cuda") else "cpu")
        summary = train(opts, ctx)
    except TrainStopped as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + int(exc.signum)
    except (PortError, OSError) as exc:  # a bad torchrun setting too (DistributedError)
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"{PROG}: {text}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        dist_.teardown(ctx)
    if ctx.is_main:
        print(ran_line(summary))
        if summary.get("report"):
            print(f"final mean IU {100 * summary['mean_iu']:.2f} %; report: {summary['report']}")
    return 0
