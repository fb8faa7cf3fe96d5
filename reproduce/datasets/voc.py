"""PASCAL VOC and SBD, as ``VOCSegDataLayer`` and ``SBDDSegDataLayer`` read them (voc_layers.py).

VOC: ``<VOCyyyy>/JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette indices, 255
void), split ``ImageSets/Segmentation/<split>.txt``. The papers' validation split ``seg11valid``
(736 VOC2011 val images not in SBD train) is read from a VOC2011 folder (as the released
``val.prototxt`` does) or from VOC2012, which holds every VOC2011 image and label.

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


def _is_voc(folder: Path) -> bool:
    return has_dirs(folder, "JPEGImages", "SegmentationClass")


class VOC(SegmentationDataset):
    """PASCAL VOC segmentation: ``VOC(root, split="seg11valid")``; ``root`` is the year folder
    (holding ``JPEGImages/``) or any folder above it. ``split_file`` overrides the split's
    location (e.g. a downloaded ``seg11valid.txt``)."""

    name = "voc"
    class_names = VOC_CLASSES

    def __init__(self, root, split: str = "seg11valid", *, split_file=None):
        self.located = self.locate(root, split)
        folder = self.located.path
        super().__init__(folder, split, split_ids(
            split_file, folder / "ImageSets" / "Segmentation" / f"{split}.txt"))

    @classmethod
    def locate(cls, root, split: str = "seg11valid") -> Located:
        """The VOC year folder at or under ``root``; for several, the split's preferred year."""
        found = require_dirs(root, _is_voc, "no PASCAL VOC folder (with JPEGImages/ and "
                                            "SegmentationClass/) here or below")
        preference = _YEAR_PREFERENCE.get(split, ())
        ranked = sorted(found, key=lambda p: preference.index(p.name) if p.name in preference
                        else len(preference))
        note = (f"chose it among {len(found)} VOC folders for split {split!r}"
                if len(found) > 1 else "")
        return Located(f"PASCAL VOC ({ranked[0].name})", ranked[0], Path(root), note)

    @property
    def table_split(self) -> str:
        """``val`` read from a VOC2011 folder is ``voc2011-val``, the set of the CVPR paper's
        Table 1 (1111 images); VOC2012's ``val`` (1449) and every other split keep their name."""
        return "voc2011-val" if self.split == "val" and self.root.name == "VOC2011" else self.split

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
