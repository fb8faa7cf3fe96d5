"""One training run of a released net as upstream ``<model>/solve.py`` runs it.

``solve.py``: ``solver = caffe.SGDSolver('solver.prototxt')``, ``solver.net.copy_from(weights)``,
``surgery.interp`` on the ``'up'`` layers, then ``for _ in range(R): solver.step(S);
score.seg_tests(solver, ...)``. Here: the builder's TRAIN-phase net
(``port.models.train_net``), Caffe's fillers (``port.net.fillers``), the recipe's initial
weights (``surgery.transplant`` / copy by layer name), ``surgery.interp`` on the frozen
Deconvolutions, then ``port.training.solver.Solver.step`` (Caffe's ``Solver::Step``, the one
step loop) with one :class:`SolverCallback` of this module plugged in: the diffs summed over
processes (``on_gradients_ready``), every ``test_interval`` iterations the harness's own
evaluation (``reproduce.harness.evaluate``: the four metrics and the loss of ``score.py``) on
the recipe's validation split, the log, snapshots and SIGTERM/SIGINT (a snapshot, then stop);
with ``--tensorboard DIR``, ``reproduce.training.tensorboard``'s callback after it (rank 0).

Before the first iteration both lists are read once (:func:`check_items`): a missing or
unreadable image or label, or one of another size, stops the run in one line naming the file,
or with ``skip_bad`` leaves the list and is recorded (``init.json``, the report).

Several processes (``torchrun``): with N processes and ``iter_size`` k each, the solver's
``iter_size`` is N*k and iteration i's passes ``i*N*k ... i*N*k + N*k - 1`` of the one sample
sequence; rank r runs passes ``i*N*k + r*k ... + k - 1`` (``Solver(rank=, world_size=)``), the
accumulated diffs are summed over ranks (``all_reduce``) and normalised by ``1/(N*k)`` (Caffe's
multi-GPU ``P2PSync`` sums the diffs of its solvers and each solver divides by its
``iter_size``): the same update as one process with ``iter_size`` N*k, up to the order of the
fp32 sums. The iteration's loss is the float32 mean of all N*k pass losses in global pass
order. Rank 0 alone writes the log, snapshots and reports.

Files under OUT: ``train_log.jsonl`` (one object per iteration: ``iter``, ``lr`` (the float32
rate's shortest decimal), ``loss``, ``samples``, ``val`` after a validation),
``snapshots/iter_<k>.safetensors`` (the weights in the builder's names, loadable by
``port.models``) + ``snapshots/iter_<k>.solverstate.safetensors`` (``Solver.snapshot``: weights,
history, counters, RNG; and the run's identity), ``final.safetensors`` (with the training
verdict, ``reproduce.training.report``), ``init.json`` (where each blob started: the file it was
copied from, filled, interp; the sources read with their SHA-256; the training list,
``reproduce.splits.ListSource``; the bad items left out), ``report.json``/``report.md``
(``reproduce.report``, the training record and verdict first), ``curves.png``.

``--resume`` survives what a crash leaves: a torn last log line is dropped (said in one line),
a damaged solver state is passed over for the newest intact one (:func:`resume_point`; none:
how to start over, never a silent restart from the init), a damaged snapshot weights file
beside an intact state is said and written again from it.
"""
from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from port import weights as fmt
from port.errors import PortError
from port.fileio import write_text_atomic
from port.models import get_meta, get_model, net_spec, train_net
from port.net.engine import CaffeNet
from port.net.fillers import fill_net
from port.run.devices import default_device, device_name
from port.training.solver import NONE, STOP, Solver, SolverCallback
from port.training.surgery import interp, transplant
from reproduce import distributed as dist_
from port.hub import download, registry
from reproduce import evaluation
from reproduce import harness as H
from reproduce.datasets.base import DatasetError
from port.hub.registry import split_digest
from reproduce.resolve import rank_device
from reproduce.checkpoint import StopRequest
from reproduce.report import plural
from reproduce.training.data import TrainData, open_split
from reproduce.training import tensorboard
from reproduce.training.recipes import (TRAIN_BATCHNORM, Recipe, batchnorm_setting, get_recipe,
                                       reader_options, solver_parameter, with_batch_statistics,
                                       with_overrides)
from reproduce.training.report import (TRAINING_VERDICT, init_sources_with_digests,
                                       training_shortfalls, write_train_report, year_shortfall)

__all__ = ["TrainError", "TrainOptions", "TrainStopped", "train", "SNAPSHOT_FORMAT",
           "resume_point", "read_log"]

SNAPSHOT_FORMAT = "reproduce.training/1"
LOG_NAME, FINAL_NAME, SNAPSHOT_DIR = "train_log.jsonl", "final.safetensors", "snapshots"
METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")
#: What a failed download of the recipe's classifier suggests: this command's own option (and
#: the Makefile variable that passes it to the stages starting from a classifier).
CLASSIFIER_INSTEAD = "or pass your copy with --init FILE (make: INIT=FILE)"
_STATE = re.compile(r"^iter_(\d+)\.solverstate\.safetensors$")


class TrainError(PortError):
    """A training option, init file, dataset or snapshot that does not fit the run."""


class TrainStopped(RuntimeError):
    """SIGTERM/SIGINT stopped the run after a snapshot; exit with ``128 + signum``."""

    def __init__(self, signum: int, snapshot: Path | None):
        super().__init__(f"stopped by signal {signum} after snapshot {snapshot} "
                         f"(continue with --resume)")
        self.signum, self.snapshot = signum, snapshot


@dataclass
class TrainOptions:
    model: str
    data: Path
    out: Path
    init: str = "auto"
    width_divisor: int = 1
    iters: int | None = None
    snapshot: int | None = None
    test_interval: int | None = None
    iter_size: int | None = None
    seed: int | None = None
    device: str | None = None  # None: cuda when a GPU is visible, else cpu (as evaluation)
    resume: bool = False
    skip_bad: bool = False
    cache: Path | None = None
    progress: bool = True
    tensorboard: Path | None = None  # event files here (reproduce.training.tensorboard)
    train_batchnorm: bool = False  # --train-batchnorm: BatchNorm on batch statistics (not the recipe's)
    log: Callable[[str], None] = field(default=print)


# ------------------------------------------------------------------------------ weights
def _read_source(path: Path) -> Any:
    if not path.is_file():
        raise TrainError(f"--init {path}: file not found")
    return fmt.read_blobs(path)


def _stage_weights(opts: TrainOptions, source: str) -> Path:
    """A previous stage's final weights: ``OUT/../<source>/final.safetensors``."""
    path = opts.out.resolve().parent / source.replace("_", "-") / FINAL_NAME
    if not path.is_file():
        raise TrainError(f"--init auto for {opts.model} starts from {source}'s final weights, "
                         f"{path} not found: train {source.replace('_', '-')} first (make "
                         f"train-{source.replace('_', '-')}) or pass --init FILE")
    width = fmt.builder_kwargs(fmt.read_metadata(path)).get("width_divisor", 1)
    if int(width) != int(opts.width_divisor):
        raise TrainError(f"{path}: {source}'s final weights are of --width-divisor {width}, this "
                         f"run's is {opts.width_divisor}: train every stage at one width")
    return path


def initialise(net: Any, recipe: Recipe, opts: TrainOptions) -> dict[str, Any]:
    """Fillers, then the recipe's (or ``--init``'s) weights, then interp; what happened to each
    blob (``surgery.TransplantReport``, each copied or coerced blob naming the file it came
    from) and the sources read (file, suffix, the source layers the train net lacks)."""
    fill_net(net, 0)
    if opts.init != "auto":
        sources = [(Path(opts.init), "")]
    elif recipe.init.kind == "classifier":
        sources = [(Path(download.fetch(registry.get(recipe.init.sources[0]),
                                        registry.cache_dir(opts.cache),
                                        instead=CLASSIFIER_INSTEAD)), "")]
    elif recipe.init.kind == "stage":
        sources = [(_stage_weights(opts, recipe.init.sources[0]), "")]
    else:  # fusion: each stream's net with its suffix (nyud-fcn32s-color-hha/solve.py)
        sources = [(_stage_weights(opts, s), suffix)
                   for s, suffix in zip(recipe.init.sources, recipe.init.suffixes)]
    blobs: dict[str, str] = {}
    read = []
    for path, suffix in sources:
        report = transplant(net, _read_source(path), suffix=suffix)
        dropped = []
        for key, what in report.entries.items():
            if what == "dropped" or "." not in key:
                dropped.append(key)
            elif what != "filled":
                blobs[key] = f"{what} from {path}"
            else:
                blobs.setdefault(key, what)
        read.append({"file": str(path), "suffix": suffix, "dropped": dropped})
    if recipe.interp:
        for name in interp(net):
            blobs[f"{name}.0"] = blobs.get(f"{name}.0", "filled") + " + interp"
    return {"sources": read, "blobs": blobs}


def builder_kwargs(recipe: Recipe, width_divisor: int) -> dict[str, int]:
    meta = get_meta(recipe.model)
    kwargs = {"num_classes": int(meta.num_classes[0]), "width_divisor": int(width_divisor)}
    if len(meta.num_classes) > 1:
        kwargs["num_geo_classes"] = int(meta.num_classes[1])
    return kwargs


def save_weights(net: Any, path: Path, recipe: Recipe, width_divisor: int, extra: dict[str, str]) -> Path:
    """The net's parameters in the builder's names with the metadata ``port.models`` reads
    (builder, its arguments), atomically."""
    return fmt.write_safetensors(path, net.state_dict(), fmt.metadata(
        source_name=path.name, net_name=net.net_name, builder=recipe.model, candidates=[recipe.model],
        builder_kwargs=builder_kwargs(recipe, width_divisor), **extra))


# ------------------------------------------------------------------------------ snapshots
def _snapshot_states(out: Path) -> list[tuple[int, Path]]:
    """Every ``iter_<k>.solverstate.safetensors`` under OUT/snapshots, newest first."""
    folder = out / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    return sorted(((int(m.group(1)), p) for p in folder.iterdir() if (m := _STATE.match(p.name))),
                  reverse=True)


def _unreadable(path: Path) -> tuple[dict[str, str] | None, str | None]:
    """A safetensors file's metadata, or why it cannot be read (a torn or garbage file: its
    header does not parse or does not cover the file), through ``port.models``' reader."""
    if not path.is_file():
        return None, "missing"
    try:
        return fmt.read_metadata(path), None
    except PortError as err:
        cause = err.__cause__ or err
        return None, f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else 'unreadable'}"


def read_state_metadata(path: Path) -> dict[str, Any]:
    """A solver state's JSON metadata (``solver``: the counters; ``run``: the run's identity);
    a torn or garbage file raises :class:`TrainError`, one line naming it."""
    meta, damage = _unreadable(path)
    try:
        if damage is None:
            return {"solver": json.loads(meta["solver"]), "run": json.loads(meta.get("run", "{}"))}
    except (KeyError, ValueError) as err:
        damage = f"no solver metadata ({type(err).__name__}: {err})"
    raise TrainError(f"{path}: damaged snapshot ({damage})")


def weights_damage(path: Path) -> str | None:
    """Why a snapshot's weights file cannot be read (None when it can)."""
    return _unreadable(path)[1]


def read_log(path: Path, note: Callable[[str], None] | None = None) -> list[dict]:
    """The records of ``train_log.jsonl``. A torn last line (a kill during an append) is
    dropped, said in one line through ``note``; a damaged record elsewhere raises
    :class:`TrainError` naming the file and line."""
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").split("\n")
    records = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("iter"), int):
                raise ValueError("not an iteration record")
        except ValueError as err:
            if i == last:
                if note is not None:
                    note(f"{path}:{i + 1}: dropped a torn last record (a run stopped while "
                         f"writing it): {line[:40]!r}")
                break
            raise TrainError(f"{path}:{i + 1}: damaged log record ({err}); fix or delete that "
                             f"line to resume") from None
        records.append(record)
    return records


def _identity(recipe: Recipe, opts: TrainOptions, seed: int, data: TrainData, world: int) -> dict:
    # train_batchnorm only where set: the snapshots of earlier runs (frozen) lack the key
    return {"format": SNAPSHOT_FORMAT, "recipe": recipe.identity(), "seed": seed,
            "width_divisor": opts.width_divisor, "init": opts.init,
            "effective_iter_size": recipe.solver.iter_size * world,
            "train_split": {"dataset": recipe.train_dataset, "split": recipe.train_split,
                            "images": data.size, "ids_sha256": split_digest(data.reader.ids)},
            **({"train_batchnorm": True} if opts.train_batchnorm else {})}


def _check_identity(path: Path, stored: dict, wanted: dict) -> None:
    had, has = bool(stored.get("train_batchnorm")), bool(wanted.get("train_batchnorm"))
    if had != has:
        raise TrainError(f"{path}: snapshot of a run {'with' if had else 'without'} "
                         f"{TRAIN_BATCHNORM}, this run is {'with' if has else 'without'} it: "
                         f"resume with the same setting (or start over in another --out)")
    diffs = [f"{k}: snapshot has {stored.get(k)!r}, this run has {v!r}"
             for k, v in wanted.items() if stored.get(k) != v]
    if diffs:
        raise TrainError(f"{path}: snapshot of another run, refusing to resume: " + "; ".join(diffs))


def resume_point(out: Path, log: Callable[[str], None]) -> tuple[int, Path, dict] | None:
    """The newest intact snapshot under OUT: ``(iteration, solver state, its metadata)``;
    each damaged one said in one line and passed over. None when OUT holds no run at all;
    a run without an intact snapshot raises :class:`TrainError` saying how to start over."""
    states = _snapshot_states(out)
    damaged = []
    for iteration, state in states:
        try:
            meta = read_state_metadata(state)
        except TrainError as err:
            log(f"{err}; passed over")
            damaged.append(state.name)
            continue
        if damaged:
            log(f"resuming from the newest intact snapshot, {state.name}")
        return iteration, state, meta
    if not states and not (out / LOG_NAME).is_file():
        log(f"--resume: nothing to resume in {out} (no snapshot, no log): starting from the init")
        return None
    what = f"every snapshot is damaged ({', '.join(damaged)})" if damaged else "no snapshot"
    raise TrainError(f"{out}: --resume found {what}; to start over from the init, run without "
                     f"--resume after removing {out / SNAPSHOT_DIR} and {out / LOG_NAME} (or "
                     f"pick another --out)")


# ------------------------------------------------------------------------------ validation
class Validator:
    """The harness's evaluation of the recipe's validation split with the current weights."""

    def __init__(self, recipe: Recipe, reader: Any, width_divisor: int, device: torch.device,
                 overlays: int = 0):
        self.meta = meta = get_meta(recipe.model)
        self.model = get_model(recipe.model, **builder_kwargs(recipe, width_divisor)).to(device).eval()
        # overlays: the first images' parts kept in each result (every rank: they are gathered)
        self.config = H.EvalConfig(device=device, out=None, progress=False, overlays=overlays)
        # strict fp32 (the Runner moves the net in place: it is self.model the weights go into)
        runner = H.prepare_model(self.model, self.config)
        self.spec = evaluation.for_model(meta, runner, reader, weights_sha256="training",
                                         precision=self.config.precision.name)
        self.tasks = self.spec.tasks

    def __call__(self, net: Any, ctx: dist_.DistContext) -> Any:
        with torch.no_grad():
            self.model.load_state_dict(net.state_dict())
        return H.evaluate(self.spec, self.config, ctx)


def val_record(result: Any, tasks: tuple) -> dict[str, Any]:
    """``val`` of a log record: the four metrics (and loss) of the first scored output, and of
    every output under ``outputs``."""
    per = {t.output: {**{m: float(getattr(result.scores[t.output], m)) for m in METRICS},
                      "loss": result.scores[t.output].loss} for t in tasks}
    return {**per[tasks[0].output], "images": result.images, "outputs": per}


def val_line(val: dict[str, Any]) -> str:
    """The console line of a validation: the mean IU of each output (SIFT Flow: sem and geo) in
    percent, as the final report gives it."""
    outputs = val["outputs"]
    if len(outputs) == 1:
        return f"mean IU {100 * val['mean_iu']:.2f} %"
    return "mean IU " + ", ".join(f"{o} {100 * v['mean_iu']:.2f} %" for o, v in outputs.items())


# ------------------------------------------------------------------------------ the run
def _device(name: str | None, ctx: dist_.DistContext) -> torch.device:
    """``--device`` (default: ``port.run.devices.default_device``, as evaluation) for this
    process: ``cuda:LOCAL_RANK`` or the CPU (``reproduce.resolve.rank_device``)."""
    return rank_device(name or default_device(), ctx.local_rank)


def _positive(name: str, value: int | None, zero_ok: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not zero_ok)):
        raise TrainError(f"--{name} must be {'>= 0' if zero_ok else '>= 1'}, got {value}")


def lr_text(rate: float) -> str:
    """A float32 learning rate as its shortest decimal: ``1e-10``, not ``1.000000013351432e-10``
    (the double the float32 value is)."""
    return str(np.float32(rate))


def start_line(recipe: Recipe, opts: TrainOptions, device: torch.device, total: int, start: int,
               world: int, test_interval: int, snapshot_every: int) -> str:
    """The first line of a run: device, precision, net, init and schedule."""
    s = recipe.solver
    init = opts.init if opts.init != "auto" else f"auto ({recipe.init.upstream})"
    width = "" if opts.width_divisor == 1 else f" at 1/{opts.width_divisor} width"
    ran = f"iterations {start + 1} to {total}" if start else f"{total} iterations"
    upstream = "" if total == recipe.iterations else f" (upstream's {recipe.iterations})"
    return (f"training {recipe.model.replace('_', '-')}{width} on {device} ({device_name(device)}), "
            f"strict-fp32, {world} {plural(world, 'process', 'processes')}; init: {init}; "
            f"schedule: {ran}{upstream}, {s.iter_size * world} {plural(s.iter_size * world, 'pass', 'passes')} an "
            f"iteration, lr "
            f"{lr_text(s.base_lr)} {s.lr_policy}, momentum {s.momentum:g}, "
            f"{f'validation every {test_interval}' if test_interval else 'validation at the end'}, "
            f"{f'snapshot every {snapshot_every}' if snapshot_every else 'no snapshots'}")


class _Harness(SolverCallback):
    """What ``reproduce train`` adds to ``Solver::Step``: the diffs summed over processes
    (``on_gradients_ready``, Caffe's multi-GPU sync), the validation between steps of
    upstream ``solve.py`` (``score.seg_tests``), the log, the progress bar, snapshots, and
    SIGTERM/SIGINT (``requested_action``: a snapshot, then stop)."""

    def __init__(self, run: "_Run", stop: Any):
        self.run, self.stop = run, stop
        self.signum = 0
        self.last_snapshot: Path | None = None

    def on_gradients_ready(self, solver: Solver, losses: list[float]) -> list[float] | None:
        if self.run.ctx.world_size > 1:
            return _all_reduce_grads_and_gather(solver.learnable_params(), losses, self.run.ctx)
        return None

    def on_iteration_end(self, solver: Solver, losses: list[float]) -> None:
        self.run.iteration_done(solver, losses)

    def requested_action(self, solver: Solver) -> str:
        self.signum = dist_.all_reduce_max(self.stop.signum or 0, self.run.ctx)
        return STOP if self.signum else NONE

    def snapshot(self, solver: Solver) -> None:
        self.last_snapshot = self.run.take_snapshot(solver)


class _Run:
    """One ``train`` call's state: the solver's harness callback reports each iteration here."""

    def __init__(self, opts: TrainOptions, ctx: dist_.DistContext, recipe: Recipe, data: TrainData,
                 validator: "Validator", identity: dict, records: list[dict], total: int,
                 test_interval: int, start: int):
        self.opts, self.ctx, self.recipe, self.data = opts, ctx, recipe, data
        self.validator, self.identity, self.records = validator, identity, records
        self.total, self.test_interval, self.start = total, test_interval, start
        self.out = Path(opts.out)
        self.log = opts.log if ctx.is_main else (lambda *_: None)
        self.last_val = None
        self.bar = _bar(total, start, opts.progress and ctx.is_main, recipe.model)

    def iteration_done(self, solver: Solver, losses: list[float]) -> None:
        it = solver.iter
        per_iter = solver.param.iter_size
        record = {"iter": it, "lr": float(lr_text(solver.optimizer.last_rate)),
                  "loss": Solver.iteration_loss(losses),
                  "samples": self.data.order.ids(solver.passes - per_iter, per_iter)}
        done = it == self.total
        if (self.test_interval and it % self.test_interval == 0) or done:
            result = self.validator(solver.net, self.ctx)
            if self.ctx.is_main:
                record["val"] = val_record(result, self.validator.tasks)
                self.last_val = result
                self.log(f"iteration {it}: {val_line(record['val'])}")
        if self.ctx.is_main:
            with open(self.out / LOG_NAME, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            self.records.append(record)
        if self.bar is not None:
            display = self.recipe.solver.display
            if display and (it % display == 0 or done or it == self.start + 1):
                self.bar.set_postfix(loss=f"{solver.smoothed_loss:.4g}", lr=lr_text(record["lr"]))
            self.bar.update(1)

    def latest(self) -> tuple[dict, Any]:
        """Rank 0: the log record of the iteration just made and its validation result (None
        when it did not validate), for a callback after the harness (TensorBoard)."""
        record = self.records[-1]
        return record, (self.last_val if "val" in record else None)

    def take_snapshot(self, solver: Solver) -> Path | None:
        if not self.ctx.is_main:
            return None
        folder = self.out / SNAPSHOT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        state = folder / f"iter_{solver.iter}.solverstate.safetensors"
        solver.snapshot(state, {"run": json.dumps(self.identity)})
        return save_weights(solver.net, folder / f"iter_{solver.iter}.safetensors", self.recipe,
                            self.opts.width_divisor, {"iteration": str(solver.iter)})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass(frozen=True)
class _Schedule:
    """The run's recipe (with the command line's overrides) and the numbers it runs by."""

    recipe: Recipe
    seed: int
    total: int
    test_interval: int
    snapshot_every: int


def _schedule(opts: TrainOptions) -> _Schedule:
    for name in ("iters", "iter_size", "width_divisor"):
        _positive(name.replace("_", "-"), getattr(opts, name))
    _positive("snapshot", opts.snapshot, True)
    _positive("test-interval", opts.test_interval, True)
    recipe = with_overrides(get_recipe(opts.model), iter_size=opts.iter_size)
    opts.model = recipe.model
    return _Schedule(recipe, recipe.seed if opts.seed is None else int(opts.seed),
                     recipe.iterations if opts.iters is None else int(opts.iters),
                     recipe.step if opts.test_interval is None else int(opts.test_interval),
                     recipe.solver.snapshot if opts.snapshot is None else int(opts.snapshot))


def _open_lists(recipe: Recipe, opts: TrainOptions, ctx: dist_.DistContext,
                log: Callable[[str], None]) -> tuple[Any, Any, Any, dict[str, list]]:
    """The training and validation readers, the training list's source, and the bad items
    (each list read once, :func:`check_items`)."""
    meta = get_meta(recipe.model)  # what each reader needs to feed it: its reader class's say
    train_reader, train_list = open_split(recipe.train_dataset, opts.data, recipe.train_split,
                                          **evaluation.model_reader_options(meta, recipe.train_dataset),
                                          **reader_options(recipe, recipe.train_dataset))
    val_reader, _ = open_split(recipe.val_dataset, opts.data, recipe.val_split,
                               **evaluation.model_reader_options(meta, recipe.val_dataset),
                               **reader_options(recipe, recipe.val_dataset))
    log(train_list.describe(train_reader.ids))
    # a year other than the recipe's is said before the first iteration, not only in the report
    data = year_shortfall(recipe, voc_years(train_reader, val_reader))
    if data:
        log(data)
    log(f"reading the {len(train_reader.ids)} training and {len(val_reader.ids)} validation "
        f"images once before the first iteration")
    bad = {"train": check_items(train_reader, "training", opts.skip_bad, ctx, log),
           "val": check_items(val_reader, "validation", opts.skip_bad, ctx, log)}
    return train_reader, train_list, val_reader, bad


def voc_years(train_reader: Any, val_reader: Any) -> dict[str, str | None]:
    """The year folder each reader read (the readers' ``year``: None without year folders)."""
    return {"train": train_reader.year, "val": val_reader.year}


def train(opts: TrainOptions, ctx: dist_.DistContext | None = None) -> dict[str, Any]:
    """Run (or resume) the training; returns a summary (rank 0: paths and the final scores;
    ``iterations`` what this call ran, ``resumed_from`` the iteration it started at)."""
    ctx = ctx or dist_.DistContext()
    plan = _schedule(opts)
    recipe, total = plan.recipe, plan.total
    batchnorm = batchnorm_setting(net_spec(recipe.model, "train", width_divisor=opts.width_divisor)
                                  .netdef(), opts.train_batchnorm, recipe.model)
    device = _device(opts.device, ctx)
    world = ctx.world_size
    log = opts.log if ctx.is_main else (lambda *_: None)
    out = Path(opts.out)
    notes: list[str] = []
    resume = resume_point(out, notes.append) if opts.resume else None
    start = resume[0] if resume is not None else 0
    log(start_line(recipe, opts, device, total, start, world, plan.test_interval,
                   plan.snapshot_every))
    for note in notes:
        log(note)
    if batchnorm:
        log(f"BatchNorm: {batchnorm}")
    train_reader, train_list, val_reader, bad = _open_lists(recipe, opts, ctx, log)
    net = train_net(recipe.model, width_divisor=opts.width_divisor)
    if opts.train_batchnorm:
        net = CaffeNet(with_batch_statistics(net.netdef), "TRAIN", input_shapes=net.input_shapes)
    label_tops = tuple(t for t in net.input_names if t in ("label", "sem", "geo"))
    data = TrainData(train_reader, plan.seed, label_tops, train_list)
    identity = _identity(recipe, opts, plan.seed, data, world)

    init_record = (init_sources_with_digests(initialise(net, recipe, opts)) if resume is None
                   else _stored_init(out))
    init_record["batchnorm"] = batchnorm
    init_record["voc_years"] = voc_years(train_reader, val_reader)
    param = replace(solver_parameter(with_overrides(recipe, iter_size=world * recipe.solver.iter_size)),
                    snapshot=plan.snapshot_every)
    solver = Solver(param, net=net, device=device, rank=ctx.rank, world_size=world)
    records: list[dict] = []
    if resume is not None:
        _check_identity(resume[1], resume[2]["run"], identity)
        solver.restore(resume[1])
        records = [r for r in read_log(out / LOG_NAME, log) if r["iter"] <= start]
        log(f"resuming from {resume[1]} (iteration {start})")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / LOG_NAME, "".join(json.dumps(r) + "\n" for r in records))
        if resume is None:
            write_text_atomic(out / "init.json", json.dumps(
                {"init": opts.init, "recipe_init": recipe.init.upstream, **init_record,
                 "train_list": data.list_record, "skipped": bad}, indent=1) + "\n")
        else:
            _repair_snapshot_weights(resume[1], start, solver, recipe, opts, log)
    validator = Validator(recipe, val_reader, opts.width_divisor, device,
                          overlays=tensorboard.OVERLAYS if opts.tensorboard else 0)
    run = _Run(opts, ctx, recipe, data, validator, identity, records, total, plan.test_interval,
               start)
    board = (tensorboard.open_log(opts.tensorboard, validator.tasks, run.latest, start + 1, log)
             if opts.tensorboard and ctx.is_main else None)

    def feed(k: int) -> dict[str, np.ndarray]:
        torch.manual_seed(pass_seed(plan.seed, k))  # Dropout's masks: a function of the pass
        return data.feed(k)

    started = time.perf_counter()
    with StopRequest() as stop:
        harness = _Harness(run, stop)
        solver.add_callback(harness)
        if board is not None:  # after the harness: it reads the harness's record and validation
            solver.add_callback(board)
        try:
            solver.step(total - start, feed)
        finally:
            run.close()
            if board is not None:
                board.close()
    if solver.requested_early_exit:
        raise TrainStopped(harness.signum, harness.last_snapshot)
    summary: dict[str, Any] = {"iterations": total - start, "resumed_from": start,
                               "total_iterations": total, "seconds": time.perf_counter() - started}
    if ctx.is_main:
        shortfalls = training_shortfalls(recipe, opts, total, world, init_record,
                                         data.list_record, bad, voc_years(train_reader, val_reader))
        final = save_weights(net, out / FINAL_NAME, recipe, opts.width_divisor,
                             {"iteration": str(total), TRAINING_VERDICT: json.dumps(shortfalls),
                              **({"batchnorm": batchnorm} if batchnorm else {})})
        summary["final"] = str(final)
        if run.last_val is not None:
            summary.update(write_train_report(out, recipe, validator, run.last_val, records, opts,
                                              data, val_reader, device, world, bad, init_record,
                                              shortfalls))
    return summary


def _stored_init(out: Path) -> dict[str, Any]:
    """The init record a resumed run wrote at its start (``init.json``; empty if unreadable)."""
    try:
        return json.loads((out / "init.json").read_text())
    except (OSError, ValueError):
        return {}


def ran_line(summary: dict[str, Any]) -> str:
    """What this process ran: ``trained 4 iterations (5 to 8; resumed at 4) in 7.0 s: FILE``."""
    n, start = summary["iterations"], summary.get("resumed_from", 0)
    span = f" ({start + 1} to {start + n}; resumed at {start})" if start and n else (
        f" (resumed at {start}: nothing left to run)" if start else "")
    return (f"trained {n} {'iteration' if n == 1 else 'iterations'}{span} in "
            f"{summary['seconds']:.1f} s: {summary.get('final')}")


def _repair_snapshot_weights(state: Path, start: int, solver: Solver, recipe: Recipe,
                             opts: TrainOptions, log: Callable[[str], None]) -> None:
    """A resumed snapshot's weights file that is damaged (the solver state, intact, holds the
    weights): said in one line and written again from the restored net."""
    weights = state.with_name(f"iter_{start}.safetensors")
    damage = weights_damage(weights)
    if damage is not None:
        log(f"{weights}: damaged ({damage}); the solver state holds the weights: resuming "
            f"from {state.name} and writing {weights.name} again")
        save_weights(solver.net, weights, recipe, opts.width_divisor, {"iteration": str(start)})


def check_items(reader: Any, what: str, skip_bad: bool, ctx: dist_.DistContext,
                log: Callable[[str], None]) -> list[dict]:
    """Every item of a list read once before the first iteration (its files exist and
    decode, label and input sizes agree). A bad item stops the run in one line naming the
    file, or, with ``skip_bad``, leaves the list and is recorded (returned; the report lists
    it). Under torchrun each rank reads its share and all learn every bad item."""
    mine = dist_.shard(reader.ids, ctx.rank, ctx.world_size)

    def check(item_id: str) -> dict | None:
        try:
            reader.item(item_id, all_labels=True)
        except DatasetError as err:
            return {"id": item_id, "path": str(err.path), "error": str(err)}
        return None

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        found = [b for b in pool.map(check, mine) if b is not None]
    bad = [b for part in dist_.gather_objects(found, ctx) for b in part]
    if bad and not skip_bad:
        raise TrainError(f"{what} list {reader.name} {reader.split}: {bad[0]['error']}"
                         + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                         + "; fix or remove it, or pass --skip-bad to leave it out (recorded in "
                           "the report)")
    if bad:
        gone = {b["id"] for b in bad}
        reader.ids = [i for i in reader.ids if i not in gone]
        for b in bad:
            log(f"--skip-bad: left {b['id']} out of the {what} list: {b['error']}")
        if not reader.ids:
            raise TrainError(f"{what} list {reader.name} {reader.split}: every item is bad")
    return bad


def _all_reduce_grads_and_gather(params: list, losses: list[float], ctx: dist_.DistContext) -> list[float]:
    """Sum every learnable parameter's accumulated diff over the ranks (one flat buffer);
    every rank's pass losses in rank order (the global pass order)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params]).to(ctx.comm_device)
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n
    everyone = [None] * ctx.world_size
    dist.all_gather_object(everyone, losses)
    return [value for part in everyone for value in part]


def pass_seed(seed: int, k: int) -> int:
    """The torch seed of forward pass ``k`` (Dropout's masks), so that the masks of a pass do
    not depend on which process runs it or whether the run was resumed (Caffe seeds its RNG
    once, from ``random_seed`` or the clock: upstream's masks cannot be reproduced anyway)."""
    return (int(seed) * 1_000_003 + int(k)) % (2 ** 63)


def _bar(total: int, start: int, enabled: bool, model: str) -> Any:
    if not enabled:
        return None
    return tqdm(total=total, initial=start, unit="iter", desc=f"train {model.replace('_', '-')}",
                dynamic_ncols=True)
