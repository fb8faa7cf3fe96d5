"""PASCAL-Context, 59-class task, as ``PASCALContextSegDataLayer`` reads it
(pascalcontext_layers.py).

Images are VOC2010's (``VOC2010/JPEGImages/<id>.jpg``, split
``VOC2010/ImageSets/Main/<split>.txt``);
labels are the Context annotations ``trainval/<id>.mat`` (field ``LabelMap``, ids of the full
label list). Upstream maps each of the 59 task classes to its id in the full list (after removing
spaces and renaming ``diningtable``/``bedcloth``/``clothes`` to the full list's ``table``/
``bedclothes``/``cloth``); every other id becomes 0 = background. There is no void label.

The two class lists are read from ``labels.txt``/``59_labels.txt`` (the Context download, as
upstream) or ``classes-400.txt``/``classes-59.txt`` (the upstream repository's copies), in the
annotation folder or the folder given as ``class_lists``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from port.models.classes import PASCALCONTEXT_CLASSES
from port.models.preprocess import preprocess_pascalcontext

from .base import (
    DatasetError, Located, MissingFileError, SegmentationDataset,
    check_raw_range, locate_one, has_dirs, read_image, read_mat_field, split_ids,
)

__all__ = ["CONTEXT_CLASSES", "PASCALContext", "read_class_list", "context_label_table"]

#: Model output order: background, then the 59 classes (data/pascal-context/classes-59.txt).
CONTEXT_CLASSES = PASCALCONTEXT_CLASSES
#: (full list file, 59-class file) pairs, first found wins.
CLASS_LIST_FILES = (("labels.txt", "59_labels.txt"), ("classes-400.txt", "classes-59.txt"))
#: Task names that the full list spells differently (PASCALContextSegDataLayer.setup).
RENAMED = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}


def read_class_list(path: Path) -> dict[int, str]:
    """``id: name`` lines -> {id: name without spaces} (``label.replace(' ', '')`` upstream)."""
    if not path.is_file():
        raise MissingFileError(path, "class list not found")
    classes = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, name = line.partition(":")
        if not sep or not key.strip().isdigit():
            raise DatasetError(path, f"line {number}: expected 'id: name', got {line!r}")
        classes[int(key)] = name.replace(" ", "")
    return classes


def context_label_table(full: dict[int, str], task: dict[int, str], where: Path) -> np.ndarray:
    """Lookup table: full-list id -> 59-class task id (0 background for every other id)."""
    task = {i: name for i, name in task.items() if i != 0}   # classes-59.txt lists 0: background
    expected = {i: name.replace(" ", "") for i, name in enumerate(CONTEXT_CLASSES) if i}
    if task != expected:
        raise DatasetError(where, "the 59-class list is not the task's 59 classes in model order")
    by_name = {name: i for i, name in full.items()}
    table = np.zeros(max(full) + 1, dtype=np.uint8)
    for task_id, name in task.items():
        full_name = RENAMED.get(name, name)
        if full_name not in by_name:
            raise DatasetError(where, f"class {full_name!r} is not in the full label list")
        table[by_name[full_name]] = task_id
    return table


def _is_context(folder: Path) -> bool:
    return has_dirs(folder, "trainval") and not has_dirs(folder, "JPEGImages")


def _is_voc2010(folder: Path) -> bool:
    return folder.name == "VOC2010" and has_dirs(folder, "JPEGImages", "ImageSets")


class PASCALContext(SegmentationDataset):
    """PASCAL-Context: ``PASCALContext(root, split="val")``; ``root`` holds (at any depth) the
    annotation folder (with ``trainval/``) and ``VOC2010/``, or give ``voc_root`` separately."""

    name = "pascalcontext"
    class_names = CONTEXT_CLASSES

    def __init__(self, root, split: str = "val", *, voc_root=None, class_lists=None,
                 split_file=None):
        self.located = self.locate(root)
        self.voc_located = self.locate_voc2010(voc_root if voc_root is not None else root)
        self.voc_root = self.voc_located.path
        self.table = self._label_table(Path(class_lists) if class_lists else self.located.path)
        super().__init__(self.located.path, split, split_ids(
            split_file, self.voc_root / "ImageSets" / "Main" / f"{split}.txt"))

    @classmethod
    def locate(cls, root, split: str | None = None) -> Located:
        """The Context annotation folder (holding ``trainval/``) at or under ``root``."""
        return locate_one(root, _is_context, "PASCAL-Context",
                          "no PASCAL-Context folder (with trainval/) here or below")

    @classmethod
    def locate_voc2010(cls, root) -> Located:
        """The ``VOC2010`` folder (images and splits of PASCAL-Context) at or under ``root``."""
        return locate_one(root, _is_voc2010, "PASCAL VOC2010",
                          "no VOC2010 folder (with JPEGImages/ and ImageSets/) here or below; "
                          "pass voc_root=...")

    @staticmethod
    def _label_table(folder: Path) -> np.ndarray:
        for full_name, task_name in CLASS_LIST_FILES:
            if (folder / full_name).is_file() and (folder / task_name).is_file():
                return context_label_table(read_class_list(folder / full_name),
                                           read_class_list(folder / task_name), folder / task_name)
        names = " or ".join(f"{a} + {b}" for a, b in CLASS_LIST_FILES)
        raise MissingFileError(folder, f"no class lists ({names}); pass class_lists=... "
                                       "(e.g. the upstream data/pascal-context folder)")

    def image_path(self, image_id: str) -> Path:
        return self.voc_root / "JPEGImages" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.root / "trainval" / f"{image_id}.mat"

    def load_inputs(self, image_id: str) -> dict[str, np.ndarray]:
        """``PASCALContextSegDataLayer.load_image``: BGR minus its mean, CHW float32."""
        path = self.image_path(image_id)
        return {"data": preprocess_pascalcontext(read_image(path), name=str(path))}

    def load_label(self, image_id: str) -> np.ndarray:
        """``PASCALContextSegDataLayer.load_label``: ``LabelMap`` through the 59-class table."""
        path = self.label_path(image_id)
        raw = np.asarray(read_mat_field(path, "LabelMap"))
        if not np.issubdtype(raw.dtype, np.number):
            raise DatasetError(path, f"field 'LabelMap' is not numeric (dtype {raw.dtype})")
        check_raw_range(raw, 0, len(self.table) - 1, path)
        return self.table[raw.astype(np.intp)]
