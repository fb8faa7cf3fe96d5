"""The training data layers of upstream FCN: one image at native size per forward pass, in
upstream's sample order (``reproduce.training.sampling``), preprocessed exactly as for
evaluation (``port.models.preprocess`` through the ``reproduce.datasets`` readers).

- VOC nets: ``SBDDSegDataLayer`` on SBD ``train`` (``dataset/img/<id>.jpg``,
  ``dataset/cls/<id>.mat`` ``GTcls``; ``reproduce.datasets.SBD``, scipy's ``loadmat`` as upstream).
- SIFT Flow: ``SIFTFlowSegDataLayer`` on ``trainval`` (tops ``data``, ``sem``, ``geo``); the list
  is upstream's ``data/sift-flow/trainval.txt`` (the dataset zip has none), shipped here and
  checked against the registry's SHA-256, unless the dataset folder holds its own.
- NYUDv2: ``NYUDSegDataLayer`` on ``trainval`` (``<nyud>/trainval.txt`` of nyud.tar.gz).
- PASCAL-Context: ``PASCALContextSegDataLayer`` on VOC2010 ``ImageSets/Main/train.txt``.

Each pass's inputs are the net's data tops with a batch axis (``1 x C x H x W``) and its label
tops as Caffe's data layer gives them to ``SoftmaxWithLoss``: ``1 x 1 x H x W`` float32 (void 255).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from port.errors import PortError
from reproduce.training.sampling import SampleOrder

__all__ = ["TrainDataError", "TrainData", "open_split", "SHIPPED"]

DATA_DIR = Path(__file__).resolve().parent / "data"
#: (dataset, split) -> (file shipped here, registry artifact holding its SHA-256, name in the dataset folder)
SHIPPED = {("siftflow", "trainval"): ("sift-flow/trainval.txt", "split/sift-flow/trainval", "trainval.txt")}


class TrainDataError(PortError):
    """A training split or item that cannot be read, naming the file."""


def _shipped(dataset: str, split: str, folder: Path) -> Path | None:
    entry = SHIPPED.get((dataset, split))
    if entry is None or (folder / entry[2]).is_file():
        return None
    from reproduce import registry
    path = DATA_DIR / entry[0]
    expected = registry.get(entry[1]).known[0].sha256
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise TrainDataError(f"{path}: the shipped {dataset} {split} list is missing or altered "
                             f"(expected SHA-256 {expected}); reinstall fcn-port")
    return path


def open_split(dataset: str, root: Path, split: str, inputs: Any = None) -> Any:
    """The ``reproduce.datasets`` reader of ``split`` (a training or validation split) at or
    under ``root``, found as the harness finds datasets."""
    from reproduce import resolve as R
    from reproduce.datasets import locate
    options: dict[str, Any] = {}
    if dataset == "nyud":
        options["inputs"] = inputs
    located = locate(dataset, root, split)
    shipped = _shipped(dataset, split, located.path)
    if shipped is not None:
        options["split_file"] = shipped
    return R.open_dataset(dataset, Path(root), split, **options)


class TrainData:
    """``feed(k)``: the inputs of forward pass k (``Solver``'s feed), ``sample_id(k)`` its id."""

    def __init__(self, reader: Any, seed: int, label_tops: tuple[str, ...]):
        self.reader = reader
        self.order = SampleOrder(reader.ids, seed)
        self.label_tops = tuple(label_tops)

    @property
    def size(self) -> int:
        return len(self.reader.ids)

    def sample_id(self, k: int) -> str:
        return self.order.id(k)

    def feed(self, k: int) -> dict[str, np.ndarray]:
        item_id = self.order.id(k)
        item = self.reader.item(item_id, all_labels=True)
        out = {blob: np.ascontiguousarray(a[None], dtype=np.float32) for blob, a in item.inputs.items()}
        labels = item.label
        for top in self.label_tops:
            if top not in labels:
                raise TrainDataError(f"{self.reader!r}: item {item_id!r} has no label {top!r} "
                                     f"(has {sorted(labels)})")
            out[top] = np.asarray(labels[top], dtype=np.float32)[None, None]
        return out
