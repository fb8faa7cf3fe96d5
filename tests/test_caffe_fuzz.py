"""Hypothesis fuzzing: any input either reads or raises CaffeFormatError, never anything else."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from port.caffe import CaffeFormatError, HDF5_MAGIC, Message, decode, load_caffemodel, parse_text
from port.caffe.net import netdef_from_message
from port.caffe.writer import encode

# PORT_FUZZ_EXAMPLES=2000 for a longer local hunt; the suite keeps the fast default
FUZZ = settings(max_examples=int(os.environ.get("PORT_FUZZ_EXAMPLES", 150)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _read_binary(raw: bytes) -> None:
    try:
        netdef_from_message(decode(raw, path="fuzz.caffemodel"), "fuzz.caffemodel")
    except CaffeFormatError as err:
        assert err.path == "fuzz.caffemodel" and err.where.startswith("byte ")


@FUZZ
@given(st.binary(max_size=300))
@example(b"\xa2\x06\x02\x3a\x00")        # layer { blobs {} }: a scalar blob with no data
@example(b"\x22\x01\x80")                # packed input_dim with a cut varint
@example(b"\xa2\x06\x04\x3a\x02\x2d\x00")  # an unpacked float cut short
# BlobShape [2^40, 2^40, 0]: no values, but a count past INT_MAX (Blob::Reshape refuses it)
@example(b"\xa2\x06\x13\x3a\x11\x3a\x0f\x0a\x0d" + b"\x80\x80\x80\x80\x80\x20" * 2 + b"\x00")
# legacy blob num = channels = 2^31 - 1 (height, width 0)
@example(b"\xa2\x06\x0e\x3a\x0c\x08\xff\xff\xff\xff\x07\x10\xff\xff\xff\xff\x07")
def test_random_bytes(raw):
    _read_binary(raw)


@pytest.fixture(scope="module")
def golden_bytes(goldens_dir):
    return (goldens_dir / "voc-fcn-alexnet" / "weights.caffemodel").read_bytes()[:4000]


@FUZZ
@given(data=st.data())
def test_mutated_caffemodel(golden_bytes, data):
    raw = bytearray(golden_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _read_binary(bytes(raw[:data.draw(st.integers(0, len(raw)))]))


_TEXT_PIECES = st.sampled_from(
    ['layer', '{', '}', '<', '>', ':', '[', ']', ',', ';', 'name', 'type', '"a"', "'b\\x4'",
     '"\\777"', 'convolution_param', 'num_output', 'pad', '-1', '0x1F', '1e99', '-inf', 'nan',
     'pooling_param', 'pool', 'MAX', 'bias_term', 'true', '#c\n', '\n', ' ', 'crop_param',
     'offset', 'input_dim', '99999999999999999999', '"\xe9"', '.5'])


@FUZZ
@given(st.lists(_TEXT_PIECES, max_size=40).map(" ".join) | st.text(max_size=80))
@example('layer { name: "\\777" }')
@example("input_dim: 1e99")
def test_random_text(text):
    try:
        netdef_from_message(parse_text(text, path="fuzz.prototxt"))
    except CaffeFormatError as err:
        assert err.path == "fuzz.prototxt" and ":" in err.where


_F32 = st.floats(width=32, allow_nan=True)


@FUZZ
@given(name=st.text(max_size=10), dims=st.lists(st.integers(0, 4), max_size=4),
       values=st.lists(_F32, max_size=64), coeff=st.lists(_F32, max_size=3),
       ints=st.lists(st.integers(-2**31, 2**31 - 1), max_size=4))
def test_encode_decode_round_trip(name, dims, values, coeff, ints):
    msg = Message("NetParameter", name=name, input_dim=ints)
    layer = msg.add("layer")
    layer.eltwise_param.coeff = coeff
    layer.pooling_param.pool = "AVE"
    blob = layer.add("blobs")
    blob.shape = Message("BlobShape", dim=dims)
    blob.data = np.array(values, np.float32)
    back = decode(encode(msg))
    assert back == msg
    assert encode(back) == encode(msg)


def _one_blob_net(**blob_fields) -> bytes:
    msg = Message("NetParameter")
    layer = msg.add("layer", Message("LayerParameter", name="conv", type="Convolution"))
    layer.add("blobs", Message("BlobProto", **blob_fields))
    return encode(msg)


_INT_MAX = np.iinfo(np.int32).max


@pytest.mark.parametrize("fields, expected", [
    (dict(shape=Message("BlobShape", dim=[2**40, 2**40, 0])), "INT_MAX"),
    (dict(num=_INT_MAX, channels=_INT_MAX), "INT_MAX"),
    (dict(shape=Message("BlobShape", dim=[2, -3])), "negative dimension -3 at axis 1"),
    (dict(shape=Message("BlobShape", dim=[1] * 33)), "33 axes"),
])
def test_bad_blob_shape_is_a_format_error(fields, expected):
    """Shapes Caffe's Blob::Reshape refuses name the file, layer, blob and byte offset."""
    with pytest.raises(CaffeFormatError) as info:
        netdef_from_message(decode(_one_blob_net(**fields), path="bad.caffemodel"), "bad.caffemodel")
    err = info.value
    assert err.path == "bad.caffemodel" and err.where.startswith("byte ")
    assert err.field == "layer 'conv' blobs[0]" and expected in err.message


def test_largest_rank_blob_reads():
    """A blob of exactly kMaxBlobAxes axes is still a blob."""
    dims = [1] * 32
    raw = _one_blob_net(shape=Message("BlobShape", dim=dims), data=np.ones(1, np.float32))
    assert netdef_from_message(decode(raw)).layers[0].blobs[0].shape == tuple(dims)


_DIM = st.integers(-2**63, 2**63 - 1) | st.integers(-2, 4) | st.sampled_from([2**31 - 1, 2**31, 2**40])
_INT32 = st.integers(-2**31, 2**31 - 1) | st.integers(-1, 3)


@FUZZ
@given(layer_type=st.sampled_from(["Convolution", "InnerProduct", "PReLU", "Scale", ""]),
       dims=st.none() | st.lists(_DIM, max_size=40),
       legacy=st.dictionaries(st.sampled_from(["num", "channels", "height", "width"]), _INT32),
       n=st.integers(0, 40), double=st.booleans())
def test_random_blob_shapes(layer_type, dims, legacy, n, double):
    """Any BlobShape / legacy dims / data length either reads as its shape or is refused."""
    fields = dict(legacy, **({"double_data" if double else "data": np.ones(n)} if n else {}))
    if dims is not None:
        fields["shape"] = Message("BlobShape", dim=dims)
    msg = Message("NetParameter")
    layer = msg.add("layer", Message("LayerParameter", name="l", type=layer_type))
    layer.add("blobs", Message("BlobProto", **fields))
    try:
        blob = netdef_from_message(decode(encode(msg), path="f.caffemodel"), "f.caffemodel").layers[0].blobs[0]
    except CaffeFormatError as err:
        assert err.field == "layer 'l' blobs[0]" and err.where.startswith("byte ")
    else:
        assert blob.size == n and blob.dtype == np.float32


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    """A two-layer HDF5 snapshot written by h5py as Caffe's Net::ToHDF5 lays it out."""
    import h5py
    path = tmp_path_factory.mktemp("h5") / "small.caffemodel.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/conv/0", data=np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2))
        f.create_dataset("data/conv/1", data=np.ones(2, np.float32))
        f.create_group("data/relu")
    return path.read_bytes()


@settings(FUZZ, max_examples=max(FUZZ.max_examples // 3, 1))  # each example opens a file
@given(data=st.data())
def test_damaged_hdf5(small_h5, tmp_path_factory, data):
    """A damaged .h5 reads or raises CaffeFormatError, never h5py's own errors."""
    raw = bytearray(small_h5)
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("damaged") / "d.caffemodel.h5"
    path.write_bytes(bytes(raw[:data.draw(st.integers(len(HDF5_MAGIC), len(raw)))]))
    try:
        load_caffemodel(path)
    except CaffeFormatError as err:
        assert err.path == str(path)
