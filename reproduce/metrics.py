"""Segmentation scores exactly as the FCN reference ``score.py`` computes them.

Upstream (shelhamer/fcn.berkeleyvision.org ``score.py``) accumulates one confusion matrix over
the whole split with ``fast_hist`` -- rows are ground truth, columns are predictions, pixels whose
label lies outside ``[0, n)`` (the void 255) are dropped -- and then reports, in ``do_seg_tests``:

- overall pixel accuracy ``diag.sum() / hist.sum()``;
- mean accuracy ``nanmean(diag / hist.sum(1))`` (classes absent from the ground truth are NaN);
- mean IU ``nanmean(diag / (hist.sum(1) + hist.sum(0) - diag))`` (classes never labelled and
  never predicted are NaN; a class predicted but absent from the ground truth counts as 0);
- frequency-weighted IU ``(freq[freq > 0] * iu[freq > 0]).sum()`` with ``freq = hist.sum(1) /
  hist.sum()``, so over the classes present in the ground truth;
- the mean of the per-image loss (``compute_hist`` sums ``net.blobs['loss']`` per image).

Here the matrix is accumulated on the device (a ``scatter_add_``, no host sync); the result is a frozen
``Scores`` with fractions in [0, 1] like ``score.py``. Pure: no printing and no files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["GPU_STRIPES", "ConfusionMatrix", "Scores", "scores_from_matrix"]

#: Interleaved copies of the bins a GPU ``ConfusionMatrix.update`` counts into, so that
#: neighbouring threads' atomic adds to a common class pair land on different addresses.
GPU_STRIPES = 128
#: Below this many pixels per update the default counts into one copy: on an H100, one
#: 375x500 map counts in 0.34 ms either way (0.39 ms striped, uniform labels), a batch of 16
#: in 1.76 ms with one copy and 0.44 ms striped (benchmarks/RESULTS.md, bench_metrics.py).
STRIPE_MIN_PIXELS = 1 << 20


@dataclass(frozen=True)
class Scores:
    """The result of one evaluation: ``score.py``'s four numbers and what they are made of.

    Metric values are fractions (multiply by 100 for the papers' percent). ``per_class_*`` are
    NaN where ``score.py`` gets 0/0. ``gt_pixels``/``pred_pixels`` are per-class counts (rows and
    columns of ``confusion``); ``loss`` is the mean per-image loss, or None when none was added.
    """

    pixel_acc: float
    mean_acc: float
    mean_iu: float
    fw_iu: float
    per_class_iu: tuple[float, ...]
    per_class_acc: tuple[float, ...]
    gt_pixels: tuple[int, ...]
    pred_pixels: tuple[int, ...]
    pixels: int
    images: int
    loss: float | None
    confusion: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.per_class_iu)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None, the confusion matrix nested lists of ints."""
        def clean(x):
            return None if isinstance(x, float) and math.isnan(x) else x
        return {
            "pixel_acc": clean(self.pixel_acc), "mean_acc": clean(self.mean_acc),
            "mean_iu": clean(self.mean_iu), "fw_iu": clean(self.fw_iu),
            "per_class_iu": [clean(v) for v in self.per_class_iu],
            "per_class_acc": [clean(v) for v in self.per_class_acc],
            "gt_pixels": list(self.gt_pixels), "pred_pixels": list(self.pred_pixels),
            "pixels": self.pixels, "images": self.images, "loss": clean(self.loss),
            "confusion": self.confusion.tolist(),
        }


def scores_from_matrix(hist, *, images: int = 0, loss: float | None = None) -> Scores:
    """``score.py``'s formulas on a confusion matrix (rows ground truth, columns prediction).

    An empty matrix gives NaN metrics (``score.py`` divides 0 by 0 the same way).
    """
    hist = np.array(hist, dtype=np.float64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"confusion matrix: expected a square 2-D array, got shape {hist.shape}")
    diag, gt, pred = np.diag(hist), hist.sum(1), hist.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = diag / gt
        iu = diag / (gt + pred - diag)
        freq = gt / hist.sum()
        pixel_acc = diag.sum() / hist.sum()
    present = freq > 0
    confusion = hist.astype(np.int64)
    confusion.setflags(write=False)
    return Scores(
        pixel_acc=float(pixel_acc),
        mean_acc=_nanmean(acc),
        mean_iu=_nanmean(iu),
        fw_iu=float((freq[present] * iu[present]).sum()) if present.any() else math.nan,
        per_class_iu=tuple(float(v) for v in iu),
        per_class_acc=tuple(float(v) for v in acc),
        gt_pixels=tuple(int(v) for v in gt), pred_pixels=tuple(int(v) for v in pred),
        pixels=int(hist.sum()), images=images, loss=loss, confusion=confusion,
    )


def _nanmean(values: np.ndarray) -> float:
    """``np.nanmean`` without its RuntimeWarning on an all-NaN input (still NaN)."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


class ConfusionMatrix:
    """``score.py``'s ``hist``, accumulated on ``device`` without waiting for it.

    ``update(pred, label)`` adds one image (or a batch of equal-size images); labels outside
    ``[0, n_classes)`` are ignored as ``fast_hist`` ignores them; a prediction outside that
    range among the counted pixels raises (``fast_hist`` would silently corrupt the matrix).
    ``add_loss`` records per-image losses. Two matrices add (``a + b``, ``a += b``) for sharded
    evaluation; ``state_dict``/``load_state_dict`` for checkpoints.
    """

    def __init__(self, n_classes: int, device: str | torch.device = "cpu", *, stripes: int | None = None):
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"ConfusionMatrix: n_classes must be a positive int, "
                             f"got {n_classes!r}")
        if stripes is not None and (not isinstance(stripes, int) or stripes < 1):
            raise ValueError(f"ConfusionMatrix: stripes must be a positive int, got {stripes!r}")
        self.n_classes = n_classes
        self.device = torch.device(device)
        # How many interleaved copies of the bins ``update`` counts into (see there): one on
        # the CPU, whose scatter is a serial loop; GPU_STRIPES where the adds are atomics.
        self.stripes = stripes or (1 if self.device.type == "cpu" else GPU_STRIPES)
        self._auto_stripes = stripes is None  # then small updates count into one copy
        self._stripe_offsets = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._matrix = torch.zeros((n_classes, n_classes), dtype=torch.int64, device=self.device)
        self._bad = torch.zeros((), dtype=torch.int64, device=self.device)
        self.images = 0
        self._loss_host = 0.0
        self._loss_device: torch.Tensor | None = None  # float64, summed without host waits
        self.loss_count = 0

    def update(self, pred, label) -> None:
        """Count one prediction map against its label map (same shape, any leading batch axes).

        Never waits for the device: boolean indexing and ``bincount`` would each copy a size
        back to the host, and on a GPU those per-image waits cost more than the counting
        (benchmarks/RESULTS.md). Ignored pixels go to a spare bin instead, the counts are a
        ``scatter_add_`` (exact: integer additions), and on a GPU the range check of the
        predictions is kept on the device and raised by the next read (``compute``,
        ``state_dict``, ``matrix``).

        On a GPU each add is an atomic, and most pixels of a batch fall in a few bins (the
        background's), so neighbouring threads would queue on one address: pixel ``i`` counts
        into copy ``i % stripes`` of the bins, and the copies are summed afterwards (still exact
        integer sums; the result does not depend on ``stripes``). By default an update of
        fewer than ``STRIPE_MIN_PIXELS`` pixels (one VOC image) uses one copy."""
        pred_t = torch.as_tensor(pred, device=self.device)
        label_t = torch.as_tensor(label, device=self.device)
        if pred_t.shape != label_t.shape:
            raise ValueError(f"ConfusionMatrix.update: prediction shape {tuple(pred_t.shape)} "
                             f"!= label shape {tuple(label_t.shape)}")
        if pred_t.is_floating_point() or label_t.is_floating_point():
            raise TypeError("ConfusionMatrix.update: expected integer class maps; "
                            "use update_scores for class scores")
        # int64 before arithmetic: n * label overflows in uint8.
        gt = label_t.reshape(-1).long()
        guess = pred_t.reshape(-1).long()
        n = self.n_classes
        keep = (gt >= 0) & (gt < n)
        bad = (((guess < 0) | (guess >= n)) & keep).sum()
        if self.device.type == "cpu":
            if bad:
                raise ValueError(f"ConfusionMatrix.update: predictions outside [0, {n})")
        else:
            self._bad += bad
        spare = n * n  # the bin of every ignored pixel, dropped below
        index = torch.where(keep, n * gt + guess.clamp(0, n - 1), spare)
        stripes = 1 if self._auto_stripes and index.numel() < STRIPE_MIN_PIXELS else self.stripes
        if stripes > 1:
            index += self._offsets(index.numel(), spare + 1)
        counts = torch.zeros(stripes * (spare + 1), dtype=torch.int64, device=self.device)
        counts.scatter_add_(0, index, torch.ones_like(index))
        self._matrix += counts.view(stripes, spare + 1)[:, :spare].sum(0).view(n, n)
        self.images += _batch_images(pred_t)

    def _offsets(self, count: int, bins: int) -> torch.Tensor:
        """``(i % stripes) * bins`` for ``i < count``: where pixel ``i``'s copy of the bins
        starts. Kept for the largest count seen, so a run allocates it once per size class."""
        if self._stripe_offsets.numel() < count:
            self._stripe_offsets = (torch.arange(count, device=self.device) % self.stripes) * bins
        return self._stripe_offsets[:count]

    @property
    def matrix(self) -> torch.Tensor:
        """The ``n x n`` int64 counts (rows: ground truth, columns: prediction)."""
        self._check()
        return self._matrix

    @matrix.setter
    def matrix(self, value: torch.Tensor) -> None:
        self._matrix = value

    def _check(self) -> None:
        if self.device.type != "cpu" and int(self._bad):
            raise ValueError(f"ConfusionMatrix.update: predictions outside [0, {self.n_classes}) "
                             f"at {int(self._bad)} counted pixel(s)")

    def update_scores(self, scores, label) -> None:
        """Count class scores (C x H x W, or N x C x H x W) by their argmax over C, as
        ``score.py`` does with ``net.blobs[layer].data[0].argmax(0)`` (first maximum wins)."""
        scores_t = torch.as_tensor(scores, device=self.device)
        if scores_t.dim() not in (3, 4) or scores_t.shape[-3] != self.n_classes:
            raise ValueError(f"ConfusionMatrix.update_scores: expected (N,){self.n_classes}xHxW "
                             f"scores, got shape {tuple(scores_t.shape)}")
        self.update(scores_t.argmax(dim=-3), label)

    def add_loss(self, loss: float | torch.Tensor, images: int = 1) -> None:
        """Record the summed loss of ``images`` images (``compute_hist``'s ``loss +=``). A loss
        still on a GPU is summed there in float64, in the same order, so nothing waits for it."""
        if torch.is_tensor(loss) and loss.device.type != "cpu":
            loss = loss.detach().double()
            self._loss_device = loss if self._loss_device is None else self._loss_device + loss
        else:
            self._loss_host += float(loss)
        self.loss_count += images

    @property
    def loss_sum(self) -> float:
        """The float64 sum of the recorded losses."""
        if self._loss_device is not None:  # one wait, at read time
            self._loss_host, self._loss_device = self._loss_host + float(self._loss_device), None
        return self._loss_host

    @loss_sum.setter
    def loss_sum(self, value: float) -> None:
        self._loss_host, self._loss_device = float(value), None

    def compute(self) -> Scores:
        """The frozen ``Scores`` of everything counted so far."""
        loss = self.loss_sum / self.loss_count if self.loss_count else None
        return scores_from_matrix(self.matrix.cpu().numpy(), images=self.images, loss=loss)

    def _check_same(self, other: "ConfusionMatrix") -> None:
        if not isinstance(other, ConfusionMatrix) or other.n_classes != self.n_classes:
            raise ValueError(f"cannot add a ConfusionMatrix of {self.n_classes} classes and "
                             f"{getattr(other, 'n_classes', type(other).__name__)}")

    def __iadd__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        self._check_same(other)
        self.matrix += other.matrix.to(self.device)
        self.images += other.images
        self.loss_sum += other.loss_sum
        self.loss_count += other.loss_count
        return self

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        total = ConfusionMatrix(self.n_classes, device=self.device,
                                stripes=None if self._auto_stripes else self.stripes)
        total += self
        total += other
        return total

    def state_dict(self) -> dict[str, Any]:
        """Plain values (the matrix as a CPU tensor) to checkpoint or all-reduce."""
        return {"n_classes": self.n_classes, "matrix": self.matrix.cpu(), "images": self.images,
                "loss_sum": self.loss_sum, "loss_count": self.loss_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output; the class count must match."""
        if int(state["n_classes"]) != self.n_classes:
            raise ValueError(f"ConfusionMatrix state has {state['n_classes']} classes, "
                             f"expected {self.n_classes}")
        self.matrix = torch.as_tensor(state["matrix"], dtype=torch.int64).to(self.device).clone()
        self.images = int(state["images"])
        self.loss_sum = float(state["loss_sum"])
        self.loss_count = int(state["loss_count"])


def _batch_images(pred: torch.Tensor) -> int:
    """Images in a prediction: 1 for an HxW map, the product of leading axes otherwise."""
    return int(np.prod(pred.shape[:-2])) if pred.dim() > 2 else 1
