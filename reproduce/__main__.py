"""``python -m reproduce MODEL --data DIR ...`` and ``python -m reproduce demo``.

Resolve (model, weights, data), evaluate (``reproduce.harness``), report (``reproduce.report``).
Under ``torchrun`` every rank runs this same command; rank 0 prints and writes the report.
Exit status (``port.errors``, the same in ``python -m port``): 0 done; 1 bad input (a file,
name or value that does not fit, or a dataset item that cannot be read), said in one line; 2 a
usage error (argparse: unknown option, missing argument); 128 + N when signal N stopped it
(after a checkpoint: rerun with ``--resume``).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

import port
from port.caffe import load_net
from port.convert import ConversionError
from port.errors import EXIT_BAD_INPUT, PortError
from port.models import get_meta, get_model, list_models
from port.models._registry import normalize_name
from port.run import speed
from port.run.devices import default_device, device_name
from reproduce import demo
from reproduce import distributed as dist_
from reproduce import evaluation as E
from reproduce import harness as H
from reproduce import report as reports
from reproduce import resolve as R
from reproduce import verdict
from reproduce.checkpoint import CHECKPOINT_NAME
from reproduce.splits import check_split
from reproduce.training import cli as train_cli

EXIT_BAD_ITEM, EXIT_SIGNAL_BASE = EXIT_BAD_INPUT, 128
DEFAULT_OVERLAYS = 4
MAX_DEFAULT_WORKERS = 4


def parser() -> argparse.ArgumentParser:
    models = ", ".join(m.replace("_", "-") for m in list_models())
    fill = lambda text: textwrap.fill(text, 79, break_on_hyphens=False)  # noqa: E731
    p = argparse.ArgumentParser(
        prog="python -m reproduce", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=fill("Evaluate a released FCN (or any Caffe segmentation net) as upstream "
                         "score.py does and compare with the published numbers. 'python -m "
                         "reproduce demo' runs FCN-8s on the upstream demo image ('python -m "
                         "reproduce demo --help'); 'python -m reproduce train MODEL' trains one "
                         "by upstream's recipe ('python -m reproduce train --help')."),
        epilog=fill(f"models: {models} (dashes or underscores).") + "\n\n" + fill(
            "exit status: 0 done, 1 bad input (a file, name or value; said in one line), 2 "
            "usage error, 128+N stopped by signal N after a checkpoint (continue with "
            "--resume)."))
    p.add_argument("--version", action="version", version=f"%(prog)s {port.__version__}")
    p.add_argument("model", nargs="?", help="the model to evaluate, one of those listed below "
                   "(e.g. fcn8s, fcn8s-atonce, siftflow-fcn16s); omit with --net")
    p.add_argument("--data", type=Path, help="the dataset folder or any folder above it "
                   "(default: ./data, downloading the dataset there when absent)")
    p.add_argument("--weights", help=".safetensors, .caffemodel or .caffemodel.h5 (default: "
                   "the released caffemodel, fetched, verified and converted once)")
    p.add_argument("--split", metavar="NAME|FILE",
                   help="a split name (seg11valid, val, test) or a list file of image ids, one "
                        "a line (default: the papers' evaluation split; seg11valid, SIFT Flow's "
                        "and NYUDv2's test lists ship with fcn-port)")
    p.add_argument("--dataset", help="dataset reader (default: the model's; voc for --net)")
    p.add_argument("--device", choices=("cuda", "cpu"),
                   default=default_device(),
                   help="where the net runs (default: cuda when a GPU is visible, else cpu)")
    p.add_argument("--out", type=Path, help="report folder (default: ./reports/<model>)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images of "
                   "the split (default: all; a partial run is no reproduction)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fast", action="store_true",
                           help=f"the measured fast mode, {H.FAST.name} ({H.FAST.description}); "
                                f"its agreement with strict fp32 is in benchmarks/RESULTS.md")
    precision.add_argument("--precision", choices=list(H.PRECISION_MODES),
                           help=f"a named precision mode of port.run.speed (default "
                                f"{speed.STRICT.name})")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.json "
                   "(default: start afresh)")
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="N",
                   help="write a checkpoint every N images (default 100; 0: only on a signal "
                        "and at the end)")
    p.add_argument("--skip-bad", action="store_true", help="record unreadable images or labels "
                   "in the report and go on (default: stop, naming the item)")
    p.add_argument("--save-predictions", type=Path, metavar="DIR",
                   help="write every prediction as a VOC palette PNG named by image id "
                        "(default: none written)")
    p.add_argument("--overlays", type=int, default=DEFAULT_OVERLAYS, metavar="N",
                   help=f"colour overlays of the first N images in the report (default "
                        f"{DEFAULT_OVERLAYS})")
    p.add_argument("--workers", type=int, help="data loading processes "
                   "(default: 0 on CPU, up to 4 on CUDA)")
    p.add_argument("--net", type=Path, metavar="NET.prototxt", help="evaluate this Caffe "
                   "prototxt through the generic graph instead of a named model (--weights "
                   "required; default: the named model)")
    p.add_argument("--score-blob", action="append", metavar="NAME",
                   help="scored output blob(s) of --net (default: score; SIFT Flow: "
                        "score_sem and score_geo)")
    p.add_argument("--compare", metavar="MODEL", help="compare a --net run with this model's "
                   "published numbers (default: none)")
    p.add_argument("--cache", type=Path, help="download/conversion cache (default: "
                   "$FCN_PORT_CACHE, else $XDG_CACHE_HOME/fcn-port, else ~/.cache/fcn-port)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: a tqdm bar "
                   "with the running mean IU and images/s)")
    return p


def _config(args: argparse.Namespace, device: torch.device, out: Path) -> H.EvalConfig:
    mode = H.FAST if args.fast else H.PRECISION_MODES[args.precision or speed.STRICT.name]
    workers = args.workers
    if workers is None:
        workers = min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1) if device.type == "cuda" else 0
    return H.EvalConfig(device=device, precision=mode, out=out, resume=args.resume,
                        checkpoint_every=args.checkpoint_every, skip_bad=args.skip_bad,
                        save_predictions=args.save_predictions, overlays=args.overlays,
                        workers=workers, progress=not args.quiet)


def _data_root(args: argparse.Namespace) -> tuple[Path, bool]:
    """(where to look for the dataset, whether it may be downloaded there)."""
    return (args.data, False) if args.data is not None else (R.default_data_root(), True)


def _named(args: argparse.Namespace, config: H.EvalConfig) -> tuple[H.EvalSpec, dict, str]:
    """A released model by name: its builder, resolved weights, its dataset."""
    meta = get_meta(args.model)
    builder = meta.name   # the registry's name (any case, dashes, voc- folders), not a re-spelling
    name = args.dataset or meta.dataset
    root, download = _data_root(args)
    # the data first: a wrong --data must not wait for (or fail on) a weights download
    dataset, source = R.open_split(name, root, args.split, download=download,
                                   **E.model_reader_options(meta, name))
    weights = R.resolve_weights(builder, args.weights, args.cache)
    runner = H.prepare_model(get_model(builder, weights=weights.path), config)
    spec = E.for_model(meta, runner, dataset, weights_sha256=weights.sha256,
                       precision=config.precision.name, limit=args.limit)
    check = verdict.weights_check(builder, str(weights.path), weights.sha256, weights.released)
    return spec, {"weights": f"{weights.path} ({weights.origin})",
                  "weights_check": check.as_dict(),
                  "split_list": source.as_dict(dataset.ids)}, builder


def _net(args: argparse.Namespace, config: H.EvalConfig) -> tuple[H.EvalSpec, dict, str | None]:
    """Any Caffe segmentation net: the prototxt through port.net.engine, weights from --weights."""
    if args.weights is None:
        raise R.ResolveError("--net needs --weights (a .caffemodel, .caffemodel.h5 or converted "
                             ".safetensors)")
    name = args.dataset or "voc"
    root, download = _data_root(args)
    R.find_dataset(name, root, args.split, download=download)  # before loading the weights
    model, sha = R.caffenet_from_files(args.net, Path(args.weights))
    runner = H.prepare_model(model, config)
    dataset, source = R.open_split(name, root, args.split, download=download,
                                   **E.net_reader_options(name, model.input_names))
    spec = E.for_net(load_net(args.net), runner, model.input_names, dataset,
                     model=f"net:{model.net_name}", weights_sha256=sha,
                     precision=config.precision.name, outputs=args.score_blob, limit=args.limit)
    compare = normalize_name(args.compare) if args.compare else None
    check = verdict.weights_check(compare, str(args.weights), sha)
    return spec, {"weights": str(args.weights), "net": str(args.net),
                  "weights_check": check.as_dict(),
                  "split_list": source.as_dict(dataset.ids)}, compare


def _report(args: argparse.Namespace, spec: H.EvalSpec, result: H.EvalResult,
            config: H.EvalConfig, ctx: dist_.DistContext, extra: dict,
            table_model: str | None) -> None:
    targets = (reports.published_targets(table_model, spec.dataset.table_split,
                                   [t.output for t in spec.tasks]) if table_model else [])
    rows = reports.compare(result.scores, targets)
    split_check = check_split(spec.identity.dataset, spec.identity.split, spec.dataset.ids)
    info = reports.RunInfo(model=spec.identity.model, dataset=spec.identity.dataset,
                     dataset_path=str(spec.dataset.root), split=spec.identity.split,
                     weights=extra.pop("weights"), weights_sha256=spec.identity.weights_sha256,
                     weights_check=extra.pop("weights_check"),
                     device=str(config.device), device_name=device_name(config.device),
                     precision=config.precision.name,
                     precision_description=config.precision.description,
                     world_size=ctx.world_size, limit=args.limit,
                     split_size=len(spec.dataset.ids),
                     extra={**extra, "precision_mode": asdict(config.precision)},
                     split_check=split_check.as_dict())
    paths = reports.write_report(config.out, result, info, spec.tasks, rows)
    print(f"\n{spec.identity.model} on {spec.identity.dataset} {spec.identity.split}: "
          f"{reports.coverage_text(info, result)}, {result.seconds:.1f} s, "
          f"{config.precision.name} on {info.device_name}")
    for reason in reports.not_a_reproduction(info, result, rows):
        print(reason)
    print(reports.format_table(rows))
    print(reports.LEGEND)
    if paths["plot"] is None:
        print(reports.NO_PLOT_NOTE)
    print("report: " + "  ".join(str(p) for p in (paths["json"], paths["md"], paths["plot"])
                                 if p is not None))
    print(f"checkpoint: {config.out / CHECKPOINT_NAME} stays: it holds the finished run, from "
          f"which --resume rewrites the report without evaluating again; delete it freely")


def _out(args: argparse.Namespace) -> Path:
    """The report folder: --out, else ./reports/<model>."""
    name = args.model or (args.net.stem if args.net else "")
    return args.out or R.default_report_dir(name)


def _run(args: argparse.Namespace, ctx: dist_.DistContext) -> int:
    device = R.rank_device(args.device, ctx.local_rank)
    config = _config(args, device, _out(args))
    spec, extra, table_model = (_net if args.net else _named)(args, config)
    result = H.evaluate(spec, config, ctx)
    if result is not None:
        try:
            _report(args, spec, result, config, ctx, extra, table_model)
        except KeyboardInterrupt:   # the counts are safe in the final checkpoint
            raise H.Interrupted(signal.SIGINT, config.out / CHECKPOINT_NAME,
                                during="writing the report") from None
    return 0


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's input (files, names, values), reported in one line, not a
    traceback: every ``PortError``, and conversion errors."""
    return (PortError, ConversionError)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        try:
            return train_cli.main(argv[1:])
        except KeyboardInterrupt:
            print("python -m reproduce train: interrupted", file=sys.stderr)
            return EXIT_SIGNAL_BASE + signal.SIGINT
    if argv[:1] == ["demo"]:
        try:
            return demo.main(argv[1:])
        except _expected_errors() as exc:
            print(f"python -m reproduce demo: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("python -m reproduce demo: interrupted", file=sys.stderr)
            return EXIT_SIGNAL_BASE + signal.SIGINT
    args = parser().parse_args(argv)
    if (args.model is None) == (args.net is None):
        parser().error("give a MODEL name or --net NET.prototxt (one of them)")
    ctx = dist_.DistContext()
    try:
        ctx = dist_.setup(args.device)   # a bad torchrun setting is a DistributedError: one line
        return _run(args, ctx)
    except H.Interrupted as exc:
        print(f"python -m reproduce: {exc}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + int(exc.signum)
    except H.BadItemError as exc:
        print(f"python -m reproduce: {exc}", file=sys.stderr)
        return EXIT_BAD_ITEM
    except _expected_errors() as exc:
        print(f"python -m reproduce: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:       # outside the loop, which turns SIGINT into a checkpoint
        ckpt = _out(args) / CHECKPOINT_NAME
        then = (f"continue from the checkpoint {ckpt} with --resume" if ckpt.is_file()
                else "nothing was evaluated")
        print(f"python -m reproduce: interrupted; {then}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + signal.SIGINT
    finally:
        dist_.teardown(ctx)


if __name__ == "__main__":
    sys.exit(main())
