"""NYUDv2 in the authors' layout, as ``NYUDSegDataLayer`` reads it (nyud_layers.py).

Layout (the released nyud.tar.gz, after Gupta et al.): ``data/images/img_<id>.png`` (colour),
``data/depth/img_<id>.png`` (depth), ``data/hha/img_<id>.png`` (HHA),
``segmentation/img_<id>.mat`` (field ``segmentation``: 0 void, 1..40), ``<split>.txt``. Labels
are cast to uint8 and shifted by -1 (void 0 -> 255). The test split has 654 images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from port.models.classes import NYUD_CLASSES  # the 40-class task, data/nyud/classes.txt
from port.models.preprocess import preprocess_nyud_color, preprocess_nyud_depth, preprocess_nyud_hha

from .base import (
    DatasetError, Located, SegmentationDataset, check_raw_range, locate_one,
    read_image, read_mat_field, split_ids,
)

__all__ = ["NYUD_CLASSES", "NYUD_INPUTS", "NYUDv2", "inputs_for"]

#: Modality (data layer top) -> (sub-folder of data/, channels of the PNG or None for HxW, preprocessing).
NYUD_INPUTS: dict[str, tuple[str, int | None, Callable[..., np.ndarray]]] = {
    "color": ("images", 3, preprocess_nyud_color),
    "hha": ("hha", 3, preprocess_nyud_hha),
    "depth": ("depth", None, preprocess_nyud_depth),
}


def _is_nyud(folder: Path) -> bool:
    return (folder / "data" / "images").is_dir() and (folder / "segmentation").is_dir()


def _input_map(inputs) -> dict[str, str]:
    """``inputs`` as {net blob name: modality}; a plain sequence names blobs by modality."""
    pairs = dict(inputs) if isinstance(inputs, Mapping) else {name: name for name in inputs}
    unknown = [m for m in pairs.values() if m not in NYUD_INPUTS]
    if unknown or not pairs:
        raise ValueError(f"NYUDv2: inputs must name modalities among {list(NYUD_INPUTS)}, "
                         f"got {inputs!r}")
    return pairs


def inputs_for(blobs, preprocessors) -> dict[str, str]:
    """{blob: modality} for a net whose input ``blobs`` take ``preprocessors`` (aligned, as
    ``port.models`` ``ModelMeta.inputs``/``.preprocess``): each modality is known by its
    ``port.models.preprocess`` function."""
    by_function = {fn: modality for modality, (_, _, fn) in NYUD_INPUTS.items()}
    unknown = [getattr(fn, "__name__", fn) for fn in preprocessors if fn not in by_function]
    if unknown or len(blobs) != len(preprocessors):
        raise ValueError(f"NYUDv2: no NYUD modality for preprocessing {unknown} of blobs {blobs}")
    return {blob: by_function[fn] for blob, fn in zip(blobs, preprocessors)}


class NYUDv2(SegmentationDataset):
    """NYUDv2: ``NYUDv2(root, split="test", inputs=("color",))``.

    ``inputs`` lists the modalities to load (``color``, ``hha``, ``depth``: the data layer's
    ``tops`` minus ``label``), each under its own name, or maps the net's input blob names to
    modalities where they differ: the single-stream nets name their one input ``data``
    (``{"data": "hha"}`` for nyud-fcn32s-hha), the fusion nets ``color``/``depth``/``hha``.
    """

    name = "nyud"
    class_names = NYUD_CLASSES

    @classmethod
    def preprocessing(cls, input_blobs) -> dict[str, Callable[..., np.ndarray]]:
        """Each input blob named after a modality (``color``, ``hha``, ``depth``) takes that
        modality's preprocessing."""
        return {blob: NYUD_INPUTS[blob][2] for blob in input_blobs if blob in NYUD_INPUTS}

    @classmethod
    def reader_options(cls, input_blobs, preprocess) -> dict:
        """``inputs=``: each input blob's modality, known by its preprocessing (``inputs_for``)."""
        return {"inputs": inputs_for(input_blobs, preprocess)}

    def __init__(self, root, split: str = "test", *, inputs=("color",), split_file=None):
        self.inputs = _input_map(inputs)
        self.located = self.locate(root)
        folder = self.located.path
        super().__init__(folder, split, split_ids(
            split_file, folder / f"{split}.txt"))

    @classmethod
    def locate(cls, root, split: str | None = None) -> Located:
        """The NYUD folder (holding data/images/ and segmentation/) at or under ``root``."""
        return locate_one(root, _is_nyud, "NYUDv2",
                          "no NYUDv2 folder (with data/images/ and segmentation/) here or below")

    def input_path(self, modality: str, image_id: str) -> Path:
        return self.root / "data" / NYUD_INPUTS[modality][0] / f"img_{image_id}.png"

    def label_path(self, image_id: str) -> Path:
        return self.root / "segmentation" / f"img_{image_id}.mat"

    def load_inputs(self, image_id: str) -> dict[str, np.ndarray]:
        """``NYUDSegDataLayer.load_image`` / ``load_hha`` / ``load_depth`` for each input."""
        arrays = {}
        for blob, modality in self.inputs.items():
            path = self.input_path(modality, image_id)
            _, channels, preprocess = NYUD_INPUTS[modality]
            arrays[blob] = preprocess(read_image(path, channels=channels), name=str(path))
        return arrays

    def load_label(self, image_id: str) -> np.ndarray:
        """``NYUDSegDataLayer.load_label``: ``segmentation`` as uint8, minus 1 (0 -> 255)."""
        path = self.label_path(image_id)
        raw = np.asarray(read_mat_field(path, "segmentation"))
        if not np.issubdtype(raw.dtype, np.number):
            raise DatasetError(path, f"field 'segmentation' is not numeric (dtype {raw.dtype})")
        check_raw_range(raw, 0, self.n_classes, path)
        label = raw.astype(np.uint8)
        label -= 1  # rotate labels: classes 0..39, void 255
        return label
