"""The training data layers of upstream FCN: one image at native size per forward pass, in
upstream's sample order (``reproduce.training.sampling``), preprocessed exactly as for
evaluation (``port.models.preprocess`` through the ``reproduce.datasets`` readers).

- VOC nets: ``SBDDSegDataLayer`` on SBD ``train`` (``dataset/img/<id>.jpg``,
  ``dataset/cls/<id>.mat`` ``GTcls``; ``reproduce.datasets.SBD``, scipy's ``loadmat`` as upstream).
- SIFT Flow: ``SIFTFlowSegDataLayer`` on ``trainval`` (tops ``data``, ``sem``, ``geo``); the list
  is upstream's ``data/sift-flow/trainval.txt`` (the dataset zip has none), shipped here and
  checked against the registry's SHA-256, unless the dataset folder holds its own.
- NYUDv2: ``NYUDSegDataLayer`` on ``trainval``: it reads ``<nyud_dir>/trainval.txt``, but
  upstream's repository ships only ``data/nyud/train.txt`` (381 ids), ``val.txt`` (414) and
  ``test.txt``, and whether nyud.tar.gz holds a ``trainval.txt`` is not known here. Without one
  in the NYUD folder, the list is the folder's ``train.txt`` then ``val.txt``, else upstream's
  two lists shipped here (checked against the registry's SHA-256), concatenated in that order.
  train and val are disjoint and together are the 795 images of Gupta et al.'s trainval, so the
  set is right; **the train-then-val order is an assumption** (upstream never shipped the file,
  and the order decides which image each ``randint`` draw picks). The lists are joined as id
  lists, not bytes: upstream's ``train.txt`` ends without a newline, so ``cat train.txt
  val.txt`` would fuse its last id with val's first. A run records the list it read
  (``TrainList``, in ``OUT/init.json`` and the report).
- PASCAL-Context: ``PASCALContextSegDataLayer`` on VOC2010 ``ImageSets/Main/train.txt``.

Each pass's inputs are the net's data tops with a batch axis (``1 x C x H x W``) and its label
tops as Caffe's data layer gives them to ``SoftmaxWithLoss``: ``1 x 1 x H x W`` float32 (void 255).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from port.errors import PortError
from reproduce.training.sampling import SampleOrder

__all__ = ["TrainDataError", "TrainData", "TrainList", "ListSource", "open_split", "TRAIN_LISTS",
           "train_list"]

DATA_DIR = Path(__file__).resolve().parent / "data"


class TrainDataError(PortError):
    """A training split or item that cannot be read, naming the file."""


@dataclass(frozen=True)
class TrainList:
    """Where the ids of a training split come from when its data layer's ``<split>.txt`` may
    be missing from the dataset folder; the first that exists wins: the folder's own ``own``;
    else the folder's ``parts``, every one present, concatenated in order; else ``shipped``,
    ``(file under reproduce/training/data, registry artifact of its SHA-256)`` pairs,
    concatenated in order. ``assumption`` says what a concatenation takes on trust."""

    own: str
    shipped: tuple[tuple[str, str], ...]
    parts: tuple[str, ...] = ()
    assumption: str = ""


#: (dataset reader, training split) -> where its list comes from.
TRAIN_LISTS: dict[tuple[str, str], TrainList] = {
    ("siftflow", "trainval"): TrainList(
        "trainval.txt", (("sift-flow/trainval.txt", "split/sift-flow/trainval"),)),
    ("nyud", "trainval"): TrainList(
        "trainval.txt", (("nyud/train.txt", "split/nyud/train"), ("nyud/val.txt", "split/nyud/val")),
        parts=("train.txt", "val.txt"),
        assumption="trainval = train then val (upstream shipped no trainval.txt; the order is "
                   "assumed)"),
}


@dataclass(frozen=True)
class ListSource:
    """The list a training split was read from: ``kind`` ``"dataset"`` (the folder's own
    ``<split>.txt``, read by the reader), ``"dataset parts"`` (the folder's lists joined) or
    ``"shipped"`` (the package's lists); ``files`` in the order joined."""

    dataset: str
    split: str
    kind: str
    files: tuple[Path, ...] = ()
    assumption: str = ""

    def as_dict(self, ids: list[str]) -> dict[str, Any]:
        from reproduce.registry import split_digest
        return {"dataset": self.dataset, "split": self.split, "kind": self.kind,
                "files": [str(f) for f in self.files], "images": len(ids),
                "ids_sha256": split_digest(ids), **({"assumption": self.assumption}
                                                    if self.assumption else {})}

    def describe(self, ids: list[str] | None = None) -> str:
        """One line: ``training list sbd train: the dataset's own list, 8498 images (ids
        SHA-256 ...)`` or the files joined and their assumption."""
        if self.kind == "dataset" and not self.files:
            where = "the dataset's own list"
        else:
            kind = {"dataset": "the dataset's", "dataset parts": "the dataset's lists joined:",
                    "shipped": "shipped with fcn-port:"}.get(self.kind, self.kind)
            where = f"{kind} {' + '.join(str(f) for f in self.files)}"
        count = ""
        if ids is not None:
            from reproduce.registry import split_digest
            count = f", {len(ids)} images (ids SHA-256 {split_digest(ids)[:12]})"
        note = f" [{self.assumption}]" if self.assumption else ""
        return f"training list {self.dataset} {self.split}: {where}{count}{note}"


def _checked(name: str, artifact: str) -> Path:
    from reproduce import registry
    path = DATA_DIR / name
    expected = registry.get(artifact).known[0].sha256
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise TrainDataError(f"{path}: the list shipped with fcn-port is missing or altered "
                             f"(expected SHA-256 {expected}, upstream {registry.get(artifact).source}); "
                             f"reinstall fcn-port")
    return path


def train_list(dataset: str, split: str, folder: Path) -> ListSource:
    """Which list (``TRAIN_LISTS``) a training split of the dataset in ``folder`` reads."""
    entry = TRAIN_LISTS.get((dataset, split))
    folder = Path(folder)
    if entry is None or (folder / entry.own).is_file():
        own = (folder / entry.own,) if entry is not None else ()
        return ListSource(dataset, split, "dataset", own)
    present = [folder / p for p in entry.parts if (folder / p).is_file()]
    if present and len(present) < len(entry.parts):
        missing = [p for p in entry.parts if not (folder / p).is_file()]
        raise TrainDataError(f"{folder}: has {', '.join(p.name for p in present)} but not "
                             f"{', '.join(missing)}; {dataset} {split} is "
                             f"{' then '.join(entry.parts)} (or put a {entry.own} there)")
    if present:
        return ListSource(dataset, split, "dataset parts", tuple(present), entry.assumption)
    files = tuple(_checked(name, artifact) for name, artifact in entry.shipped)
    return ListSource(dataset, split, "shipped", files,
                      entry.assumption if len(files) > 1 else "")


def open_split(dataset: str, root: Path, split: str, inputs: Any = None) -> tuple[Any, ListSource]:
    """The ``reproduce.datasets`` reader of ``split`` (a training or validation split) at or
    under ``root``, found as the harness finds datasets, and the list it reads."""
    from reproduce import resolve as R
    from reproduce.datasets import locate
    from reproduce.datasets.base import read_split
    options: dict[str, Any] = {}
    if dataset == "nyud":
        options["inputs"] = inputs
    source = train_list(dataset, split, locate(dataset, root, split).path)
    if source.kind != "dataset":
        options["split_file"] = source.files[0]
    reader = R.open_dataset(dataset, Path(root), split, **options)
    if len(source.files) > 1 and source.kind != "dataset":
        # the data layer reads one list: the reader gets the joined ids (id lists, not bytes)
        reader.ids = [i for f in source.files for i in read_split(f)]
    return reader, source


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
