"""Resolving what ``python -m reproduce`` names: weights (a released caffemodel fetched,
verified and converted once into the cache, or the user's file), datasets (located under any
parent folder, or downloaded), upstream files (a local copy or the registry), a user's net from
its prototxt and weights, and the item loaders and identities an evaluation is built from.

The evaluation loop itself is :mod:`reproduce.harness`; this module only finds things.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from port.errors import PortError
from port.load import load_net_and_weights
from port.run.devices import DeviceError, check_device
from port.weights import SOURCE_NAME, SOURCE_SHA256, kind_of, read_metadata, sha256_file
from port.hub import download, pretrained, registry
from reproduce import splits, verdict
from reproduce.datasets import (DatasetNotFoundError, MissingFileError, dataset_class, get_dataset,
                                locate)


def _note(message: str) -> None:
    """One line above the progress bar (tqdm keeps the bar intact)."""
    tqdm.write(message)

#: The folder above the package: a source checkout's root, whose ``../shared/upstream`` a
#: developer's copy of upstream may be (read only; nothing is ever written under it).
SOURCE_ROOT = Path(__file__).resolve().parents[1]
#: Where upstream split files and the demo are looked for before downloading them.
ENV_UPSTREAM = "FCN_PORT_UPSTREAM"
#: Registry dataset archives to fetch for each dataset reader, when no data is given.
DATASET_ARCHIVES = {"voc": ("voc2012-trainval",), "sbd": ("sbd",), "siftflow": ("siftflow",),
                    "nyud": ("nyud",), "pascalcontext": ("pascal-context", "voc2010-trainval")}


class ResolveError(PortError):
    """A model, weights file or dataset the command line names that cannot be used."""


# Where a run's outputs go by default: relative to the working directory (reports, runs,
# downloaded datasets) or the per-user cache (weights downloads and conversions, the demo's
# files: ``registry.cache_dir``), never inside the installed package, which may be read-only
# or shared by several users.
def default_data_root() -> Path:
    """Where a dataset is looked for, and downloaded when absent, without ``--data``:
    ``./data`` (its archives in ``./data/archives``)."""
    return Path.cwd() / "data"


def default_report_dir(name: str) -> Path:
    """A report folder without ``--out``: ``./reports/<name>``."""
    return Path.cwd() / "reports" / name.replace("_", "-")


def default_run_dir(name: str) -> Path:
    """A training run's folder without ``--out``: ``./runs/<name>`` (where ``make train-*``
    puts it, so a later stage's ``--init auto`` finds the earlier stage beside it)."""
    return Path.cwd() / "runs" / name.replace("_", "-")


def upstream_dir() -> Path | None:
    """A local copy of the upstream repository: $FCN_PORT_UPSTREAM, else ../shared/upstream."""
    env = os.environ.get(ENV_UPSTREAM)
    for candidate in ([Path(env)] if env else []) + [SOURCE_ROOT.parent / "shared" / "upstream"]:
        if candidate.is_dir():
            return candidate
    return None


def upstream_file(relpath: str, artifact: str) -> Path:
    """An upstream file from the local copy, else fetched (verified) through the registry."""
    local = upstream_dir()
    if local is not None and (local / relpath).is_file():
        return local / relpath
    return download.fetch(artifact)


@dataclass(frozen=True)
class Weights:
    """The weights a run uses: the file loaded, the SHA-256 of the caffemodel behind it, where
    it came from, and whether it is the model's released caffemodel (``released``: fetched
    and verified through the registry, or a file matching the registry's digests)."""

    path: Path
    sha256: str
    origin: str
    released: bool = False


def _is_released(builder: str, source: Path, sha256: str) -> bool:
    """Whether a caffemodel is ``builder``'s released one: its SHA-256 is known to the
    registry (``verdict.released_weights``), or it matches a published MD5/SHA-1 record."""
    if verdict.released_weights(builder, sha256):
        return True
    try:
        known = registry.caffemodel_for(builder).known
    except LookupError:
        return False
    others = [d.as_dict() for d in known if not d.sha256]
    if not others:
        return False
    actual = download.hash_file(source, sorted({a for d in others for a in d}))
    return any(all(actual[a] == v for a, v in d.items()) for d in others)


def resolve_weights(builder: str, weights: str | Path | None,
                    cache: Path | None = None) -> Weights:
    """A converted ``.safetensors`` as is; a ``.caffemodel``/``.h5`` converted once into the
    cache; nothing: the registry's released caffemodel, fetched, verified and converted
    (both: ``port.hub.pretrained``, the builders' ``weights="released"`` too)."""
    if weights is None:   # the command line's own hint (--weights FILE) if the download fails
        got = pretrained.released_weights(builder, cache, instead=None)
        return Weights(got.path, got.sha256, f"released caffemodel {got.source}", True)
    source = Path(weights)
    if not source.is_file():
        raise ResolveError(f"{source}: weights file not found")
    if kind_of(source) == "safetensors":
        meta = read_metadata(source)
        recorded = meta.get(SOURCE_SHA256)
        sha = recorded or sha256_file(source)
        return Weights(source, sha, f"converted file ({meta.get(SOURCE_NAME, '?')})",
                       bool(recorded) and verdict.released_weights(builder, recorded))
    got = pretrained.converted(source, builder, cache)
    return Weights(got.path, got.sha256, f"given caffemodel {source}",
                   _is_released(builder, source, got.sha256))


def load_item(dataset: Any, item_id: str) -> tuple[str, dict, dict]:
    """A reader's item as ``(id, inputs, labels)``, ``labels`` every label map of the image by
    the data layer's label top (``SegmentationDataset.item(all_labels=True)``: ``label``;
    SIFT Flow ``sem`` and ``geo``, for both heads), which each ``Task.label`` picks from."""
    item = dataset.item(item_id, all_labels=True)
    return item.id, item.inputs, item.label


def load_item_with_label_blob(dataset: Any, item_id: str) -> tuple[str, dict, dict]:
    """An item whose label also feeds the net's ``label`` input (1 x H x W float, as Caffe's
    data layer gives it to a SoftmaxWithLoss)."""
    item_id, inputs, labels = load_item(dataset, item_id)
    label = labels[dataset.label_name]
    return item_id, {**inputs, "label": label[None].astype(np.float32)}, labels


def rank_device(name: str, local_rank: int = 0) -> torch.device:
    """The device a process runs on for ``--device name``: ``cuda:LOCAL_RANK`` (set as the
    current one) or the CPU, checked up front (``port.run.devices.check_device``)."""
    try:
        device = check_device(f"cuda:{local_rank}" if name == "cuda" else name)
    except DeviceError as err:
        raise ResolveError(f"--device {name}: {err}") from err
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


_PROBE_SIZE = (2, 3)


def _probe(fn: Callable[..., np.ndarray]) -> np.ndarray:
    """``fn`` on a fixed small image: a colour one, else (depth) a one-channel integer map."""
    ramp = np.arange(math.prod(_PROBE_SIZE) * 3, dtype=np.uint8)
    try:
        return fn(ramp.reshape(*_PROBE_SIZE, 3))
    except ValueError:
        return fn(ramp[:math.prod(_PROBE_SIZE)].reshape(_PROBE_SIZE).astype(np.uint16) + 1)


def preprocessing_identity(dataset: str, functions: Sequence[Callable[..., np.ndarray]]) -> str:
    """Names and a digest of what the preprocessing does to a probe image: a changed mean,
    channel order or scale changes it, so ``--resume`` can refuse a checkpoint made with it."""
    digest = hashlib.sha256()
    for fn in functions:
        digest.update(np.ascontiguousarray(_probe(fn), dtype=np.float32).tobytes())
    names = ",".join(f"{fn.__module__}.{fn.__name__}" for fn in functions)
    return f"{dataset}:{names}:sha256={digest.hexdigest()[:16]}"


def colour_inverse(functions: Mapping[str, Callable[..., np.ndarray]]
                   ) -> Callable[[dict], np.ndarray | None]:
    """Recover the RGB image from the first BGR-minus-mean colour input, for overlays.

    The mean is read off the preprocessing itself (what it makes of a black image)."""
    for blob, fn in functions.items():
        if blob in ("data", "color"):
            mean = -_probe_black(fn)
            return lambda inputs, blob=blob, mean=mean: _to_rgb(inputs[blob], mean)
    return lambda inputs: None


def _probe_black(fn: Callable[..., np.ndarray]) -> np.ndarray:
    return fn(np.zeros((1, 1, 3), dtype=np.uint8))[:, 0, 0]


def _to_rgb(chw: Any, mean_bgr: np.ndarray) -> np.ndarray:
    bgr = np.asarray(chw, dtype=np.float32).transpose(1, 2, 0) + mean_bgr
    return np.clip(np.rint(bgr[..., ::-1]), 0, 255).astype(np.uint8)


def _fetch_dataset(name: str, root: Path) -> None:
    """Download and unpack the dataset's archives into ``root`` (each once, verified)."""
    for artifact in DATASET_ARCHIVES[name]:   # fetch makes root/archives (and removes it on failure)
        download.extract(download.fetch(artifact, root / "archives"), root)


def find_dataset(name: str, root: Path, split: str | None, *, download: bool = False) -> None:
    """Make sure dataset ``name`` is at or under ``root``: fetched there if ``download`` and
    absent, else ``DatasetNotFoundError`` naming ``root``. Cheap; the command line calls it
    before anything slow (a weights download, loading a caffemodel)."""
    try:
        locate(name, root, splits.choose(name, split).name)
    except DatasetNotFoundError:
        if not download:
            raise
        _fetch_dataset(name, root)


def open_split(name: str, root: Path, split: str | None, *, download: bool = False,
               **options: Any) -> tuple[Any, splits.ListSource]:
    """The reader of dataset ``name`` at or under ``root`` (fetched first if ``download`` and
    absent) and the list it reads (``reproduce.splits.list_source``: the user's, the folder's
    own, its parts or the shipped lists, verified); says which folder and which list.
    ``split``: a name, a list file's path, or None for the papers' evaluation split."""
    find_dataset(name, root, split, download=download)
    choice = splits.choose(name, split)
    where = {k: options[k] for k in dataset_class(name).locate_options if k in options}
    source = splits.list_source(name, locate(name, root, choice.name, **where).path, choice)
    if source.split_file is not None:
        _note(source.describe())
        options = {"split_file": source.split_file, **options}
    try:
        dataset = get_dataset(name, root, choice.name, **options)
    except MissingFileError as exc:
        local = upstream_dir()
        if name != "pascalcontext" or local is None or "class_lists" in options:
            raise
        _note(f"{exc}; using the class lists of {local / 'data' / 'pascal-context'}")
        dataset = get_dataset(name, root, choice.name,
                              class_lists=local / "data" / "pascal-context", **options)
    located = getattr(dataset, "located", None)
    _note(located.message if located is not None else f"reading {dataset!r}")
    return dataset, source


def open_dataset(name: str, root: Path, split: str | None, *, download: bool = False,
                 **options: Any) -> Any:
    """``open_split``'s reader alone."""
    return open_split(name, root, split, download=download, **options)[0]


def caffenet_from_files(prototxt: Path, weights: Path) -> tuple[torch.nn.Module, str]:
    """``(CaffeNet of the prototxt's TEST phase with the weights loaded, the weights' source
    SHA-256)``; weights: a binary or HDF5 caffemodel, or a converted safetensors file
    (``port.load.load_net_and_weights``, the loader ``port forward`` and ``convert`` use)."""
    if not weights.is_file():
        raise ResolveError(f"{weights}: weights file not found")
    return load_net_and_weights(prototxt, weights)
