"""port.net.coord_map: the algebra, the receptive-field geometry it encodes, and every upstream Crop."""
from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from port.net.coord_map import (IDENTITY, CoordMap, CoordMapError, CropMismatchError, Geometry,
                            UndefinedMapError, check_crops, compose, conv_geometry,
                            crop_offset_from_map, derive_crop_offsets, inverse, layer_map,
                            map_between, pool_geometry)

GEOMETRIES = [(k, s, p, d) for k, s, p, d in itertools.product((1, 2, 3, 4, 7), (1, 2, 3), (0, 1, 5, 100), (1, 2))]


def test_inverse_after_map_is_identity():
    for k, s, p, d in GEOMETRIES:
        cmap = layer_map(conv_geometry("c", "a", "b", k, s, p, d))
        for both in (compose(inverse(cmap), cmap), compose(cmap, inverse(cmap))):
            assert both.scale == (1,) and both.shift == (0,)


def test_compose_is_associative_and_identity_neutral():
    maps = [layer_map(conv_geometry("c", "a", "b", k, s, p)) for k, s, p, _ in GEOMETRIES[:12]]
    for a, b, c in itertools.combinations(maps, 3):
        assert compose(compose(a, b), c) == compose(a, compose(b, c))
        assert compose(IDENTITY, a) == a == compose(a, IDENTITY)


def test_conv_map_sends_receptive_field_centre_to_output():
    """Output pixel y of a (dilated) convolution sees input y*s - p + (0 .. d*(k-1)): its map's
    inverse must give the centre of that window."""
    for k, s, p, d in GEOMETRIES:
        back = inverse(layer_map(conv_geometry("c", "a", "b", k, s, p, d)))
        for y in range(4):
            first, last = y * s - p, y * s - p + d * (k - 1)
            assert back(y) == (Fraction(first + last, 2),)


def test_deconvolution_is_inverse_of_convolution():
    for k, s, p, d in GEOMETRIES:
        conv = layer_map(conv_geometry("c", "a", "b", k, s, p, d))
        deconv = layer_map(conv_geometry("u", "b", "a", k, s, p, d, kind="Deconvolution"))
        assert deconv == inverse(conv)


def test_padding_shifts_by_pad_over_stride():
    for k, s, _, _ in GEOMETRIES:
        base = layer_map(pool_geometry("p", "a", "b", k, s, 0))
        padded = layer_map(pool_geometry("p", "a", "b", k, s, 3))
        assert padded.scale == base.scale
        assert padded.shift[0] - base.shift[0] == Fraction(3, s)


def test_per_axis_geometry():
    cmap = layer_map(conv_geometry("c", "a", "b", (3, 5), (1, 2), (0, 2)))
    assert cmap.scale == (1, Fraction(1, 2))
    assert cmap.shift == (-1, 0)
    with pytest.raises(CoordMapError, match="stride has 2 values for 3 axes"):
        layer_map(conv_geometry("c", "a", "b", (3, 3, 3), (1, 2)))


def test_pass_through_crop_and_undefined_layers():
    assert layer_map(Geometry("r", "ReLU", "a", "a")) == IDENTITY
    assert layer_map(Geometry("c", "Concat", ("a", "b"), "c")) == IDENTITY
    assert layer_map(Geometry("k", "Crop", ("a", "b"), "c", offset=(4, 6))) == CoordMap(2, (1,), (-4, -6))
    with pytest.raises(UndefinedMapError, match="fc6.*InnerProduct"):
        layer_map(Geometry("fc6", "InnerProduct", "a", "b"))
    with pytest.raises(UndefinedMapError, match="global pooling"):
        layer_map(Geometry("g", "Pooling", "a", "b", global_pooling=True))
    with pytest.raises(UndefinedMapError, match="spatial axis"):
        layer_map(Geometry("c", "Concat", ("a", "b"), "c", axis=3))


def fcn_like(offset_first=(), offset_second=()) -> list[Geometry]:
    """data -> conv(pad 100) -> pool -> deconv; crop the upsampled score to the data, then a
    crop of that crop to a smaller reference."""
    return [
        Geometry("data", "Input", (), "data"),
        conv_geometry("conv1", "data", "conv1", 3, pad=100),
        Geometry("relu1", "ReLU", "conv1", "conv1"),
        pool_geometry("pool1", "conv1", "pool1", 2, 2),
        conv_geometry("fc", "pool1", "fc", 7),
        conv_geometry("up", "fc", "up", 4, 2, kind="Deconvolution"),
        Geometry("score", "Crop", ("up", "data"), "score", offset=offset_first),
        conv_geometry("small", "data", "small", 5),
        Geometry("score2", "Crop", ("score", "small"), "score2", offset=offset_second),
    ]


def receptive_centre_offset() -> int:
    """The first crop's offset by hand, following receptive-field centres from up[0] back to
    the data: a Crop is aligned when up[0] sits over data[offset]."""
    centre = Fraction(0)
    centre = (centre - Fraction(3, 2)) / 2   # up (deconv k4 s2): up[i] centred on fc[(i - 3/2) / 2]
    centre = centre + 3                      # fc (k7): fc[j] centred on pool1[j + 3]
    centre = 2 * centre + Fraction(1, 2)     # pool1 (k2 s2): pool1[j] centred on conv1[2j + 1/2]
    centre = centre - 100 + 1                # conv1 (k3 p100): conv1[j] centred on data[j - 99]
    return int(-centre)


def test_crop_offsets_follow_from_receptive_fields_and_crop_of_crop():
    derived = derive_crop_offsets(fcn_like())
    assert derived["score"] == (receptive_centre_offset(),)
    # score2 crops score (already aligned with data) to `small`, whose map from data shifts by -2.
    assert derived["score2"] == (2,)
    assert check_crops(fcn_like((derived["score"][0],), (2, 2))) == derived


def test_check_crops_names_layer_and_both_offsets():
    good = derive_crop_offsets(fcn_like())["score"][0]
    with pytest.raises(CropMismatchError, match=rf"'score'.*written crop offset \[{good + 1}\].*\[{good}\]"):
        check_crops(fcn_like((good + 1,)))


def test_map_between_blobs_and_walk_errors():
    layers = fcn_like()
    assert map_between(layers, "conv1", "data") == inverse(layer_map(layers[1]))
    lonely = layers + [Geometry("other", "Input", (), "other")]
    with pytest.raises(CoordMapError, match="no common ancestor of blobs 'data' and 'other'"):
        map_between(lonely, "data", "other")
    flat = layers + [Geometry("ip", "InnerProduct", "pool1", "ip"), Geometry("c", "Crop", ("ip", "data"), "c")]
    with pytest.raises(CoordMapError, match="no coordinate map for type 'InnerProduct'"):
        derive_crop_offsets(flat)
    with pytest.raises(CoordMapError, match="produced by no layer"):
        map_between(layers, "nope", "data")


def test_crop_offset_from_map_rejects_bad_maps():
    with pytest.raises(CoordMapError, match="scale mismatch"):
        crop_offset_from_map(CoordMap(2, (Fraction(1, 2),), (0,)))
    with pytest.raises(CoordMapError, match="negative width"):
        crop_offset_from_map(CoordMap(2, (1,), (3,)))
    with pytest.raises(CoordMapError, match="fractional"):
        crop_offset_from_map(CoordMap(2, (1,), (Fraction(-1, 2),)))
    assert crop_offset_from_map(CoordMap(2, (1, 1), (-3, -4))) == (3, 4)


def upstream_nets(upstream_dir):
    nets = sorted(p for p in upstream_dir.glob("*/*.prototxt") if p.name != "solver.prototxt")
    assert nets, f"no net prototxts under {upstream_dir}"
    return nets


#: The offsets the issue lists for each score head of the released nets.
EXPECTED_CHAINS = ([(19,)], [(18,)], [(5,), (27,)], [(5,), (9,), (31,)])


def test_every_upstream_net_derives_its_written_offsets(upstream_dir):
    from port.caffe import load_net

    for path in upstream_nets(upstream_dir):
        net = load_net(path)
        derived = check_crops(net)
        written = {layer.name: tuple(layer.crop_param.offset) for layer in net.layers if layer.type == "Crop"}
        assert derived == written, path
        values = list(derived.values())
        assert any(values == chain * (len(values) // len(chain)) for chain in EXPECTED_CHAINS), (path, values)
