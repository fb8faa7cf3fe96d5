"""``python -m port inspect``: layers, shapes and counts of each file kind; the listing logic
(port.caffe.inspect) stays in the formats layer, the command line (port.cli.inspect) above it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from port.__main__ import main as port_main
from port.caffe import Message, load_caffemodel, load_net, write_caffemodel
from port.caffe.inspect import summary
from port.cli.inspect import HDF5_NOTE, main
from helpers import upsample_filt

REPO = Path(__file__).resolve().parents[1]


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
    assert s["bytes"] == count * np.dtype(np.float32).itemsize and s["definitions"]
    by_name = {r["name"]: r for r in s["layers"]}
    assert by_name["score_fr"]["blobs"] == [r["shape"] for r in expected["score_fr"]]
    assert by_name["upscore2"]["type"] == "Deconvolution"
    assert by_name["upscore2"]["bilinear"] is False  # the goldens' deconvs are random


def test_text_listing_of_prototxt_and_h5(goldens_dir, upstream_dir, capsys):
    rc, out, _ = _run(capsys, str(upstream_dir / "voc-fcn8s" / "val.prototxt"))
    assert rc == 0 and "prototxt" in out.splitlines()[0] and HDF5_NOTE not in out
    assert any(line.split()[:2] == ["score_pool4c", "Crop"] for line in out.splitlines())
    h5 = goldens_dir / "voc-fcn8s-atonce" / "weights.caffemodel.h5"
    rc, out, _ = _run(capsys, str(h5))
    total = sum(b.size for blobs in load_caffemodel(h5).blobs().values() for b in blobs)
    assert rc == 0 and f"total: {total:,} parameters" in out
    assert out.splitlines()[1] == HDF5_NOTE  # once, right under the heading
    assert out.count(HDF5_NOTE) == 1


def test_h5_with_net_shows_the_definitions(goldens_dir, capsys):
    folder = goldens_dir / "voc-fcn8s-atonce"
    h5, proto = folder / "weights.caffemodel.h5", folder / "net.prototxt"
    rc, out, _ = _run(capsys, str(h5), "--net", str(proto), "--json")
    s = json.loads(out)
    assert rc == 0 and s["format"] == "hdf5" and s["definitions"] and s["unmatched"] == []
    # the prototxt's definitions, in its order ...
    assert [(r["name"], r["type"], r["bottom"], r["top"]) for r in s["layers"]] == [
        (l.name, l.type, l.bottom, l.top) for l in load_net(proto).layers]
    # ... with the .h5's blobs, which are the binary caffemodel's
    shapes = {name: [list(b.shape) for b in blobs]
              for name, blobs in load_caffemodel(folder / "weights.caffemodel").blobs().items()}
    assert {r["name"]: r["blobs"] for r in s["layers"] if r["blobs"]} == shapes
    rc, out, _ = _run(capsys, str(h5), "--net", str(proto))
    assert rc == 0 and HDF5_NOTE not in out
    assert any(line.split()[:2] == ["upscore8", "Deconvolution"] for line in out.splitlines())


def test_net_option_is_for_h5_only(goldens_dir, capsys):
    folder = goldens_dir / "voc-fcn8s-atonce"
    rc, out, err = _run(capsys, str(folder / "weights.caffemodel"), "--net", str(folder / "net.prototxt"))
    assert rc == 2 and out == "" and "--net is for an HDF5 caffemodel" in err


def test_bad_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { nmae: 'x' }")
    rc, out, err = _run(capsys, str(bad))
    assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert err.strip().endswith("LayerParameter.nmae: no field 'nmae' in LayerParameter")


def _deconv_caffemodel(path: Path, weight: np.ndarray) -> None:
    msg = Message("NetParameter", name="up")
    layer = msg.add("layer", Message("LayerParameter", name="upscore", type="Deconvolution",
                                     bottom=["score"], top=["upscore"]))
    layer.add("blobs", Message("BlobProto", shape=Message("BlobShape", dim=list(weight.shape)),
                               data=weight.astype(np.float32).ravel()))
    write_caffemodel(path, msg)


def test_bilinear_verdict(tmp_path, capsys):
    pytest.importorskip("torch")
    channels, size = 3, 4
    weight = np.zeros((channels, channels, size, size))
    weight[range(channels), range(channels)] = upsample_filt(size)  # surgery.interp
    _deconv_caffemodel(tmp_path / "bilinear.caffemodel", weight)
    weight[0, 1, 0, 0] = 1.0
    _deconv_caffemodel(tmp_path / "other.caffemodel", weight)
    verdicts = {}
    for name in ("bilinear", "other"):
        rc, out, _ = _run(capsys, str(tmp_path / f"{name}.caffemodel"), "--json")
        verdicts[name] = json.loads(out)["layers"][0]["bilinear"]
    assert verdicts == {"bilinear": True, "other": False}


def test_bilinear_verdict_needs_no_torch(tmp_path, capsys, monkeypatch):
    """A torch-less install still gets the verdict (port.net.bilinear is numpy): with torch
    unimportable the listing says bilinear or not."""
    channels, size = 2, 4
    weight = np.zeros((channels, channels, size, size))
    weight[range(channels), range(channels)] = upsample_filt(size)  # surgery.interp
    _deconv_caffemodel(tmp_path / "up.caffemodel", weight)
    _deconv_caffemodel(tmp_path / "ones.caffemodel", np.ones((2, 2, 4, 4)))
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    rc, out, _ = _run(capsys, str(tmp_path / "up.caffemodel"))
    assert rc == 0 and out.splitlines()[1].endswith("  bilinear")
    rc, out, _ = _run(capsys, str(tmp_path / "ones.caffemodel"))
    assert rc == 0 and out.splitlines()[1].endswith("not bilinear")


def test_summary_takes_an_annotator(goldens_dir):
    path = goldens_dir / "voc-fcn8s" / "weights.caffemodel"
    calls = []

    def annotate(layer, index, blob):
        calls.append((layer.name, index, blob.shape))
        return None if index else {"first_sum": float(blob.sum())}
    s = summary(str(path), annotate)
    net = load_caffemodel(path)
    assert calls == [(l.name, i, b.shape) for l in net.layers for i, b in enumerate(l.blobs)]
    fc6 = next(r for r in s["layers"] if r["name"] == "fc6")
    assert fc6["first_sum"] == float(net.layer("fc6").blobs[0].sum())
    assert "first_sum" not in next(r for r in s["layers"] if not r["blobs"])


def test_port_main_dispatches_to_the_cli(upstream_dir, capsys):
    prototxt = upstream_dir / "voc-fcn8s" / "val.prototxt"
    assert port_main(["inspect", str(prototxt)]) == 0
    via_port = capsys.readouterr().out
    assert main([str(prototxt)]) == 0
    assert via_port == capsys.readouterr().out and "score_pool4c" in via_port


def test_closed_pipe_ends_quietly(tmp_path):
    """`python -m port inspect FILE | head -1`: no BrokenPipeError traceback."""
    relus = "".join(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "x" top: "x" }}\n'
                    for i in range(3000))  # far more than a pipe buffers
    path = tmp_path / "long.prototxt"
    path.write_text('input: "x" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1\n' + relus)
    proc = subprocess.Popen([sys.executable, "-m", "port", "inspect", str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) in (0, 1)
    assert first.startswith(str(path).encode()) and err == b""


def test_h5_layers_the_net_lacks_are_named(tmp_path, capsys):
    import h5py
    h5 = tmp_path / "w.caffemodel.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("data/conv/0", data=np.ones((2, 1, 1, 1), np.float32))
        f.create_dataset("data/old_score/0", data=np.ones((3, 2, 1, 1), np.float32))
    proto = tmp_path / "net.prototxt"
    proto.write_text('layer { name: "conv" type: "Convolution" bottom: "x" top: "y" }')
    rc, out, _ = _run(capsys, str(h5), "--net", str(proto))
    lines = out.splitlines()
    assert rc == 0 and lines[1].startswith("note: no layer of --net") and lines[1].endswith(": old_score")
    assert lines[2].split()[:3] == ["conv", "Convolution", "x"] and "[2x1x1x1]" in lines[2]


def test_columns_line_up_with_long_layer_names(tmp_path, capsys):
    long = "conv1_1_split_with_a_very_long_generated_name"
    path = tmp_path / "long.prototxt"
    path.write_text('input: "x" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
                    f'layer {{ name: "{long}" type: "ReLU" bottom: "x" top: "x" }}\n'
                    'layer { name: "r" type: "ReLU" bottom: "x" top: "x" }\n')
    rc, out, _ = _run(capsys, str(path))
    rows = [l for l in out.splitlines() if l.split()[:2] in ([long, "ReLU"], ["r", "ReLU"])]
    assert rc == 0 and len(rows) == 2
    assert rows[0].index("ReLU") == rows[1].index("ReLU") > len(long)


def test_inspect_imports_no_torch(goldens_dir, tmp_path):
    """Issue 22 item 2: inspect imports no more than it uses: a prototxt, a caffemodel without
    a Deconvolution weight and one with (its bilinear verdict is numpy) are listed without
    torch (read from sys.modules, never a time)."""
    import os
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[1]
    code = ("import sys, contextlib, io\nfrom port.__main__ import main\n"
            "listing = io.StringIO()\n"
            "with contextlib.redirect_stdout(listing):\n    rc = main(['inspect', sys.argv[1]])\n"
            "print(rc, 'torch' in sys.modules, ' bilinear' in listing.getvalue())")
    for path in (goldens_dir / "voc-fcn8s" / "net.prototxt", goldens_dir / "vgg16-v1" / "weights.caffemodel"):
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split() == ["0", "False", "False"], path
    # a Deconvolution weight gets its verdict, still without torch
    proc = subprocess.run([sys.executable, "-c", code, str(goldens_dir / "voc-fcn8s" / "weights.caffemodel")],
                          capture_output=True, text=True, cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)))
    assert proc.returncode == 0 and proc.stdout.split() == ["0", "False", "True"], proc.stderr[-2000:]
