"""One training run of a released net as upstream ``<model>/solve.py`` runs it.

``solve.py``: ``solver = caffe.SGDSolver('solver.prototxt')``, ``solver.net.copy_from(weights)``,
``surgery.interp`` on the ``'up'`` layers, then ``for _ in range(R): solver.step(S);
score.seg_tests(solver, ...)``. Here: the builder's TRAIN-phase net
(``port.models.train_net``), Caffe's fillers (``port.net.fillers``), the recipe's initial
weights (``surgery.transplant`` / copy by layer name), ``surgery.interp`` on the frozen
Deconvolutions, Caffe's ``SGDSolver`` update (``port.training.solver.CaffeSGD``) over
``iter_size`` forward/backward passes per iteration (``Solver::Step``), and every
``test_interval`` iterations the harness's own evaluation (``reproduce.harness.evaluate``: the
four metrics and the loss of ``score.py``) on the recipe's validation split.

Several processes (``torchrun``): with N processes and ``iter_size`` k each, iteration i's
global passes are ``i*N*k ... i*N*k + N*k - 1`` of the one sample sequence; rank r runs passes
``i*N*k + r*k ... + k - 1``, the accumulated diffs are summed over ranks (``all_reduce``) and
normalised by ``1/(N*k)`` (Caffe's multi-GPU ``P2PSync`` sums the diffs of its solvers and each
solver divides by its ``iter_size``): the same update as one process with ``iter_size`` N*k, up
to the order of the fp32 sums. The iteration's loss is the float32 mean of all N*k pass losses
in global pass order. Rank 0 alone writes the log, snapshots and reports.

Files under OUT: ``train_log.jsonl`` (one object per iteration: ``iter``, ``lr``, ``loss``,
``samples``, ``val`` after a validation), ``snapshots/iter_<k>.safetensors`` (the weights in the
builder's names, loadable by ``port.models``) + ``snapshots/iter_<k>.solverstate.safetensors``
(``Solver.snapshot``: weights, history, counters, RNG), ``final.safetensors``, ``init.json``
(where each blob started: the file it was copied from, filled, interp; the sources read; the
training list, ``reproduce.splits.ListSource``),
``report.json``/``report.md`` (``reproduce.report``), ``curves.png``.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from port import weights as fmt
from port.errors import PortError
from port.fileio import write_text_atomic
from reproduce import distributed as dist_
from reproduce.training.data import TrainData, open_split
from reproduce.training.recipes import Recipe, get_recipe, solver_parameter, with_overrides

__all__ = ["TrainError", "TrainOptions", "TrainStopped", "train", "SNAPSHOT_FORMAT",
           "latest_snapshot", "read_log"]

SNAPSHOT_FORMAT = "reproduce.training/1"
LOG_NAME, FINAL_NAME, SNAPSHOT_DIR = "train_log.jsonl", "final.safetensors", "snapshots"
METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")
_SNAP = re.compile(r"^iter_(\d+)\.safetensors$")


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
    device: str = "cpu"
    resume: bool = False
    cache: Path | None = None
    progress: bool = True
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
    from port.net.fillers import fill_net
    from port.training.surgery import interp, transplant
    fill_net(net, 0)
    if opts.init != "auto":
        sources = [(Path(opts.init), "")]
    elif recipe.init.kind == "classifier":
        from reproduce import download, registry
        sources = [(Path(download.fetch(registry.get(recipe.init.sources[0]),
                                        registry.cache_dir(opts.cache))), "")]
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
    from port.models import get_meta
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
def latest_snapshot(out: Path) -> tuple[int, Path] | None:
    folder = out / SNAPSHOT_DIR
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _SNAP.match(p.name))
             and (folder / f"iter_{m.group(1)}.solverstate.safetensors").is_file()]
    return max(found) if found else None


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _identity(recipe: Recipe, opts: TrainOptions, seed: int, data: TrainData, world: int) -> dict:
    from reproduce.registry import split_digest
    return {"format": SNAPSHOT_FORMAT, "recipe": recipe.identity(), "seed": seed,
            "width_divisor": opts.width_divisor, "init": opts.init,
            "effective_iter_size": recipe.solver.iter_size * world,
            "train_split": {"dataset": recipe.train_dataset, "split": recipe.train_split,
                            "images": data.size, "ids_sha256": split_digest(data.reader.ids)}}


def _check_identity(path: Path, stored: dict, wanted: dict) -> None:
    diffs = [f"{k}: snapshot has {stored.get(k)!r}, this run has {v!r}"
             for k, v in wanted.items() if stored.get(k) != v]
    if diffs:
        raise TrainError(f"{path}: snapshot of another run, refusing to resume: " + "; ".join(diffs))


# ------------------------------------------------------------------------------ validation
class Validator:
    """The harness's evaluation of the recipe's validation split with the current weights."""

    def __init__(self, recipe: Recipe, reader: Any, width_divisor: int, device: torch.device):
        from port.models import get_meta, get_model
        from reproduce import evaluation
        from reproduce import harness as H
        self.meta = meta = get_meta(recipe.model)
        self.model = get_model(recipe.model, **builder_kwargs(recipe, width_divisor)).to(device).eval()
        self.config = H.EvalConfig(device=device, out=None, progress=False, overlays=0)
        # strict fp32 (the Runner moves the net in place: it is self.model the weights go into)
        runner = H.prepare_model(self.model, self.config)
        self.spec = evaluation.for_model(meta, runner, reader, weights_sha256="training",
                                         precision=self.config.precision.name)
        self.tasks = self.spec.tasks

    def __call__(self, net: Any, ctx: dist_.DistContext) -> Any:
        from reproduce import harness as H
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
    """The console line of a validation: the mean IU of each output (SIFT Flow: sem and geo)."""
    outputs = val["outputs"]
    if len(outputs) == 1:
        return f"mean IU {val['mean_iu']:.4f}"
    return "mean IU " + ", ".join(f"{o} {v['mean_iu']:.4f}" for o, v in outputs.items())


# ------------------------------------------------------------------------------ the run
def _device(name: str, ctx: dist_.DistContext) -> torch.device:
    from reproduce.resolve import rank_device
    return rank_device(name, ctx.local_rank)


def _positive(name: str, value: int | None, zero_ok: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not zero_ok)):
        raise TrainError(f"--{name} must be {'>= 0' if zero_ok else '>= 1'}, got {value}")


def train(opts: TrainOptions, ctx: dist_.DistContext | None = None) -> dict[str, Any]:
    """Run (or resume) the training; returns a summary (rank 0: paths and the final scores)."""
    from port.models import get_meta, train_net
    from port.training.solver import Solver
    ctx = ctx or dist_.DistContext()
    for name in ("iters", "iter_size", "width_divisor"):
        _positive(name.replace("_", "-"), getattr(opts, name))
    _positive("snapshot", opts.snapshot, True)
    _positive("test-interval", opts.test_interval, True)
    recipe = with_overrides(get_recipe(opts.model), iter_size=opts.iter_size)
    opts.model = recipe.model
    meta = get_meta(recipe.model)
    seed = recipe.seed if opts.seed is None else int(opts.seed)
    total = recipe.iterations if opts.iters is None else int(opts.iters)
    test_interval = recipe.step if opts.test_interval is None else int(opts.test_interval)
    snapshot_every = recipe.solver.snapshot if opts.snapshot is None else int(opts.snapshot)
    device = _device(opts.device, ctx)
    world, k = ctx.world_size, recipe.solver.iter_size
    per_iter = world * k
    log = opts.log if ctx.is_main else (lambda *_: None)

    nyud_inputs = None
    if recipe.train_dataset == "nyud":
        from reproduce.datasets.nyud import inputs_for
        nyud_inputs = inputs_for(meta.inputs, meta.preprocess)
    train_reader, train_list = open_split(recipe.train_dataset, opts.data, recipe.train_split,
                                          nyud_inputs)
    val_reader, _ = open_split(recipe.val_dataset, opts.data, recipe.val_split, nyud_inputs)
    log(train_list.describe())
    net = train_net(recipe.model, width_divisor=opts.width_divisor)
    label_tops = tuple(t for t in net.input_names if t in ("label", "sem", "geo"))
    data = TrainData(train_reader, seed, label_tops, train_list)
    identity = _identity(recipe, opts, seed, data, world)

    out = Path(opts.out)
    snapshot = latest_snapshot(out) if opts.resume else None
    init_record = initialise(net, recipe, opts) if snapshot is None else {}
    param = solver_parameter(with_overrides(recipe, iter_size=per_iter))
    solver = Solver(param, net=net, device=device)
    start = 0
    records: list[dict] = []
    if snapshot is not None:
        start, weights_path = snapshot
        state_path = weights_path.with_name(f"iter_{start}.solverstate.safetensors")
        stored = json.loads(fmt.read_metadata(state_path).get("run", "{}"))
        _check_identity(state_path, stored, identity)
        solver.restore(state_path)
        records = [r for r in read_log(out / LOG_NAME) if r["iter"] <= start]
        log(f"resuming from {state_path} (iteration {start})")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / LOG_NAME, "".join(json.dumps(r) + "\n" for r in records))
        if snapshot is None:
            write_text_atomic(out / "init.json", json.dumps(
                {"init": opts.init, "recipe_init": recipe.init.upstream, **init_record,
                 "train_list": data.list_record}, indent=1) + "\n")
    validator = Validator(recipe, val_reader, opts.width_divisor, device)
    learnable = [p for g in solver.optimizer.param_groups if float(g["lr_mult"]) != 0 for p in g["params"]]

    def take_snapshot(iteration: int) -> Path | None:
        if not ctx.is_main:
            return None
        folder = out / SNAPSHOT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        solver.snapshot(folder / f"iter_{iteration}.solverstate.safetensors", {"run": json.dumps(identity)})
        return save_weights(net, folder / f"iter_{iteration}.safetensors", recipe,
                            opts.width_divisor, {"iteration": str(iteration)})

    from reproduce.checkpoint import StopRequest
    bar = _bar(total, start, opts.progress and ctx.is_main, recipe.model)
    window: list[float] = []
    average = max(1, recipe.solver.average_loss)
    last_val = None
    started = time.perf_counter()
    with StopRequest() as stop:
        for it in range(start, total):
            solver.optimizer.zero_grad(set_to_none=True)
            base = it * per_iter
            mine = [base + ctx.rank * k + j for j in range(k)]
            losses = []
            for p in mine:
                torch.manual_seed(pass_seed(seed, p))  # Dropout's masks: a function of the pass
                losses.append(solver.forward_backward(data.feed(p)))
            if world > 1:
                losses = _all_reduce_grads_and_gather(learnable, losses, ctx)
            loss = Solver.iteration_loss(losses)
            solver.optimizer.step()
            solver.passes = base + per_iter
            record = {"iter": it + 1, "lr": solver.optimizer.last_rate, "loss": loss,
                      "samples": data.order.ids(base, per_iter)}
            if len(window) < average:
                window.append(loss)
            else:
                window[it % average] = loss
            smoothed = float(np.mean(window))
            done = it + 1 == total
            if (test_interval and (it + 1) % test_interval == 0) or done:
                result = validator(net, ctx)
                if ctx.is_main:
                    record["val"] = val_record(result, validator.tasks)
                    last_val = result
                    log(f"iteration {it + 1}: {val_line(record['val'])}")
            if ctx.is_main:
                with open(out / LOG_NAME, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                records.append(record)
            if bar is not None:
                if recipe.solver.display and ((it + 1) % recipe.solver.display == 0 or done or it == start):
                    bar.set_postfix(loss=f"{smoothed:.4g}", lr=f"{record['lr']:.3g}")
                bar.update(1)
            signum = dist_.all_reduce_max(stop.signum or 0, ctx)
            if (snapshot_every and (it + 1) % snapshot_every == 0) or signum:
                path = take_snapshot(it + 1)
                if signum:
                    if bar is not None:
                        bar.close()
                    raise TrainStopped(signum, path)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    summary: dict[str, Any] = {"iterations": total, "seconds": seconds}
    if ctx.is_main:
        final = save_weights(net, out / FINAL_NAME, recipe, opts.width_divisor,
                             {"iteration": str(total)})
        summary["final"] = str(final)
        if last_val is not None:
            from reproduce.training.report import write_train_report
            summary.update(write_train_report(out, recipe, validator, last_val, records, opts,
                                              data, val_reader, device, world))
    return summary


def _all_reduce_grads_and_gather(params: list, losses: list[float], ctx: dist_.DistContext) -> list[float]:
    """Sum every learnable parameter's accumulated diff over the ranks (one flat buffer);
    every rank's pass losses in rank order (the global pass order)."""
    import torch.distributed as dist
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
    from tqdm import tqdm
    return tqdm(total=total, initial=start, unit="iter", desc=f"train {model.replace('_', '-')}",
                dynamic_ncols=True)
