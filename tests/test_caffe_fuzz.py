"""Hypothesis fuzzing: any input either reads or raises CaffeFormatError, never anything else."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from port.caffe import CaffeFormatError, Message, decode, parse_text
from port.caffe.net import netdef_from_message
from port.caffe.writer import encode

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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
