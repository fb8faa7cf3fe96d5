"""Which list of images a run reads, where that list comes from, how it was verified, and
whether it is the papers' split: the one answer for evaluation and training alike.

The papers' lists are lists of the reference repository, not of the datasets: PASCAL VOC
2011/2012 ship ``val.txt`` but not ``seg11valid.txt`` (the 736 VOC2011 val images not in SBD
train, upstream ``data/pascal/seg11valid.txt``); the SIFT Flow and NYUDv2 downloads hold no
``test.txt``, SIFT Flow none of upstream's ``trainval.txt``, and upstream's NYUD data layer
reads a ``trainval.txt`` that upstream never shipped (only ``train.txt`` and ``val.txt``).
Those lists ship inside this package, in one folder (``DATA_DIR``, ``reproduce/data/``:
source and licence in its README); the registry's split artifacts are their manifest of
digests (``registry.SPLITS``: each file's SHA-256), and ``shipped_file`` is the one check of a
shipped file against it before a run reads it, so the default run works on a dataset exactly
as it is downloaded, with or without a network.

``LISTS`` says, for each (dataset, split) that may lack its list, where the ids come from;
``list_source`` answers for one dataset folder: the user's file (``--split FILE``), else the
folder's own list, else the folder's parts joined (NYUD ``train.txt`` then ``val.txt``), else
the shipped lists joined. Several files are joined as id lists, not bytes
(``reproduce.datasets.base.split_ids``): upstream's ``nyud/train.txt`` ends without a newline,
so ``cat train.txt val.txt`` would fuse its last id with val's first.

``--split`` takes a split name (``seg11valid``, ``val``, ``test``) or the path of a list file
(one image id a line; the split is then named after the file). Whatever the list, a run
records its identity (number of ids, ``registry.split_digest`` of them) and compares it with
the registry's, so that a list that is not the papers' split is never reported as a
reproduction of the numbers published for it (``SplitCheck``).
"""
from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from port.errors import PortError
from port.hub import registry
from reproduce.datasets import DATASETS
from reproduce.datasets.base import read_split

__all__ = ["DATA_DIR", "LISTS", "papers_ids", "SplitList", "ListSource", "SplitError", "SplitChoice",
           "SplitCheck", "default_split", "choose", "shipped_file", "list_source",
           "check_split"]

#: The one folder of lists shipped with the package (package data).
DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class SplitList:
    """Where the ids of a split come from when the dataset folder may lack its list; the first
    that exists wins: the folder's own ``own`` (relative to the folder the reader locates);
    else the folder's ``parts``, every one present, joined in order; else ``shipped``, registry
    split artifacts whose files ship under ``DATA_DIR``, joined in order. ``assumption`` says
    what a join takes on trust."""

    own: str
    shipped: tuple[str, ...]
    parts: tuple[str, ...] = ()
    assumption: str = ""


#: (dataset reader, split) -> where its list comes from: the papers' evaluation lists and the
#: training lists the dataset downloads lack.
LISTS: dict[tuple[str, str], SplitList] = {
    ("voc", "seg11valid"): SplitList("ImageSets/Segmentation/seg11valid.txt",
                                     ("split/pascal/seg11valid",)),
    ("siftflow", "test"): SplitList("test.txt", ("split/sift-flow/test",)),
    ("nyud", "test"): SplitList("test.txt", ("split/nyud/test",)),
    ("siftflow", "trainval"): SplitList("trainval.txt", ("split/sift-flow/trainval",)),
    ("nyud", "trainval"): SplitList(
        "trainval.txt", ("split/nyud/train", "split/nyud/val"), parts=("train.txt", "val.txt"),
        assumption="trainval = train then val (upstream shipped no trainval.txt; the order is "
                   "assumed)"),
}


def shipped_name(artifact: str) -> str:
    """The file of a registry split artifact under ``DATA_DIR``: its upstream path less
    ``data/`` (``split/pascal/seg11valid`` -> ``pascal/seg11valid.txt``)."""
    return registry.get(artifact).source.split(" ", 1)[1].removeprefix("data/")


class SplitError(PortError):
    """A ``--split`` that names no file, or a shipped list that is missing or altered."""


def default_split(dataset: str) -> str:
    """The split the reader of ``dataset`` reads when none is named: the papers' evaluation
    split (its constructor's default, read from it rather than repeated here)."""
    if dataset not in DATASETS:
        raise SplitError(f"unknown dataset {dataset!r} (known: {', '.join(sorted(DATASETS))})")
    return str(inspect.signature(DATASETS[dataset].__init__).parameters["split"].default)


@dataclass(frozen=True)
class SplitChoice:
    """What ``--split`` asks for: a split ``name``, and the list ``file`` when a path was given."""

    name: str
    file: Path | None = None


def _is_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.endswith(".txt")


def choose(dataset: str, split: str | os.PathLike[str] | None) -> SplitChoice:
    """``--split`` as given: None -> the dataset's default split; a path (it holds a ``/`` or
    ends in ``.txt``) -> that list file, named after its stem; anything else -> a split name."""
    if split is None:
        return SplitChoice(default_split(dataset))
    text = os.fspath(split)
    if isinstance(split, Path) or _is_path(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise SplitError(f"--split {text}: no such split list file (give a split name, "
                             f"e.g. {default_split(dataset)}, or a file of image ids, one a line)")
        return SplitChoice(path.stem, path)
    return SplitChoice(text)


def shipped_file(artifact: str) -> Path:
    """The shipped file of registry split ``artifact``, checked against the registry's
    SHA-256 (the one check of a shipped list)."""
    record = registry.get(artifact)
    path = DATA_DIR / shipped_name(artifact)
    expected = record.known[0].sha256
    if not path.is_file():
        raise SplitError(f"{path}: the split list shipped with fcn-port is missing; reinstall "
                         f"it, or pass --split with a copy of upstream {record.source}")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise SplitError(f"{path}: the split list shipped with fcn-port was altered (SHA-256 "
                         f"{actual}, expected {expected}, upstream {record.source}); reinstall "
                         f"fcn-port")
    return path


@dataclass(frozen=True)
class ListSource:
    """The list a split is read from: ``kind`` ``"given"`` (the user's ``--split FILE``),
    ``"dataset"`` (the folder's own list, read by the reader), ``"dataset parts"`` (the
    folder's lists joined) or ``"shipped"`` (the package's lists, verified against the
    registry); ``files`` in the order joined (none: the reader's own default file)."""

    dataset: str
    split: str
    kind: str
    files: tuple[Path, ...] = ()
    assumption: str = ""

    @property
    def split_file(self) -> tuple[Path, ...] | None:
        """What the reader is given as ``split_file=`` (None: it reads its own list)."""
        return None if self.kind == "dataset" else self.files

    def as_dict(self, ids: Sequence[str]) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "kind": self.kind,
                "files": [str(f) for f in self.files], "images": len(ids),
                "ids_sha256": registry.split_digest(ids),
                **({"assumption": self.assumption} if self.assumption else {})}

    def describe(self, ids: Sequence[str] | None = None) -> str:
        """One line: ``split nyud trainval: the lists shipped with fcn-port A + B (...)``, with
        the number of ``ids`` read and their digest when given."""
        files = " + ".join(str(f) for f in self.files)
        where = _KINDS[self.kind] + (f" {files}" if files else "")
        verified = " (verified against the registry's SHA-256)" if self.kind == "shipped" else ""
        count = (f", {len(ids)} images (ids SHA-256 {registry.split_digest(list(ids))[:12]})"
                 if ids is not None else "")
        note = f" [{self.assumption}]" if self.assumption else ""
        return f"split {self.dataset} {self.split}: {where}{verified}{count}{note}"


_KINDS = {"given": "the list", "dataset": "the dataset folder's own list",
          "dataset parts": "the dataset folder's lists", "shipped": "the lists shipped with fcn-port"}


def list_source(dataset: str, folder: Path, choice: SplitChoice) -> ListSource:
    """Which list (``LISTS``) the split ``choice`` of the dataset in ``folder`` (the folder the
    reader locates) reads: the user's file, the folder's own, its parts, or the shipped ones."""
    if choice.file is not None:
        return ListSource(dataset, choice.name, "given", (choice.file,))
    entry = LISTS.get((dataset, choice.name))
    folder = Path(folder)
    if entry is None or (folder / entry.own).is_file():
        own = (folder / entry.own,) if entry is not None else ()
        return ListSource(dataset, choice.name, "dataset", own)
    present = [folder / p for p in entry.parts if (folder / p).is_file()]
    if present and len(present) < len(entry.parts):
        missing = [p for p in entry.parts if not (folder / p).is_file()]
        raise SplitError(f"{folder}: has {', '.join(p.name for p in present)} but not "
                         f"{', '.join(missing)}; {dataset} {choice.name} is "
                         f"{' then '.join(entry.parts)} (or put a {entry.own} there)")
    if present:
        return ListSource(dataset, choice.name, "dataset parts", tuple(present),
                          entry.assumption)
    files = tuple(shipped_file(a) for a in entry.shipped)
    return ListSource(dataset, choice.name, "shipped", files,
                      entry.assumption if len(files) > 1 else "")


@dataclass(frozen=True)
class SplitCheck:
    """The identity of the list a run evaluated against the registry's record of the split of
    that name: ``matches`` is True (the same ids), False (other ids: the comparison with the
    published numbers is not like for like) or None (the registry knows no list for it)."""

    dataset: str
    split: str
    images: int
    sha256: str
    expected_images: int | None = None
    expected_sha256: str | None = None
    reference: str | None = None

    @property
    def matches(self) -> bool | None:
        if self.expected_sha256 is None:
            return None
        return self.images == self.expected_images and self.sha256 == self.expected_sha256

    def describe(self) -> str:
        """One line saying what the list is."""
        if self.matches is None:
            return (f"split {self.split!r}: {_images(self.images)} (ids SHA-256 "
                    f"{self.sha256[:12]}); no record of this split to check it against")
        if self.matches:
            return (f"split {self.split!r}: {_images(self.images)}, the same ids as "
                    f"{self.reference}")
        return (f"split {self.split!r}: {_images(self.images)} (ids SHA-256 {self.sha256[:12]}) "
                f"but the papers' {self.split} is {_images(self.expected_images)} (ids SHA-256 "
                f"{(self.expected_sha256 or '')[:12]}, {self.reference}): NOT like for like "
                f"with the published numbers")

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "images": self.images,
                "ids_sha256": self.sha256, "expected_images": self.expected_images,
                "expected_ids_sha256": self.expected_sha256, "reference": self.reference,
                "matches": self.matches, "description": self.describe()}


def papers_ids(dataset: str, split: str) -> list[str] | None:
    """The papers' (upstream's) ids of ``split`` where fcn-port ships its list (``LISTS``):
    the shipped files joined in order, each checked (:func:`shipped_file`); None where none
    ships (SBD train, VOC2010 train: the dataset archives' own lists)."""
    entry = LISTS.get((dataset, split))
    if entry is None:
        return None
    return [i for artifact in entry.shipped for i in read_split(shipped_file(artifact))]


def _images(n: int | None) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def check_split(dataset: str, split: str, ids: Sequence[str]) -> SplitCheck:
    """The identity of the whole list ``ids`` (before ``--limit``) of ``split``."""
    ids = list(ids)
    entry = LISTS.get((dataset, split))
    artifact = registry.get(entry.shipped[0]) if entry and len(entry.shipped) == 1 else None
    if artifact is None or artifact.ids_sha256 is None:
        return SplitCheck(dataset, split, len(ids), registry.split_digest(ids))
    return SplitCheck(dataset, split, len(ids), registry.split_digest(ids), artifact.ids,
                      artifact.ids_sha256, f"upstream {artifact.source.split(' ', 1)[-1]}")
