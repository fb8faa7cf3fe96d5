"""Weights in one call (issue 23 item 2): ``fcn8s(weights="released")``, ``get_model(name,
weights="released")`` and ``torch.hub.load(<checkout>, name, source="local", pretrained=True)``
fetch the released caffemodel, verify it, convert it once into the per-user cache and load it;
``model.meta.transforms()`` is the preprocessing; ``model.meta.published`` the papers' numbers.

The caffemodels are the project's own (``port.caffe.synth``, seeded random weights at 1/16 of
the released widths, with the released file names), served by an HTTP server on 127.0.0.1 that
the tests start. The registry's records carry the real addresses and digests, so the tests
replace each record (``port.hub.registry.caffemodel_for``, the one place
``port.hub.pretrained`` takes it from) by one naming the local server and the served file's
own SHA-256 (``dataclasses.replace`` of the real record): the digest check itself runs
unchanged, and a wrong digest fails. Every test's cache is its own ``$FCN_PORT_CACHE``.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import http.server
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from port.caffe import load_caffemodel
from port.caffe.synth import make_caffemodel
from port.errors import PortError
from port.hub import download, registry
from port.hub.registry import Digests
from port.models import get_meta, get_model, list_models
from port.models.released import RELEASED, deploy_netdef

REPO = Path(__file__).resolve().parents[1]
WIDTH = 16


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (name -> bytes) and counts each GET in ``server.gets``."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.gets.append(name)  # type: ignore[attr-defined]
        body = self.server.files.get(name)  # type: ignore[attr-defined]
        if body is None:
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving a 1/16-width synthetic caffemodel under the released
    file name of every released net that has one; yields (base URL, the server)."""
    folder = tmp_path_factory.mktemp("served")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    httpd.daemon_threads = True
    httpd.files, httpd.gets, httpd.lock = {}, [], threading.Lock()
    for meta in RELEASED:
        if meta.caffemodel:
            path = folder / meta.caffemodel
            make_caffemodel(deploy_netdef(meta, width_divisor=WIDTH), path)
            httpd.files[meta.caffemodel] = path.read_bytes()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(30)


@pytest.fixture
def records(server, tmp_path, monkeypatch):
    """Each released caffemodel's record pointing at the local server with the served file's
    own SHA-256; a fresh cache. Returns ``digests``: name -> the SHA-256 a record demands
    (a test may change it)."""
    base, httpd = server
    monkeypatch.setenv(registry.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(registry.ENV_MIRRORS, raising=False)
    digests = {name: hashlib.sha256(body).hexdigest() for name, body in httpd.files.items()}
    real = registry.caffemodel_for

    def local(builder: str) -> registry.Artifact:
        artifact = real(builder)  # the real record (a net without one raises as it does)
        return dataclasses.replace(artifact, urls=(f"{base}/{artifact.filename}",),
                                   known=(Digests(sha256=digests[artifact.filename],
                                                  source="the test's server"),))
    monkeypatch.setattr(registry, "caffemodel_for", local)
    return digests


def _gets(server) -> int:
    return len(server[1].gets)


# ------------------------------------------------------------------ the builders: weights="released"
def test_released_weights_are_fetched_converted_once_and_loaded(server, records, monkeypatch, tmp_path):
    from port.models import fcn8s
    before = _gets(server)
    model = fcn8s(weights="released")
    assert _gets(server) == before + 1
    # the caffemodel's blobs, as the engine holds them (the served file read by the project's reader)
    served = tmp_path / "served.caffemodel"
    served.write_bytes(server[1].files[get_meta("fcn8s").caffemodel])
    blobs = load_caffemodel(served).blobs()
    for layer in ("conv1_1", "score_fr", "score_pool3"):
        assert torch.equal(model.state_dict()[f"{layer}.weight"], torch.from_numpy(blobs[layer][0]))
    cached = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(cached) == 1 and cached[0].name.startswith("fcn8s-heavy-pascal-fcn8s-")

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")
    monkeypatch.setattr("port.convert.convert", no_conversion)
    again = get_model("FCN8s", weights="released")           # any spelling, torchvision's call
    assert _gets(server) == before + 1                        # neither downloaded ...
    assert list((tmp_path / "cache").glob("*.safetensors")) == cached   # ... nor converted
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor)
    # one call's weights, one call's preprocessing: scores at the image's own size
    image = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    with torch.no_grad():
        score = again.eval()(again.meta.transforms()(image)[None])
    assert tuple(score.shape) == (1, 21, 5, 7) and torch.isfinite(score).all()


def test_a_wrong_checksum_is_one_line_and_leaves_nothing(server, records, tmp_path):
    from port.models import fcn16s
    records[get_meta("fcn16s").caffemodel] = "0" * 64
    with pytest.raises(download.ChecksumMismatchError) as caught:
        fcn16s(weights="released")
    message = str(caught.value)
    assert isinstance(caught.value, PortError) and "\n" not in message
    assert "fcn16s-heavy-pascal.caffemodel" in message and "checksum mismatch" in message
    assert not list((tmp_path / "cache").glob("*.caffemodel"))      # nothing under its name
    assert not list((tmp_path / "cache").glob("*.safetensors"))


def test_a_download_no_url_gives_is_one_line_saying_what_to_do(server, records, monkeypatch, tmp_path):
    """Every URL 404: one line naming the host tried, where to put a copy, how to convert one."""
    base = server[0]
    artifact = registry.caffemodel_for("fcn32s")
    monkeypatch.setattr(registry, "caffemodel_for",
                        lambda builder: dataclasses.replace(artifact, urls=(f"{base}/gone/{artifact.filename}",)))
    with pytest.raises(download.DownloadError) as caught:
        get_model("fcn32s", weights="released")
    message = str(caught.value)
    assert "\n" not in message and "HTTP 404" in message
    assert str(tmp_path / "cache" / artifact.filename) in message
    assert "fcn-port convert" in message and "--model fcn32s" in message


def test_a_net_released_without_weights_says_so(records):
    for name in ("nyud_fcn32s_color_d", "fcn_googlenet"):
        with pytest.raises(registry.NoReleasedWeightsError, match=f"{name}.*no released caffemodel"):
            get_model(name, weights="released")


def test_a_path_named_released_is_a_file_not_the_download(server, records, tmp_path):
    from port.models import fcn32s
    before = _gets(server)
    with pytest.raises(PortError, match="released"):
        fcn32s(weights=tmp_path / "released")
    assert _gets(server) == before


def test_fetching_and_converting_import_no_torch_and_take_the_users_mirror(server, tmp_path):
    """In a fresh interpreter: ``$FCN_PORT_MIRRORS`` names the server (a net whose release
    published no digest: its first verified download records one), the real record is used
    as is, and neither the fetch nor the conversion imports torch."""
    meta = get_meta("fcn32s")
    assert not registry.caffemodel_for(meta.name).known       # else the mirror's file would fail
    code = ("import sys; from port.hub.pretrained import released_weights; "
            "got = released_weights('fcn32s', progress=False); "
            "print(got.path.name, got.converted, 'torch' in sys.modules)")
    env = {**os.environ, registry.ENV_CACHE: str(tmp_path / "cache"), registry.ENV_MIRRORS: server[0]}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    name, converted, torch_imported = done.stdout.split()
    assert name.startswith("fcn32s-heavy-pascal-fcn32s-") and converted == "True"
    assert torch_imported == "False"
    recorded = registry.HashStore(tmp_path / "cache" / registry.HASHES_FILENAME)
    served = hashlib.sha256(server[1].files[meta.caffemodel]).hexdigest()
    assert recorded.get(registry.caffemodel_for(meta.name).name)["sha256"] == served


# ------------------------------------------------------------------ torch.hub from the checkout
def _hubconf():
    """hubconf.py imported as torch.hub imports it (``source="local"``)."""
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hub_entries() -> list[str]:
    """The entry points, by torch.hub.list's rule (every public callable of hubconf.py)."""
    hubconf = _hubconf()
    return sorted(f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith("_"))


def test_hubconf_has_one_entry_per_released_net_and_needs_no_reproduce():
    assert _hub_entries() == sorted(meta.name for meta in RELEASED)
    assert set(_hub_entries()) <= set(list_models())
    tree = ast.parse((REPO / "hubconf.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert "reproduce" not in imported
    hubconf = _hubconf()
    assert all(importlib.util.find_spec(package) for package in hubconf.dependencies)
    for name in _hub_entries():   # torch.hub.help's text: the entry's docstring
        help_text = getattr(hubconf, name).__doc__
        assert get_meta(name).description in help_text and "pretrained" in help_text


def test_every_entry_point_loads_pretrained_through_torch_hub(server, records, tmp_path):
    for name in _hub_entries():
        meta = get_meta(name)
        if not meta.caffemodel:   # released without weights: one line says so
            with pytest.raises(registry.NoReleasedWeightsError, match=name):
                torch.hub.load(str(REPO), name, source="local", pretrained=True, progress=False)
            continue
        model = torch.hub.load(str(REPO), name, source="local", pretrained=True, progress=False)
        assert model.meta is meta
        served = tmp_path / meta.caffemodel
        served.write_bytes(server[1].files[meta.caffemodel])
        for layer in load_caffemodel(served).layers:     # every blob is the served file's
            for index, blob in enumerate(layer.blobs):
                key = f"{layer.name}.{('weight', 'bias')[index]}"
                assert torch.equal(model.state_dict()[key], torch.from_numpy(blob)), (name, key)


def test_an_entry_point_without_pretrained_builds_the_unweighted_net(server, records):
    before = _gets(server)
    model = torch.hub.load(str(REPO), "fcn32s", source="local", width_divisor=WIDTH)
    assert _gets(server) == before
    assert not model.state_dict()["score_fr.weight"].any()        # Caffe's constant 0 filler
    assert model.state_dict()["upscore.weight"].any()              # the bilinear upsampling


# ------------------------------------------------------------------ meta: preprocessing, numbers
def test_transforms_are_the_evaluations_preprocessing():
    """What ``reproduce.evaluation.for_model`` feeds each single-input net (its record's
    preprocessing, upstream's data layer), as a tensor."""
    from PIL import Image
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for meta in RELEASED:
        if len(meta.inputs) != 1:
            continue
        transform = meta.transforms()
        expected = dict(zip(meta.inputs, meta.preprocess))[meta.inputs[0]](image)
        got = transform(image)
        assert got.dtype == torch.float32 and tuple(got.shape) == (3, 5, 7)  # CHW, no batch axis
        assert torch.equal(got, torch.from_numpy(expected))
        assert torch.equal(transform(Image.fromarray(image)), got)           # a PIL image too


def test_transforms_is_upstreams_load_image():
    """voc_layers.py ``load_image``: float32, RGB -> BGR, minus the mean, HWC -> CHW."""
    from port.models.preprocess import VOC_MEAN_BGR
    image = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    in_ = np.array(image, dtype=np.float32)[:, :, ::-1] - np.array(VOC_MEAN_BGR, dtype=np.float32)
    assert torch.equal(get_meta("fcn8s").transforms()(image), torch.from_numpy(in_.transpose(2, 0, 1).copy()))


def test_transforms_of_a_net_of_several_inputs_is_one_line():
    with pytest.raises(PortError) as caught:
        get_meta("nyud_fcn32s_color_hha").transforms()
    message = str(caught.value)
    assert "\n" not in message and "color, hha" in message and "preprocess_nyud_hha" in message


def test_transforms_refuses_a_float_image_in_one_line():
    with pytest.raises(PortError, match="integer pixel values"):
        get_meta("fcn8s").transforms()(np.zeros((4, 4, 3), dtype=np.float32))


def test_published_numbers_carry_their_source():
    from port.models import tables
    rows = get_meta("fcn8s").published
    assert rows and rows == tuple(tables.published("fcn8s"))
    assert all(row.model == "fcn8s" and row.source.paper and row.source.table for row in rows)
    assert any(row.weights == "released" and row.mean_iu is not None for row in rows)
    assert get_meta("fcn_resnet50_8s").published == ()      # the project's own recipe: none
