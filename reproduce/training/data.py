"""The training data layers of upstream FCN: one image at native size per forward pass, in
upstream's sample order (``reproduce.training.sampling``), preprocessed exactly as for
evaluation (``port.models.preprocess`` through the ``reproduce.datasets`` readers).

- VOC nets: ``SBDDSegDataLayer`` on SBD ``train`` (``dataset/img/<id>.jpg``,
  ``dataset/cls/<id>.mat`` ``GTcls``; ``reproduce.datasets.SBD``, scipy's ``loadmat`` as upstream).
- SIFT Flow: ``SIFTFlowSegDataLayer`` on ``trainval`` (tops ``data``, ``sem``, ``geo``); the list
  is upstream's ``data/sift-flow/trainval.txt`` (the dataset zip has none), shipped with the
  package, unless the dataset folder holds its own.
- NYUDv2: ``NYUDSegDataLayer`` on ``trainval``: it reads ``<nyud_dir>/trainval.txt``, but
  upstream's repository ships only ``data/nyud/train.txt`` (381 ids), ``val.txt`` (414) and
  ``test.txt``, and whether nyud.tar.gz holds a ``trainval.txt`` is not known here. Without one
  in the NYUD folder, the list is the folder's ``train.txt`` then ``val.txt``, else upstream's
  two lists shipped with the package, joined in that order. train and val are disjoint and
  together are the 795 images of Gupta et al.'s trainval, so the set is right; **the
  train-then-val order is an assumption** (upstream never shipped the file, and the order
  decides which image each ``randint`` draw picks).
- PASCAL-Context: ``PASCALContextSegDataLayer`` on VOC2010 ``ImageSets/Main/train.txt``.

Which list a split reads, from where and verified how is ``reproduce.splits``' answer (one for
evaluation and training: ``splits.LISTS``, ``splits.list_source``); a run records it
(``splits.ListSource``, in ``OUT/init.json`` and the report).

Each pass's inputs are the net's data tops with a batch axis (``1 x C x H x W``) and its label
tops as Caffe's data layer gives them to ``SoftmaxWithLoss``: ``1 x 1 x H x W`` float32 (void 255).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from port.errors import PortError
from reproduce import resolve as R
from reproduce.splits import ListSource
from reproduce.training.sampling import SampleOrder

__all__ = ["TrainDataError", "TrainData", "ListSource", "open_split"]


class TrainDataError(PortError):
    """A training split or item that cannot be read, naming the file."""


def open_split(dataset: str, root: Path, split: str, inputs: Any = None,
               **options: Any) -> tuple[Any, ListSource]:
    """The ``reproduce.datasets`` reader of ``split`` (a training or validation split) at or
    under ``root``, found as the harness finds datasets, and the list it reads
    (``reproduce.resolve.open_split``); ``options`` go to the reader: what a net needs of it is
    its reader class's ``reader_options`` (``reproduce.evaluation.model_reader_options``), e.g.
    NYUD's ``inputs`` (each input blob's modality; also accepted as the fourth argument)."""
    if inputs is not None:
        options["inputs"] = inputs
    return R.open_split(dataset, Path(root), split, **options)


class TrainData:
    """``feed(k)``: the inputs of forward pass k (``Solver``'s feed), ``sample_id(k)`` its id;
    ``source``: the list the ids were read from (``list_record`` its JSON form)."""

    def __init__(self, reader: Any, seed: int, label_tops: tuple[str, ...],
                 source: ListSource | None = None):
        self.reader = reader
        self.order = SampleOrder(reader.ids, seed)
        self.label_tops = tuple(label_tops)
        self.source = source or ListSource(reader.name, reader.split, "dataset")

    @property
    def list_record(self) -> dict[str, Any]:
        return self.source.as_dict(self.reader.ids)

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
