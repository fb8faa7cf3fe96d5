"""PASCAL VOC and SBD, as ``VOCSegDataLayer`` and ``SBDDSegDataLayer`` read them (voc_layers.py).

VOC: ``<VOCyyyy>/JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette indices, 255
void), split ``ImageSets/Segmentation/<split>.txt``. The papers' validation split ``seg11valid``
(736 VOC2011 val images not in SBD train) is read from a VOC2011 folder (as the released
``val.prototxt`` does) or from VOC2012, which holds every VOC2011 image and label.

Which year a folder is, is this reader's rule (``VOC.year_of``: ``VOC2011`` is 2011), and so is
which folder a split reads when ``--data`` holds several: the year asked for (``year=``, a
recipe's: FCN-GoogLeNet's is 2011), else the split's preference (``seg11valid``: VOC2011 first,
as upstream's ``voc_dir``; ``val``: VOC2012 first); a year asked for and absent falls back to the
preference, and the reader's ``year`` says which it read.

SBD: ``dataset/img/<id>.jpg``, ``dataset/cls/<id>.mat`` field ``GTcls.Segmentation``,
``dataset/<split>.txt``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from port.models.classes import VOC_CLASSES  # model output order, data/pascal/classes.txt
from port.models.preprocess import preprocess_sbd, preprocess_voc

from .base import (
    DatasetError, Located, SegmentationDataset, check_label, locate_one, require_dirs,
    has_dirs, read_image, read_mat_field, split_ids,
)

__all__ = ["VOC_CLASSES", "VOC", "SBD"]

#: Which VOC year folder to prefer for a split, first choice first.
_YEAR_PREFERENCE = {"seg11valid": ("VOC2011", "VOC2012"), "val": ("VOC2012", "VOC2011")}
#: A VOC year folder's name: ``VOC`` and the year (the devkit's ``VOCdevkit/VOC2012``).
_FOLDER_PREFIX = "VOC"


def _is_voc(folder: Path) -> bool:
    return has_dirs(folder, "JPEGImages", "SegmentationClass")


class VOC(SegmentationDataset):
    """PASCAL VOC segmentation: ``VOC(root, split="seg11valid")``; ``root`` is the year folder
    (holding ``JPEGImages/``) or any folder above it. ``split_file`` overrides the split's
    location (e.g. a downloaded ``seg11valid.txt``); ``year`` (``"2011"``, ``2011`` or
    ``"VOC2011"``) asks for that year's folder when ``root`` holds several (:meth:`locate`)."""

    name = "voc"
    class_names = VOC_CLASSES
    locate_options = ("year",)

    def __init__(self, root, split: str = "seg11valid", *, split_file=None, year=None):
        self.located = self.locate(root, split, year=year)
        folder = self.located.path
        super().__init__(folder, split, split_ids(
            split_file, folder / "ImageSets" / "Segmentation" / f"{split}.txt"))

    @staticmethod
    def year_of(folder) -> str | None:
        """The VOC year of a folder, from its name as the devkit unpacks it (``VOC2011`` ->
        ``"2011"``); None for a folder named otherwise (a year not known)."""
        name = Path(folder).name
        year = name[len(_FOLDER_PREFIX):]
        return year if name.startswith(_FOLDER_PREFIX) and len(year) == 4 and year.isdigit() else None

    @classmethod
    def locate(cls, root, split: str = "seg11valid", *, year=None) -> Located:
        """The VOC year folder at or under ``root``; for several, the one of ``year`` when
        asked and present, else the split's preferred year. A year asked for and not there: the
        preference's folder (the run goes on with it), and the note says so."""
        found = require_dirs(root, _is_voc, "no PASCAL VOC folder (with JPEGImages/ and "
                                            "SegmentationClass/) here or below")
        wanted = None if year is None else str(year).upper().removeprefix(_FOLDER_PREFIX)
        preference = _YEAR_PREFERENCE.get(split, ())
        ranked = sorted(found, key=lambda p: (wanted is not None and cls.year_of(p) != wanted,
                                              preference.index(p.name) if p.name in preference
                                              else len(preference)))
        chosen = ranked[0]
        got = wanted is not None and cls.year_of(chosen) == wanted
        notes = []
        if len(found) > 1:
            notes.append(f"chose it among {len(found)} VOC folders for split {split!r}"
                         + (f" (VOC{wanted} asked for)" if got else ""))
        if wanted is not None and not got:
            notes.append(f"VOC{wanted} asked for: no {_FOLDER_PREFIX}{wanted} folder here or "
                         f"below, reading {chosen.name}")
        return Located(f"PASCAL VOC ({chosen.name})", chosen, Path(root), "; ".join(notes))

    @property
    def year(self) -> str | None:
        """The VOC year of the folder read (:meth:`year_of`)."""
        return self.year_of(self.root)

    @property
    def table_split(self) -> str:
        """``val`` read from a VOC2011 folder is ``voc2011-val``, the set of the CVPR paper's
        Table 1 (1111 images); VOC2012's ``val`` (1449) and every other split keep their name."""
        return "voc2011-val" if self.split == "val" and self.year == "2011" else self.split

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def load_inputs(self, image_id: str) -> dict[str, np.ndarray]:
        """``VOCSegDataLayer.load_image``: BGR minus the VOC mean, CHW float32."""
        path = self.image_path(image_id)
        return {"data": preprocess_voc(read_image(path), name=str(path))}

    def load_label(self, image_id: str) -> np.ndarray:
        """``VOCSegDataLayer.load_label``: the PNG's palette indices as uint8, 255 void."""
        path = self.label_path(image_id)
        return check_label(read_image(path, channels=None), self.n_classes, path)


def _is_sbd(folder: Path) -> bool:
    return has_dirs(folder, "img", "cls")


class SBD(SegmentationDataset):
    """The Semantic Boundaries Dataset (Hariharan et al.): ``SBD(root, split="val")``; ``root``
    is ``benchmark_RELEASE/dataset`` (holding ``img/`` and ``cls/``) or any folder above it."""

    name = "sbd"
    class_names = VOC_CLASSES

    def __init__(self, root, split: str = "val", *, split_file=None):
        self.located = self.locate(root)
        folder = self.located.path
        super().__init__(folder, split, split_ids(split_file, folder / f"{split}.txt"))

    @classmethod
    def locate(cls, root, split: str | None = None) -> Located:
        """The SBD ``dataset/`` folder at or under ``root``."""
        return locate_one(root, _is_sbd, "SBD",
                          "no SBD dataset folder (with img/ and cls/) here or below")

    def image_path(self, image_id: str) -> Path:
        return self.root / "img" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.root / "cls" / f"{image_id}.mat"

    def load_inputs(self, image_id: str) -> dict[str, np.ndarray]:
        """``SBDDSegDataLayer.load_image``: as VOC."""
        path = self.image_path(image_id)
        return {"data": preprocess_sbd(read_image(path), name=str(path))}

    def load_label(self, image_id: str) -> np.ndarray:
        """``SBDDSegDataLayer.load_label``: ``mat['GTcls'][0]['Segmentation'][0]`` as uint8."""
        path = self.label_path(image_id)
        gtcls = read_mat_field(path, "GTcls")
        try:
            raw = np.asarray(gtcls[0]["Segmentation"][0])
        except (IndexError, ValueError, KeyError) as exc:
            raise DatasetError(path, f"GTcls has no Segmentation field ({exc})") from exc
        return check_label(raw, self.n_classes, path)
