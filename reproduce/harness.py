"""The evaluation loop of ``python -m reproduce``: upstream ``score.py`` over a whole split.

``score.py``'s ``compute_hist`` runs the net on each image of the split at native size, takes
``net.blobs[layer].data[0].argmax(0)`` and adds ``fast_hist(label, prediction)`` to one
confusion matrix; it also sums ``net.blobs['loss'].data`` per image and reports the loss
divided by the number of images. This module does the same — the loss of each scored blob
that the net's own ``SoftmaxWithLoss`` consumes (SIFT Flow: ``loss`` on ``score_sem``,
``loss_geo`` on ``score_geo``), with that layer's settings, summed in float64 — with what a
long run needs around it:

- precision modes (strict fp32 by default, the measured fast mode on request): ``port.run.speed``'s
  modes, their backend flags set for the run and restored after it;
- several processes (``torchrun``): each takes its own shard, the matrices are summed exactly
  (``reproduce.distributed``); all ranks step in lockstep, so a stop on any rank (a signal, a
  bad item) is agreed by all, checkpointed once and obeyed by all;
- checkpoints every N images and on SIGTERM/SIGINT, and ``--resume`` (``reproduce.checkpoint``);
- bad items (an unreadable image, a label outside the classes): stop naming the id and path,
  or with ``skip_bad`` record them and go on — never dropped silently.

Files and the console table belong to ``reproduce.report``; resolving what the command line
names (weights, datasets, upstream files, a user's prototxt) to ``reproduce.resolve``.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from port.net.ops import loss_normalization, softmax_with_loss
from port.run import speed
from reproduce import distributed as dist_
from reproduce.checkpoint import (
    CHECKPOINT_NAME, Checkpoint, RunIdentity, StopRequest, load_checkpoint, save_checkpoint,
)
from reproduce.metrics import ConfusionMatrix, Scores, scores_from_matrix
from reproduce.palette import VOID_LABEL, save_label_png

__all__ = [
    "PRECISION_MODES", "FAST", "LossSpec", "Task", "net_loss_specs", "meta_loss_spec",
    "image_loss", "EvalSpec", "EvalConfig", "EvalResult", "BadItemError", "Interrupted",
    "evaluate", "item_loader",
]


# --------------------------------------------------------------------------- precision modes
#: The precision modes the command line offers, by name: exactly ``port.run.speed``'s modes (the
#: ones ``benchmarks/gpu_check.py`` measures against strict fp32), never a copy of them.
PRECISION_MODES: dict[str, speed.SpeedMode] = dict(speed.MODES)
#: ``--fast``: TF32 tensor cores and channels_last, conv5's weights split in two TF32 parts
#: (``port.run.speed.FAST_TF32_SPLIT5``): the fastest mode measured to agree with strict fp32 on
#: >= 99.9% of pixels (benchmarks/gpu_check.py, benchmarks/RESULTS.md).
FAST = speed.FAST_TF32_SPLIT5


# ---------------------------------------------------------------------------- what to score
@dataclass(frozen=True)
class LossSpec:
    """The settings of the ``SoftmaxWithLoss`` layer on a scored blob (caffe.proto
    ``LossParameter``): ``ignore_label`` (None: every label counts), the effective
    ``normalization`` (``port.net.ops.loss_normalization``) and the softmax ``axis``."""

    layer: str
    ignore_label: int | None
    normalization: str
    axis: int = 1

    def describe(self) -> str:
        ignore = "none" if self.ignore_label is None else self.ignore_label
        return (f"SoftmaxWithLoss {self.layer!r} (ignore_label {ignore}, "
                f"normalization {self.normalization})")


@dataclass(frozen=True)
class Task:
    """One scored output: the net's blob ``output`` against the label map ``label``; ``loss``
    is the net's loss layer on that blob, or None where the net has none (a deploy net)."""

    output: str
    label: str
    class_names: tuple[str, ...]
    loss: LossSpec | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def net_loss_specs(netdef: Any, scored: Sequence[str]) -> dict[str, LossSpec]:
    """The ``SoftmaxWithLoss`` layer of each scored blob in ``netdef``'s TEST phase, read as
    Caffe's ``SoftmaxWithLossLayer::LayerSetUp`` reads its ``loss_param``/``softmax_param``."""
    specs: dict[str, LossSpec] = {}
    for layer in netdef.for_phase("TEST").layers:
        if layer.type != "SoftmaxWithLoss" or not layer.bottom or layer.bottom[0] not in scored:
            continue
        lp = layer.loss_param
        mode = loss_normalization(str(lp.normalization) if lp.has("normalization") else None,
                                  bool(lp.normalize) if lp.has("normalize") else None)
        ignore = int(lp.ignore_label) if lp.has("ignore_label") else None
        specs.setdefault(layer.bottom[0],
                         LossSpec(layer.name, ignore, mode, int(layer.softmax_param.axis)))
    return specs


def meta_loss_spec(meta: Any, output: str) -> LossSpec:
    """The upstream loss layer on a released net's ``output`` (``port.models.ModelMeta``):
    ``loss`` on ``score`` and ``score_sem``, ``loss_geo`` on SIFT Flow's ``score_geo``
    (upstream siftflow-fcn*/test.prototxt), with the settings the metadata records."""
    layer = "loss_geo" if output.endswith("_geo") else "loss"
    return LossSpec(layer, meta.ignore_label, meta.loss_normalization)


def image_loss(task: Task, scores: torch.Tensor, label: torch.Tensor, item_id: str,
               label_host: torch.Tensor | None = None) -> torch.Tensor:
    """One image's loss as the net's loss layer computes it (``port.net.ops.softmax_with_loss``,
    in fp32 as Caffe's float blobs), for ``score.py``'s ``loss += net.blobs['loss'].data``.
    Returned as a tensor on the scores' device, so the loop never waits for it; the labels
    are checked on ``label_host`` (the loader's CPU copy) when given, for the same reason."""
    spec = task.loss
    checked = (label if label_host is None else label_host).long()
    counted = checked[checked != spec.ignore_label] if spec.ignore_label is not None else checked
    classes = scores.shape[spec.axis]
    if bool(((counted < 0) | (counted >= classes)).any()):
        raise ValueError(f"{item_id}: {task.label} holds labels outside [0, {classes}) that "
                         f"{spec.describe()} on {task.output!r} does not ignore")
    return softmax_with_loss(scores.float(), label.long(), spec.ignore_label,
                             spec.normalization, spec.axis, spec.layer).detach()


#: ``predict(inputs) -> {blob name: N x C x H x W scores}`` for a batch of one image.
Predictor = Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]


@dataclass
class EvalSpec:
    """What is evaluated: the net, the data, and the identity a checkpoint must match."""

    predict: Predictor
    dataset: Any                      # a reproduce.datasets reader
    ids: list[str]                    # the split (after --limit), in split order
    tasks: tuple[Task, ...]
    identity: RunIdentity
    load: Callable[[Any, str], tuple[str, dict, Any]]  # (dataset, id) -> (id, inputs, label)
    rgb_of: Callable[[dict], np.ndarray | None] = lambda inputs: None  # for overlays


@dataclass
class EvalConfig:
    """How it is evaluated (none of this changes the confusion matrix in strict mode)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: speed.SpeedMode = speed.STRICT
    out: Path | None = None
    resume: bool = False
    checkpoint_every: int = 0
    skip_bad: bool = False
    save_predictions: Path | None = None
    overlays: int = 0
    workers: int = 0
    progress: bool = True


@dataclass
class EvalResult:
    """The summed result, on rank 0: scores per task and how the run went."""

    scores: dict[str, Scores]
    images: int
    skipped: list[dict]
    seconds: float
    resumed_from: int
    overlays: dict[str, Any] = field(default_factory=dict)  # id -> parts of its overlay


def _describe_bad(item_id: str, path: str | None, reason: str, rank: int | None) -> str:
    where = "" if rank is None else f" on rank {rank}"
    return f"bad item {item_id!r} ({path or 'path unknown'}){where}: {reason}"


class BadItemError(RuntimeError):
    """An image or label of the split that cannot be read (stop by default). Under torchrun
    every rank raises it for the same item, whichever rank met it (``rank``; None: one process);
    ``others`` are the bad items other ranks met at the same step."""

    def __init__(self, item_id: str, path: str | None, reason: str, rank: int | None = None,
                 others: Sequence[dict] = ()):
        also = "".join(f"\nalso {_describe_bad(o['id'], o.get('path'), o['error'], o.get('rank'))}"
                       for o in others)
        super().__init__(f"{_describe_bad(item_id, path, reason, rank)}{also}\n"
                         f"fix or remove it, or pass --skip-bad to record it and go on "
                         f"(then --resume continues from the last checkpoint)")
        self.item_id, self.path, self.reason, self.rank = item_id, path, reason, rank
        self.others = list(others)


class Interrupted(RuntimeError):
    """A signal stopped the run after a checkpoint; exit with ``128 + signum``. ``during``
    says what was stopped when it was not the evaluation (e.g. writing the report)."""

    def __init__(self, signum: int, checkpoint: Path | None, during: str | None = None):
        if during is None:
            text = f"stopped by signal {signum}; checkpoint {checkpoint} (continue with --resume)"
        else:
            text = (f"stopped by signal {signum} while {during}; every image is counted in the "
                    f"checkpoint {checkpoint}: rerun with --resume to write the report")
        super().__init__(text)
        self.signum, self.checkpoint = signum, checkpoint


# ------------------------------------------------------------------------------ item loading
def _bad_item_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this item's files are unreadable or wrong", not a bug here."""
    errors: list[type[BaseException]] = [OSError, ValueError, EOFError]
    with contextlib.suppress(ImportError):
        from scipy.io.matlab import MatReadError  # heavy (scipy.io), and only .mat datasets need it
        errors.append(MatReadError)
    return tuple(errors)


def _path_of(exc: BaseException) -> str | None:
    for name in ("path", "filename"):
        value = getattr(exc, name, None)
        if value:
            return str(value)
    return None


def _as_tensors(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Mapping):
        return {k: _as_tensors(v) for k, v in value.items()}
    return value


class _ShardItems(torch.utils.data.Dataset):
    """This rank's ids as a map-style dataset; an unreadable item becomes a ``bad`` record."""

    def __init__(self, spec: EvalSpec, ids: Sequence[str]):
        self.dataset, self.load, self.ids = spec.dataset, spec.load, list(ids)
        self.errors = _bad_item_errors()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        item_id = self.ids[index]
        try:
            got_id, inputs, label = self.load(self.dataset, item_id)
        except self.errors as exc:
            return {"id": item_id, "bad": {"id": item_id, "path": _path_of(exc),
                                           "error": f"{type(exc).__name__}: {exc}"}}
        return {"id": got_id, "inputs": _as_tensors(inputs), "label": _as_tensors(label)}


def _unbatched(batch: Any) -> Any:
    """``collate_fn`` of batch-size-free loading: the item as the worker returned it."""
    return batch


def item_loader(spec: EvalSpec, ids: Sequence[str], workers: int, pin: bool) -> Iterator[dict]:
    """Items of ``ids`` in order, decoded by ``workers`` processes (0: in this process)."""
    return iter(torch.utils.data.DataLoader(
        _ShardItems(spec, ids), batch_size=None, shuffle=False, num_workers=workers,
        collate_fn=_unbatched, pin_memory=pin, persistent_workers=False))


# ----------------------------------------------------------------------------- the run state
_GO, _SIGNAL, _BAD = 0, 1, 2  # stop codes, agreed by all ranks with a max-reduce


@dataclass
class _State:
    """One rank's progress: its confusion matrices (rank 0 also holds the resumed counts)."""

    confusion: dict[str, ConfusionMatrix]
    shards: list[list[str]]           # every rank's share of the remaining ids
    prior: Checkpoint | None = None
    processed: int = 0                # items of this rank's shard done (scored or skipped)
    skipped: list[dict] = field(default_factory=list)
    overlays: dict[str, Any] = field(default_factory=dict)


def _resume_from(spec: EvalSpec, config: EvalConfig) -> Checkpoint | None:
    """The checkpoint to continue, checked against this run; None to start afresh."""
    if not config.resume or config.out is None:
        return None
    path = Path(config.out) / CHECKPOINT_NAME
    if not path.exists():
        return None
    ckpt = load_checkpoint(path)
    ckpt.check_resumable(spec.identity, spec.ids, path)
    return ckpt


def _start(spec: EvalSpec, config: EvalConfig, ctx: dist_.DistContext) -> _State:
    prior = _resume_from(spec, config)
    done = set(prior.done) if prior else set()
    remaining = [i for i in spec.ids if i not in done]
    shards = [dist_.shard(remaining, r, ctx.world_size) for r in range(ctx.world_size)]
    confusion = {t.output: ConfusionMatrix(t.num_classes, config.device) for t in spec.tasks}
    if prior is not None and ctx.is_main:
        for task in spec.tasks:
            cm = confusion[task.output]
            cm.matrix += torch.from_numpy(prior.confusion[task.output]).to(config.device)
            cm.loss_sum, cm.loss_count = prior.loss.get(task.output, (0.0, 0))
    return _State(confusion, shards, prior)


@dataclass
class _Merged:
    """The state of all ranks summed: what a checkpoint and the final report hold."""

    matrices: dict[str, np.ndarray]
    done: list[str]
    skipped: list[dict]
    losses: dict[str, tuple[float, int]]  # (float64 sum of per-image losses, images) per task


def _sum_losses(spec: EvalSpec, ctx: dist_.DistContext, st: _State) -> dict[str, tuple[float, int]]:
    """The ranks' summed losses (float64) and image counts, for the tasks with a loss layer."""
    out = {}
    for task in spec.tasks:
        if task.loss is not None:
            cm = st.confusion[task.output]
            total = dist_.all_reduce_sum(torch.tensor([cm.loss_sum], dtype=torch.float64), ctx)
            count = dist_.all_reduce_sum(torch.tensor([cm.loss_count], dtype=torch.int64), ctx)
            out[task.output] = (float(total.item()), int(count.item()))
    return out


def _merge(spec: EvalSpec, ctx: dist_.DistContext, st: _State) -> _Merged:
    """Sum the ranks' matrices (exact int64 all_reduce) and losses, collect ids done and skipped.

    Collective: every rank must call it at the same step.
    """
    matrices = {k: dist_.all_reduce_sum(cm.matrix, ctx).cpu().numpy()
                for k, cm in st.confusion.items()}
    counts = dist_.all_gather_ints(st.processed, ctx)
    skipped = [rec for recs in dist_.gather_objects(st.skipped, ctx) for rec in recs]
    done_now = {i for rank, n in enumerate(counts) for i in st.shards[rank][:n]}
    prior_done = set(st.prior.done) if st.prior else set()
    done = [i for i in spec.ids if i in done_now or i in prior_done]
    return _Merged(matrices, done, (st.prior.skipped if st.prior else []) + skipped,
                   _sum_losses(spec, ctx, st))


def _save(spec: EvalSpec, config: EvalConfig, ctx: dist_.DistContext, st: _State,
          elapsed: float, merged: _Merged | None = None) -> Path | None:
    """A checkpoint of all ranks' progress, written by rank 0 (collective unless ``merged``)."""
    merged = merged or _merge(spec, ctx, st)
    if not ctx.is_main or config.out is None:
        return None
    prior_s = st.prior.elapsed_s if st.prior else 0.0
    return save_checkpoint(Checkpoint(spec.identity, merged.matrices, merged.done,
                                      merged.skipped, prior_s + elapsed, merged.losses),
                           config.out)


# ------------------------------------------------------------------------------ one image
def _to_device(inputs: Mapping[str, torch.Tensor], config: EvalConfig) -> dict[str, torch.Tensor]:
    """The inputs as a batch of one on the device (the predictor's ``speed.Runner`` puts them
    in the mode's memory format)."""
    return {name: value.to(config.device, non_blocking=True)[None] for name, value in inputs.items()}


def _label_for(task: Task, labels: Any) -> torch.Tensor:
    return labels[task.label] if isinstance(labels, Mapping) else labels


def _file_stem(item_id: str) -> str:
    """An id usable as a file name (SIFT Flow ids are plain; guard against separators)."""
    return item_id.replace("/", "__").replace("\\", "__")


def _prediction_path(config: EvalConfig, spec: EvalSpec, task: Task, item_id: str) -> Path:
    base = Path(config.save_predictions)
    folder = base / task.output if len(spec.tasks) > 1 else base
    return folder / f"{_file_stem(item_id)}.png"


def _keep_overlay(spec: EvalSpec, st: _State, item: dict, pred: np.ndarray,
                  label: np.ndarray) -> None:
    rgb = spec.rgb_of(item["inputs"])
    if rgb is None:
        return
    shown = np.where(label < spec.tasks[0].num_classes, label, VOID_LABEL).astype(np.uint8)
    # the parts; reproduce.report.compose_overlay draws them with captions and a legend
    st.overlays[item["id"]] = {"image": rgb, "truth": shown, "prediction": pred.astype(np.uint8)}


def _score_item(spec: EvalSpec, config: EvalConfig, st: _State, item: dict,
                overlay_ids: set[str]) -> None:
    """Forward one image, argmax each scored blob (first maximum, as numpy), count it."""
    with torch.inference_mode():  # the predictor's Runner applies the mode (flags, autocast)
        outputs = spec.predict(_to_device(item["inputs"], config))
    for n, task in enumerate(spec.tasks):
        if task.output not in outputs:
            raise KeyError(f"the net has no output blob {task.output!r} "
                           f"(outputs: {', '.join(outputs)})")
        pred = outputs[task.output][0].argmax(0)
        label_host = _label_for(task, item["label"])
        label = label_host.to(config.device, non_blocking=True)
        if pred.shape != label.shape:
            raise ValueError(f"{item['id']}: {task.output} is {tuple(pred.shape)} but the label "
                             f"is {tuple(label.shape)}; the net must output at input size")
        st.confusion[task.output].update(pred, label)
        if task.loss is not None:
            st.confusion[task.output].add_loss(
                image_loss(task, outputs[task.output], label, item["id"], label_host))
        if config.save_predictions is not None or (n == 0 and item["id"] in overlay_ids):
            pred_np = pred.cpu().numpy()
            if config.save_predictions is not None:
                save_label_png(pred_np, _prediction_path(config, spec, task, item["id"]))
            if n == 0 and item["id"] in overlay_ids:
                _keep_overlay(spec, st, item, pred_np, label.cpu().numpy())


def _step(spec: EvalSpec, config: EvalConfig, st: _State, loader: Iterator[dict],
          rank: int, stop: StopRequest, overlay_ids: set[str]) -> tuple[int, dict | None]:
    """Process this rank's next item, if it has one; return the stop code it asks for."""
    if st.processed >= len(st.shards[rank]):
        return _GO, None
    try:
        item = next(loader)
    except RuntimeError:
        if stop.signum is not None:  # a signal took the loader's workers down with it
            return _SIGNAL, None
        raise
    if "bad" in item:
        if not config.skip_bad:
            return _BAD, item["bad"]
        st.skipped.append(item["bad"])
        _note(f"skipped bad item {item['id']}: {item['bad']['error']}")
    else:
        _score_item(spec, config, st, item, overlay_ids)
    st.processed += 1
    return _GO, None


def _note(message: str) -> None:
    tqdm.write(message)


# ------------------------------------------------------------------------------- the loop
_POSTFIX_INTERVAL_S = 0.5  # refresh the running mIU at most this often (it syncs the device)


class _Progress:
    """tqdm over the whole selection on rank 0, with the running mean IU and img/s."""

    def __init__(self, spec: EvalSpec, config: EvalConfig, ctx: dist_.DistContext, st: _State):
        done = len(st.prior.done) if st.prior else 0
        self.bar = tqdm(total=len(spec.ids), initial=done, unit="img", dynamic_ncols=True,
                        desc=spec.identity.model,
                        disable=not (config.progress and ctx.is_main))
        self.cm = st.confusion[spec.tasks[0].output]
        self.label = "mIU" if not ctx.is_distributed else "mIU(rank0)"
        self.last = 0.0

    def advance(self, images: int) -> None:
        self.bar.update(images)
        now = time.monotonic()
        if not self.bar.disable and now - self.last >= _POSTFIX_INTERVAL_S:
            self.last = now
            miu = self.cm.compute().mean_iu
            self.bar.set_postfix_str(f"{self.label}={100 * miu:.2f}%" if miu == miu else "")

    def close(self) -> None:
        self.bar.close()


def _images_at(st: _State, step: int) -> int:
    """Ranks that held an item at ``step`` (lockstep: all ranks are at the same step)."""
    return sum(step < len(s) for s in st.shards)


def _bad_items(bad: dict | None, ctx: dist_.DistContext) -> list[dict]:
    """The bad items every rank met at this step, in rank order, each with its ``rank`` (None
    in a single process). Collective: all ranks call it once they agreed to stop for one."""
    if not ctx.is_distributed:
        return [bad] if bad is not None else []
    return [{**b, "rank": rank} for rank, b in enumerate(dist_.gather_objects(bad, ctx))
            if b is not None]


def _raise_stop(code: int, bads: list[dict], signum: int | None, path: Path | None) -> None:
    if code == _BAD and bads:
        first = bads[0]
        raise BadItemError(first["id"], first.get("path"), first["error"], first.get("rank"),
                           bads[1:])
    if code == _BAD:  # cannot happen: a rank asked to stop for a bad item without one
        raise RuntimeError(f"a rank stopped for a bad item it did not report; checkpoint {path}")
    raise Interrupted(signum or signal.SIGTERM, path)


def _loop(spec: EvalSpec, config: EvalConfig, ctx: dist_.DistContext, st: _State,
          started: float) -> None:
    steps = max((len(s) for s in st.shards), default=0)
    every = math.ceil(config.checkpoint_every / ctx.world_size) if config.checkpoint_every else 0
    overlay_ids = set(spec.ids[:config.overlays])
    loader = item_loader(spec, st.shards[ctx.rank], config.workers,
                         pin=config.device.type == "cuda")
    progress = _Progress(spec, config, ctx, st)
    try:
        with StopRequest() as stop:
            for step in range(steps):
                code, bad = _step(spec, config, st, loader, ctx.rank, stop, overlay_ids)
                if stop.signum is not None:
                    code = max(code, _SIGNAL)
                code = dist_.all_reduce_max(code, ctx)
                progress.advance(_images_at(st, step) if code == _GO else 0)
                path = None
                if code != _GO or (every and (step + 1) % every == 0):
                    path = _save(spec, config, ctx, st, time.perf_counter() - started)
                if code != _GO:
                    bads = _bad_items(bad, ctx) if code == _BAD else []
                    _raise_stop(code, bads, stop.signum, path)
    finally:
        progress.close()


def _redo_overlays(spec: EvalSpec, config: EvalConfig, st: _State) -> None:
    """The overlays of images a resumed run's checkpoint had already counted: a checkpoint
    holds counts, not pictures, so those few images (at most ``config.overlays``) are forwarded
    again here, outside the counts, exactly as ``_score_item`` draws them."""
    done = set(st.prior.done) if st.prior else set()
    skipped = {s["id"] for s in st.prior.skipped} if st.prior else set()
    for item_id in spec.ids[:config.overlays]:
        if item_id not in done or item_id in skipped or item_id in st.overlays:
            continue
        try:
            got_id, inputs, labels = spec.load(spec.dataset, item_id)
        except _bad_item_errors():
            continue          # unreadable now: the report lists what it could draw
        task = spec.tasks[0]
        with torch.inference_mode(), speed.autocast(config.precision, config.device):
            outputs = spec.predict(_to_device(_as_tensors(inputs), config))
        pred = outputs[task.output][0].argmax(0).cpu().numpy()
        label = np.asarray(_label_for(task, labels))
        _keep_overlay(spec, st, {"id": got_id, "inputs": _as_tensors(inputs)}, pred, label)


def _mean_loss(summed: tuple[float, int] | None) -> float | None:
    """``score.py``'s ``loss / len(dataset)``: the mean per-image loss (None: no loss)."""
    if summed is None or summed[1] == 0:
        return None
    return summed[0] / summed[1]


def evaluate(spec: EvalSpec, config: EvalConfig,
             ctx: dist_.DistContext | None = None) -> EvalResult | None:
    """Evaluate ``spec`` under ``config``; the summed result on rank 0, None on other ranks.

    The precision mode is applied by the predictor's ``port.run.speed.Runner``
    (:func:`prepare_model`): each forward under the mode's flags, restored after. Raises :class:`BadItemError` (on every rank, naming the
    item whichever rank met it) or :class:`Interrupted` after writing a checkpoint (when
    ``config.out`` is set).
    """
    ctx = ctx or dist_.DistContext()
    st = _start(spec, config, ctx)
    started = time.perf_counter()
    _loop(spec, config, ctx, st, started)
    if ctx.is_main:
        _redo_overlays(spec, config, st)
    seconds = time.perf_counter() - started
    merged = _merge(spec, ctx, st)
    _save(spec, config, ctx, st, seconds, merged)  # the final, complete checkpoint
    overlays = {k: v for part in dist_.gather_objects(st.overlays, ctx) for k, v in part.items()}
    if not ctx.is_main:
        return None
    images = len(merged.done) - len(merged.skipped)
    scores = {t.output: scores_from_matrix(merged.matrices[t.output], images=images,
                                           loss=_mean_loss(merged.losses.get(t.output)))
              for t in spec.tasks}
    prior_s = st.prior.elapsed_s if st.prior else 0.0
    return EvalResult(scores, images, merged.skipped, prior_s + seconds,
                      len(st.prior.done) if st.prior else 0, overlays)


def _normalise_outputs(out: Any, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """A family model's output (a tensor, a dict or a tuple) as {blob name: tensor}."""
    if isinstance(out, Mapping):
        return dict(out)
    if isinstance(out, torch.Tensor):
        return {names[0]: out}
    return dict(zip(names, out))


class ModelPredictor:
    """``predict`` of a ``port.models`` family net: its input blobs by name, outputs by name."""

    def __init__(self, model: torch.nn.Module, inputs: Sequence[str], outputs: Sequence[str]):
        self.model, self.inputs, self.outputs = model, tuple(inputs), tuple(outputs)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return _normalise_outputs(self.model(**{n: batch[n] for n in self.inputs}), self.outputs)


def prepare_model(model: torch.nn.Module, config: EvalConfig) -> speed.Runner:
    """The net run in the config's precision mode on its device: a ``port.run.speed.Runner``
    (prepared once: memory format, prepacking, canvas; each call under the mode's flags and
    autocast, inputs in its layout)."""
    return speed.Runner(config.precision, model, config.device)


class CaffeNetPredictor:
    """``predict`` of a net read from a prototxt, run by a ``speed.Runner``: every input blob
    the net declares."""

    def __init__(self, runner: speed.Runner, scored: Sequence[str] = ()):
        self.runner = runner
        # A scored blob a loss layer consumes is no net output: ask for every blob then.
        self.all_blobs = any(b not in runner.model.output_names for b in scored)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = {n: batch[n] for n in self.runner.model.input_names}
        return self.runner(return_blobs=self.all_blobs, **inputs)
