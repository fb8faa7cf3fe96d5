"""port.convert's streaming safetensors writer, overlapped hashing, per-file read errors, and
loading converted weights into a model without copies."""
from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save

from port.caffe import load_caffemodel
from port.convert import ConversionError, convert, safetensors_header, sha256_file, write_safetensors
from port.models import weights as fmt
from port.models import get_model, load_state_strict, load_weights


@pytest.fixture
def fcn32s_files(goldens_dir, tmp_path, make_caffemodel):
    """voc-fcn32s at 1/16 width: its prototxt and a seeded random caffemodel in tmp_path."""
    caffemodel = make_caffemodel(tmp_path / "fcn32s.caffemodel", seed=5, net="voc-fcn32s")
    return goldens_dir / "voc-fcn32s" / "net.prototxt", caffemodel


def random_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"b.weight": rng.standard_normal((3, 2, 5, 5)).astype(np.float32),
            "a.bias": rng.standard_normal(7).astype(np.float32),
            "c.weight": np.zeros((0, 4), np.float32),
            "d.scale": rng.standard_normal((1, 1, 3, 2)).astype(np.float64)[0, 0].T}  # strided f64


def test_stream_writer_matches_safetensors_save_byte_for_byte(tmp_path):
    arrays, metadata = random_arrays(), {"net_name": "tiny"}
    out = tmp_path / "w.safetensors"
    write_safetensors(out, arrays, metadata)
    reference = save({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in arrays.items()},
                     metadata)
    assert out.read_bytes() == reference
    (length,) = struct.unpack("<Q", out.read_bytes()[:8])
    data_bytes = sum(np.asarray(v, np.float32).nbytes for v in arrays.values())
    assert length % 8 == 0 and out.stat().st_size == 8 + length + data_bytes
    as_float32 = {k: np.ascontiguousarray(arrays[k], np.float32) for k in sorted(arrays)}
    assert out.read_bytes().startswith(safetensors_header(as_float32, metadata))


def test_digest_placeholder_is_replaced_after_the_data(tmp_path):
    arrays = random_arrays(1)
    out = tmp_path / "w.safetensors"
    digest = hashlib.sha256(b"source").hexdigest()
    write_safetensors(out, arrays, {"net_name": "x"}, source_sha256=lambda: digest)
    with safe_open(str(out), framework="np") as handle:
        assert handle.metadata() == {"net_name": "x", fmt.SOURCE_SHA256: digest}
        for key, array in arrays.items():
            assert np.array_equal(handle.get_tensor(key), array.astype(np.float32)), key


def test_safe_open_round_trip_is_bit_exact(fcn32s_files, tmp_path):
    prototxt, caffemodel = fcn32s_files
    out = tmp_path / "fcn32s.safetensors"
    report = convert(caffemodel, prototxt, out=out)
    blobs = load_caffemodel(caffemodel).blobs()
    with safe_open(str(out), framework="np") as handle:
        metadata = handle.metadata()
        assert sorted(handle.keys()) == sorted(report.shapes)
        for layer, layer_blobs in blobs.items():
            for name, blob in zip(fmt.BLOB_NAMES, layer_blobs):
                got = handle.get_tensor(f"{layer}.{name}")
                assert got.dtype == np.float32 and got.tobytes() == blob.astype("<f4").tobytes()
    assert metadata[fmt.SOURCE_SHA256] == hashlib.sha256(caffemodel.read_bytes()).hexdigest()
    assert metadata[fmt.SOURCE_SHA256] == report.source_sha256
    assert metadata[fmt.FORMAT_KEY] == fmt.FORMAT and metadata[fmt.BUILDER] == "fcn32s"


def test_sha256_file_reads_in_chunks_and_stops_when_asked(tmp_path):
    import threading
    data = np.random.default_rng(0).bytes(3 * 2 ** 20 + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    stop = threading.Event()
    stop.set()
    assert sha256_file(path, stop) == hashlib.sha256(b"").hexdigest()


def test_bad_prototxt_error_names_the_prototxt_only(fcn32s_files, tmp_path):
    _, caffemodel = fcn32s_files
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer { name: "a" type: \n')
    with pytest.raises(ConversionError) as info:
        convert(caffemodel, bad, out=tmp_path / "o.safetensors")
    message = str(info.value)
    assert message.startswith(f"{bad}: cannot read: ") and str(caffemodel) not in message
    with pytest.raises(ConversionError, match="prototxt not found") as info:
        convert(caffemodel, tmp_path / "absent.prototxt", out=tmp_path / "o.safetensors")
    assert str(caffemodel) not in str(info.value)


def test_truncated_caffemodel_error_names_it_once(fcn32s_files, tmp_path):
    prototxt, caffemodel = fcn32s_files
    truncated = tmp_path / "cut.caffemodel"
    data = caffemodel.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    for args in ((truncated,), (truncated, prototxt)):
        with pytest.raises(ConversionError) as info:
            convert(*args, out=tmp_path / "o.safetensors")
        message = str(info.value)
        assert message.startswith(f"{truncated}: cannot read: byte ") and message.count(str(truncated)) == 1
        assert str(prototxt) not in message
    assert not (tmp_path / "o.safetensors").exists()


def test_loading_assigns_the_file_tensors_without_copies(fcn32s_files, tmp_path):
    prototxt, caffemodel = fcn32s_files
    out = convert(caffemodel, prototxt, out=tmp_path / "w.safetensors").out
    state, _ = load_weights(out)
    model = get_model("fcn32s", width_divisor=16)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    load_state_strict(model, state, out)
    params = dict(model.named_parameters())
    assert all(params[k].data_ptr() == v.data_ptr() for k, v in state.items() if k in params)
    assert frozen == {name for name, p in params.items() if not p.requires_grad} and frozen
    with torch.device("meta"):
        on_meta = get_model("fcn32s", width_divisor=16)
    load_state_strict(on_meta, load_weights(out)[0], out)
    assert all(not p.is_meta for p in on_meta.parameters())
    assert all(torch.equal(p, params[k]) for k, p in on_meta.named_parameters())
    inputs = torch.randn(1, 3, 40, 52, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(on_meta.eval()(data=inputs), model.eval()(data=inputs))
