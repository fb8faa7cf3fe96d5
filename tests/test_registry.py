"""port.hub.registry: the records agree with the reference release in ../shared/upstream,
lookups fail helpfully, mirrors and the cache folder follow their precedence, and the
recorded-hashes file is written atomically under a lock."""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from port.hub import registry
from port.hub.registry import (Artifact, Digests, HashStore, HashStoreError,
                                NoReleasedWeightsError, UnknownArtifactError)

# The builder names of port.models that the reference release ships weights for (the brief).
RELEASED_BUILDERS = {
    "fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce", "fcn_alexnet",
    "siftflow_fcn32s", "siftflow_fcn16s", "siftflow_fcn8s",
    "nyud_fcn32s_color", "nyud_fcn32s_hha", "nyud_fcn32s_color_hha",
    "pascalcontext_fcn32s", "pascalcontext_fcn16s", "pascalcontext_fcn8s",
}


def _builder_of(upstream_net: str) -> str:
    """Upstream folder name -> builder name: 'voc-fcn8s-atonce' -> 'fcn8s_atonce'."""
    return upstream_net.removeprefix("voc-").replace("-", "_")


@pytest.mark.shared
def test_caffemodel_urls_match_the_upstream_caffemodel_url_files(upstream_dir):
    url_files = sorted(upstream_dir.glob("*/caffemodel-url"))
    assert len(url_files) == len(registry.CAFFEMODELS)
    for url_file in url_files:
        # some of these files end without a newline, some with one: compare stripped
        url = url_file.read_text(encoding="utf-8").strip()
        artifact = registry.caffemodel_for(_builder_of(url_file.parent.name))
        assert artifact.urls[0] == url, url_file
        assert artifact.filename == url.rsplit("/", 1)[-1]
        assert url_file.parent.name in artifact.source


@pytest.mark.shared
def test_the_only_net_without_weights_is_color_d(upstream_dir):
    nets = {p.parent.name for p in upstream_dir.glob("*/*.prototxt")}
    without = sorted(n for n in nets if not (upstream_dir / n / "caffemodel-url").exists())
    assert [_builder_of(n) for n in without] == list(registry.UNRELEASED_BUILDERS)
    with pytest.raises(NoReleasedWeightsError, match="nyud_fcn32s_color_d"):
        registry.caffemodel_for("nyud_fcn32s_color_d")
    with pytest.raises(NoReleasedWeightsError):
        registry.get("nyud_fcn32s_color_d")


def test_one_caffemodel_per_released_builder():
    assert {a.builder for a in registry.CAFFEMODELS} == RELEASED_BUILDERS
    assert len(registry.CAFFEMODELS) == len(RELEASED_BUILDERS)
    assert all(a.kind == "caffemodel" and a.filename.endswith(".caffemodel")
               for a in registry.CAFFEMODELS)


def test_builders_exist_in_port_models_when_it_is_there():
    models = pytest.importorskip("port.models")
    if not hasattr(models, "list_models"):
        pytest.skip("port.models.list_models is not written yet")
    known = set(models.list_models())
    assert RELEASED_BUILDERS | set(registry.UNRELEASED_BUILDERS) <= known
    if hasattr(models, "get_meta"):  # the model's own record names the same released file
        for artifact in registry.CAFFEMODELS:
            assert models.get_meta(artifact.builder).caffemodel == artifact.filename
        for builder in registry.UNRELEASED_BUILDERS:
            assert not models.get_meta(builder).caffemodel


def test_known_checksums():
    fcn8s = registry.caffemodel_for("fcn8s")
    assert fcn8s.filename == "fcn8s-heavy-pascal.caffemodel"
    assert fcn8s.known[0].as_dict() == {"md5": "c03b2953ebd846c270da1a8e8f200c09",
                                        "sha1": "c449ea74dd7d83751d1357d6a8c323fcf4038962"}
    voc = registry.get("VOCtrainval_11-May-2012.tar")
    assert voc.known[0].md5 == "6cd6e144f989b92b3379bac3b3de84fd"
    sbd = registry.get("sbd")
    assert sbd.filename == "benchmark.tgz"
    assert "2b2af8a6cff7365684e002c08be823a6" in {d.md5 for d in sbd.known}


@pytest.mark.shared
def test_split_and_demo_digests_match_the_upstream_copies(upstream_dir):
    files = [a for a in registry.ARTIFACTS if a.kind in ("split", "demo")]
    assert {a.name for a in files} >= {"split/pascal/seg11valid", "split/sift-flow/test",
                                       "split/nyud/test", "demo/image", "demo/output"}
    for artifact in files:
        path = artifact.urls[0].split(registry.UPSTREAM_COMMIT + "/", 1)[1]
        assert all(registry.UPSTREAM_COMMIT in url for url in artifact.urls)
        data = (upstream_dir / path).read_bytes()
        assert artifact.known[0].sha256 == hashlib.sha256(data).hexdigest(), path
        if artifact.ids is not None:   # an evaluation split: its ids, counted and digested
            ids = [line.strip() for line in data.decode().splitlines() if line.strip()]
            assert (artifact.ids, artifact.ids_sha256) == (len(ids), registry.split_digest(ids))
    assert {a.name: a.ids for a in files if a.ids} == {
        "split/pascal/seg11valid": 736, "split/sift-flow/test": 200, "split/nyud/test": 654}


def test_every_artifact_has_a_fallback_url_naming_its_file():
    for artifact in registry.ARTIFACTS:
        assert len(artifact.urls) >= 2, artifact.name
        assert len(set(artifact.urls)) == len(artifact.urls), artifact.name
        for url in artifact.urls:
            assert url.startswith(("http://", "https://")), url
            assert url.rsplit("/", 1)[-1] == artifact.filename, url


def test_dataset_archives_are_registered():
    names = registry.names("dataset")
    for name in ("voc2012-trainval", "sbd", "siftflow", "nyud", "pascal-context"):
        assert name in names
    assert registry.get("siftflow").urls[0].endswith("/siftflow/SiftFlowDataset.zip")
    assert registry.get("nyud").urls[0] == "http://dl.caffe.berkeleyvision.org/nyud.tar.gz"


def test_lookup_by_name_file_name_or_builder():
    by_builder = registry.get("fcn16s")
    assert registry.get(by_builder.name) is by_builder
    assert registry.get("fcn16s-heavy-pascal.caffemodel") is by_builder


def test_typos_get_near_names():
    with pytest.raises(UnknownArtifactError, match="did you mean.*'fcn8s-heavy-pascal'"):
        registry.get("fcn8s-heavy-pascl")
    with pytest.raises(UnknownArtifactError, match="model builder 'fcn8'.*'fcn8s'"):
        registry.caffemodel_for("fcn8")
    with pytest.raises(UnknownArtifactError, match="unknown artifact 'zzzz'") as info:
        registry.get("zzzz")
    assert "did you mean" not in str(info.value)


def test_user_mirrors_come_first_argument_before_environment(monkeypatch):
    monkeypatch.setenv(registry.ENV_MIRRORS, "https://env.example/a/, https://env.example/b "
                                             "https://arg.example/")
    artifact = registry.get("fcn32s")
    urls = registry.candidate_urls(artifact, ["https://arg.example"])
    mirrored = [f"https://{host}/{artifact.filename}" for host in
                ("arg.example", "env.example/a", "env.example/b")]
    assert urls == (*mirrored, *artifact.urls)
    monkeypatch.delenv(registry.ENV_MIRRORS)
    assert registry.candidate_urls(artifact) == artifact.urls


def test_cache_folder_precedence(monkeypatch, tmp_path):
    """Issue 19.1: the argument, else $FCN_PORT_CACHE, else $XDG_CACHE_HOME/fcn-port, else
    ~/.cache/fcn-port; never inside the package (an installed one may be read-only)."""
    monkeypatch.delenv(registry.ENV_CACHE, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert registry.cache_dir() == tmp_path / "home" / ".cache" / "fcn-port"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.cache_dir() == tmp_path / "xdg" / "fcn-port"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")      # the XDG rule: absolute only
    assert registry.cache_dir() == tmp_path / "home" / ".cache" / "fcn-port"
    monkeypatch.setenv(registry.ENV_CACHE, str(tmp_path / "env"))
    assert registry.cache_dir() == tmp_path / "env"
    assert registry.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    package = Path(registry.__file__).resolve().parents[1]
    monkeypatch.delenv(registry.ENV_CACHE)
    assert package not in registry.cache_dir().resolve().parents


def test_records_refuse_malformed_values():
    with pytest.raises(ValueError, match="md5 must be 32 lowercase hex"):
        Digests(md5="c03b2953", source="typo")
    with pytest.raises(ValueError, match="at least one"):
        Digests(source="empty")
    with pytest.raises(ValueError, match="kind"):
        Artifact("x", "weights", "x.bin", ("http://h/x.bin",))
    with pytest.raises(ValueError, match="plain file name"):
        Artifact("x", "dataset", "a/x.bin", ("http://h/x.bin",))
    with pytest.raises(ValueError, match="at least one URL"):
        Artifact("x", "dataset", "x.bin", ())


def test_hash_store_round_trip_is_atomic(tmp_path):
    store = HashStore(tmp_path / "cache" / "hashes.json")
    assert store.get("a") is None
    digest = hashlib.sha256(b"a").hexdigest()
    store.record("a", sha256=digest, size=1)
    assert HashStore(store.path).get("a") == {"sha256": digest, "size": 1}
    assert json.loads(store.path.read_text())["files"]["a"]["sha256"] == digest
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["hashes.json",
                                                                    "hashes.json.lock"]


def test_hash_store_file_mode_follows_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        store = HashStore(tmp_path / "hashes.json")
        store.record("a", sha256=hashlib.sha256(b"a").hexdigest())
    finally:
        os.umask(previous)
    assert store.path.stat().st_mode & 0o777 == 0o666 & ~0o022


def test_hash_store_keeps_concurrent_records(tmp_path):
    store = HashStore(tmp_path / "hashes.json")
    keys = [f"k{i}" for i in range(8)]
    threads = [threading.Thread(target=store.record,
                                args=(k,), kwargs={"sha256": hashlib.sha256(k.encode()).hexdigest()})
               for k in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(store.get(k)["sha256"] == hashlib.sha256(k.encode()).hexdigest() for k in keys)


def test_hash_store_names_a_corrupt_file(tmp_path):
    path = tmp_path / "hashes.json"
    path.write_text("{not json")
    with pytest.raises(HashStoreError, match=str(path)):
        HashStore(path).get("a")
    path.write_text(json.dumps({"files": {"a": {"sha256": "short"}}}))
    with pytest.raises(HashStoreError, match="'a'"):
        HashStore(path).get("a")


def test_released_weights_are_recorded_once_beside_the_model_metadata():
    """The registry's caffemodel records are made from each ModelMeta (file name, addresses,
    published digests), so nothing about the released weights is kept twice."""
    from port.models import get_meta, list_models
    released = [n for n in list_models() if get_meta(n).caffemodel]
    assert [a.builder for a in registry.CAFFEMODELS] == released
    for artifact in registry.CAFFEMODELS:
        meta = get_meta(artifact.builder)
        assert artifact.filename == meta.caffemodel and artifact.urls == meta.caffemodel_urls
        assert artifact.urls[0] == meta.caffemodel_url and artifact.known == meta.caffemodel_digests
    assert get_meta("fcn8s").caffemodel_digests[0].md5 == "c03b2953ebd846c270da1a8e8f200c09"
