"""Resolving what ``python -m reproduce`` names: weights (a released caffemodel fetched,
verified and converted once into the cache, or the user's file), datasets (located under any
parent folder, or downloaded), upstream files (a local copy or the registry), a user's net from
its prototxt and weights, and the item loaders and identities an evaluation is built from.

The evaluation loop itself is :mod:`reproduce.harness`; this module only finds things.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from port import convert
from port.errors import PortError
from port.load import load_net_and_weights
from port.weights import SOURCE_NAME, SOURCE_SHA256, kind_of, read_metadata
from reproduce import download, registry, splits
from reproduce.datasets import DatasetNotFoundError, MissingFileError, get_dataset, locate


def _note(message: str) -> None:
    """One line above the progress bar (tqdm keeps the bar intact)."""
    from tqdm import tqdm
    tqdm.write(message)

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Where upstream split files and the demo are looked for before downloading them.
ENV_UPSTREAM = "FCN_PORT_UPSTREAM"
#: Registry dataset archives to fetch for each dataset reader, when no data is given.
DATASET_ARCHIVES = {"voc": ("voc2012-trainval",), "sbd": ("sbd",), "siftflow": ("siftflow",),
                    "nyud": ("nyud",), "pascalcontext": ("pascal-context", "voc2010-trainval")}


class ResolveError(PortError):
    """A model, weights file or dataset the command line names that cannot be used."""


def upstream_dir() -> Path | None:
    """A local copy of the upstream repository: $FCN_PORT_UPSTREAM, else ../shared/upstream."""
    env = os.environ.get(ENV_UPSTREAM)
    for candidate in ([Path(env)] if env else []) + [REPO_ROOT.parent / "shared" / "upstream"]:
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
    """The weights a run uses: the file loaded, and the SHA-256 of the caffemodel behind it."""

    path: Path
    sha256: str
    origin: str


def resolve_weights(builder: str, weights: str | Path | None,
                    cache: Path | None = None) -> Weights:
    """A converted ``.safetensors`` as is; a ``.caffemodel``/``.h5`` converted once into the
    cache; nothing: the registry's released caffemodel, fetched, verified and converted."""
    if weights is None:
        source = download.fetch(registry.caffemodel_for(builder), registry.cache_dir(cache))
        origin = "released"
    else:
        source, origin = Path(weights), "given"
        if not source.is_file():
            raise ResolveError(f"{source}: weights file not found")
        if kind_of(source) == "safetensors":
            meta = read_metadata(source)
            sha = meta.get(SOURCE_SHA256) or convert.sha256_file(source)
            return Weights(source, sha, f"converted file ({meta.get(SOURCE_NAME, '?')})")
    sha = convert.sha256_file(source)
    folder = registry.cache_dir(cache)
    cached = folder / f"{source.name.split('.')[0]}-{builder}-{sha[:16]}.safetensors"
    if not cached.is_file():
        convert.convert(source, out=cached, builder=builder)
    return Weights(cached, sha, f"{origin} caffemodel {source}")


def load_item(dataset: Any, item_id: str) -> tuple[str, dict, Any]:
    """A reader's item as ``(id, inputs, label)`` (``SegmentationDataset.item``)."""
    item = dataset.item(item_id)
    return item.id, item.inputs, item.label


def load_siftflow_item(dataset: Any, item_id: str) -> tuple[str, dict, Any]:
    """A SIFT Flow item with both label maps, ``{"sem": ..., "geo": ...}``, for both heads."""
    item = dataset.item(item_id)
    other = "geo" if dataset.task == "sem" else "sem"
    return item.id, item.inputs, {dataset.task: item.label,
                                  other: dataset.load_task_label(item_id, other)}


def load_item_with_label_blob(dataset: Any, item_id: str) -> tuple[str, dict, Any]:
    """An item whose label also feeds the net's ``label`` input (1 x H x W float, as Caffe's
    data layer gives it to a SoftmaxWithLoss)."""
    item_id, inputs, label = load_item(dataset, item_id)
    return item_id, {**inputs, "label": label[None].astype(np.float32)}, label


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
    import hashlib
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


def _split_options(name: str, root: Path, choice: Any) -> dict[str, Any]:
    """``split_file=`` for a list file given with ``--split PATH``, or for a split the dataset
    folder does not ship (VOC's seg11valid: the list shipped in the package,
    ``reproduce.splits``)."""
    path = splits.split_file_for(name, locate(name, root, choice.name).path, choice)
    if path is None:
        return {}
    _note(f"split {choice.name}: reading the list {path}")
    return {"split_file": path}


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


def open_dataset(name: str, root: Path, split: str | None, *, download: bool = False,
                 **options: Any) -> Any:
    """The reader of dataset ``name`` at or under ``root`` (fetched first if ``download`` and
    absent); says which folder it found. ``split``: a name, a list file's path, or None for
    the papers' evaluation split (``reproduce.splits.choose``)."""
    find_dataset(name, root, split, download=download)
    choice = splits.choose(name, split)
    split = choice.name
    options = {**_split_options(name, root, choice), **options}
    try:
        dataset = get_dataset(name, root, split, **options)
    except MissingFileError as exc:
        local = upstream_dir()
        if name != "pascalcontext" or local is None or "class_lists" in options:
            raise
        _note(f"{exc}; using the class lists of {local / 'data' / 'pascal-context'}")
        dataset = get_dataset(name, root, split, class_lists=local / "data" / "pascal-context",
                              **options)
    located = getattr(dataset, "located", None)
    _note(located.message if located is not None else f"reading {dataset!r}")
    return dataset


def caffenet_from_files(prototxt: Path, weights: Path) -> tuple[torch.nn.Module, str]:
    """``(CaffeNet of the prototxt's TEST phase with the weights loaded, the weights' source
    SHA-256)``; weights: a binary or HDF5 caffemodel, or a converted safetensors file
    (``port.load.load_net_and_weights``, the loader ``port forward`` and ``convert`` use)."""
    if not weights.is_file():
        raise ResolveError(f"{weights}: weights file not found")
    return load_net_and_weights(prototxt, weights)
