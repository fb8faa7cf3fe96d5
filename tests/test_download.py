"""port.hub.download against a real HTTP server on 127.0.0.1 that the tests start: plain
downloads, Range resume, a server ignoring Range, connections cut mid-way, 404 and 503 mirrors,
wrong checksums, concurrent fetches under the lock; and safe, atomic archive extraction."""
from __future__ import annotations

import hashlib
import http.server
import io
import logging
import os
import random
import re
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from port.hub import download, registry
from port.hub.download import ArchiveError, ChecksumMismatchError, DownloadError, extract, fetch
from port.hub.registry import Artifact, Digests, HashStore

WAIT_S = 30  # upper bound on any wait for a server thread or event; never reached when passing
PAYLOAD_SIZE = 50_000
CHUNK = 4096  # small, so a payload streams in many chunks


def _payload(seed: int, size: int = PAYLOAD_SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


class _State:
    """What the server serves and what it saw. Modes (first path segment): ok (Range honoured),
    norange (Range ignored), cut (the first `cuts_left` answers stop half-way), down (503),
    flaky (503 `flaky_left` times, then ok), gate (waits for `release` before answering),
    missing (404)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.seen: list[tuple[str, str, str | None, str | None]] = []
        self.sent: list[int] = []
        self.cuts_left = 0
        self.flaky_left = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()

    def hits(self, mode: str | None = None) -> int:
        return sum(1 for m, *_ in self.seen if mode is None or m == mode)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        mode, _, name = self.path.lstrip("/").partition("/")
        with state.lock:
            state.seen.append((mode, name, self.headers.get("Range"),
                               self.headers.get("Accept-Encoding")))
        if mode == "missing" or name not in state.files:
            return self.send_error(404)
        if mode == "down" or (mode == "flaky" and self._take("flaky_left")):
            return self.send_error(503)
        if mode == "gate":
            state.started.set()
            state.release.wait(WAIT_S)
        self._send(state, mode, state.files[name])

    def _take(self, counter: str) -> bool:
        state = self.server.state  # type: ignore[attr-defined]
        with state.lock:
            left = getattr(state, counter)
            setattr(state, counter, max(0, left - 1))
        return left > 0

    def _send(self, state: _State, mode: str, body: bytes) -> None:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match.group(1)) if match and mode != "norange" else 0
        if start >= len(body) and match and mode != "norange":
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.end_headers()
            return
        self.send_response(206 if match and mode != "norange" else 200)
        if match and mode != "norange":
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        chunk = body[start:]
        if mode == "cut" and self._take("cuts_left"):
            chunk = chunk[: len(chunk) // 2]  # then the connection closes (HTTP/1.0)
        # Recorded before the bytes go out: the client may return (and the test read
        # state.sent) as soon as it has them, before this handler thread runs on.
        with state.lock:
            state.sent.append(len(chunk))
        self.wfile.write(chunk)


@pytest.fixture(scope="module")
def _httpd():
    """A threaded HTTP server on 127.0.0.1 with an ephemeral port, shared by this module."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = _State()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(WAIT_S)


@pytest.fixture()
def server(_httpd):
    """(base URL, a fresh state) for one test."""
    state = _httpd.state = _State()
    try:
        yield f"http://127.0.0.1:{_httpd.server_address[1]}", state
    finally:
        state.release.set()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Nothing a test does may touch the real cache or a user's mirror list."""
    monkeypatch.setenv(registry.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(registry.ENV_MIRRORS, raising=False)


def _opts(tmp_path: Path, sleeps: list[float] | None = None, **kw):
    sleeps = [] if sleeps is None else sleeps
    return dict(hashes=HashStore(tmp_path / "hashes.json"), sleep=sleeps.append,
                chunk_size=CHUNK, progress=False, backoff=0.25, **kw)


def _artifact(name: str, urls: list[str], *known: Digests) -> Artifact:
    return Artifact(name=name, kind="dataset", filename=name, urls=tuple(urls), known=known)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_plain_download_streams_raw_bytes(server, tmp_path):
    base, state = server
    state.files["a.bin"] = body = _payload(1)
    dest = fetch(f"{base}/ok/a.bin", tmp_path / "out", **_opts(tmp_path))
    assert dest == tmp_path / "out" / "a.bin"
    assert dest.read_bytes() == body
    assert state.seen == [("ok", "a.bin", None, "identity")]
    assert not (tmp_path / "out" / "a.bin.part").exists()


def test_verified_file_is_not_fetched_twice(server, tmp_path):
    base, state = server
    state.files["b.bin"] = body = _payload(2)
    art = _artifact("b.bin", [f"{base}/ok/b.bin"])
    store = HashStore(tmp_path / "hashes.json")
    first = fetch(art, tmp_path, **_opts(tmp_path))
    second = fetch(art, tmp_path, **_opts(tmp_path))
    assert first == second and second.read_bytes() == body
    assert state.hits() == 1
    assert store.get("b.bin")["sha256"] == _sha256(body)


def test_partial_file_resumes_with_range(server, tmp_path):
    base, state = server
    state.files["c.bin"] = body = _payload(3)
    have = len(body) // 3
    (tmp_path / "c.bin.part").write_bytes(body[:have])
    dest = fetch(f"{base}/ok/c.bin", tmp_path, expected={"sha256": _sha256(body)},
                 **_opts(tmp_path))
    assert dest.read_bytes() == body
    assert state.seen[0][2] == f"bytes={have}-"
    assert state.sent == [len(body) - have]


def test_complete_partial_file_is_checked_and_renamed(server, tmp_path):
    base, state = server
    state.files["c2.bin"] = body = _payload(31)
    (tmp_path / "c2.bin.part").write_bytes(body)  # a run that died before its rename
    dest = fetch(f"{base}/ok/c2.bin", tmp_path, expected={"sha256": _sha256(body)},
                 **_opts(tmp_path))
    assert dest.read_bytes() == body and state.sent == []
    assert state.seen[0][2] == f"bytes={len(body)}-"


@pytest.mark.shared
def test_registry_artifact_through_a_user_mirror(server, tmp_path, upstream_dir):
    base, state = server
    artifact = registry.get("split/pascal/seg11valid")
    state.files[artifact.filename] = (upstream_dir / "data/pascal/seg11valid.txt").read_bytes()
    dest = fetch(artifact.name, tmp_path, mirrors=[f"{base}/ok"], **_opts(tmp_path))
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == artifact.known[0].sha256
    assert state.hits() == 1


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    base, state = server
    state.files["d.bin"] = body = _payload(4)
    junk = _payload(99, len(body) // 2)  # bytes a naive resume would keep in front
    (tmp_path / "d.bin.part").write_bytes(junk)
    dest = fetch(f"{base}/norange/d.bin", tmp_path, expected={"md5": hashlib.md5(body).hexdigest()},
                 **_opts(tmp_path))
    assert dest.read_bytes() == body
    assert state.seen[0][2] == f"bytes={len(junk)}-"
    assert state.sent == [len(body)]


def test_connection_cut_midway_resumes(server, tmp_path):
    base, state = server
    state.files["e.bin"] = body = _payload(5)
    state.cuts_left = 1
    sleeps: list[float] = []
    dest = fetch(f"{base}/cut/e.bin", tmp_path, expected={"sha1": hashlib.sha1(body).hexdigest()},
                 **_opts(tmp_path, sleeps))
    assert dest.read_bytes() == body
    half = len(body) // 2
    assert [s[2] for s in state.seen] == [None, f"bytes={half}-"]
    assert state.sent == [half, len(body) - half]
    assert sleeps == [0.25]


def test_retries_back_off_exponentially_then_next_mirror(server, tmp_path):
    base, state = server
    state.files["f.bin"] = body = _payload(6)
    sleeps: list[float] = []
    art = _artifact("f.bin", [f"{base}/down/f.bin", f"{base}/ok/f.bin"])
    dest = fetch(art, tmp_path, retries=3, **_opts(tmp_path, sleeps))
    assert dest.read_bytes() == body
    assert [m for m, *_ in state.seen] == ["down"] * 4 + ["ok"]
    assert sleeps == [0.25 * 2 ** k for k in range(3)]


def test_transient_error_then_success(server, tmp_path):
    base, state = server
    state.files["g.bin"] = body = _payload(7)
    state.flaky_left = 2
    sleeps: list[float] = []
    dest = fetch(f"{base}/flaky/g.bin", tmp_path, **_opts(tmp_path, sleeps))
    assert dest.read_bytes() == body
    assert state.hits("flaky") == 3 and sleeps == [0.25, 0.5]


def test_404_on_first_mirror_goes_to_next_without_retrying(server, tmp_path):
    base, state = server
    state.files["h.bin"] = body = _payload(8)
    sleeps: list[float] = []
    art = _artifact("h.bin", [f"{base}/ok/h.bin"])
    dest = fetch(art, tmp_path, mirrors=[f"{base}/missing"], **_opts(tmp_path, sleeps))
    assert dest.read_bytes() == body
    assert [m for m, *_ in state.seen] == ["missing", "ok"]
    assert sleeps == []


def test_mirror_order_argument_then_environment_then_registry(server, tmp_path, monkeypatch):
    base, state = server
    state.files["i.bin"] = _payload(9)
    monkeypatch.setenv(registry.ENV_MIRRORS, f"{base}/missing/, {base}/ok")
    art = _artifact("i.bin", [f"{base}/norange/i.bin"])
    fetch(art, tmp_path, mirrors=[f"{base}/down"], retries=0, **_opts(tmp_path))
    assert [m for m, *_ in state.seen] == ["down", "missing", "ok"]


def test_user_mirrors_apply_to_a_bare_url_too(server, tmp_path):
    base, state = server
    state.files["i2.bin"] = body = _payload(32)
    dest = fetch(f"{base}/down/i2.bin", tmp_path, mirrors=[f"{base}/ok"], **_opts(tmp_path))
    assert dest.read_bytes() == body and [m for m, *_ in state.seen] == ["ok"]


def test_wrong_checksum_leaves_no_file(server, tmp_path):
    base, state = server
    state.files["j.bin"] = body = _payload(10)
    wanted = _sha256(_payload(11))
    url = f"{base}/ok/j.bin"
    with pytest.raises(ChecksumMismatchError) as info:
        fetch(url, tmp_path, expected={"sha256": wanted}, **_opts(tmp_path))
    message = str(info.value)
    assert url in message and wanted in message and _sha256(body) in message
    assert not (tmp_path / "j.bin").exists() and not (tmp_path / "j.bin.part").exists()


def test_known_digests_of_an_artifact_are_checked(server, tmp_path):
    base, state = server
    state.files["k.bin"] = body = _payload(12)
    right = Digests(md5=hashlib.md5(body).hexdigest(), sha1=hashlib.sha1(body).hexdigest())
    wrong = Digests(md5=hashlib.md5(body).hexdigest(), sha1=hashlib.sha1(b"other").hexdigest())
    with pytest.raises(ChecksumMismatchError) as info:
        fetch(_artifact("k.bin", [f"{base}/ok/k.bin"], wrong), tmp_path, **_opts(tmp_path))
    assert info.value.algorithm == "sha1" and info.value.actual == hashlib.sha1(body).hexdigest()
    assert not (tmp_path / "k.bin").exists()
    dest = fetch(_artifact("k.bin", [f"{base}/ok/k.bin"], wrong, right), tmp_path, **_opts(tmp_path))
    assert dest.read_bytes() == body


def test_recorded_sha256_checks_every_later_download(server, tmp_path):
    base, state = server
    state.files["l.bin"] = first = _payload(13)
    art = _artifact("l.bin", [f"{base}/ok/l.bin"])
    dest = fetch(art, tmp_path, **_opts(tmp_path))
    assert HashStore(tmp_path / "hashes.json").get("l.bin")["sha256"] == _sha256(first)
    dest.unlink()
    state.files["l.bin"] = changed = _payload(14)
    with pytest.raises(ChecksumMismatchError) as info:
        fetch(art, tmp_path, **_opts(tmp_path))
    assert info.value.expected == _sha256(first) and info.value.actual == _sha256(changed)
    assert not dest.exists()


def test_changed_cached_file_is_refused_without_a_request(server, tmp_path):
    base, state = server
    state.files["m.bin"] = _payload(15)
    art = _artifact("m.bin", [f"{base}/ok/m.bin"])
    dest = fetch(art, tmp_path, **_opts(tmp_path))
    dest.write_bytes(_payload(16))
    with pytest.raises(ChecksumMismatchError, match="delete the file"):
        fetch(art, tmp_path, **_opts(tmp_path))
    assert state.hits() == 1


def test_every_url_failing_keeps_the_partial_file_for_a_later_resume(server, tmp_path):
    base, state = server
    state.files["n.bin"] = body = _payload(17)
    state.cuts_left = 2
    url = f"{base}/cut/n.bin"
    with pytest.raises(DownloadError, match="no URL gave the file") as info:
        fetch(url, tmp_path, retries=1, **_opts(tmp_path))
    assert url in str(info.value) and not isinstance(info.value, ChecksumMismatchError)
    part = tmp_path / "n.bin.part"
    assert 0 < part.stat().st_size < len(body) and not (tmp_path / "n.bin").exists()
    dest = fetch(url, tmp_path, expected={"sha256": _sha256(body)}, **_opts(tmp_path))
    assert dest.read_bytes() == body and state.seen[-1][2] == f"bytes={part_size(state)}-"


def part_size(state: _State) -> int:
    """Bytes the server had sent before the last request (what the .part file held)."""
    return sum(state.sent[:-1])


class _WaitSeen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "waiting for another" in record.getMessage():
            self.event.set()


def test_concurrent_fetches_download_once_under_the_lock(server, tmp_path):
    base, state = server
    state.files["o.bin"] = body = _payload(18)
    art = _artifact("o.bin", [f"{base}/gate/o.bin"])
    results: dict[str, object] = {}

    def run(tag: str) -> None:
        try:
            results[tag] = fetch(art, tmp_path, **_opts(tmp_path))
        except Exception as err:  # reported by the assertions below
            results[tag] = err

    seen = _WaitSeen()
    logger = logging.getLogger(download.__name__)
    old_level = logger.level
    logger.addHandler(seen)
    logger.setLevel(logging.INFO)
    try:
        first = threading.Thread(target=run, args=("first",))
        first.start()
        assert state.started.wait(WAIT_S)  # the first fetch holds the lock, mid-request
        second = threading.Thread(target=run, args=("second",))
        second.start()
        assert seen.event.wait(WAIT_S)  # the second is blocked on the lock
        state.release.set()
        first.join(WAIT_S)
        second.join(WAIT_S)
    finally:
        logger.removeHandler(seen)
        logger.setLevel(old_level)
    assert results["first"] == results["second"] == tmp_path / "o.bin"
    assert (tmp_path / "o.bin").read_bytes() == body
    assert state.hits() == 1


def test_fetch_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="retries"):
        fetch("http://127.0.0.1:9/x.bin", tmp_path, retries=-1, **_opts(tmp_path))
    with pytest.raises(registry.UnknownArtifactError, match="fcn8s"):
        fetch("fcn8z", tmp_path, **_opts(tmp_path))
    with pytest.raises(ValueError, match="sha512"):
        fetch("http://127.0.0.1:9/x.bin", tmp_path, expected={"sha512": "00"}, **_opts(tmp_path))


# --- archives -------------------------------------------------------------------------------

def _tar(path: Path, members: list[tuple[str, bytes | None, str | None]], mode: str = "w:gz") -> Path:
    """Write a tar: (name, data, None) a file, (name, None, target) a symlink,
    (name, None, '=target') a hard link."""
    with tarfile.open(path, mode) as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type = tarfile.LNKTYPE if link.startswith("=") else tarfile.SYMTYPE
                info.linkname = link.lstrip("=")
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_extract_tar_atomically_and_once(tmp_path):
    archive = _tar(tmp_path / "set.tgz", [("set/a.txt", b"alpha", None),
                                          ("set/sub/b.txt", b"beta", None),
                                          ("set/sub/link.txt", None, "../a.txt")])
    out = tmp_path / "data"
    out.mkdir()
    root = extract(archive, out)
    assert root == out / "set"
    assert (root / "set" / "sub" / "b.txt").read_bytes() == b"beta"
    assert (root / "set" / "sub" / "link.txt").read_bytes() == b"alpha"
    (root / "marker").write_text("kept")
    assert extract(archive, out) == root and (root / "marker").exists()
    assert _leftovers(out) == []


@pytest.mark.parametrize("members", [
    [("ok.txt", b"x", None), ("../evil.txt", b"x", None)],
    [("/abs/evil.txt", b"x", None)],
    [("dir/link", None, "../../evil.txt")],
    [("dir/link", None, "/etc/passwd")],
    [("hard", None, "=../evil.txt")],
], ids=["dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink-out"])
def test_extract_refuses_members_outside_the_destination(tmp_path, members):
    archive = _tar(tmp_path / "bad.tar", members, mode="w")
    out = tmp_path / "a" / "b"
    out.mkdir(parents=True)
    with pytest.raises(ArchiveError) as info:
        extract(archive, out)
    bad = next(m[0] for m in members if m[0] != "ok.txt")
    assert bad in str(info.value) and str(archive) in str(info.value)
    assert not (out / "bad").exists() and _leftovers(out) == []
    assert not (tmp_path / "a" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_extract_zip_and_refuse_zip_slip(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("top/x.txt", b"ex")
    assert (extract(good, tmp_path) / "top" / "x.txt").read_bytes() == b"ex"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("fine.txt", b"ok")
        zf.writestr("../slip.txt", b"no")
    with pytest.raises(ArchiveError, match="slip.txt"):
        extract(bad, tmp_path, name="badzip")
    assert not (tmp_path / "badzip").exists() and not (tmp_path.parent / "slip.txt").exists()


def test_extract_refuses_a_non_archive(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(_payload(19, 1000))
    with pytest.raises(ArchiveError, match="not a tar"):
        extract(junk, tmp_path)
    with pytest.raises(ArchiveError, match="no such archive"):
        extract(tmp_path / "absent.zip", tmp_path)


def _refusing_url(name: str) -> str:
    """A URL on 127.0.0.1 at a port nobody listens on (bound, then closed): refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/ok/{name}"


def test_refused_connection_goes_to_the_next_mirror_without_retrying(server, tmp_path):
    base, state = server
    state.files["r.bin"] = body = _payload(21)
    sleeps: list[float] = []
    refused = _refusing_url("r.bin")
    dest = fetch(_artifact("r.bin", [refused, f"{base}/ok/r.bin"]), tmp_path, retries=3,
                 **_opts(tmp_path, sleeps))
    assert dest.read_bytes() == body and sleeps == [] and state.hits() == 1
    with pytest.raises(DownloadError, match="cannot reach the host") as info:
        fetch(refused, tmp_path / "again", retries=3, **_opts(tmp_path, sleeps))
    assert refused in str(info.value) and "not retried" in str(info.value) and sleeps == []


def test_unresolvable_host_is_not_retried(tmp_path, monkeypatch):
    """Name resolution failing (socket.gaierror, as with no DNS) is not worth a retry; the
    resolver is replaced for one made-up host, so nothing leaves this machine."""
    resolve = socket.getaddrinfo
    asked: list[str] = []

    def no_such_host(host, *args, **kwargs):
        if host == "mirror.invalid":
            asked.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    sleeps: list[float] = []
    with pytest.raises(DownloadError, match="cannot reach the host"):
        fetch("http://mirror.invalid/x.bin", tmp_path, retries=3, **_opts(tmp_path, sleeps))
    assert asked == ["mirror.invalid"] and sleeps == []


def test_timeouts_and_cut_connections_are_still_retried():
    """Only a host that cannot be reached moves on at once; a timeout or a reset may pass."""
    import requests
    import urllib3
    timeout = requests.exceptions.ConnectTimeout(urllib3.exceptions.MaxRetryError(
        None, "http://h/x", urllib3.exceptions.ConnectTimeoutError(None, "timed out")))
    reset = requests.exceptions.ChunkedEncodingError(
        urllib3.exceptions.ProtocolError("cut", ConnectionResetError(104, "reset")))
    assert not download._unreachable(timeout) and not download._unreachable(reset)
    assert not download._unreachable(requests.exceptions.ReadTimeout("read timed out"))


# ------------------------------------------------- offline: one line, nothing left behind (#13)
@pytest.fixture
def no_dns(monkeypatch):
    """Name resolution fails for every host but 127.0.0.1, as on a machine without a network:
    nothing leaves this machine. Returns the hosts asked for."""
    resolve = socket.getaddrinfo
    asked: list[str] = []

    def offline(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            asked.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    return asked


def test_a_failed_fetch_says_in_one_line_what_to_do_and_leaves_no_lock(tmp_path, no_dns):
    """A caffemodel whose hosts cannot be reached (one refuses on 127.0.0.1, one does not
    resolve): one line naming the file, each host and why, the URL to download by hand, where
    to put the file and the option that takes a local copy; no lock file, no folder made."""
    refused = _refusing_url("net.caffemodel")
    art = Artifact(name="net", kind="caffemodel", filename="net.caffemodel",
                   urls=(refused, "http://dl.example.invalid/net.caffemodel"))
    cache = tmp_path / "weights" / "cache"
    with pytest.raises(DownloadError) as info:
        fetch(art, cache, retries=2, **_opts(tmp_path))
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith("net.caffemodel: no URL gave the file")
    assert f"127.0.0.1:{refused.split(':')[2].split('/')[0]} (cannot reach the host " \
           f"(connection refused)" in message
    assert "dl.example.invalid (cannot reach the host (its name does not resolve" in message
    assert f"Download {refused} by hand and put it at {cache / 'net.caffemodel'}" in message
    assert "--weights FILE (make: WEIGHTS=FILE)" in message
    assert "NewConnectionError" not in message and "HTTPConnectionPool" not in message
    assert no_dns == ["dl.example.invalid"]
    assert not (tmp_path / "weights").exists()         # no lock file, no empty folders
    assert len(info.value.failures) == 2


def test_a_failed_dataset_fetch_names_data_and_keeps_the_existing_folder(tmp_path, no_dns):
    folder = tmp_path / "archives"
    folder.mkdir()
    (folder / "other.tar").write_bytes(b"x")
    art = Artifact(name="voc", kind="dataset", filename="voc.tar",
                   urls=("http://host.example.invalid/voc.tar",))
    with pytest.raises(DownloadError, match=r"--data DIR \(make: DATA=DIR\)"):
        fetch(art, folder, **_opts(tmp_path))
    assert sorted(p.name for p in folder.iterdir()) == ["other.tar"]   # the lock is gone


def test_the_lock_of_a_failed_fetch_is_not_taken_twice(tmp_path):
    """A waiter on a lock file that its holder removed locks the file now at that path, so two
    processes never both hold 'the' lock."""
    lock = tmp_path / ".x.lock"
    entered, holders = threading.Event(), []

    def second() -> None:
        with registry.file_lock(lock):
            holders.append(os.stat(lock).st_ino)
    with pytest.raises(RuntimeError):
        with registry.file_lock(lock, remove_on_error=True):
            thread = threading.Thread(target=second)
            thread.start()
            entered.wait(0.2)         # the second one is now blocked on the first inode
            raise RuntimeError("download failed")
    thread.join(WAIT_S)
    assert len(holders) == 1 and lock.exists()   # it locked the file at the path, a new one
