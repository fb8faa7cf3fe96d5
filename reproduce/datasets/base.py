"""What every dataset reader shares: the item type, errors, file readers and folder search.

The readers reproduce the upstream Python data layers of shelhamer/fcn.berkeleyvision.org
(``voc_layers.py``, ``siftflow_layers.py``, ``nyud_layers.py``, ``pascalcontext_layers.py``) for
evaluation: images in split-file order, one at a time at native size, preprocessed by
``port.models.preprocess``, labels with void 255. They are ``torch.utils.data.Dataset``\\ s, so a
``DataLoader`` with workers decodes in parallel (batch size 1, or ``default_collate`` on images
of one size: nothing is resized or padded).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, NamedTuple, Sequence

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError
import torch.utils.data
from PIL import Image

from port.errors import PortError
from port.models.preprocess import PREPROCESSORS

#: The ignore label of every FCN data layer (VOC's void; the shifted 0 of SIFT Flow and NYUD).
VOID = 255
#: How many folder levels below the given root ``locate`` searches.
SEARCH_DEPTH = 4


class DatasetError(PortError):
    """A dataset file or folder that is not what the reader expects; ``path`` names it."""

    def __init__(self, path, message: str):
        self.path = Path(path)
        super().__init__(f"{path}: {message}")


class MissingFileError(DatasetError, FileNotFoundError):
    """A file the split needs does not exist."""


class LabelError(DatasetError):
    """A label map with values outside the classes and the void label, or the wrong shape."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """``locate`` found no dataset folder under the given root."""


class Item(NamedTuple):
    """One evaluation sample: ``(id, inputs, label)``.

    ``inputs`` maps the net's input blob names (``data``; NYUD ``color``/``hha``/``depth``) to
    CxHxW float32 arrays; ``label`` is the HxW uint8 class map with ``VOID`` = 255.
    """

    id: str
    inputs: dict[str, np.ndarray]
    label: np.ndarray


@dataclass(frozen=True)
class Located:
    """Where ``locate`` found a dataset: ``path`` (the dataset folder) under ``requested``."""

    dataset: str
    path: Path
    requested: Path
    note: str = ""

    @property
    def message(self) -> str:
        where = "" if self.path == self.requested else f" (under {self.requested})"
        extra = f"; {self.note}" if self.note else ""
        return f"found {self.dataset} at {self.path}{where}{extra}"


def find_dirs(root, is_match: Callable[[Path], bool], depth: int = SEARCH_DEPTH) -> list[Path]:
    """Folders at and below ``root`` (breadth first, shallowest first) for which ``is_match``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(root, "not a folder; give the dataset's folder or any "
                                         "folder above it (--data DIR)")
    found, queue = [], deque([(root, 0)])
    while queue:
        folder, level = queue.popleft()
        if is_match(folder):
            found.append(folder)
            continue
        if level < depth:
            children = sorted(p for p in folder.iterdir()
                              if p.is_dir() and not p.name.startswith("."))
            queue.extend((child, level + 1) for child in children)
    return found


def require_dirs(root, is_match: Callable[[Path], bool], missing: str) -> list[Path]:
    """:func:`find_dirs`, raising ``DatasetNotFoundError(root, missing)`` when none matches."""
    found = find_dirs(root, is_match)
    if not found:
        raise DatasetNotFoundError(root, missing)
    return found


def locate_one(root, is_match: Callable[[Path], bool], dataset: str, missing: str) -> Located:
    """The shallowest folder at or under ``root`` for which ``is_match``, as ``dataset``."""
    return Located(dataset, require_dirs(root, is_match, missing)[0], Path(root))


def has_dirs(folder: Path, *names: str) -> bool:
    """Whether ``folder`` holds every sub-folder in ``names``."""
    return all((folder / name).is_dir() for name in names)


def read_split(path: Path, hint: str = "") -> list[str]:
    """Image ids of a split file, one a line, as ``open(split_f).read().splitlines()`` upstream."""
    if not path.is_file():
        raise MissingFileError(path, f"split file not found{hint}")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(path, "split file lists no images")
    return ids


#: What a missing split file's error suggests: the command line's option (a Python caller
#: reads ``split_file=`` in the reader's signature; issue 19.13: a command-line user was
#: told of the Python argument).
SPLIT_FILE_HINT = " (give a file of image ids, one a line, with --split FILE)"


def split_ids(split_file, default: Path, hint: str = SPLIT_FILE_HINT) -> list[str]:
    """The ids of ``split_file`` when the user gave one, else of the dataset's own ``default``
    split file (:func:`read_split`). ``split_file`` may be several files (a sequence of
    paths): their ids joined in order, as id lists, not bytes (a file without a final newline
    must not fuse its last id with the next file's first)."""
    if not split_file:
        return read_split(default, hint)
    files = [split_file] if isinstance(split_file, (str, Path)) else list(split_file)
    return [i for f in files for i in read_split(Path(f), hint)]


def _require(path: Path) -> Path:
    if not path.is_file():
        raise MissingFileError(path, "file not found")
    return path


def read_image(path: Path, channels: int | None = 3) -> np.ndarray:
    """Decoded image as ``np.array(Image.open(path))`` gives it (HxWxC, or HxW if ``None``)."""
    try:
        with Image.open(_require(path)) as im:
            array = np.array(im)
    except MissingFileError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's unreadable / truncated file errors
        raise DatasetError(path, f"not a readable image ({type(exc).__name__}: {exc})") from exc
    want = 2 if channels is None else 3
    if array.ndim != want or (channels is not None and array.shape[2] != channels):
        shape = "HxW" if channels is None else f"HxWx{channels}"
        raise DatasetError(path, f"expected an {shape} image, decoded shape {array.shape}")
    return array


def read_mat_field(path: Path, field: str) -> np.ndarray:
    """``scipy.io.loadmat(path)[field]``; a missing field raises naming it."""
    try:
        mat = scipy.io.loadmat(_require(path))
    except (MatReadError, ValueError, TypeError, IndexError, OSError) as exc:
        # scipy reports a truncated or foreign file with any of these.
        raise DatasetError(path, f"not a readable MATLAB file ({type(exc).__name__}: {exc})") \
            from exc
    if field not in mat:
        fields = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(path, f"no field {field!r} (fields: {fields})")
    return mat[field]


def check_raw_range(raw: np.ndarray, low: int, high: int, path: Path) -> None:
    """Raise LabelError unless every value is an integer in ``[low, high]``."""
    bad = (raw < low) | (raw > high) | (raw != np.round(raw))
    if raw.ndim != 2 or bad.any():
        found = np.unique(raw[bad])[:8].tolist() if raw.ndim == 2 else f"shape {raw.shape}"
        raise LabelError(path, f"expected an HxW map of integers in [{low}, {high}], "
                               f"found {found}")


def check_label(label: np.ndarray, n_classes: int, path: Path) -> np.ndarray:
    """The label as uint8 if every value is a class in ``[0, n_classes)`` or ``VOID``; else
    LabelError (checked before the cast, so no value wraps into range)."""
    if label.ndim != 2:
        raise LabelError(path, f"expected an HxW label map, got shape {label.shape}")
    bad = ((label < 0) | (label >= n_classes) | (label != np.round(label))) & (label != VOID)
    if bad.any():
        raise LabelError(path, f"label values {np.unique(label[bad])[:8].tolist()} are outside "
                               f"the {n_classes} classes [0, {n_classes}) and void {VOID}")
    return label.astype(np.uint8, copy=False)


class SegmentationDataset(torch.utils.data.Dataset):
    """Base of the readers: ids in split order, ``item(id)`` and ``dataset[i]`` give an Item.

    Subclasses set ``name``, ``class_names`` and implement ``load_inputs`` and ``load_label``.
    What an evaluation needs to know of a dataset before it is opened is a class property
    (``score_blobs``, ``label_key``, ``classes_for``, ``preprocessing``, ``reader_options``):
    ``reproduce.evaluation`` builds every evaluation from them, never from a dataset's name.
    """

    name: ClassVar[str] = ""
    class_names: ClassVar[tuple[str, ...]] = ()
    ignore_label: ClassVar[int] = VOID
    label_name: str = "label"
    #: The output blobs a net of this dataset is scored on when none are named (upstream
    #: ``score.seg_tests(..., layer='score')``).
    score_blobs: ClassVar[tuple[str, ...]] = ("score",)
    #: The reader options that choose which folder it reads (``locate`` takes them too, so
    #: that the split list is looked for in that folder): VOC's ``year``.
    locate_options: ClassVar[tuple[str, ...]] = ()

    @property
    def year(self) -> str | None:
        """The release year of the folder read, where a dataset has several (VOC); None."""
        return None

    @property
    def table_split(self) -> str:
        """The name ``port.models.tables`` gives this list's split (where its published numbers
        are filed): the split's own name."""
        return self.split

    @classmethod
    def label_key(cls, output: str) -> str:
        """The label map (the data layer's label top) that output blob ``output`` is scored
        against: the one ``label``."""
        return "label"

    @classmethod
    def classes_for(cls, label_key: str) -> tuple[str, ...]:
        """The class names of label map ``label_key``, in the net's output order."""
        return tuple(cls.class_names)

    @classmethod
    def preprocessing(cls, input_blobs: Sequence[str]) -> dict[str, Callable[..., np.ndarray]]:
        """{net input blob: its data layer's preprocessing} for a net (e.g. a user's
        prototxt) with these inputs: the dataset's one image on ``data``."""
        return {"data": PREPROCESSORS[cls.name]}

    @classmethod
    def reader_options(cls, input_blobs: Sequence[str],
                       preprocess: Sequence[Callable[..., np.ndarray]]) -> dict[str, Any]:
        """Keyword arguments the reader needs to feed a net whose ``input_blobs`` take
        ``preprocess`` (aligned): none, one image."""
        return {}

    def __init__(self, root: Path, split: str, ids: Iterable[str]):
        self.root = Path(root)
        self.split = split
        self.ids = list(ids)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Item:
        return self.item(self.ids[index])

    def item(self, image_id: str, *, all_labels: bool = False) -> Item:
        """The preprocessed inputs and the label of one image, shapes checked against each other.

        With ``all_labels`` the label is ``labels(image_id)``, a dict by label blob name (both
        SIFT Flow tasks in one pass); otherwise the HxW map of this dataset's ``label_name``.
        """
        inputs = self.load_inputs(image_id)
        labels = (self.labels(image_id) if all_labels
                  else {self.label_name: self.load_label(image_id)})
        for name, label in labels.items():
            for blob, array in inputs.items():
                if array.shape[-2:] != label.shape:
                    raise LabelError(self.label_path(image_id),
                                     f"label {name!r} is {label.shape[0]}x{label.shape[1]} but "
                                     f"input {blob!r} is {array.shape[-2]}x{array.shape[-1]}")
        return Item(image_id, inputs, labels if all_labels else labels[self.label_name])

    def labels(self, image_id: str) -> dict[str, np.ndarray]:
        """Every label map of the image by the net's label blob name (one, except SIFT Flow)."""
        return {self.label_name: self.load_label(image_id)}

    def load_inputs(self, image_id: str) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_label(self, image_id: str) -> np.ndarray:
        raise NotImplementedError

    def label_path(self, image_id: str) -> Path:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"images={len(self)})")
