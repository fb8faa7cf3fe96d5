"""``python -m port inspect``: layers, shapes and counts of each file kind."""
from __future__ import annotations

import json

import numpy as np

from port.caffe import load_caffemodel
from port.caffe.inspect import main


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_of_a_caffemodel(goldens_dir, capsys):
    path = goldens_dir / "voc-fcn8s" / "weights.caffemodel"
    rc, out, _ = _run(capsys, str(path), "--json")
    s = json.loads(out)
    expected = json.loads((goldens_dir / "voc-fcn8s" / "params.json").read_text())["layers"]
    count = sum(int(np.prod(r["shape"])) for records in expected.values() for r in records)
    assert rc == 0 and s["format"] == "caffemodel" and s["params"] == count
    assert s["bytes"] == count * np.dtype(np.float32).itemsize
    by_name = {r["name"]: r for r in s["layers"]}
    assert by_name["score_fr"]["blobs"] == [r["shape"] for r in expected["score_fr"]]
    assert by_name["upscore2"]["type"] == "Deconvolution" and "bilinear" in by_name["upscore2"]
    assert by_name["upscore2"]["bilinear"] in (False, None)  # the goldens' deconvs are random


def test_text_listing_of_prototxt_and_h5(goldens_dir, upstream_dir, capsys):
    rc, out, _ = _run(capsys, str(upstream_dir / "voc-fcn8s" / "val.prototxt"))
    assert rc == 0 and "prototxt" in out.splitlines()[0]
    assert any(line.split()[:2] == ["score_pool4c", "Crop"] for line in out.splitlines())
    h5 = goldens_dir / "voc-fcn8s-atonce" / "weights.caffemodel.h5"
    rc, out, _ = _run(capsys, str(h5))
    total = sum(b.size for blobs in load_caffemodel(h5).blobs().values() for b in blobs)
    assert rc == 0 and f"total: {total:,} parameters" in out


def test_bad_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { nmae: 'x' }")
    rc, out, err = _run(capsys, str(bad))
    assert rc == 1 and out == ""
    assert err.strip().endswith("LayerParameter.nmae: no field 'nmae' in LayerParameter")
