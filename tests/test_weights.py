"""port.weights: the one home of weights files (issue 20 item 1): reading by content, the one
streaming atomic writer, the one metadata layout (old files still read), the one strict fit
check with a one-line error; and the behaviour a user meets through it (issue 19 items 7, 10)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save

from conftest import REPO
from port import weights as W
from port.caffe import file_range, load_caffemodel, load_net, write_caffemodel_h5


def tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=gen), "conv.bias": torch.randn(4, generator=gen),
            "rng/cpu": torch.arange(7, dtype=torch.uint8), "count": torch.arange(3, dtype=torch.int64),
            "empty": torch.zeros(0, 5)}


# -- reading by content ----------------------------------------------------------------------
def test_kind_is_told_by_content_not_by_suffix(tmp_path, make_caffemodel):
    caffemodel = make_caffemodel(tmp_path / "net.caffemodel")
    st = W.write_safetensors(tmp_path / "weights.caffemodel", tensors(), {})   # a misleading suffix
    h5 = tmp_path / "w.safetensors"
    write_caffemodel_h5(h5, load_caffemodel(caffemodel))
    assert [W.kind_of(p) for p in (caffemodel, st, h5)] == ["caffemodel", "safetensors", "hdf5"]
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(W.WeightsError, match=r"empty\.caffemodel: empty file \(0 bytes\)"):
        W.kind_of(empty)
    with pytest.raises(W.WeightsError, match="not found"):
        W.kind_of(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("damage", ["truncated", "header-cut", "garbage", "offsets", "header-json"])
def test_a_damaged_safetensors_is_one_line_naming_the_file(damage, tmp_path):
    path = W.write_safetensors(tmp_path / "w.safetensors", tensors(), {"a": "b"})
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    if damage == "truncated":
        data = data[: len(data) - 10]
    elif damage == "header-cut":
        data = data[:40]
    elif damage == "garbage":
        data = b"\x00garbage" * 4
    elif damage == "offsets":
        header = json.loads(data[8:8 + length])
        header["conv.weight"]["data_offsets"][1] += 4
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        data = len(text).to_bytes(8, "little") + text + data[8 + length:]
    else:
        data = data[:8] + b"{" + b"x" * (length - 1) + data[8 + length:]
    path.write_bytes(data)
    with pytest.raises(W.WeightsError) as info:
        W.read_arrays(path)
    assert str(info.value).startswith(f"{path}: not a safetensors file") and "\n" not in str(info.value)
    if damage == "header-cut":  # still told a safetensors by its content, and said to be cut
        assert W.kind_of(path) == "safetensors" and "truncated" in str(info.value)


def test_arrays_are_copy_on_write_views_of_the_file(tmp_path):
    path = W.write_safetensors(tmp_path / "w.safetensors", tensors(), {})
    before = path.read_bytes()
    arrays, _ = W.read_arrays(path)
    arrays["conv.bias"][:] = 0                    # changes memory, never the file
    state, _ = W.load_weights(path)
    assert path.read_bytes() == before and not torch.equal(state["conv.bias"], torch.zeros(4))
    assert all(torch.equal(state[k], v.to(state[k].dtype)) for k, v in tensors().items())


def test_read_blobs_gives_every_format_as_layers_with_blobs(tmp_path, make_caffemodel):
    caffemodel = make_caffemodel(tmp_path / "net.caffemodel")
    expected = load_caffemodel(caffemodel).blobs()
    state = {f"{layer}.{W.BLOB_NAMES[i]}": b for layer, bs in expected.items() for i, b in enumerate(bs)}
    st = W.write_safetensors(tmp_path / "net.safetensors", state, {W.NET_NAME: "x"})
    for path in (caffemodel, st):
        got = W.read_blobs(path).blobs()
        assert got.keys() == expected.keys(), path
        assert all(np.array_equal(a, b) for k in got for a, b in zip(got[k], expected[k]))


# -- the writer ------------------------------------------------------------------------------
def test_writer_equals_safetensors_save_for_every_dtype_it_stores(tmp_path):
    for metadata in ({"k": "v"}, {}):
        path = W.write_safetensors(tmp_path / "w.safetensors", tensors(), metadata)
        assert path.read_bytes() == save(tensors(), metadata or None)


def test_writer_stores_floats_as_float32_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "sub" / "w.safetensors"
    W.write_safetensors(path, {"x": np.arange(3, dtype=np.float64)}, {})   # folder made
    assert W.read_arrays(path)[0]["x"].dtype == np.float32
    path.write_bytes(b"previous")

    class Broken:
        shape, dtype = (2,), np.dtype("f4")

        def __array__(self, *args, **kwargs):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        W.write_safetensors(path, {"x": Broken()}, {})
    assert path.read_bytes() == b"previous" and sorted(os.listdir(path.parent)) == ["w.safetensors"]


def _blob_state(caffemodel, writable: bool) -> dict[str, np.ndarray]:
    """A caffemodel's blobs by parameter name, as views of the file mapped read-only or not."""
    net = load_caffemodel(caffemodel, writable=writable)
    return {f"{layer.name}.{W.BLOB_NAMES[i]}": blob for layer in net.layers for i, blob in enumerate(layer.blobs)}


def _expected(state: dict) -> bytes:
    return save({k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()}, {"k": "v"})


def test_writer_copies_read_only_caffemodel_views_from_the_file(tmp_path, make_caffemodel, monkeypatch):
    """A caffemodel's blobs mapped read-only are copied from the file in the kernel (the bytes
    safetensors.torch.save writes); a refused or short copy is finished from memory."""
    caffemodel = make_caffemodel(tmp_path / "net.caffemodel")
    state = _blob_state(caffemodel, writable=False)
    assert all(file_range(b) is not None for b in state.values())
    copies, real = [], os.copy_file_range

    def counting(src, dst, count, *offsets):
        copies.append(count)
        return real(src, dst, count, *offsets)
    monkeypatch.setattr(os, "copy_file_range", counting)
    out = W.write_safetensors(tmp_path / "a.safetensors", state, {"k": "v"})
    assert out.read_bytes() == _expected(state) and len(copies) == len(state)
    for refusal in (lambda *a: (_ for _ in ()).throw(OSError(18, "Invalid cross-device link")),
                    lambda src, dst, count, *offsets: real(src, dst, min(count, 1000), *offsets),
                    lambda src, dst, count, *offsets: real(src, dst, min(count, 1000), *offsets) if count > 5000 else 0):
        monkeypatch.setattr(os, "copy_file_range", refusal)
        assert W.write_safetensors(tmp_path / "b.safetensors", state, {"k": "v"}).read_bytes() == _expected(state)


def test_writer_copies_from_the_file_only_what_is_still_its_bytes(tmp_path, make_caffemodel, monkeypatch):
    """Views the file no longer backs are written from memory: copy-on-write views (edited in
    memory, the file unchanged), a file replaced under the same name after it was read."""
    monkeypatch.setattr(os, "copy_file_range", lambda *a: pytest.fail("copied from a file"))
    caffemodel = make_caffemodel(tmp_path / "net.caffemodel")
    edited = _blob_state(caffemodel, writable=True)
    assert all(file_range(b) is None for b in edited.values())
    first = next(iter(edited.values()))
    first.reshape(-1)[0] = 7.0
    out = W.write_safetensors(tmp_path / "a.safetensors", edited, {"k": "v"})
    assert out.read_bytes() == _expected(edited) and first.reshape(-1)[0] == 7.0
    mapped = _blob_state(caffemodel, writable=False)
    make_caffemodel(tmp_path / "other.caffemodel", seed=9).replace(caffemodel)
    out = W.write_safetensors(tmp_path / "b.safetensors", mapped, {"k": "v"})
    assert out.read_bytes() == _expected(mapped)


def test_sha256_file_hashes_every_chunk(tmp_path, monkeypatch):
    import hashlib
    monkeypatch.setattr(W, "_HASH_CHUNK", 1000)
    data = np.random.default_rng(0).bytes(10_007)
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    assert W.sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert W.sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


# -- the metadata layout ---------------------------------------------------------------------
def test_metadata_layout_is_versioned_and_old_transplant_files_read_in_it(tmp_path):
    meta = W.metadata(source_name="a.caffemodel", net_name="n", builder="fcn8s",
                      candidates=["fcn8s", "x"], builder_kwargs={"width_divisor": 16}, iteration="4")
    assert meta[W.FORMAT_KEY] == W.FORMAT == "fcn-port-weights/1"
    assert meta[W.CANDIDATES] == "fcn8s,x" and json.loads(meta[W.BUILDER_KWARGS]) == {"width_divisor": 16}
    assert meta["iteration"] == "4" and W.SOURCE_SHA256 not in meta
    old = tmp_path / "old.safetensors"
    old.write_bytes(save({"a.weight": torch.zeros(1)}, {"source": "src.caffemodel", "net": "oldnet",
                                                        "transplant": "{}"}))
    read = W.read_metadata(old)
    assert read[W.SOURCE_NAME] == "src.caffemodel" and read[W.NET_NAME] == "oldnet"


def test_transplant_writes_the_one_layout(goldens_dir, tmp_path, capsys):
    from port.__main__ import main
    folder = goldens_dir / "voc-fcn32s"
    out = tmp_path / "t.safetensors"
    assert main(["transplant", str(folder / "weights.caffemodel"), "--net", str(folder / "net.prototxt"),
                 "-o", str(out)]) == 0
    meta = W.read_metadata(out)
    assert meta[W.FORMAT_KEY] == W.FORMAT and meta[W.SOURCE_NAME] == "weights.caffemodel"
    assert json.loads(meta["transplant"])


# -- the fit check ---------------------------------------------------------------------------
def test_check_fit_lists_every_problem_in_one_line():
    expected = {f"l{i}.weight": (i + 1, 2) for i in range(40)}
    found = {k: (1, 1) for k in list(expected)[2:]} | {"other.weight": (3,)}
    with pytest.raises(W.WeightsMismatchError) as info:
        W.check_fit(expected, found, "w.safetensors", "net 'x'", hint="they are weights of y")
    err = info.value
    assert len(err.problems) == 2 + 1 + 38 and "\n" not in str(err)
    assert str(err).startswith("w.safetensors: weights do not fit net 'x' (41 problems: l0.weight: missing")
    assert "... 38 more" in str(err) and str(err).endswith("; they are weights of y")
    W.check_fit(expected, dict(expected), "w", "x")  # an exact fit passes


def test_the_fit_check_lives_in_port_weights_only():
    """The strict missing / unexpected / wrong-shape comparison is written once: no other module
    of port or reproduce spells its problems out."""
    root = Path(W.__file__).parents[1]
    for path in [*root.joinpath("port").rglob("*.py"), *root.joinpath("reproduce").rglob("*.py")]:
        if path.name == "weights.py" and path.parent.name == "port":
            continue
        text = path.read_text()
        for phrase in (": missing (", "not a parameter of", "unexpected tensor", "blob(s) unused"):
            assert phrase not in text, f"{path.relative_to(root)} spells out {phrase!r}"


def test_weights_import_no_torch_and_sit_below_the_engine(tmp_path, make_caffemodel):
    """port.weights imports numpy, the foundation and port.caffe only; port.caffe not it; reading
    a caffemodel, hashing it and writing its blobs as safetensors (the I/O of a conversion) import
    no torch (read from sys.modules in a fresh interpreter)."""
    tree = ast.parse(Path(W.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module]
    assert not [n for n in names if n.split(".")[0] == "torch"]
    assert all(n in ("port.errors", "port.fileio", "port.caffe", "port.caffe.net") for n in names if n.startswith("port"))
    for path in Path(W.__file__).parent.joinpath("caffe").glob("*.py"):
        assert "port.weights" not in path.read_text(), path
    caffemodel = make_caffemodel(tmp_path / "net.caffemodel")
    out = tmp_path / "net.safetensors"
    code = ("import sys\nfrom port import weights as W\n"
            f"src = W.read_blobs({str(caffemodel)!r})\n"
            "state = {f'{n}.{W.BLOB_NAMES[i]}': b for n, bs in src.blobs().items() for i, b in enumerate(bs)}\n"
            f"W.write_safetensors({str(out)!r}, state, W.metadata(), lambda: W.sha256_file({str(caffemodel)!r}))\n"
            f"W.read_arrays({str(out)!r})\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
    assert W.read_metadata(out)[W.SOURCE_SHA256] == W.sha256_file(caffemodel)


# -- a net's weights, in and out -------------------------------------------------------------
def test_load_into_takes_any_format_strictly(goldens_dir, tmp_path):
    from port.load import build_net
    folder = goldens_dir / "voc-fcn32s"
    netdef = load_net(folder / "net.prototxt")
    a, b = build_net(netdef), build_net(netdef)
    W.load_into(a, folder / "weights.caffemodel")
    st = W.write_net(a, tmp_path / "w.safetensors", W.metadata(net_name=a.net_name))
    cm = W.write_net(a, tmp_path / "w.caffemodel")
    for path in (st, cm):
        W.load_into(b, path)
        assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters())), path
    other = build_net(load_net(goldens_dir / "voc-fcn16s" / "net.prototxt"))
    with pytest.raises(W.WeightsMismatchError, match=r"w\.safetensors: weights do not fit net .*score_pool4"):
        W.load_into(other, st)
    with pytest.raises(W.WeightsError, match="must end in"):
        W.write_net(a, tmp_path / "w.bin")


# -- what users meet -------------------------------------------------------------------------
def test_weights_of_another_net_name_the_net_they_fit_in_one_line(goldens_dir, tmp_path, capsys):
    """Issue 19 item 7: converting FCN-32s weights for fcn8s is one line naming fcn32s and the
    option to pass (the converter's matching knows), not a line per tensor."""
    from port.__main__ import main
    caffemodel = goldens_dir / "voc-fcn32s" / "weights.caffemodel"
    assert main(["convert", str(caffemodel), "--model", "fcn8s", "-o", str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit builder 'fcn8s'" in err
    assert "they are weights of fcn32s" in err and "--model fcn32s" in err
    assert not (tmp_path / "o.safetensors").exists()


def test_export_with_the_wrong_width_names_the_net_and_the_width(tmp_path, capsys):
    """Issue 19 item 10: a 1/16-width file exported into a full-width prototxt says which net
    and width the file records, and --model NAME --width-divisor N does the export."""
    from port.__main__ import main
    from port.caffe.text_writer import write_prototxt
    from port.models import net_spec
    from train_trees import random_init
    weights = random_init("fcn32s", tmp_path / "w.safetensors", width_divisor=16)
    proto = tmp_path / "train.prototxt"
    write_prototxt(proto, net_spec("fcn32s", "train").to_proto())   # full width, no net name
    out = tmp_path / "w.caffemodel"
    assert main(["export", str(weights), "--net", str(proto), "-o", str(out), "--phase", "TRAIN"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "net ''" not in err and str(proto) in err
    assert "--model fcn32s --width-divisor 16" in err and not out.exists()
    assert main(["export", str(weights), "--model", "fcn32s", "-o", str(out), "--phase", "TRAIN"]) == 0
    assert load_caffemodel(out).layer("score_fr").blobs[0].shape[1] == 4096 // 16
    assert main(["export", str(weights), "--model", "fcn32s", "--width-divisor", "1", "-o",
                 str(tmp_path / "x.caffemodel")]) == 1
    assert "width_divisor=16" in capsys.readouterr().err


def test_reproduce_given_weights_of_another_net_says_which_in_one_line(goldens_dir, tmp_path):
    """Issue 19 item 7 as `python -m reproduce fcn8s --weights <an FCN-32s caffemodel>` meets it:
    the conversion into the cache refuses in one line naming fcn32s, and a converted file of
    fcn32s asked for as fcn8s does too."""
    from port.convert import ConversionError, convert
    from port.models import get_model
    from reproduce.resolve import resolve_weights
    caffemodel = goldens_dir / "voc-fcn32s" / "weights.caffemodel"
    with pytest.raises(ConversionError) as info:
        resolve_weights("fcn8s", caffemodel, cache=tmp_path / "cache")
    assert "\n" not in str(info.value) and "they are weights of fcn32s" in str(info.value)
    assert len(info.value.problems) > 3 and f"... {len(info.value.problems) - 3} more" in str(info.value)
    converted = convert(caffemodel, out=tmp_path / "fcn32s.safetensors").out
    with pytest.raises(W.WeightsError, match=r"converted for builder 'fcn32s'.*not 'fcn8s'.*--model fcn32s"):
        get_model("fcn8s", weights=converted)


@pytest.mark.shared
def test_a_batchnorm_net_goes_through_safetensors_in_caffe_blob_order(tmp_path, goldens_dir):
    """BatchNorm's three blobs (``.mean``, ``.variance``, ``.scale_factor``) and a Scale's 0-d
    ``num_axes: 0`` blob survive the one writer and come back in Caffe's blob order, so a
    snapshot or an ``--init`` of a BatchNorm net fits the net it came from."""
    from port.load import load_net_and_weights
    zoo = goldens_dir / "batchnorm-zoo"
    net, _ = load_net_and_weights(zoo / "net.prototxt", zoo / "weights.caffemodel")
    out = W.write_net(net, tmp_path / "zoo.safetensors")
    arrays, _ = W.read_arrays(out)
    assert arrays["sc_scalar.weight"].shape == ()
    stored = {layer.name: layer.blobs for layer in W.read_blobs(out).layers}
    caffe = load_caffemodel(zoo / "weights.caffemodel").blobs()
    assert set(stored) == set(caffe)
    for name, blobs in caffe.items():
        assert len(stored[name]) == len(blobs), name
        for ours, theirs in zip(stored[name], blobs):
            np.testing.assert_array_equal(np.asarray(ours).reshape(np.shape(theirs)), theirs)
    again, _ = load_net_and_weights(zoo / "net.prototxt", zoo / "weights.caffemodel")
    with torch.no_grad():
        for p in again.parameters():
            p.zero_()
    W.load_into(again, out)
    for (k, a), b in zip(net.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
