"""SIFT Flow, as ``SIFTFlowSegDataLayer`` reads it (siftflow_layers.py).

Layout (the extracted SiftFlowDataset.zip plus the upstream split files):
``Images/spatial_envelope_256x256_static_8outdoorcategories/<id>.jpg``, ``SemanticLabels/...``
and ``GeoLabels/.../<id>.mat`` (field ``S``), ``<split>.txt``. Semantic labels are 0 (void) and
1..33; geometric -1 (void, first set to 0), 1..3. Both are cast to uint8 and shifted by -1, so the
void 0 wraps to 255. The test split has 200 images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# Model output order: data/sift-flow/classes.txt, 1..33 and 1..3 there.
from port.models.classes import SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_SEMANTIC_CLASSES
from port.models.preprocess import preprocess_siftflow

from .base import (
    DatasetError, Located, SegmentationDataset, check_raw_range, locate_one,
    has_dirs, read_image, read_mat_field, split_ids,
)

__all__ = ["SIFTFLOW_SEMANTIC_CLASSES", "SIFTFLOW_GEOMETRIC_CLASSES", "SIFTFlow"]

#: The one sub-folder of Images/, SemanticLabels/ and GeoLabels/ (siftflow_layers.py).
SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"
#: task -> (label folder, classes, the void value in the .mat before the shift).
_TASKS = {
    "sem": ("SemanticLabels", SIFTFLOW_SEMANTIC_CLASSES, 0),
    "geo": ("GeoLabels", SIFTFLOW_GEOMETRIC_CLASSES, -1),
}


def _is_siftflow(folder: Path) -> bool:
    return has_dirs(folder, "Images", "SemanticLabels", "GeoLabels")


class SIFTFlow(SegmentationDataset):
    """SIFT Flow: ``SIFTFlow(root, split="test", task="sem")``; ``task`` picks the label the
    item carries, named as the net's label blob: ``"sem"`` (33 classes) or ``"geo"`` (3)."""

    name = "siftflow"
    score_blobs = ("score_sem", "score_geo")

    @classmethod
    def label_key(cls, output: str) -> str:
        """``score_sem`` against ``sem``, ``score_geo`` against ``geo`` (the data layer's two
        label tops); any other blob against ``sem``."""
        suffix = output.rsplit("_", 1)[-1]
        return suffix if suffix in _TASKS else "sem"

    @classmethod
    def classes_for(cls, label_key: str) -> tuple[str, ...]:
        return tuple(_TASKS[label_key][1])

    def __init__(self, root, split: str = "test", *, task: str = "sem", split_file=None):
        if task not in _TASKS:
            raise ValueError(f"SIFTFlow: task must be one of {sorted(_TASKS)}, got {task!r}")
        self.task = self.label_name = task
        self.class_names = _TASKS[task][1]
        self.located = self.locate(root)
        folder = self.located.path
        super().__init__(folder, split, split_ids(
            split_file, folder / f"{split}.txt"))

    @classmethod
    def locate(cls, root, split: str | None = None) -> Located:
        """The SIFT Flow folder (with Images/, SemanticLabels/, GeoLabels/) at or under ``root``."""
        return locate_one(root, _is_siftflow, "SIFT Flow",
                          "no SIFT Flow folder (with Images/, SemanticLabels/ and GeoLabels/) here "
                          "or below")

    def image_path(self, image_id: str) -> Path:
        return self.root / "Images" / SUBDIR / f"{image_id}.jpg"

    def label_path(self, image_id: str, task: str | None = None) -> Path:
        return self.root / _TASKS[task or self.task][0] / SUBDIR / f"{image_id}.mat"

    def load_inputs(self, image_id: str) -> dict[str, np.ndarray]:
        """``SIFTFlowSegDataLayer.load_image``: BGR minus the SIFT Flow mean, CHW float32."""
        path = self.image_path(image_id)
        return {"data": preprocess_siftflow(read_image(path), name=str(path))}

    def load_label(self, image_id: str) -> np.ndarray:
        """``SIFTFlowSegDataLayer.load_label`` for this dataset's task."""
        return self.load_task_label(image_id, self.task)

    def labels(self, image_id: str) -> dict[str, np.ndarray]:
        """Both label maps, ``{"sem": ..., "geo": ...}``, as the data layer's two label tops."""
        return {task: self.load_task_label(image_id, task) for task in _TASKS}

    def load_task_label(self, image_id: str, task: str) -> np.ndarray:
        """``load_label(idx, label_type)``: ``S`` (geo -1 -> 0), uint8, minus 1 (0 -> 255)."""
        if task not in _TASKS:
            raise ValueError(f"SIFTFlow: task must be one of {sorted(_TASKS)}, got {task!r}")
        path = self.label_path(image_id, task)
        _, classes, void = _TASKS[task]
        raw = np.asarray(read_mat_field(path, "S"))
        if not np.issubdtype(raw.dtype, np.number):
            raise DatasetError(path, f"field 'S' is not numeric (dtype {raw.dtype})")
        check_raw_range(raw, void, len(classes), path)
        label = raw.copy()
        label[label == -1] = 0
        label = label.astype(np.uint8)
        label -= 1  # rotate labels so classes start at 0 and void is 255, as upstream
        return label
