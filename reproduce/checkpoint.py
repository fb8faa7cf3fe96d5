"""Evaluation checkpoints and ``--resume``, and stopping cleanly on a signal.

A checkpoint is what an interrupted evaluation needs to continue without counting an image
twice or mixing two runs: the partial confusion matrix of each scored output (int64, exact,
as upstream ``score.py``'s ``fast_hist`` sums), the float64 sum of the per-image losses and
the images counted in it (``score.py``'s ``loss``), the ids done, the bad items skipped, and the
identity of the run (model, split, weights SHA-256, preprocessing, precision). It is JSON —
readable, and never unpickled — written through the project's one atomic writer,
``port.fileio.write_text_atomic`` (a temporary name beside the target, fsync'ed, then
``os.replace``'d, with the user's umask), so a kill at any moment leaves the previous
checkpoint or the new one.
"""
from __future__ import annotations

import json
import signal
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from port.errors import PortError
from port.fileio import write_text_atomic

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError", "RunIdentity", "Checkpoint", "save_checkpoint",
    "load_checkpoint", "CHECKPOINT_NAME", "StopRequest",
]

CHECKPOINT_NAME = "checkpoint.json"
_FORMAT = "fcn-port-eval-checkpoint"
_VERSION = 2  # 2: per-task loss sums; a version-1 file lacks them and is refused


class CheckpointError(PortError):
    """A checkpoint file that cannot be read or does not fit this run's split."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint from another run: other weights, split, preprocessing or precision."""


@dataclass(frozen=True)
class RunIdentity:
    """What two runs must share for one to continue the other's confusion matrix."""

    model: str
    dataset: str
    split: str
    weights_sha256: str
    preprocessing: str
    precision: str
    num_classes: tuple[tuple[str, int], ...]  # (scored output, classes) per task

    def mismatches(self, other: "RunIdentity") -> list[str]:
        """One line per field that differs, naming both values."""
        return [f"{f.name}: checkpoint has {getattr(other, f.name)!r}, "
                f"this run has {getattr(self, f.name)!r}"
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


@dataclass
class Checkpoint:
    """The state of an evaluation: confusion matrices so far, ids done, bad items skipped."""

    identity: RunIdentity
    confusion: dict[str, np.ndarray]
    done: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0
    loss: dict[str, tuple[float, int]] = field(default_factory=dict)  # (sum, images) per task

    def check_resumable(self, identity: RunIdentity, split_ids: list[str], path: Path) -> None:
        """Refuse a checkpoint of another run, or one naming ids this run does not hold."""
        problems = identity.mismatches(self.identity)
        if problems:
            raise CheckpointMismatchError(
                f"{path}: refusing to resume a different run:\n  " + "\n  ".join(problems)
                + "\nremove it, or pass another --out, to start afresh")
        unknown = sorted(set(self.done) - set(split_ids))
        if unknown:
            raise CheckpointError(
                f"{path}: {len(unknown)} ids done are not in this run's selection of split "
                f"{identity.split!r} (first: {unknown[0]!r}); was --limit lowered?")


def _to_json(ckpt: Checkpoint) -> dict:
    ident = asdict(ckpt.identity)
    ident["num_classes"] = [list(pair) for pair in ckpt.identity.num_classes]
    return {"format": _FORMAT, "version": _VERSION, "identity": ident,
            "confusion": {k: np.asarray(v, dtype=np.int64).tolist()
                          for k, v in ckpt.confusion.items()},
            "done": list(ckpt.done), "skipped": list(ckpt.skipped),
            "elapsed_s": float(ckpt.elapsed_s),
            # JSON writes a float as its shortest repr, which reads back to the same float64.
            "loss": {k: [float(total), int(n)] for k, (total, n) in ckpt.loss.items()}}


def save_checkpoint(ckpt: Checkpoint, out_dir: str | Path) -> Path:
    """Write ``ckpt`` to ``out_dir/checkpoint.json`` atomically; return its path."""
    text = json.dumps(_to_json(ckpt), separators=(",", ":"))
    return write_text_atomic(Path(out_dir) / CHECKPOINT_NAME, text)


def _identity_from_json(raw: dict, path: Path) -> RunIdentity:
    try:
        values = {f.name: raw[f.name] for f in fields(RunIdentity)}
        values["num_classes"] = tuple((str(k), int(n)) for k, n in values["num_classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: identity: missing or malformed field ({exc})") from exc
    return RunIdentity(**values)


def _confusion_from_json(raw: dict, identity: RunIdentity, path: Path) -> dict[str, np.ndarray]:
    out = {}
    for task, n in identity.num_classes:
        matrix = np.asarray(raw.get(task, []), dtype=np.int64)
        if matrix.shape != (n, n) or (matrix < 0).any():
            raise CheckpointError(
                f"{path}: confusion[{task!r}]: expected a {n}x{n} non-negative integer "
                f"matrix, got shape {matrix.shape}")
        out[task] = matrix
    return out


def _loss_from_json(raw: object, identity: RunIdentity,
                    path: Path) -> dict[str, tuple[float, int]]:
    """``(float64 sum, images)`` of each scored output's per-image losses, validated."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: 'loss' must be an object of [sum, images] per task")
    tasks = {task for task, _ in identity.num_classes}
    out = {}
    for task, value in raw.items():
        try:
            total, count = float(value[0]), int(value[1])
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise CheckpointError(f"{path}: loss[{task!r}]: expected [sum, images] ({exc})") from exc
        if task not in tasks or not np.isfinite(total) or total < 0 or count < 0:
            raise CheckpointError(f"{path}: loss[{task!r}]: expected a scored output of this "
                                  f"run with a finite non-negative sum, got {value!r}")
        out[task] = (total, count)
    return out


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, validating every field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: not a {_FORMAT} file")
    if raw.get("version") != _VERSION:
        raise CheckpointError(f"{path}: {_FORMAT} version {raw.get('version')!r}, this run "
                              f"reads version {_VERSION}; remove it, or pass another --out, "
                              f"to start afresh")
    identity = _identity_from_json(raw.get("identity") or {}, path)
    done, skipped = raw.get("done"), raw.get("skipped")
    if not isinstance(done, list) or not isinstance(skipped, list):
        raise CheckpointError(f"{path}: 'done' and 'skipped' must be lists")
    if len(set(done)) != len(done):
        raise CheckpointError(f"{path}: 'done' lists an id twice")
    return Checkpoint(identity, _confusion_from_json(raw.get("confusion") or {}, identity, path),
                      [str(i) for i in done], skipped, float(raw.get("elapsed_s", 0.0)),
                      _loss_from_json(raw.get("loss", {}), identity, path))


class StopRequest:
    """SIGTERM/SIGINT set a flag instead of killing the process mid-update.

    The evaluation loop looks at :attr:`signum` after each image, writes a checkpoint, and
    exits with ``128 + signum`` (the shell's convention). A second signal while stopping
    restores the default handler's behaviour, so a stuck run can still be killed.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            self.restore()
            signal.raise_signal(signum)
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is not threading.main_thread():
            return self  # Python delivers signals to the main thread only
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self.restore()
