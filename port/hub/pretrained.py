"""A released net's weights in one call: its caffemodel fetched, verified and converted once
into the per-user cache; and any caffemodel converted once into that cache.

``released_weights("fcn8s")`` takes the caffemodel's record from the registry
(:func:`port.hub.registry.caffemodel_for`: upstream's ``caffemodel-url``, its mirror, the
published digests), fetches it with :func:`port.hub.download.fetch` (the user's mirrors first,
HTTP Range resume, retries, a lock beside the file, the digests checked before the file gets
its name; a file already there and verified is used without a request), and converts it with
:func:`port.convert.convert` into ``<stem>-<model>-<sha256[:16]>.safetensors`` in the cache
(:func:`port.hub.registry.cache_dir`: ``$FCN_PORT_CACHE``, else ``$XDG_CACHE_HOME/fcn-port``,
else ``~/.cache/fcn-port``), under a lock, so two processes convert it once. A later call finds
the converted file and neither downloads nor converts.

The one home of both steps: ``port.models``' builders (``fcn8s(weights="released")``),
``hubconf.py`` (``pretrained=True``) and ``python -m reproduce`` (``reproduce.resolve``) call
it. Imports no torch (nor does ``port.convert``).

Where the bytes come from is the record alone: to fetch from another address (a private copy,
a test's server on 127.0.0.1) set ``$FCN_PORT_MIRRORS`` (the same file name under another base
URL, checked against the same digests), or give ``caffemodel_for`` a record naming that address
and that file's own digests (``tests/test_hub.py`` replaces the records so); the digests are
always checked.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from port import convert
from port.hub import download, registry
from port.models import get_meta
from port.weights import SUFFIX, sha256_file

#: What a user of the builders can do instead of the download (after "put it at DEST").
INSTEAD = ("or convert your copy (fcn-port convert FILE.caffemodel --model NAME) and pass "
           "weights='FILE.safetensors'")


@dataclass(frozen=True)
class Converted:
    """A caffemodel converted into the cache: ``path`` the safetensors file, ``source`` the
    caffemodel, ``sha256`` the caffemodel's SHA-256, ``converted`` whether this call wrote it
    (False: found in the cache)."""

    path: Path
    source: Path
    sha256: str
    converted: bool


def cached_name(source_name: str, model: str, sha256: str) -> str:
    """The converted file's name in the cache: ``fcn8s-heavy-pascal-fcn8s-<sha256[:16]>.safetensors``
    (the caffemodel's stem, the model it was converted for, its digest's first 16 digits)."""
    return f"{source_name.split('.')[0]}-{model}-{sha256[:16]}{SUFFIX}"


def converted(source: str | os.PathLike[str], model: str,
              cache: str | os.PathLike[str] | None = None, *, sha256: str | None = None) -> Converted:
    """The caffemodel ``source`` converted once for ``model`` (a builder name) into the cache
    (``cache``, else :func:`port.hub.registry.cache_dir`'s): converted under a lock unless the
    file is there. ``sha256``: the caffemodel's digest when the caller knows it."""
    source = Path(source)
    sha = sha256 or sha256_file(source)
    folder = registry.cache_dir(cache)
    out = folder / cached_name(source.name, model, sha)
    if out.is_file():
        return Converted(out, source, sha, False)
    with registry.file_lock(folder / f".{out.name}.lock", remove_on_error=True):
        if out.is_file():   # another process converted it while we waited
            return Converted(out, source, sha, False)
        convert.convert(source, out=out, builder=model)
    return Converted(out, source, sha, True)


def released_weights(name: str, cache: str | os.PathLike[str] | None = None, *,
                     progress: bool = True, instead: str | None = INSTEAD) -> Converted:
    """The released caffemodel of model ``name`` (any spelling ``get_meta`` takes), fetched,
    verified and converted once into the cache. A net released without weights, or one cast by
    fcnize, raises :class:`port.hub.registry.NoReleasedWeightsError`; a download no URL gave,
    :class:`port.hub.download.DownloadError` (one line: each host tried, where to put a copy,
    ``instead``); a file whose digest differs, :class:`port.hub.download.ChecksumMismatchError`."""
    model = get_meta(name).name
    artifact = registry.caffemodel_for(model)
    source = download.fetch(artifact, registry.cache_dir(cache), progress=progress,
                            instead=instead.replace("NAME", model) if instead else instead)
    return converted(source, model, cache, sha256=download.recorded_sha256(artifact, source))
