"""port.models.preprocess against the upstream data layers' recipe, written out independently."""
from __future__ import annotations

import ast
import re

import numpy as np
import pytest

from port.models import preprocess as pp

RNG = np.random.default_rng(0)


def _image(h=7, w=11, c=3, dtype=np.uint8):
    return RNG.integers(0, 256, size=(h, w, c)).astype(dtype)


def _upstream_load_image(im, mean):
    """The body of VOCSegDataLayer.load_image etc., as written in the upstream layers."""
    in_ = np.array(im, dtype=np.float32)
    in_ = in_[:, :, ::-1]
    in_ -= np.array(mean, dtype=np.float32)
    in_ = in_.transpose((2, 0, 1))
    return in_


@pytest.mark.parametrize("fn, mean", [
    (pp.preprocess_voc, pp.VOC_MEAN_BGR),
    (pp.preprocess_sbd, pp.SBD_MEAN_BGR),
    (pp.preprocess_pascalcontext, pp.CONTEXT_MEAN_BGR),
    (pp.preprocess_siftflow, pp.SIFTFLOW_MEAN_BGR),
    (pp.preprocess_nyud_color, pp.NYUD_MEAN_BGR),
])
def test_colour_preprocessing_is_bitwise_the_upstream_recipe(fn, mean):
    im = _image()
    out = fn(im)
    np.testing.assert_array_equal(out, _upstream_load_image(im, mean))
    assert out.dtype == np.float32 and out.shape == (3, 7, 11) and out.flags.c_contiguous


def test_channel_order_is_bgr_minus_mean():
    im = np.zeros((2, 3, 3), np.uint8)
    im[..., 0] = 10   # R
    im[..., 2] = 200  # B
    out = pp.preprocess_voc(im)
    blue, green, red = (np.float32(m) for m in pp.VOC_MEAN_BGR)
    assert np.all(out[0] == np.float32(200) - blue)
    assert np.all(out[1] == -green)
    assert np.all(out[2] == np.float32(10) - red)


def test_hha_keeps_channel_order():
    hha = _image(5, 4)
    out = pp.preprocess_nyud_hha(hha)
    expected = (hha.astype(np.float32) - np.array(pp.NYUD_MEAN_HHA, np.float32)).transpose(2, 0, 1)
    np.testing.assert_array_equal(out, expected)


def test_depth_is_log_minus_mean():
    depth = RNG.integers(1, 10000, size=(6, 9)).astype(np.uint16)
    out = pp.preprocess_nyud_depth(depth)
    expected = np.log(depth.astype(np.float32)) - np.float32(pp.NYUD_MEAN_LOGD[0])
    assert out.shape == (1, 6, 9) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], expected)


def test_native_size_is_kept_for_odd_sizes():
    for h, w in [(1, 1), (13, 500), (375, 3)]:
        assert pp.preprocess_siftflow(_image(h, w)).shape == (3, h, w)


@pytest.mark.parametrize("bad", [
    np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)])
def test_bad_images_raise_a_named_error(bad):
    with pytest.raises(pp.PreprocessError, match="photo.jpg"):
        pp.preprocess_voc(bad, name="photo.jpg")


def test_bad_depth_raises():
    with pytest.raises(pp.PreprocessError, match="depth"):
        pp.preprocess_nyud_depth(np.zeros((4, 4, 3), np.uint16))


def test_voc_mean_matches_the_released_prototxts(upstream_dir):
    """The mean in every voc-* data layer's param_str rounds to the same float32 values."""
    found = 0
    for proto in sorted(upstream_dir.glob("voc-*/*.prototxt")):
        match = re.search(r"'mean': (\([^)]*\))", proto.read_text().replace("\\'", "'"))
        if match:
            found += 1
            written = np.array(ast.literal_eval(match.group(1)), np.float32)
            np.testing.assert_array_equal(written, np.array(pp.VOC_MEAN_BGR, np.float32))
    assert found >= 5
