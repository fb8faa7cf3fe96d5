"""Binary caffemodels: the wire reader, the writer (bit-exact round trip) and bad input."""
from __future__ import annotations

import os
import struct

import h5py
import numpy as np
import pytest

from port.caffe import (CaffeFormatError, Message, decode, load_caffemodel, load_net,
                        write_caffemodel)
from port.caffe import wire, writer
from port.caffe.synth import make_caffemodel, random_caffemodel
from port.caffe.wire import encode_varint

from conftest import GOLDEN_NETS

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "up" type: "Deconvolution" bottom: "conv" top: "up"
        convolution_param { num_output: 2 kernel_size: 4 stride: 2 bias_term: false } }
layer { name: "scale" type: "Scale" bottom: "up" top: "s" scale_param { bias_term: true } }
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    return load_net(path)


def _tag(number: int, wire_type: int) -> bytes:
    return encode_varint(number << 3 | wire_type)


def _len(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + encode_varint(len(payload)) + payload


def _layer_with_blob(blob: bytes, name=b"L") -> bytes:
    # NetParameter.layer = 100, LayerParameter.name = 1, .blobs = 7 (caffe.proto)
    return _len(100, _len(1, name) + _len(7, blob))


def test_synth_writer_reader_round_trip(tiny, tmp_path):
    msg = make_caffemodel(tiny, tmp_path / "t.caffemodel", seed=3)
    model = load_caffemodel(tmp_path / "t.caffemodel")
    assert [b.shape for b in model.layer("conv").blobs] == [(4, 3, 3, 3), (4,)]
    assert [b.shape for b in model.layer("up").blobs] == [(4, 2, 4, 4)]
    assert [b.shape for b in model.layer("scale").blobs] == [(2,), (2,)]
    assert wire.decode(writer.encode(msg)) == msg
    assert (tmp_path / "t.caffemodel").read_bytes() == writer.encode(msg)


def test_round_trip_is_bit_exact_for_odd_floats():
    data = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4028235e38], np.float32)
    data = np.concatenate([data, np.frombuffer(b"\x01\x00\xc0\x7f", np.float32)])  # a NaN payload
    msg = Message("NetParameter", name="n")
    layer = msg.add("layer")
    layer.name, layer.type = "a", "Convolution"
    blob = layer.add("blobs")
    blob.shape = Message("BlobShape", dim=[7])
    blob.data = data
    blob.double_data = data.astype(np.float64)
    layer.add("param", Message("ParamSpec", lr_mult=-2.5))
    layer.input_param.set("shape", [])
    back = decode(writer.encode(msg))
    assert back == msg
    assert back.layer[0].blobs[0].data.tobytes() == data.tobytes()


@pytest.mark.parametrize("net", GOLDEN_NETS + ("vgg16-v1",))
def test_caffe_written_files_reencode_byte_for_byte(goldens_dir, net):
    raw = (goldens_dir / net / "weights.caffemodel").read_bytes()
    assert writer.encode(decode(raw)) == raw


def test_netdef_writes_back_identically(goldens_dir, tmp_path):
    src = goldens_dir / "voc-fcn8s" / "weights.caffemodel"
    write_caffemodel(tmp_path / "copy.caffemodel", load_caffemodel(src))
    assert (tmp_path / "copy.caffemodel").read_bytes() == src.read_bytes()


def test_unpacked_floats_read_vectorised_and_equal_packed():
    values = np.arange(1000, dtype=np.float32) / 7
    diff = np.float32(-1.5)
    unpacked = b"".join(_tag(5, 5) + struct.pack("<f", v) for v in values[:500])
    unpacked += _tag(6, 5) + struct.pack("<f", diff)  # a diff element interrupts the run
    unpacked += b"".join(_tag(5, 5) + struct.pack("<f", v) for v in values[500:])
    blob = _len(7, _len(1, encode_varint(1000))) + unpacked  # shape { dim: 1000 }
    model = _decode_net(_layer_with_blob(blob))
    assert model.layers[0].blobs[0].tobytes() == values.tobytes()
    assert model.layers[0].msg.blobs[0].diff.tolist() == [diff]


def test_legacy_dims_and_double_data():
    values = np.linspace(-1, 1, 6)
    blob = (_tag(1, 0) + b"\x01" + _tag(2, 0) + b"\x02" + _tag(3, 0) + b"\x01" + _tag(4, 0) + b"\x03"
            + _len(8, values.astype("<f8").tobytes()))
    model = _decode_net(_layer_with_blob(blob))
    assert model.layers[0].blobs[0].shape == (1, 2, 1, 3)
    assert model.layers[0].blobs[0].dtype == np.float32
    np.testing.assert_array_equal(model.layers[0].blobs[0].ravel(), values.astype(np.float32))


def test_unknown_fields_are_skipped():
    unknown = _tag(99, 0) + encode_varint(2**63) + _tag(98, 1) + b"\0" * 8 + _len(97, b"zz") + _tag(96, 5) + b"\0" * 4
    model = _decode_net(unknown + _layer_with_blob(_len(5, b"\0" * 4) + unknown) + unknown)
    assert model.layers[0].blobs[0].shape == ()  # no shape, no legacy dims: Caffe's scalar blob


def _decode_net(raw: bytes):
    from port.caffe.net import netdef_from_message
    return netdef_from_message(decode(raw, path="x.caffemodel"), "x.caffemodel")


@pytest.mark.parametrize("raw, field, what", [
    (_tag(100, 2) + encode_varint(1000) + b"x", "NetParameter.layer", "runs past the end"),
    (_tag(100, 2) + encode_varint(2**62), "NetParameter.layer", "runs past the end"),
    (_tag(4, 0) + b"\xff" * 11, "NetParameter.input_dim", "longer than 10 bytes"),
    (_tag(1, 2) + b"\x85", "NetParameter.name", "truncated varint"),
    (_tag(1, 0) + b"\x01", "NetParameter.name", "wire type 0, expected 2"),
    (_tag(3, 7), "NetParameter.input", "wire type 7"),
    (_tag(50, 3), "NetParameter field 50", "wire type 3"),
    (b"\x00\x01", "NetParameter field 0", "field number 0"),
    (_layer_with_blob(_len(5, b"\0" * 6)), "BlobProto.data", "not a multiple of 4"),
    (_layer_with_blob(_tag(5, 5) + b"\0\0"), "BlobProto.data", "truncated float"),
])
def test_bad_bytes_give_one_typed_error(raw, field, what):
    with pytest.raises(CaffeFormatError) as err:
        _decode_net(raw)
    assert err.value.path == "x.caffemodel" and err.value.where.startswith("byte ")
    assert err.value.field == field and what in err.value.message


def test_blob_data_disagreeing_with_shape_names_layer_and_byte():
    blob = _len(7, _len(1, encode_varint(2) + encode_varint(3))) + _len(5, b"\0" * 20)
    raw = _layer_with_blob(blob, name=b"conv9")
    with pytest.raises(CaffeFormatError) as err:
        _decode_net(raw)
    assert err.value.field == "layer 'conv9' blobs[0]"
    assert "holds 5 values" in err.value.message and "(2, 3)" in err.value.message
    assert err.value.where == f"byte {raw.index(blob)}"


def test_nesting_limit(monkeypatch):
    monkeypatch.setattr(wire, "MAX_DEPTH", 2)
    raw = _layer_with_blob(_len(7, _len(1, b"\x01")))  # net > layer > blob > shape
    with pytest.raises(CaffeFormatError, match="nested deeper than 2"):
        decode(raw)


def test_truncated_caffemodel(goldens_dir, tmp_path):
    raw = (goldens_dir / "voc-fcn32s" / "weights.caffemodel").read_bytes()
    for cut in (len(raw) // 3, len(raw) // 2, len(raw) - 1):
        (tmp_path / "cut.caffemodel").write_bytes(raw[:cut])
        with pytest.raises(CaffeFormatError, match="runs past the end"):
            load_caffemodel(tmp_path / "cut.caffemodel")


def test_empty_and_text_files_are_not_caffemodels(tmp_path):
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    with pytest.raises(CaffeFormatError, match="no layers"):
        load_caffemodel(tmp_path / "empty.caffemodel")
    (tmp_path / "net.caffemodel").write_text(NET)
    with pytest.raises(CaffeFormatError):
        load_caffemodel(tmp_path / "net.caffemodel")


def test_hdf5_without_data_group(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_group("weights")
    with pytest.raises(CaffeFormatError, match="no /data group") as err:
        load_caffemodel(tmp_path / "bad.h5")
    assert err.value.path == str(tmp_path / "bad.h5")


def test_hdf5_badly_named_blobs(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("data/conv/weight", data=np.zeros(3, np.float32))
    with pytest.raises(CaffeFormatError, match="named 0..0") as err:
        load_caffemodel(tmp_path / "bad.h5")
    assert err.value.field == "conv"



def test_hdf5_dataset_claiming_more_than_the_file(tmp_path):
    """A dataset with no stored data (HDF5 fills it) must not make the reader allocate it."""
    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/conv/0", shape=(1024, 1024), dtype=np.float32)  # never written
    with pytest.raises(CaffeFormatError, match="more than the") as err:
        load_caffemodel(path)
    assert err.value.where == "/data/conv/0" and err.value.field == "conv blobs[0]"
    assert path.stat().st_size < 1024 * 1024 * np.dtype(np.float32).itemsize


def test_hdf5_blob_shape_caffe_refuses(tmp_path):
    path = tmp_path / "wide.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/conv/0", shape=(0, 2**20, 2**20), dtype=np.float32)
    with pytest.raises(CaffeFormatError, match="INT_MAX") as err:
        load_caffemodel(path)
    assert err.value.field == "conv blobs[0]"


def test_write_is_atomic(tiny, tmp_path, monkeypatch):
    target = tmp_path / "w.caffemodel"
    target.write_bytes(b"old")

    def broken(msg, out):
        out.write(b"partial")
        raise RuntimeError("disk full")
    monkeypatch.setattr(writer, "encode_to", broken)
    with pytest.raises(RuntimeError):
        writer.write_caffemodel(target, random_caffemodel(tiny))
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["tiny.prototxt", "w.caffemodel"]  # no temporary left
