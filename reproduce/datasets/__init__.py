"""Dataset readers of the FCN reference evaluation, exactly as the upstream data layers.

``get_dataset(name, root, split)`` opens one (``voc``, ``sbd``, ``siftflow``, ``nyud``,
``pascalcontext``); ``locate(name, root)`` says which folder it would read. Each dataset is a
``torch.utils.data.Dataset`` of ``Item(id, inputs, label)``.
"""
from __future__ import annotations

from port.errors import PortError

from .base import (
    VOID, DatasetError, DatasetNotFoundError, Item, LabelError, Located, MissingFileError,
    SegmentationDataset,
)
from .nyud import NYUD_CLASSES, NYUDv2
from .pascalcontext import CONTEXT_CLASSES, PASCALContext
from .siftflow import SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_SEMANTIC_CLASSES, SIFTFlow
from .voc import SBD, VOC, VOC_CLASSES

__all__ = [
    "VOID", "DatasetError", "DatasetNotFoundError", "Item", "LabelError", "Located",
    "MissingFileError", "SegmentationDataset", "VOC", "SBD", "SIFTFlow", "NYUDv2",
    "PASCALContext", "VOC_CLASSES", "SIFTFLOW_SEMANTIC_CLASSES", "SIFTFLOW_GEOMETRIC_CLASSES",
    "NYUD_CLASSES", "CONTEXT_CLASSES", "DATASETS", "UnknownDatasetError", "dataset_class",
    "get_dataset", "locate",
]

#: Dataset name -> reader class.
DATASETS: dict[str, type[SegmentationDataset]] = {
    cls.name: cls for cls in (VOC, SBD, SIFTFlow, NYUDv2, PASCALContext)
}


class UnknownDatasetError(PortError, KeyError):
    """A dataset name no reader has."""

    def __str__(self) -> str:      # KeyError's own str() would quote the message
        return str(self.args[0])


def dataset_class(name: str) -> type[SegmentationDataset]:
    """The reader class of dataset ``name`` (its class properties say what an evaluation of
    it needs: ``score_blobs``, ``label_key``, ``classes_for``, ``preprocessing``,
    ``reader_options``)."""
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def get_dataset(name: str, root, split: str | None = None, **options) -> SegmentationDataset:
    """Open dataset ``name`` at or under ``root``; ``split`` defaults to the papers' evaluation
    split (``seg11valid``, SBD ``val``, ``test``, Context ``val``); ``options`` go to the reader
    (e.g. ``inputs=`` for NYUD, ``task=`` for SIFT Flow, ``split_file=``)."""
    reader = dataset_class(name)
    return reader(root, **options) if split is None else reader(root, split, **options)


def locate(name: str, root, split: str | None = None, **options) -> Located:
    """Where dataset ``name`` is at or under ``root``; ``.message`` says which folder was found.
    ``options``: the reader's ``locate_options`` (VOC's ``year``)."""
    reader = dataset_class(name)
    return reader.locate(root, **options) if split is None else reader.locate(root, split, **options)
