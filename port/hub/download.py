"""Fetch the registry's files (or any URL) into a folder, once, verified, and unpack archives.

`fetch` streams with a tqdm progress bar into `<name>.part` beside the destination, resumes a
partial file with an HTTP Range request (restarting cleanly when a server ignores Range and
answers 200), retries transient failures (timeouts, 5xx, connections cut mid-way) with
exponential backoff, moves on to the next mirror at once on a 404 or when the host cannot be
reached at all (its name does not resolve, the connection is refused), and checks md5/sha1/sha256 before the final `os.replace`: a file that fails never
appears under its final name. An fcntl lock beside the file keeps two processes from
downloading it at once; a verified file already there is returned without a request. A
fetch that fails removes the lock file (and the folders) it made, keeps a non-empty `.part`
for a later resume, and says in one line which hosts it tried and what to do instead.

`extract` unpacks a tar (any compression) or zip archive into a temporary folder beside the
destination, refusing members that would land outside it, then renames the folder into place.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import posixpath
import re
import shutil
import socket
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from tqdm import tqdm

from port.errors import PortError
from port.models.meta import HASH_ALGORITHMS
from port.weights import sha256_file

from . import registry
from .registry import Artifact, Digests, HashStore

log = logging.getLogger(__name__)

# Statuses after which the same URL is worth another try; any other failure moves on.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# What a broken or timed-out transfer raises, from requests, urllib3's raw stream or sockets.
TRANSFER_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError,
                   ConnectionError, TimeoutError)
# What a host that cannot be reached raises under urllib3's NewConnectionError (a connect that
# failed at once, as opposed to ConnectTimeoutError): retrying the same URL cannot help.
UNREACHABLE_ERRORS = (socket.gaierror, ConnectionRefusedError, urllib3.exceptions.NewConnectionError)
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")
_HASH_BLOCK = 1 << 20


class DownloadError(PortError, RuntimeError):
    """No URL gave the file. The message is one line: the file, each host tried and why it
    failed, and what to do instead (the URL to download by hand, where to put the file, the
    option that takes a local copy); ``failures`` keeps each URL's full reason."""

    def __init__(self, message: str, failures: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


#: What a user can do instead of the download, by registry kind (after "put it at DEST").
INSTEAD = {
    "caffemodel": "or pass your copy with --weights FILE (make: WEIGHTS=FILE)",
    "dataset": "or pass the folder of the unpacked dataset with --data DIR (make: DATA=DIR)",
    "split": "or pass your copy of the list with --split FILE",
    "demo": f"or set FCN_PORT_UPSTREAM to a copy of the upstream repository "
            f"({registry.UPSTREAM_REPO})",
}


class ChecksumMismatchError(DownloadError):
    """A downloaded (or cached) file whose digest differs from the expected one."""

    def __init__(self, where: str, algorithm: str, expected: str, actual: str,
                 detail: str = "") -> None:
        self.where, self.algorithm, self.expected, self.actual = where, algorithm, expected, actual
        super().__init__(f"{where}: checksum mismatch: expected {algorithm} {expected}, "
                         f"got {actual}{detail}")


class ArchiveError(PortError):
    """An archive that is not a tar/zip, or holds a member that would escape the destination."""

    def __init__(self, archive: Path, member: str, message: str) -> None:
        self.archive, self.member = archive, member
        super().__init__(f"{archive}: {member}: {message}" if member else f"{archive}: {message}")


class _Retryable(Exception):
    """A failure of one attempt that another attempt at the same URL may not meet."""


class _Unavailable(Exception):
    """This URL will not give the file (404, 403, retries spent): try the next one."""


@dataclasses.dataclass(frozen=True)
class _Target:
    """What to fetch: the record key (an artifact name; None for a bare URL), file name,
    URLs in order, and the constraints the bytes must meet (each a tuple of alternatives)."""

    key: str | None
    filename: str
    urls: tuple[str, ...]
    constraints: tuple[tuple[Digests, ...], ...]
    kind: str | None = None
    instead: str | None = None  # the calling command's own hint (None: INSTEAD[kind])


@dataclasses.dataclass(frozen=True)
class _Policy:
    retries: int
    backoff: float
    sleep: Callable[[float], None]
    timeout: float | tuple[float, float]
    chunk_size: int
    progress: bool


def _as_digests(expected: Digests | Mapping[str, str] | None) -> tuple[tuple[Digests, ...], ...]:
    if expected is None:
        return ()
    if isinstance(expected, Digests):
        return ((expected,),)
    given = {k.lower(): v.lower() for k, v in expected.items()}
    unknown = sorted(set(given) - set(HASH_ALGORITHMS))
    if unknown:
        raise ValueError(f"expected: unknown hash algorithm(s) {unknown}; "
                         f"use {HASH_ALGORITHMS}")
    return ((Digests(**given, source="argument"),),)


def _url_filename(url: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", ".."):
        raise ValueError(f"{url}: the URL names no file; pass filename=")
    return name


def _resolve(item: Artifact | str, mirrors: Sequence[str] | None,
             expected: Digests | Mapping[str, str] | None, filename: str | None) -> _Target:
    """An Artifact, a registry name, or a URL -> what to fetch and how to check it."""
    if isinstance(item, str) and "://" in item:
        name = filename or _url_filename(item)
        return _Target(None, name, registry.mirrored_urls(name, (item,), mirrors), _as_digests(expected))
    artifact = item if isinstance(item, Artifact) else registry.get(item)
    constraints = ((artifact.known,) if artifact.known else ()) + _as_digests(expected)
    return _Target(artifact.name, filename or artifact.filename,
                   registry.candidate_urls(artifact, mirrors), constraints, artifact.kind)


def hash_file(path: Path, algorithms: Sequence[str]) -> dict[str, str]:
    """Hex digests of a file, all algorithms in one pass."""
    hashers = {a: hashlib.new(a) for a in dict.fromkeys(algorithms)}
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            for hasher in hashers.values():
                hasher.update(block)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _first_difference(wanted: Digests, actual: Mapping[str, str]) -> tuple[str, str] | None:
    for algorithm, value in wanted.as_dict().items():
        if actual[algorithm] != value:
            return algorithm, value
    return None


def _check(path: Path, constraints: Sequence[Sequence[Digests]], where: str) -> str:
    """Raise ChecksumMismatchError unless the file meets every constraint (any one of its
    alternatives, all of that alternative's digests); return the file's SHA-256."""
    needed = {a for group in constraints for d in group for a in d.as_dict()} | {"sha256"}
    actual = hash_file(path, sorted(needed))
    for group in constraints:
        differences = [_first_difference(d, actual) for d in group]
        if all(differences):
            algorithm, value = differences[0]
            others = [f"{a} {v} ({d.source})" for d, (a, v) in zip(group[1:], differences[1:])]
            detail = f" [expected per {group[0].source}]" if group[0].source else ""
            detail += f" (nor any of: {'; '.join(others)})" if others else ""
            raise ChecksumMismatchError(where, algorithm, value, actual[algorithm], detail)
    return actual["sha256"]


def _with_record(target: _Target, store: HashStore) -> _Target:
    """The target with the SHA-256 recorded by an earlier verified download as a constraint."""
    record = store.get(target.key) if target.key is not None else None
    if record is None:
        return target
    recorded = Digests(sha256=str(record["sha256"]), source=f"recorded in {store.path}")
    return dataclasses.replace(target, constraints=target.constraints + ((recorded,),))


def _remember(store: HashStore, target: _Target, dest: Path, sha256: str, url: str) -> None:
    if target.key is None:
        return
    stat = dest.stat()
    store.record(target.key, sha256=sha256, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                 path=str(dest.resolve()), url=url)


def _still_verified(store: HashStore, key: str | None, dest: Path) -> Mapping[str, object] | None:
    """The record of ``key`` when the file is the very one recorded as verified (same path,
    size and mtime), so a multi-gigabyte archive is not hashed again on every call; else None."""
    record = store.get(key) if key is not None else None
    stat = dest.stat()
    same = bool(record) and record.get("path") == str(dest.resolve()) and \
        record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns
    return record if same else None


def recorded_sha256(artifact: Artifact | str, path: str | os.PathLike[str],
                    hashes: HashStore | None = None) -> str:
    """The SHA-256 of a file ``fetch(artifact)`` returned: the one its verified download (or
    check) recorded, when the record is of this very file; else the file hashed."""
    key = (artifact if isinstance(artifact, Artifact) else registry.get(artifact)).name
    path = Path(path)
    record = _still_verified(hashes if hashes is not None else HashStore(), key, path)
    return str(record["sha256"]) if record else sha256_file(path)


def _verify_existing(dest: Path, target: _Target, store: HashStore) -> None:
    if (target.key is None and not target.constraints) or _still_verified(store, target.key, dest):
        return
    try:
        sha256 = _check(dest, _with_record(target, store).constraints, str(dest))
    except ChecksumMismatchError as err:
        raise ChecksumMismatchError(err.where, err.algorithm, err.expected, err.actual,
                                    "; delete the file to download it again") from None
    _remember(store, target, dest, sha256, "existing file")


def _start_offset(response: requests.Response, url: str, have: int, part: Path) -> int | None:
    """Where the body goes in the .part file: `have` for a 206 resuming it, 0 for a 200 (a
    fresh start, or a server that ignored Range), None when the part is already complete."""
    status = response.status_code
    if status == 206:
        match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != have:
            part.unlink(missing_ok=True)
            raise _Retryable(f"{url}: 206 with Content-Range "
                             f"{response.headers.get('Content-Range')!r}, asked from byte {have}")
        return have
    if status == 200:
        if have:
            log.info("%s: server ignored the Range request; downloading from the start", url)
        return 0
    if status == 416 and have:
        if response.headers.get("Content-Range", "") == f"bytes */{have}":
            return None
        part.unlink(missing_ok=True)
        raise _Retryable(f"{url}: 416, the partial file is longer than the server's; restarting")
    if status in RETRYABLE_STATUS:
        raise _Retryable(f"{url}: HTTP {status}")
    raise _Unavailable(f"{url}: HTTP {status} {response.reason}")


def _stream_body(response: requests.Response, part: Path, offset: int, policy: _Policy) -> None:
    """Append (offset > 0) or write the raw body (no Content-Encoding undone: the digests are
    of the file as served) to the .part file; raise _Retryable when it ends short."""
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length is not None and length.isdigit() else None
    with open(part, "ab" if offset else "wb") as out, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=part.name.removesuffix(".part"), disable=not policy.progress) as bar:
        for chunk in response.raw.stream(policy.chunk_size, decode_content=False):
            out.write(chunk)
            bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Retryable(f"{response.url}: transfer ended at byte {size} of {total}")


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and everything it wraps: its cause/context chain and the exceptions requests and
    urllib3 carry in ``args`` or ``reason`` (MaxRetryError.reason is the connect error)."""
    seen, stack = set(), [err]
    while stack:
        exc = stack.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        yield exc
        linked = [exc.__cause__, exc.__context__, getattr(exc, "reason", None), *exc.args]
        stack += [e for e in linked if isinstance(e, BaseException)]


def _why_unreachable(err: BaseException) -> str:
    """A few words on why a host could not be reached, instead of urllib3's nested repr."""
    causes = list(_causes(err))
    if any(isinstance(e, socket.gaierror) for e in causes):
        return "its name does not resolve: no network or no DNS?"
    if any(isinstance(e, ConnectionRefusedError) for e in causes):
        return "connection refused"
    return type(err).__name__


def _unreachable(err: BaseException) -> bool:
    """True when the host could not be reached at all (no such name, connection refused):
    another attempt at the same URL would fail the same way, so go to the next mirror now."""
    return any(isinstance(e, UNREACHABLE_ERRORS) for e in _causes(err))


def _download_once(http: requests.Session, url: str, part: Path, policy: _Policy) -> None:
    have = part.stat().st_size if part.exists() else 0
    # identity: a server's gzip Content-Encoding undone on the fly would change the bytes
    # (and their digest) and make byte offsets for Range meaningless.
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        with http.get(url, headers=headers, stream=True, timeout=policy.timeout) as response:
            offset = _start_offset(response, url, have, part)
            if offset is not None:
                _stream_body(response, part, offset, policy)
    except TRANSFER_ERRORS as err:
        if _unreachable(err):
            raise _Unavailable(f"{url}: cannot reach the host ({_why_unreachable(err)}), "
                               f"not retried") from err
        raise _Retryable(f"{url}: {type(err).__name__}") from err


def _download_with_retries(http: requests.Session, url: str, part: Path, policy: _Policy) -> None:
    """One URL, up to 1 + retries attempts, sleeping backoff * 2**attempt between them; each
    attempt resumes what the last one left in the .part file."""
    for attempt in range(policy.retries + 1):
        try:
            return _download_once(http, url, part, policy)
        except _Retryable as err:
            if attempt == policy.retries:
                tries = "1 attempt" if attempt == 0 else f"{attempt + 1} attempts"
                raise _Unavailable(f"{err} (gave up after {tries})") from err
            delay = policy.backoff * 2 ** attempt
            log.warning("%s; retrying in %.3g s", err, delay)
            policy.sleep(delay)


def _download_checked(http: requests.Session, url: str, part: Path, target: _Target,
                      policy: _Policy) -> str:
    """Download from one URL and check the bytes before anything is renamed; a file that fails
    is deleted. Returns its SHA-256."""
    _download_with_retries(http, url, part, policy)
    try:
        return _check(part, target.constraints, url)
    except ChecksumMismatchError:
        part.unlink(missing_ok=True)
        raise


def _download_verified(http: requests.Session, url: str, part: Path, target: _Target,
                       policy: _Policy) -> str:
    """As _download_checked, but a resumed file that fails is fetched once more from scratch:
    its first bytes may have come from another run or another mirror."""
    resumed = part.exists() and part.stat().st_size > 0
    try:
        return _download_checked(http, url, part, target, policy)
    except ChecksumMismatchError:
        if not resumed:
            raise
        log.warning("%s: resumed file failed its checksum; downloading it afresh", url)
    return _download_checked(http, url, part, target, policy)


def _download_any(http: requests.Session, target: _Target, dest: Path,
                  policy: _Policy) -> tuple[str, str]:
    """Try each URL in order until one gives a verified file; rename it to `dest`.
    A partial file is kept when every URL was unavailable, so a later call resumes it."""
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    mismatches: list[ChecksumMismatchError] = []
    for url in target.urls:
        try:
            sha256 = _download_verified(http, url, part, target, policy)
        except _Unavailable as err:
            failures.append(str(err))
            continue
        except ChecksumMismatchError as err:
            mismatches.append(err)
            failures.append(str(err))
            continue
        os.replace(part, dest)
        return sha256, url
    if mismatches:
        first = mismatches[0]
        others = [f for f in failures if f != str(first)]
        raise ChecksumMismatchError(first.where, first.algorithm, first.expected, first.actual,
                                    f"; other URLs: {' | '.join(others)}" if others else "")
    raise DownloadError(_failed_message(target, dest, failures), failures)


def _failed_message(target: _Target, dest: Path, failures: Sequence[str]) -> str:
    """One line: the file, each host tried and why it failed, what to do instead."""
    tried = []
    hosts = [urlsplit(url).netloc or url for url in target.urls]
    for url, host, failure in zip(target.urls, hosts, failures):
        reason = failure.removeprefix(f"{url}: ")
        if hosts.count(host) > 1:  # one host by http and https: say which
            host = f"{urlsplit(url).scheme}://{host}"
        tried.append(f"{host} ({reason})")
    instead = target.instead if target.instead is not None else INSTEAD.get(target.kind or "", "")
    return (f"{dest.name}: no URL gave the file, tried {'; '.join(tried)}. Download "
            f"{target.urls[0]} by hand and put it at {dest}" + (f", {instead}" if instead else ""))


def fetch(artifact_or_url: Artifact | str, dest_dir: str | os.PathLike[str] | None = None, *,
          mirrors: Sequence[str] | None = None,
          expected: Digests | Mapping[str, str] | None = None,
          filename: str | None = None, hashes: HashStore | None = None,
          session: requests.Session | None = None, retries: int = 4, backoff: float = 2.0,
          sleep: Callable[[float], None] = time.sleep,
          timeout: float | tuple[float, float] = (15.0, 60.0),
          chunk_size: int = 1 << 20, progress: bool = True, instead: str | None = None) -> Path:
    """Download an artifact (an `Artifact`, a registry name or builder name) or a URL into
    `dest_dir` (default: the cache folder) and return the path of the verified file.

    URLs are the user mirrors (`mirrors`, then $FCN_PORT_MIRRORS) and then the registry's.
    The file must match the artifact's known digests, `expected` ({'md5'|'sha1'|'sha256': hex}
    or a `Digests`), and the SHA-256 recorded in `hashes` (default: the cache folder's) by an
    earlier verified download; a verified download of an artifact records its SHA-256.
    `instead`: what the calling command takes in place of the download, for the failure
    message (default: `INSTEAD` by the artifact's kind).
    """
    if retries < 0 or backoff < 0 or chunk_size <= 0:
        raise ValueError(f"fetch: need retries >= 0, backoff >= 0, chunk_size > 0; got "
                         f"{retries}, {backoff}, {chunk_size}")
    store = hashes if hashes is not None else HashStore()
    target = _resolve(artifact_or_url, mirrors, expected, filename)
    if instead is not None:
        target = dataclasses.replace(target, instead=instead)
    folder = Path(dest_dir) if dest_dir is not None else registry.cache_dir()
    dest = folder / target.filename
    made = _missing_parents(folder)
    try:
        with registry.file_lock(folder / f".{target.filename}.lock", on_wait=_log_wait,
                                remove_on_error=True):
            if dest.exists():
                _verify_existing(dest, target, store)
                return dest
            policy = _Policy(retries, backoff, sleep, timeout, chunk_size, progress)
            with _session(session) as http:
                sha256, url = _download_any(http, _with_record(target, store), dest, policy)
            _remember(store, target, dest, sha256, url)
    except BaseException:
        _remove_empty(made)   # a failed fetch leaves no folder it made for nothing
        raise
    return dest


def _missing_parents(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove each folder (deepest first) if it is empty; stop at the first that is not."""
    for path in folders:
        try:
            path.rmdir()
        except OSError:
            return


def _log_wait(lock: Path) -> None:
    log.info("waiting for another process or thread downloading into this folder (lock %s)", lock)


@contextlib.contextmanager
def _session(session: requests.Session | None) -> Iterator[requests.Session]:
    if session is not None:
        yield session
        return
    with requests.Session() as own:
        yield own


# --- archives -------------------------------------------------------------------------------

def archive_stem(archive: Path) -> str:
    """The archive's name without its archive suffix (`benchmark.tgz` -> `benchmark`)."""
    lowered = archive.name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return archive.name[: -len(suffix)]
    return archive.name + ".d"


def _escapes(relative: str) -> bool:
    """Whether a '/'-separated path, taken relative to the destination, lands outside it."""
    if relative.startswith("/") or re.match(r"[A-Za-z]:", relative):
        return True
    normalized = posixpath.normpath(relative)
    return normalized == ".." or normalized.startswith("../")


def _member_path(root: Path, name: str, archive: Path) -> Path:
    """Where a member named `name` lands under `root`; ArchiveError when that is outside."""
    slashed = name.replace("\\", "/")
    if _escapes(slashed):
        raise ArchiveError(archive, name, "member path lands outside the destination "
                                          "(absolute or climbing with '..')")
    return root / posixpath.normpath(slashed)


def _check_tar_member(member: tarfile.TarInfo, root: Path, archive: Path) -> None:
    path = _member_path(root, member.name, archive)
    if member.issym():
        link_dir = path.parent.relative_to(root).as_posix()
        link_target = member.linkname if member.linkname.startswith("/") else \
            posixpath.join(link_dir, member.linkname)
    elif member.islnk():
        link_target = member.linkname
    elif member.isreg() or member.isdir():
        return
    else:
        raise ArchiveError(archive, member.name, "device, fifo or other special file")
    if _escapes(link_target):
        raise ArchiveError(archive, member.name,
                           f"link to {member.linkname!r} points outside the destination")


def _extract_tar(archive: Path, root: Path) -> None:
    """Single pass: each member is checked, then extracted (data filter where Python has it)."""
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            _check_tar_member(member, root, archive)
            tar.extract(member, root, **extra)


def _extract_zip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _member_path(root, info.filename, archive)
        for info in infos:
            zf.extract(info, root)


def extract(archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str], *,
            name: str | None = None) -> Path:
    """Unpack a tar/tgz/zip archive to `dest_dir/name` (default: the archive's stem) and return
    that folder. Extracts into a temporary folder beside it and renames it into place, so the
    folder appears complete or not at all; an existing folder is returned as is."""
    archive, folder = Path(archive), Path(dest_dir)
    target = folder / (name or archive_stem(archive))
    if not archive.is_file():
        raise ArchiveError(archive, "", "no such archive file")
    with registry.file_lock(folder / f".{target.name}.extract.lock"):
        if target.exists():
            return target
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp"))
        try:
            _extract_into(archive, tmp)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _extract_into(archive: Path, root: Path) -> None:
    if tarfile.is_tarfile(archive):
        _extract_tar(archive, root)
    elif zipfile.is_zipfile(archive):
        _extract_zip(archive, root)
    else:
        raise ArchiveError(archive, "", "not a tar (plain, gz, bz2, xz) or zip archive")
