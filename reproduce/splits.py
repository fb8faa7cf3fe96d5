"""Which list of images a run evaluates, where that list comes from, and whether it is the
papers' split.

The papers' evaluation splits are lists of the reference repository, not of the datasets:
PASCAL VOC 2011/2012 ship ``val.txt`` but not ``seg11valid.txt`` (the 736 VOC2011 val images
not in SBD train, upstream ``data/pascal/seg11valid.txt``), and the SIFT Flow and NYUDv2
downloads hold no ``test.txt``. Those lists ship inside this package (``reproduce/data/``,
source and licence in its README) and are checked against the SHA-256 the registry records
before a run uses them, so the default run works on a dataset exactly as it is downloaded,
with or without a network.

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
from reproduce import registry

__all__ = ["DATA_DIR", "PACKAGED", "SplitError", "SplitChoice", "SplitCheck", "default_split",
           "choose", "packaged_file", "split_file_for", "check_split"]

#: The split lists shipped with the package.
DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Packaged:
    """One shipped list: its registry artifact, its file under ``DATA_DIR``, and where in the
    dataset folder a copy of the dataset's own would be (which is then read instead)."""

    artifact: str
    packaged: str
    in_dataset: str


#: (dataset reader, split name) -> the list shipped for it.
PACKAGED: dict[tuple[str, str], Packaged] = {
    ("voc", "seg11valid"): Packaged("split/pascal/seg11valid", "pascal/seg11valid.txt",
                                    "ImageSets/Segmentation/seg11valid.txt"),
    ("siftflow", "test"): Packaged("split/sift-flow/test", "sift-flow/test.txt", "test.txt"),
    ("nyud", "test"): Packaged("split/nyud/test", "nyud/test.txt", "test.txt"),
}


class SplitError(PortError):
    """A ``--split`` that names no file, or a shipped list that is missing or altered."""


def default_split(dataset: str) -> str:
    """The split the reader of ``dataset`` reads when none is named: the papers' evaluation
    split (its constructor's default, read from it rather than repeated here)."""
    from reproduce.datasets import DATASETS
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


def packaged_file(dataset: str, split: str) -> Path | None:
    """The list shipped for (``dataset``, ``split``), checked against the registry's SHA-256;
    None when none is shipped for it."""
    entry = PACKAGED.get((dataset, split))
    if entry is None:
        return None
    path = DATA_DIR / entry.packaged
    artifact = registry.get(entry.artifact)
    expected = artifact.known[0].sha256
    if not path.is_file():
        raise SplitError(f"{path}: the split list shipped with fcn-port is missing; reinstall "
                         f"it, or pass --split with a copy of upstream {artifact.source}")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise SplitError(f"{path}: the split list shipped with fcn-port was altered (SHA-256 "
                         f"{actual}, expected {expected}); reinstall it")
    return path


def split_file_for(dataset: str, folder: Path, choice: SplitChoice) -> Path | None:
    """The list file the reader must be given (its ``split_file=``): the user's, else the
    shipped one where the dataset folder ``folder`` holds no list of its own; None: the
    reader's own file in the dataset folder."""
    if choice.file is not None:
        return choice.file
    entry = PACKAGED.get((dataset, choice.name))
    if entry is None or (Path(folder) / entry.in_dataset).is_file():
        return None
    return packaged_file(dataset, choice.name)


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


def _images(n: int | None) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def check_split(dataset: str, split: str, ids: Sequence[str]) -> SplitCheck:
    """The identity of the whole list ``ids`` (before ``--limit``) of ``split``."""
    ids = list(ids)
    entry = PACKAGED.get((dataset, split))
    artifact = registry.get(entry.artifact) if entry is not None else None
    if artifact is None or artifact.ids_sha256 is None:
        return SplitCheck(dataset, split, len(ids), registry.split_digest(ids))
    return SplitCheck(dataset, split, len(ids), registry.split_digest(ids), artifact.ids,
                      artifact.ids_sha256, f"upstream {artifact.source.split(' ', 1)[-1]}")
