"""A training run's TensorBoard event files (``python -m reproduce train --tensorboard DIR``):
a :class:`port.training.solver.SolverCallback` plugged into the run's one ``Solver::Step``
loop beside the run's own harness, on rank 0 only. Optional: it needs the ``tensorboard``
package (``pip install 'fcn-port[tensorboard]'``; ``torch.utils.tensorboard.SummaryWriter``
writes the files); without it the run goes on and says so in one line (:func:`open_log`).

What it writes, each at the solver's iteration as its step (the iteration just made, as
``train_log.jsonl``'s ``iter``), with the very numbers the log records:

- ``train/loss`` (the iteration's loss), ``train/lr`` (the rate it was made with) and
  ``train/smoothed_loss`` (Caffe's ``smoothed_loss_`` over ``average_loss`` iterations, what
  Caffe displays; it restarts with each ``step()`` call, as Caffe's, so with a ``--resume``);
- after each validation, per scored output: ``val/pixel_acc``, ``val/mean_acc``, ``val/mean_iu``,
  ``val/fw_iu``, ``val/loss`` (fractions, as the log), the IU of each class as
  ``val_class_iu/<class>`` (a class absent from both the labels and the predictions, whose IU
  is undefined, is left out), a few overlays as images ``val_overlays/<image id>`` (the image,
  its labels and the prediction side by side, drawn by ``reproduce.report.compose_overlay`` as
  the evaluation report draws them); a net with several scored outputs (SIFT Flow) names each
  output after the group: ``val/score_sem/mean_iu``, ``val_class_iu/score_geo/sky``.

``--resume`` continues the same event stream: the new writer starts its file with a session
start at the first iteration it will run (``SummaryWriter(purge_step=)``), so TensorBoard
drops what a stopped run had written past its last snapshot (those iterations are run again)
and the curves go on without a fold. A fresh run into a folder that holds an older run's
files hides them the same way (its purge step is iteration 1).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

from port.training.solver import Solver, SolverCallback
from reproduce.report import compose_overlay

__all__ = ["INSTALL", "OVERLAYS", "METRICS", "TensorBoardLog", "open_log", "scalar_tag"]

#: How to get the optional package, in the one line a run without it says.
INSTALL = "pip install 'fcn-port[tensorboard]'"
#: How many validation images are drawn as overlays (the first of the validation list).
OVERLAYS = 3
#: The validation metrics written as scalars, as ``train_log.jsonl``'s ``val`` names them.
METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu", "loss")

#: (the log record of the iteration just made, its validation result or None)
Latest = Callable[[], "tuple[dict[str, Any], Any | None]"]


def scalar_tag(group: str, name: str, output: str | None = None) -> str:
    """A scalar's tag: ``group/name``, or ``group/output/name`` for one of several outputs."""
    return f"{group}/{name}" if output is None else f"{group}/{output}/{name}"


class TensorBoardLog(SolverCallback):
    """The event files of one run. ``writer``: a ``SummaryWriter``; ``tasks``: the validation's
    scored outputs (``reproduce.harness.Task``: output, class names); ``latest()``: the log
    record of the iteration just made and its validation result (None when it did not
    validate), which the run's harness made in its own ``on_iteration_end`` before this one."""

    def __init__(self, writer: Any, tasks: Sequence[Any], latest: Latest):
        self.writer, self.tasks, self.latest = writer, tuple(tasks), latest

    def on_iteration_end(self, solver: Solver, losses: list[float]) -> None:
        record, result = self.latest()
        step = int(record["iter"])
        self.writer.add_scalar("train/loss", record["loss"], step)
        self.writer.add_scalar("train/smoothed_loss", solver.smoothed_loss, step)
        self.writer.add_scalar("train/lr", record["lr"], step)
        if "val" in record:
            self.validation(step, record["val"], result)

    def validation(self, step: int, val: dict[str, Any], result: Any | None) -> None:
        """One validation's scalars (``val``: the log record's), per-class IU and overlays."""
        several = len(self.tasks) > 1
        for task in self.tasks:
            output = task.output if several else None
            for metric in METRICS:
                value = val["outputs"][task.output].get(metric)
                if value is not None:
                    self.writer.add_scalar(scalar_tag("val", metric, output), value, step)
            if result is None:
                continue
            for name, iu in zip(task.class_names, result.scores[task.output].per_class_iu):
                if not math.isnan(iu):
                    self.writer.add_scalar(scalar_tag("val_class_iu", name, output), iu, step)
        if result is not None:
            for item_id in sorted(result.overlays):
                picture = compose_overlay(result.overlays[item_id], self.tasks[0].class_names)
                self.writer.add_image(f"val_overlays/{item_id}", picture, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_log(log_dir: Path, tasks: Sequence[Any], latest: Latest, first_iteration: int,
             log: Callable[[str], None]) -> TensorBoardLog | None:
    """The run's :class:`TensorBoardLog` writing under ``log_dir``, its stream purged from
    ``first_iteration`` on (the first iteration this run makes); None, said in one line
    through ``log``, where TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # the optional extra
    except ImportError as err:
        cause = (str(err).splitlines() or [type(err).__name__])[0]
        log(f"--tensorboard {log_dir}: not written, TensorBoard is not installed ({cause}); "
            f"get it with: {INSTALL}; training goes on")
        return None
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return TensorBoardLog(SummaryWriter(str(log_dir), purge_step=int(first_iteration)),
                          tasks, latest)
