"""``python -m reproduce train`` end to end beyond VOC, on tiny SIFT Flow, NYUD and
PASCAL-Context trees at 1/16 width: two label tops (SIFT Flow), the NYUD single-stream nets
(HHA through a blob named ``data``) and their fusion from the two runs' final weights, Context,
a staged init (SIFT Flow FCN-16s from FCN-32s), bit-identical ``--resume``, ``port export``;
and where the NYUD ``trainval`` list comes from (``reproduce.splits.LISTS``).

The runs are made once per module and shared; each test checks one thing of them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from port.models import get_meta, train_net
from reproduce.__main__ import main as reproduce_main
from reproduce.datasets.base import read_split
from reproduce import splits as S
from reproduce.training import data as D
from reproduce.training.recipes import get_recipe
from reproduce.training.run import TrainOptions, initialise
from reproduce.training.sampling import SampleOrder

from train_trees import (
    TRAIN_SIZES, context_class_lists, make_context, make_nyud, make_siftflow, random_init,
    write_split,
)
from helpers import train_log, upsample_filt

COMMON = ["--width-divisor", "16", "--quiet", "--device", "cpu"]
METRICS = {"pixel_acc", "mean_acc", "mean_iu", "fw_iu", "loss"}


def _train(model, data, out, *extra):
    return reproduce_main(["train", model, "--data", str(data), "--out", str(out), *COMMON,
                           *extra])


def _json(path):
    return json.loads(path.read_text())


def _same_tensors(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _init_net(model, data, out, init="auto"):
    """A fresh train net initialised as the run in ``out`` would be (no training)."""
    net = train_net(model, width_divisor=16)
    record = initialise(net, get_recipe(model), TrainOptions(model, data, out, init=init,
                                                             width_divisor=16))
    return net, record


# ------------------------------------------------------------------------------ SIFT Flow
@pytest.fixture(scope="module")
def sift(tmp_path_factory):
    root = tmp_path_factory.mktemp("sift-data")
    folder, _ = make_siftflow(root, splits=("trainval", "test"))   # the tree's own trainval.txt
    write_split(folder / "test.txt", read_split(folder / "test.txt")[:2])
    runs = tmp_path_factory.mktemp("sift-runs")
    init = random_init("siftflow_fcn32s", runs / "init32.safetensors")
    out = runs / "siftflow-fcn32s"
    args = ("--init", str(init), "--test-interval", "2", "--snapshot", "2")
    assert _train("siftflow_fcn32s", root, out, "--iters", "3", *args) == 0
    return SimpleNamespace(root=root, folder=folder, runs=runs, init=init, out=out, args=args)


def test_siftflow_validates_both_outputs_and_trains_both_losses(sift):
    log = train_log(sift.out)
    assert [r["iter"] for r in log] == [1, 2, 3] and [("val" in r) for r in log] == [False, True, True]
    ids = read_split(sift.folder / "trainval.txt")
    assert [r["samples"][0] for r in log] == SampleOrder(ids, 1337).ids(0, 3)
    for record in log[1:]:
        outputs = record["val"]["outputs"]
        assert set(outputs) == {"score_sem", "score_geo"}
        assert all(set(outputs[o]) >= METRICS for o in outputs)
        assert record["val"]["images"] == 2
    from reproduce.training.run import val_line
    assert "score_sem" in val_line(log[-1]["val"]) and "score_geo" in val_line(log[-1]["val"])
    report = _json(sift.out / "report.json")
    assert set(report["outputs"]) == {"score_sem", "score_geo"}
    assert report["outputs"]["score_geo"]["metrics"]["mean_iu"] == pytest.approx(
        100 * log[-1]["val"]["outputs"]["score_geo"]["mean_iu"])
    listed = _json(sift.out / "init.json")["train_list"]
    assert listed["kind"] == "dataset" and listed["files"] == [str(sift.folder / "trainval.txt")]
    # the first iteration's loss is the sum of the sem and geo SoftmaxWithLoss tops
    from reproduce.training.run import pass_seed
    net, _ = _init_net("siftflow_fcn32s", sift.root, sift.out, init=str(sift.init))
    reader, source = D.open_split("siftflow", sift.root, "trainval")
    feed = D.TrainData(reader, 1337, ("sem", "geo"), source).feed(0)
    torch.manual_seed(pass_seed(1337, 0))
    with torch.no_grad():
        blobs = net(return_blobs=True, **feed)
    sem, geo = float(blobs["loss"].sum()), float(blobs["loss_geo"].sum())   # upstream top names
    assert sem > 0 and geo > 0
    assert log[0]["loss"] == pytest.approx(sem + geo, rel=1e-6)


def test_siftflow_resume_is_bit_identical(sift, tmp_path):
    split = tmp_path / "siftflow-fcn32s"
    assert _train("siftflow_fcn32s", sift.root, split, "--iters", "2", *sift.args) == 0
    assert _train("siftflow_fcn32s", sift.root, split, "--iters", "3", "--resume", *sift.args) == 0
    assert train_log(split) == train_log(sift.out)
    assert _same_tensors(load_file(split / "final.safetensors"), load_file(sift.out / "final.safetensors"))


def test_siftflow_final_weights_export_to_a_caffemodel(sift, tmp_path):
    from port.__main__ import main as port_main
    from port.caffe import load_caffemodel
    from port.caffe.text_writer import write_prototxt
    from port.models import net_spec
    proto = tmp_path / "deploy.prototxt"
    write_prototxt(proto, net_spec("siftflow_fcn32s", "deploy", width_divisor=16).to_proto())
    caffemodel = tmp_path / "siftflow-fcn32s.caffemodel"
    assert port_main(["export", str(sift.out / "final.safetensors"), "--net", str(proto),
                      "-o", str(caffemodel)]) == 0
    final = load_file(sift.out / "final.safetensors")
    blobs = {f"{n}.{('weight', 'bias')[i]}": np.asarray(b)
             for n, bs in load_caffemodel(caffemodel).blobs().items() for i, b in enumerate(bs)}
    assert _same_tensors(blobs, final)


def test_siftflow_fcn16s_starts_from_the_32s_stage(sift):
    out16 = sift.runs / "siftflow-fcn16s"
    assert _train("siftflow_fcn16s", sift.root, out16, "--init", "auto", "--iters", "2",
                  "--test-interval", "0", "--snapshot", "0") == 0
    assert [("val" in r) for r in train_log(out16)] == [False, True]
    final32 = sift.out / "final.safetensors"
    record = _json(out16 / "init.json")
    assert [s["file"] for s in record["sources"]] == [str(final32)]
    # copy by layer name (Net::copy_from): every layer the 32s net has, blob for blob
    net, init = _init_net("siftflow_fcn16s", sift.root, out16)
    assert init["blobs"] == record["blobs"]
    state32, state16 = load_file(final32), net.state_dict()
    shared = [k for k in state16 if k in state32]
    assert {k.split(".")[0] for k in shared} >= {"conv1_1", "fc7", "score_fr_sem", "score_fr_geo"}
    for key in shared:
        assert np.array_equal(state16[key].numpy(), state32[key]), key
    blobs = record["blobs"]
    assert blobs["fc6.0"] == f"copied from {final32}"
    assert blobs["score_pool4_sem.0"] == blobs["score_pool4_geo.1"] == "filled"
    assert blobs["upscore2_sem.0"] == "filled + interp"      # the 32s net has no upscore2
    assert "upscore_sem" in record["sources"][0]["dropped"]


# ----------------------------------------------------------------------------------- NYUD
@pytest.fixture(scope="module")
def nyud(tmp_path_factory):
    """A NYUD tree with train.txt and val.txt but no trainval.txt (the folder's lists joined),
    the two single-stream runs from random weights, and their fusion with --init auto."""
    root = tmp_path_factory.mktemp("nyud-data")
    folder, _ = make_nyud(root, splits=())
    ids = [f"{5001 + i:04d}" for i in range(len(TRAIN_SIZES))]
    write_split(folder / "train.txt", ids[:3])
    write_split(folder / "val.txt", ids[3:])
    write_split(folder / "test.txt", ids[1:3])
    runs = tmp_path_factory.mktemp("nyud-runs")
    outs = {}
    for seed, model in enumerate(("nyud_fcn32s_color", "nyud_fcn32s_hha")):
        init = random_init(model, runs / f"init-{model}.safetensors", seed=seed)
        outs[model] = runs / model.replace("_", "-")
        assert _train(model, root, outs[model], "--init", str(init), "--iters", "2",
                      "--test-interval", "0", "--snapshot", "0") == 0
    outs["fusion"] = runs / "nyud-fcn32s-color-hha"
    assert _train("nyud_fcn32s_color_hha", root, outs["fusion"], "--init", "auto", "--iters", "2",
                  "--test-interval", "0", "--snapshot", "0") == 0
    return SimpleNamespace(root=root, folder=folder, ids=ids, outs=outs)


def test_nyud_trains_on_train_then_val_and_records_the_list(nyud):
    for out in nyud.outs.values():
        log = train_log(out)
        assert [r["samples"][0] for r in log] == SampleOrder(nyud.ids, 1337).ids(0, 2)
        assert set(log[-1]["val"]) >= METRICS and log[-1]["val"]["images"] == 2
        listed = _json(out / "init.json")["train_list"]
        assert listed["kind"] == "dataset parts" and "assumption" in listed
        assert listed["files"] == [str(nyud.folder / "train.txt"), str(nyud.folder / "val.txt")]
        training = _json(out / "report.json")["training"]
        assert training["train_list"] == listed


def test_nyud_hha_feeds_the_hha_image_to_data(nyud):
    from port.models.preprocess import preprocess_nyud_hha
    from reproduce.datasets.base import read_image
    from reproduce.datasets.nyud import inputs_for
    meta = get_meta("nyud_fcn32s_hha")
    reader, source = D.open_split("nyud", nyud.root, "trainval", inputs_for(meta.inputs, meta.preprocess))
    data = D.TrainData(reader, 1337, ("label",), source)
    feed = data.feed(0)
    assert set(feed) == {"data", "label"}
    png = nyud.folder / "data" / "hha" / f"img_{data.sample_id(0)}.png"
    np.testing.assert_array_equal(feed["data"][0], preprocess_nyud_hha(read_image(png)))


@pytest.mark.parametrize("model, modalities", [
    ("nyud_fcn32s_color", {"data": "color"}), ("nyud_fcn32s_hha", {"data": "hha"}),
    ("nyud_fcn32s_color_hha", {"color": "color", "hha": "hha"})])
def test_the_run_opens_nyud_with_each_nets_inputs(nyud, model, modalities, tmp_path):
    """The run asks the reader class what a net needs (``reader_options``), no test of the
    dataset's name: each training and validation item feeds every input of the train net the
    modality its preprocessing names (the HHA net's ``data`` the HHA image)."""
    from reproduce import distributed as dist_
    from reproduce.datasets.base import read_image
    from reproduce.datasets.nyud import NYUD_INPUTS
    from reproduce.training.run import _open_lists
    recipe = get_recipe(model)
    opts = TrainOptions(model, nyud.root, tmp_path / "out", width_divisor=16)
    train_reader, _, val_reader, _ = _open_lists(recipe, opts, dist_.DistContext(), lambda _: None)
    inputs = set(train_net(model, width_divisor=16).input_names) - {"label"}
    assert set(modalities) == inputs
    for reader in (train_reader, val_reader):
        item = reader.item(reader.ids[0])
        assert set(item.inputs) == inputs
        for blob, modality in modalities.items():
            folder, _, preprocess = NYUD_INPUTS[modality]
            png = nyud.folder / "data" / folder / f"img_{reader.ids[0]}.png"
            np.testing.assert_array_equal(item.inputs[blob], preprocess(read_image(png)))


def test_nyud_fusion_starts_from_the_two_streams(nyud):
    color = nyud.outs["nyud_fcn32s_color"] / "final.safetensors"
    hha = nyud.outs["nyud_fcn32s_hha"] / "final.safetensors"
    record = _json(nyud.outs["fusion"] / "init.json")
    assert [(s["file"], s["suffix"]) for s in record["sources"]] == [(str(color), "color"),
                                                                        (str(hha), "hha")]
    net, init = _init_net("nyud_fcn32s_color_hha", nyud.root, nyud.outs["fusion"])
    assert init["blobs"] == record["blobs"]
    fused = net.state_dict()
    checked = 0
    for suffix, path in (("color", color), ("hha", hha)):
        for key, value in load_file(path).items():
            layer, blob = key.rsplit(".", 1)
            if layer == "upscore":
                continue
            assert np.array_equal(fused[f"{layer}{suffix}.{blob}"].numpy(), value), (suffix, key)
            index = ("weight", "bias").index(blob)
            assert record["blobs"][f"{layer}{suffix}.{index}"] == f"copied from {path}"
            checked += 1
    assert checked == len(fused) - 1                      # every parameter but the fused upscore
    up = fused["upscore.weight"].numpy()
    m, k, h, w = up.shape
    assert m == k == 40 and record["blobs"]["upscore.0"] == "filled + interp"
    for i in range(m):
        np.testing.assert_allclose(up[i, i], upsample_filt(h), rtol=0, atol=1e-7)
    assert not up[~np.eye(m, dtype=bool)].any()           # Caffe's default constant-0 filler
    assert [s["dropped"] for s in record["sources"]] == [["upscore"], ["upscore"]]
    assert len(train_log(nyud.outs["fusion"])) == 2


def test_a_stage_of_another_width_is_refused_in_one_line(nyud, capsys):
    before = (nyud.outs["fusion"] / "init.json").read_bytes()
    assert reproduce_main(["train", "nyud_fcn32s_color_hha", "--data", str(nyud.root), "--out",
                           str(nyud.outs["fusion"]), "--width-divisor", "8", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nyud-fcn32s-color/final.safetensors" in err
    assert "--width-divisor 16" in err and "is 8" in err
    assert (nyud.outs["fusion"] / "init.json").read_bytes() == before


# ------------------------------------------------------------------------- PASCAL-Context
def test_pascalcontext_trains_on_voc2010_train(tmp_path):
    root = tmp_path / "data"
    lists = root / "pascal-context"
    full, _ = context_class_lists(lists)
    make_context(root, len(full), splits=("train", "val"))
    voc = root / "VOCdevkit" / "VOC2010"
    write_split(voc / "ImageSets" / "Main" / "val.txt", read_split(voc / "ImageSets" / "Main" / "val.txt")[:2])
    init = random_init("pascalcontext_fcn32s", tmp_path / "init.safetensors")
    out = tmp_path / "pascalcontext-fcn32s"
    assert _train("pascalcontext_fcn32s", root, out, "--init", str(init), "--iters", "2",
                  "--test-interval", "0", "--snapshot", "1") == 0
    log = train_log(out)
    ids = read_split(voc / "ImageSets" / "Main" / "train.txt")
    assert [r["samples"][0] for r in log] == SampleOrder(ids, 1337).ids(0, 2)
    assert set(log[-1]["val"]) >= METRICS and log[-1]["val"]["images"] == 2
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [
        "iter_1.safetensors", "iter_1.solverstate.safetensors",
        "iter_2.safetensors", "iter_2.solverstate.safetensors"]
    report = _json(out / "report.json")
    assert report["outputs"]["score"]["metrics"]["mean_iu"] == pytest.approx(100 * log[-1]["val"]["mean_iu"])
    from port.models import pascalcontext_fcn32s
    model = pascalcontext_fcn32s(weights=out / "final.safetensors")
    assert model.state_dict()["score_fr.weight"].shape[0] == 60


# --------------------------------------------------------------- where trainval comes from
@pytest.fixture
def nyud_folder(tmp_path):
    folder, _ = make_nyud(tmp_path, TRAIN_SIZES[:1], splits=())
    return folder


def _ids(root):
    reader, source = D.open_split("nyud", root, "trainval", {"data": "color"})
    return reader.ids, source


def test_nyud_trainval_of_the_folder_wins(nyud_folder, tmp_path):
    for name, ids in (("train.txt", ["1", "2"]), ("val.txt", ["3"]), ("trainval.txt", ["3", "1"])):
        write_split(nyud_folder / name, ids)
    ids, source = _ids(tmp_path)
    assert ids == ["3", "1"] and source.kind == "dataset"
    assert source.files == (nyud_folder / "trainval.txt",) and not source.assumption


def test_nyud_trainval_joins_the_folders_train_and_val_as_id_lists(nyud_folder, tmp_path):
    write_split(nyud_folder / "train.txt", ["0001", "0002"])    # no trailing newline
    write_split(nyud_folder / "val.txt", ["0003", "0004"])
    ids, source = _ids(tmp_path)
    assert ids == ["0001", "0002", "0003", "0004"] and source.kind == "dataset parts"
    assert "order is assumed" in source.assumption and "assumed" in source.describe()
    (nyud_folder / "val.txt").unlink()
    with pytest.raises(S.SplitError, match=r"has train.txt but not val.txt"):
        _ids(tmp_path)


def test_nyud_trainval_falls_back_to_upstreams_shipped_lists(nyud_folder, tmp_path, upstream_dir):
    ids, source = _ids(tmp_path)
    lists = upstream_dir / "data" / "nyud"
    expected = read_split(lists / "train.txt") + read_split(lists / "val.txt")
    assert ids == expected and len(set(ids)) == len(ids)
    assert source.kind == "shipped" and source.files == (S.DATA_DIR / "nyud" / "train.txt",
                                                          S.DATA_DIR / "nyud" / "val.txt")
    for path in source.files:   # byte for byte upstream's
        assert path.read_bytes() == (lists / path.name).read_bytes()


def test_a_datasets_own_copy_of_the_papers_list_is_the_papers_list():
    """The report's "papers_list": a list read from the dataset folder is the papers' when its ids
    are those of the list shipped for it (reproduce.splits), not when they differ; unknown where
    no list is on record. (It once read names reproduce.splits had taken over, behind a lazy
    import, and raised on a dataset's own list.)"""
    from port.hub.registry import split_digest
    from reproduce.training.report import papers_list_match
    ids = read_split(S.shipped_file("split/sift-flow/trainval"))
    own = {"kind": "dataset", "dataset": "siftflow", "split": "trainval"}
    assert papers_list_match({**own, "ids_sha256": split_digest(ids)}) is True
    assert papers_list_match({**own, "ids_sha256": split_digest(ids[:-1])}) is False
    assert papers_list_match({"kind": "dataset", "dataset": "voc", "split": "train"}) is None
    assert papers_list_match({"kind": "shipped"}) is True


def test_siftflow_trainval_falls_back_to_the_shipped_list(tmp_path):
    make_siftflow(tmp_path, TRAIN_SIZES[:1], splits=("test",))
    reader, source = D.open_split("siftflow", tmp_path, "trainval")
    assert source.kind == "shipped" and source.files == (S.DATA_DIR / "sift-flow" / "trainval.txt",)
    assert reader.ids == read_split(source.files[0]) and not source.assumption


def test_an_altered_shipped_list_is_refused_in_one_line(nyud_folder, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "shipped"
    shutil.copytree(S.DATA_DIR, copy)
    with open(copy / "nyud" / "val.txt", "a") as fh:
        fh.write("9999\n")
    monkeypatch.setattr(S, "DATA_DIR", copy)
    assert _train("nyud_fcn32s_color", tmp_path, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(copy / "nyud" / "val.txt") in err and "altered" in err


