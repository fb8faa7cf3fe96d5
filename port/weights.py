"""Weights files: the one home of reading, writing and checking them.

Every other module (loading, conversion, the solver's snapshots, surgery, training, the command
lines) reads, writes and checks weights through this one. It sits right above
:mod:`port.caffe` and below :mod:`port.net`: it imports numpy, the project's foundation and
(for caffemodels) :mod:`port.caffe`, never torch at import time, so a conversion or an
``inspect`` does not pay for importing torch. The few functions that make or fill torch
tensors (:func:`load_weights`, :func:`load_state_strict`, :func:`copy_state_strict`) import it
when called.

**Reading, by content** (never by suffix; :func:`kind_of`): a file starting with HDF5's
signature is Caffe's ``snapshot_format: HDF5`` caffemodel; one starting with an 8-byte
little-endian length followed by ``{`` that fits the file is safetensors; anything else is read
as a binary caffemodel, whose reader names the byte where it stops making sense. An empty file
is none of these and says so. :func:`read_blobs` gives any of them as layers with blobs (the
view ``CaffeNet.load_blobs`` and ``surgery.transplant`` read); :func:`read_arrays` /
:func:`load_weights` give a safetensors file's tensors (numpy / torch views of the file mapped
copy-on-write: nothing is read until used; writing to one changes memory, never the file).
Untrusted files never reach pickle.

**Writing** (:func:`write_safetensors`): one streaming writer, the header then each tensor's
bytes straight from its buffer (or, for a caffemodel's blob read as a read-only view, copied from
that file in the kernel), to a temporary name in the target's folder, fsync'ed, renamed
(``port.fileio.atomic_open``): a reader sees the old file or the new one, never half of one.
Floating tensors are stored as float32 (Caffe's blobs are ``float``), others (a solver state's
RNG bytes) as they are; tensors go in safetensors' own order (by dtype, then name), so the
bytes equal ``safetensors.torch.save``'s.

**Metadata** (string key -> string value, safetensors' ``__metadata__``), layout ``FORMAT``:

=====================  ==========================================================================
``format``             ``fcn-port-weights/1`` (this layout's version)
``source_name``        the file the weights came from (a caffemodel's name), or ``""``
``source_sha256``      that file's SHA-256 (hex), or absent
``net_name``           the Caffe net's ``name``
``builder``            the released net (``port.models`` builder) the weights are for, ``""`` when
                       none or ambiguous
``candidate_builders`` every builder of the same structure, comma-separated
``builder_kwargs``     JSON object: the builder arguments (``num_classes``, ``width_divisor`` ...)
=====================  ==========================================================================

Writers may add their own keys beside these (``iteration``; ``transplant``: surgery's report as
JSON; ``solver`` and ``run``: a solver state's counters and run identity as JSON). Files from
before this layout (``port transplant``'s ``source`` / ``net`` keys, no ``format``) are still
read: :func:`read_metadata` gives them in this layout.

**Checking** (:func:`check_fit`): the one strict fit of weights to a net, as Caffe's
``Net::CopyTrainedLayersFrom`` matches them but strictly: every parameter filled, every tensor
used, equal shapes; otherwise one :class:`WeightsMismatchError` whose message is one line (the
first problems, their count, and what the weights do fit when the caller knows) and whose
``problems`` list every mismatch.
"""
from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Mapping, Sequence

import numpy as np

from port.caffe import HDF5_MAGIC, file_range, load_caffemodel, write_caffemodel
from port.caffe.net import LayerDef, NetDef
from port.errors import PortError
from port.fileio import atomic_open

__all__ = [
    "SUFFIX", "FORMAT_KEY", "FORMAT", "SOURCE_SHA256", "SOURCE_NAME", "NET_NAME", "BUILDER",
    "CANDIDATES", "BUILDER_KWARGS", "BLOB_NAMES", "BATCH_NORM_BLOBS", "blob_names", "WeightsError", "WeightsMismatchError",
    "problems_summary",
    "NotSafetensorsError",
    "kind_of", "read_metadata", "read_arrays", "read_blobs", "load_weights", "write_safetensors",
    "safetensors_header", "metadata", "builder_kwargs", "resolve_kwargs", "fit_problems",
    "check_fit", "load_state_strict", "copy_state_strict", "sha256_file", "default_output",
    "StoredBlobs", "load_into", "write_net", "output_kind", "OUTPUT_SUFFIXES",
]

#: The suffix of a converted weights file (what is written; reading goes by content).
SUFFIX = ".safetensors"
#: The caffemodel suffixes, longest first (``a.caffemodel.h5`` -> ``a``).
CAFFEMODEL_SUFFIXES = (".caffemodel.h5", ".caffemodel", ".h5")
#: Metadata keys of the layout (see the module docstring) and its version.
FORMAT_KEY, FORMAT = "format", "fcn-port-weights/1"
SOURCE_SHA256, SOURCE_NAME, NET_NAME = "source_sha256", "source_name", "net_name"
BUILDER, CANDIDATES, BUILDER_KWARGS = "builder", "candidate_builders", "builder_kwargs"
#: Parameter name of each Caffe blob index (``{layer}.weight`` is blob 0, ``{layer}.bias`` 1).
BLOB_NAMES = ("weight", "bias")
#: A BatchNorm's three blobs (``batch_norm_layer.cpp``: mean sum, variance sum, scale factor).
BATCH_NORM_BLOBS = ("mean", "variance", "scale_factor")


def blob_names(layer_type: str) -> tuple[str, ...]:
    """The parameter name of each blob index of a layer of ``layer_type``: the one rule that
    maps Caffe's blob order to a weights file's names and back."""
    return BATCH_NORM_BLOBS if layer_type == "BatchNorm" else BLOB_NAMES


#: Blob index of each parameter name a weights file may hold.
_BLOB_INDEX = {**{n: i for i, n in enumerate(BLOB_NAMES)}, **{n: i for i, n in enumerate(BATCH_NORM_BLOBS)}}
#: What a net's weights can be written as, by the output's suffix (:func:`write_net`).
OUTPUT_SUFFIXES = (SUFFIX, ".caffemodel")
#: Keys of the layout before it had a version (``port transplant``'s), as this layout names them.
_LEGACY_KEYS = {"source": SOURCE_NAME, "net": NET_NAME}

#: safetensors' layout (huggingface/safetensors, "Format"): an 8-byte little-endian header
#: length, a JSON header padded with spaces to a multiple of 8 bytes, then the raw tensors.
_HEADER_LENGTH = struct.Struct("<Q")
_HEADER_ALIGN = 8
#: safetensors refuses headers over 100 MB; so does this reader (a garbage length, not a file).
_MAX_HEADER = 100_000_000
#: safetensors' dtype names, in the order of its ``Dtype`` enum: the writer sorts tensors by it
#: (descending, then by name) as ``safetensors.torch.save`` does.
_DTYPES = {"BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
           "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "F16": np.dtype("<f2"),
           "I32": np.dtype("<i4"), "U32": np.dtype("<u4"), "F32": np.dtype("<f4"),
           "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "U64": np.dtype("<u8")}
_DTYPE_RANK = {name: rank for rank, name in enumerate(
    ("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
     "F64", "I64", "U64"))}
_DTYPE_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_FLOAT32 = np.dtype("<f4")
#: Placeholder for the source digest while it is still being computed (same length as a
#: hex SHA-256, so the header keeps its size when the real digest replaces it).
_DIGEST_PLACEHOLDER = "0" * hashlib.sha256().digest_size * 2
_HASH_CHUNK = 1 << 20
#: Problems named in a mismatch's one-line message (all of them are in ``problems``).
_SHOWN_PROBLEMS = 3


class WeightsError(PortError):
    """Weights that cannot be used as asked: an unreadable file, conflicting metadata, or
    tensors that do not fit the net (:class:`WeightsMismatchError`)."""


def problems_summary(problems: Sequence[str]) -> str:
    """How a one-line error lists mismatches: their count and the first few
    (``"5 problems: a; b; c; ... 2 more"``); the whole list stays in the error's ``problems``."""
    count = len(problems)
    shown = "; ".join(problems[:_SHOWN_PROBLEMS])
    more = f"; ... {count - _SHOWN_PROBLEMS} more" if count > _SHOWN_PROBLEMS else ""
    return f"{count} problem{'s' if count != 1 else ''}: {shown}{more}"


class WeightsMismatchError(WeightsError):
    """Weights that do not fit a net exactly. ``problems`` lists every mismatch (a tensor or
    blob missing, unexpected, or of another shape); ``str()`` is one line: the source, the
    target, the count, the first problems and ``hint`` (e.g. the net the weights do fit)."""

    def __init__(self, source: str, target: str, problems: Sequence[str], hint: str = ""):
        self.source, self.target, self.problems, self.hint = source, target, list(problems), hint
        super().__init__(f"{source}: weights do not fit {target} ({problems_summary(self.problems)})"
                         + (f"; {hint}" if hint else ""))

    def with_hint(self, hint: str) -> "WeightsMismatchError":
        """The same mismatch with ``hint`` (what the weights fit, the option to pass)."""
        return type(self)(self.source, self.target, self.problems, hint)


# -- reading ---------------------------------------------------------------------------------
def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    return path


def _safetensors_header_length(head: bytes) -> int | None:
    """The header length when ``head`` (a file's first 9 bytes) starts as safetensors does
    (a plausible length, then ``{``), else None."""
    if len(head) < _HEADER_LENGTH.size + 1:
        return None
    (length,) = _HEADER_LENGTH.unpack_from(head)
    if head[_HEADER_LENGTH.size:_HEADER_LENGTH.size + 1] != b"{" or not 2 <= length <= _MAX_HEADER:
        return None
    return length


def kind_of(path: str | os.PathLike) -> str:
    """``"safetensors"``, ``"hdf5"`` (a caffemodel in Caffe's HDF5 snapshot format) or
    ``"caffemodel"`` (binary protobuf): what the file holds, told by its first bytes. A missing
    or empty file is a :class:`WeightsError`."""
    path = _existing(path)
    size = path.stat().st_size
    if size == 0:
        raise WeightsError(f"{path}: empty file (0 bytes): not a caffemodel or a .safetensors")
    with open(path, "rb") as fh:
        head = fh.read(max(len(HDF5_MAGIC), _HEADER_LENGTH.size + 1))
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    return "safetensors" if _safetensors_header_length(head) is not None else "caffemodel"


class NotSafetensorsError(WeightsError):
    """A file that is not safetensors where one was expected; ``reason`` says what is wrong."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: not a safetensors file ({reason}); convert a caffemodel first "
                         f"with `python -m port convert`")


def _read_header(path: Path, fh) -> tuple[int, dict[str, Any]]:
    """``(header length, parsed header)`` of an open safetensors file, validated."""
    size = os.fstat(fh.fileno()).st_size
    head = fh.read(_HEADER_LENGTH.size + 1)
    length = _safetensors_header_length(head)
    if length is None:
        raise NotSafetensorsError(path, "no safetensors header" if size else "empty file")
    if _HEADER_LENGTH.size + length > size:
        raise NotSafetensorsError(path, f"truncated: a {length}-byte header in a file of {size} bytes")
    fh.seek(_HEADER_LENGTH.size)
    try:
        header = json.loads(fh.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise NotSafetensorsError(path, f"its header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise NotSafetensorsError(path, "its header is not a JSON object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise NotSafetensorsError(path, "its __metadata__ is not an object of strings")
    data = size - _HEADER_LENGTH.size - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = _DTYPES[entry["dtype"]], entry["shape"], entry["data_offsets"]
            ok = (all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(begin, int)
                  and isinstance(end, int) and 0 <= begin <= end <= data
                  and end - begin == math.prod(shape) * dtype.itemsize)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise NotSafetensorsError(path, f"tensor {name!r}: its dtype, shape and offsets do not fit "
                                            f"the file ({entry!r})")
    return length, header


def _normalized(meta: Mapping[str, str]) -> dict[str, str]:
    """A file's metadata in this layout: keys of the layout before its version renamed."""
    meta = dict(meta)
    if FORMAT_KEY not in meta:
        for old, new in _LEGACY_KEYS.items():
            if old in meta and new not in meta:
                meta[new] = meta[old]
    return meta


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file, in this module's layout (no tensor read)."""
    path = _existing(path)
    with open(path, "rb") as fh:
        _, header = _read_header(path, fh)
    return _normalized(header.get("__metadata__", {}))


def read_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors as numpy arrays, metadata)`` of a safetensors file: zero-copy views of the
    file mapped copy-on-write (nothing read until used; writing to one changes memory only)."""
    path = _existing(path)
    with open(path, "rb") as fh:
        length, header = _read_header(path, fh)
        start = _HEADER_LENGTH.size + length
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        data = (mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
                if os.fstat(fh.fileno()).st_size > start else bytearray(start))
    arrays = {}
    for name in sorted(entries):
        entry = entries[name]
        begin, end = entry["data_offsets"]
        dtype = _DTYPES[entry["dtype"]]
        arrays[name] = np.frombuffer(data, dtype, (end - begin) // dtype.itemsize,
                                     start + begin).reshape(entry["shape"])
    return arrays, _normalized(header.get("__metadata__", {}))


def load_weights(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """``(state dict of torch tensors, metadata)`` of a safetensors file, on the CPU: the
    tensors share :func:`read_arrays`' copy-on-write views of the file."""
    import torch  # only here: reading and converting weights must not import torch
    arrays, meta = read_arrays(path)
    return {k: torch.from_numpy(v) for k, v in arrays.items()}, meta


@dataclass
class StoredLayer:
    """A layer's name and blobs, in Caffe's blob order."""

    name: str
    blobs: list[np.ndarray] = field(default_factory=list)


@dataclass
class StoredBlobs:
    """A weights file as layers with blobs (what ``port.caffe.load_caffemodel`` gives for a
    caffemodel): ``path``, ``layers``, ``blobs()`` by layer name."""

    path: str
    layers: list[StoredLayer]
    name: str = ""

    def blobs(self) -> dict[str, list[np.ndarray]]:
        return {layer.name: list(layer.blobs) for layer in self.layers if layer.blobs}


def blobs_from_state(state: Mapping[str, Any], path: str = "", name: str = "") -> StoredBlobs:
    """A state dict of ``{layer}.weight`` / ``{layer}.bias`` tensors (a BatchNorm's
    ``.mean`` / ``.variance`` / ``.scale_factor``) as layers with blobs in Caffe's order
    (:func:`blob_names`), layers in the state's order. Another parameter name is an error: a
    file of other names cannot be put in Caffe's blob order."""
    layers: dict[str, dict[int, Any]] = {}
    for key, value in state.items():
        layer, _, blob = key.rpartition(".")
        if blob not in _BLOB_INDEX or not layer:
            raise WeightsError(f"{path}: tensor {key!r} is not named {{layer}}.weight or {{layer}}.bias "
                               f"(a BatchNorm's {{layer}}.mean, .variance, .scale_factor)")
        layers.setdefault(layer, {})[_BLOB_INDEX[blob]] = value
    return StoredBlobs(path, [StoredLayer(n, [b[i] for i in sorted(b)]) for n, b in layers.items()], name)


def read_blobs(path: str | os.PathLike, net: Any = None) -> Any:
    """Any weights file as layers with blobs, by its content: a caffemodel (binary, or HDF5
    with its layer definitions from ``net`` where given) through ``port.caffe``'s reader, a
    safetensors file as :class:`StoredBlobs` (``{layer}.weight`` blob 0, ``.bias`` blob 1)."""
    kind = kind_of(path)
    if kind != "safetensors":
        return load_caffemodel(path, net)
    arrays, meta = read_arrays(path)
    return blobs_from_state(arrays, str(path), meta.get(NET_NAME, ""))


def sha256_file(path: str | os.PathLike, stop: threading.Event | None = None) -> str:
    """The SHA-256 of a file, read in chunks into one reused buffer that stays in the CPU's
    cache (hashlib releases the GIL on large buffers, so this overlaps other work when run in
    a thread; hashing a mapping of the file instead measured ~15% more CPU: a page-table
    entry per page). ``stop`` set: give up early (the partial digest returned is then
    meaningless)."""
    digest, buffer = hashlib.sha256(), bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while not (stop is not None and stop.is_set()):
            count = fh.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest()


# -- metadata --------------------------------------------------------------------------------
def metadata(*, source_name: str = "", source_sha256: str | None = None, net_name: str = "",
             builder: str = "", candidates: Iterable[str] = (),
             builder_kwargs: Mapping[str, Any] | None = None, **extra: str) -> dict[str, str]:
    """The metadata of a weights file in this module's layout (``extra``: a writer's own
    string keys, e.g. ``iteration``)."""
    meta = {FORMAT_KEY: FORMAT, SOURCE_NAME: source_name, NET_NAME: net_name, BUILDER: builder,
            CANDIDATES: ",".join(candidates),
            BUILDER_KWARGS: json.dumps(dict(builder_kwargs or {}), sort_keys=True)}
    if source_sha256 is not None:
        meta[SOURCE_SHA256] = source_sha256
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def builder_kwargs(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The builder arguments a file was converted for (``num_classes``, ``width_divisor``...)."""
    raw = metadata.get(BUILDER_KWARGS, "")
    try:
        return dict(json.loads(raw)) if raw else {}
    except (ValueError, TypeError) as err:
        raise WeightsError(f"metadata {BUILDER_KWARGS!r} is not a JSON object: {raw!r}") from err


def resolve_kwargs(path: str | os.PathLike | None, builder: str, requested: Mapping[str, Any],
                   defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Builder arguments: the caller's where given, else the file's, else the defaults.
    A caller's value that conflicts with the file's, or a file converted for another
    structure than ``builder``'s, raises :class:`WeightsError` naming both and what to pass."""
    if path is None:
        return {k: defaults[k] if requested[k] is None else requested[k] for k in defaults}
    metadata = read_metadata(path)
    candidates = [c for c in metadata.get(CANDIDATES, "").split(",") if c]
    if candidates and builder not in candidates:
        fits = metadata.get(BUILDER) or candidates[0]
        raise WeightsError(f"{path}: converted for builder {fits!r} (same structure: "
                           f"{', '.join(candidates)}), not {builder!r}: name that model (--model {fits})")
    stored = builder_kwargs(metadata)
    resolved = {}
    for key, default in defaults.items():
        given = requested.get(key)
        if given is not None and key in stored and stored[key] != given:
            raise WeightsError(f"{path}: converted with {key}={stored[key]!r}, but {builder} was "
                               f"asked for {key}={given!r}; omit {key} to use the file's")
        resolved[key] = given if given is not None else stored.get(key, default)
    return resolved


def width_hint(meta: Mapping[str, str], asked: int | None = None) -> str:
    """``"pass --width-divisor N"`` when the metadata records a width other than ``asked``."""
    try:
        width = builder_kwargs(meta).get("width_divisor")
    except WeightsError:
        return ""
    if width is None or (asked is not None and int(width) == int(asked)):
        return ""
    return f"the weights record --width-divisor {width}: pass --width-divisor {width}"


# -- writing ---------------------------------------------------------------------------------
def _as_array(value: Any) -> np.ndarray:
    """A tensor (torch, without importing it: anything with ``detach``) or array as a
    contiguous little-endian array; floating values as float32. A 0-d tensor (a Scale's
    ``num_axes: 0`` blob) stays 0-d: ``ascontiguousarray`` alone makes it 1-d."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().contiguous().numpy()
    array = np.asarray(value)
    dtype = _FLOAT32 if array.dtype.kind == "f" else array.dtype.newbyteorder("<")
    if dtype not in _DTYPE_NAMES:
        raise WeightsError(f"cannot store a tensor of dtype {array.dtype} in a weights file")
    return np.ascontiguousarray(array, dtype=dtype).reshape(array.shape)


def _ordered(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The tensors as arrays in safetensors' order: dtype descending, then name."""
    arrays = {name: _as_array(value) for name, value in state.items()}
    order = sorted(arrays, key=lambda n: (-_DTYPE_RANK[_DTYPE_NAMES[arrays[n].dtype]], n))
    return {name: arrays[name] for name in order}


def safetensors_header(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """The safetensors header of ``arrays`` stored in this order with string ``metadata``:
    length, then compact JSON (``__metadata__`` and, per tensor, dtype, shape and
    ``data_offsets`` relative to the data), space-padded to 8-byte alignment."""
    entries: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, array in arrays.items():
        entries[name] = {"dtype": _DTYPE_NAMES[np.dtype(array.dtype).newbyteorder("<")],
                         "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % _HEADER_ALIGN)
    return _HEADER_LENGTH.pack(len(text)) + text


def write_safetensors(out: str | os.PathLike, state: Mapping[str, Any], metadata: Mapping[str, str],
                      source_sha256: Callable[[], str] | None = None) -> Path:
    """Stream ``state`` (numpy arrays or torch tensors) into a safetensors file at ``out``
    atomically (its folder made first): the header, then each tensor's bytes straight from its
    buffer (no copy of the whole file in memory; :func:`_write_array`), then fsync and rename.
    ``source_sha256``, when given, is called after the data is written and on disk, and its
    digest replaces a same-length placeholder in the header, so hashing the source overlaps
    the writing."""
    out = Path(out)
    arrays = _ordered(state)
    final = dict(metadata)
    if source_sha256 is not None:
        final[SOURCE_SHA256] = _DIGEST_PLACEHOLDER
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out) as fh:
        fh.write(safetensors_header(arrays, final))
        for array in arrays.values():
            _write_array(fh, array)
        if source_sha256 is not None:
            # the data to disk while the digest is still being computed (the wait for one
            # overlaps the other); atomic_open's fsync then has the header's page left
            fh.flush()
            getattr(os, "fdatasync", os.fsync)(fh.fileno())
            final[SOURCE_SHA256] = source_sha256()
            fh.seek(0)
            fh.write(safetensors_header(arrays, final))
    return out


def _write_array(fh: BinaryIO, array: np.ndarray) -> None:
    """``array``'s bytes appended to ``fh``: copied in the kernel from the file they are a
    read-only view of where there is one (a caffemodel's packed blob as
    ``load_caffemodel(..., writable=False)`` maps it: ``copy_file_range``, as ``cp`` copies,
    no page of either file passing through this process), else written from memory; a copy
    the system refuses or cuts short is finished from memory."""
    data = array.reshape(-1).view(np.uint8)
    done = _copy_from_file(fh, array) if hasattr(os, "copy_file_range") else 0
    fh.write(data[done:])


def _copy_from_file(fh: BinaryIO, array: np.ndarray) -> int:
    """How many of ``array``'s bytes :func:`_write_array` copied into ``fh`` from the file
    ``array`` views (0 when it views none, or the file at its path is no longer the one mapped)."""
    found = file_range(array)
    if found is None:
        return 0
    mapping, offset = found
    try:
        source = os.open(mapping.path, os.O_RDONLY)
    except OSError:
        return 0
    fh.flush()
    target, position, done = fh.fileno(), fh.tell(), 0
    try:
        stat = os.fstat(source)
        if (stat.st_dev, stat.st_ino) == mapping.identity:
            while done < array.nbytes:
                count = os.copy_file_range(source, target, array.nbytes - done, offset + done, position + done)
                if not count:  # the file is shorter than when mapped
                    break
                done += count
    except OSError:  # e.g. a file system or kernel without it: the rest from memory
        pass
    finally:
        os.close(source)
    fh.seek(position + done)
    return done


def default_output(source: str | os.PathLike) -> Path:
    """Where a converted caffemodel goes by default: beside it, ``.safetensors`` in place of
    its caffemodel suffix only (``run.v2.caffemodel`` -> ``run.v2.safetensors``, so dotted
    names do not collide)."""
    source = Path(source)
    name = source.name
    for suffix in CAFFEMODEL_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return source.with_name(name[: -len(suffix)] + SUFFIX)
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return source.with_name(stem + SUFFIX)


# -- checking --------------------------------------------------------------------------------
def fit_problems(expected: Mapping[str, Sequence[int]], found: Mapping[str, Sequence[int]],
                 equal: Callable[[tuple, tuple], bool] | None = None) -> list[str]:
    """Every way ``found`` (name -> shape) does not fill ``expected`` exactly: a name missing,
    a name not expected, a shape not equal (``equal(found, expected)``, default ``==``)."""
    same = equal or (lambda got, want: got == want)
    want = {k: tuple(int(d) for d in v) for k, v in expected.items()}
    got = {k: tuple(int(d) for d in v) for k, v in found.items()}
    problems = [f"{k}: missing (expected shape {v})" for k, v in want.items() if k not in got]
    problems += [f"{k}: unexpected (shape {v}; not in the net)" for k, v in got.items() if k not in want]
    problems += [f"{k}: shape {got[k]}, expected {v}" for k, v in want.items()
                 if k in got and not same(got[k], v)]
    return problems


def check_fit(expected: Mapping[str, Sequence[int]], found: Mapping[str, Sequence[int]],
              source: str, target: str, *, equal: Callable[[tuple, tuple], bool] | None = None,
              hint: str = "") -> None:
    """The one strict fit check: :func:`fit_problems`, raised as one
    :class:`WeightsMismatchError` (``source``'s weights, ``target`` the net) when any."""
    problems = fit_problems(expected, found, equal)
    if problems:
        raise WeightsMismatchError(source, target, problems, hint)


def _shapes(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def load_state_strict(model: Any, state: Mapping[str, Any], source: str, hint: str = "") -> None:
    """Load ``state`` into ``model`` (an ``nn.Module``, which may be built on the ``meta``
    device) after :func:`check_fit`. The parameters take the tensors themselves, not copies
    (for a file, views of its mapping), so the weights are in memory once; ``requires_grad``
    stays the model's."""
    import torch  # only here: see the module docstring
    current = model.state_dict(keep_vars=True)
    check_fit(_shapes(current), _shapes(state), str(source), _net_target(model), hint=hint)

    def placed(tensor: Any, like: Any) -> Any:
        device = torch.device("cpu") if like.is_meta else like.device
        return tensor.to(device=device, dtype=torch.float32)
    model.load_state_dict({k: placed(v, current[k]) for k, v in state.items()}, strict=True, assign=True)


def copy_state_strict(model: Any, state: Mapping[str, Any], source: str, hint: str = "") -> None:
    """Copy ``state`` into ``model``'s existing tensors (on their device, in their dtype) after
    :func:`check_fit`: for a net whose parameters an optimizer or another holder already has."""
    import torch  # only here: see the module docstring
    current = model.state_dict()
    check_fit(_shapes(current), _shapes(state), str(source), _net_target(model), hint=hint)
    with torch.no_grad():
        for key, value in current.items():
            incoming = state[key]
            incoming = incoming if isinstance(incoming, torch.Tensor) else torch.from_numpy(np.asarray(incoming))
            value.copy_(incoming.to(value.dtype))


# -- a net's weights, in and out -------------------------------------------------------------
def _net_target(net: Any) -> str:
    name = getattr(net, "net_name", "") or ""
    path = getattr(getattr(net, "netdef", None), "path", None)
    return f"net {name!r}" if name else (f"the net of {path}" if path else type(net).__name__)


def load_into(net: Any, path: str | os.PathLike, hint: str = "") -> None:
    """Fill an existing :class:`port.net.engine.CaffeNet`'s parameters from any weights file,
    told by its content: a caffemodel (binary or HDF5) by layer name and blob index
    (``CaffeNet.load_blobs``), a ``.safetensors`` by parameter name (:func:`copy_state_strict`);
    strictly either way (``hint``: what to do when they do not fit)."""
    kind = kind_of(path)
    try:
        if kind == "safetensors":
            arrays, _ = read_arrays(path)
            copy_state_strict(net, arrays, str(path))
        else:
            net.load_blobs(read_blobs(path), str(path))
    except WeightsMismatchError as err:
        raise WeightsMismatchError(str(path), _net_target(net), err.problems, hint) from None


def output_kind(out: str | os.PathLike, allowed: Sequence[str] = OUTPUT_SUFFIXES) -> str:
    """What a net's weights are written as at ``out``, by its suffix (``"safetensors"`` or
    ``"caffemodel"``); a suffix not in ``allowed`` is a :class:`WeightsError` naming them, so a
    command can refuse an output before any work."""
    name = Path(out).name
    for suffix in allowed:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix.lstrip(".")
    raise WeightsError(f"{out}: the output must end in {' or '.join(allowed)}")


def write_net(net: Any, out: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """A :class:`port.net.engine.CaffeNet`'s parameters written at ``out``, by its suffix: a
    ``.safetensors`` (state-dict names, ``metadata``) or a ``.caffemodel`` written by the
    project's writer (``port.caffe.write_caffemodel``, atomic) as Caffe's ``Net::ToProto``
    saves a net: its V2 layer definitions, each parameterised layer's blobs with a
    ``BlobShape``, which Caffe's ``CopyTrainedLayersFrom`` loads by layer name."""
    out = Path(out)
    if output_kind(out) == "safetensors":
        return write_safetensors(out, net.state_dict(), metadata or {})
    params = net.caffe_params()
    layers = [LayerDef(layer.msg, [_as_array(p) for p in params.get(layer.name, [])])
              for layer in net.netdef.layers]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_caffemodel(out, NetDef(net.netdef.msg, layers, net.netdef.path))
    return out
