"""reproduce.datasets on tiny synthetic trees written with pillow and scipy.io.savemat
(the tree makers of tests/train_trees.py).

Expected values are computed here from the written files with the upstream data layers' recipes
(voc_layers.py, siftflow_layers.py, nyud_layers.py, pascalcontext_layers.py), not with the readers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch.utils.data
from PIL import Image

from port.models import preprocess as pp
from reproduce import datasets as ds
from reproduce.datasets.nyud import inputs_for
from reproduce.datasets.siftflow import SUBDIR

from train_trees import (
    context_class_lists, make_context, make_nyud, make_siftflow, rgb, save_jpg, write_split,
)

RNG = np.random.default_rng(7)
ODD_SIZES = [(5, 7), (9, 3), (11, 13), (3, 17), (15, 5), (7, 9), (13, 11), (1, 21), (17, 1),
             (19, 7), (21, 15), (6, 25)]


def _save_jpg(path: Path, h, w):
    save_jpg(path, rgb(RNG, h, w))


def _upstream_image(path: Path, mean):
    """load_image of the upstream layers, on the decoded file."""
    in_ = np.array(Image.open(path), dtype=np.float32)[:, :, ::-1]
    in_ -= np.array(mean, dtype=np.float32)
    return in_.transpose((2, 0, 1))


# ----------------------------------------------------------------------------- PASCAL VOC

def _palette_png(path: Path, label: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label, mode="P")
    im.putpalette(RNG.integers(0, 256, size=768, dtype=np.uint8).tolist())
    im.save(path)


def _voc_label(h, w, n=21):
    label = RNG.integers(0, n, size=(h, w), dtype=np.uint8)
    label[0, :] = label[-1, :] = label[:, 0] = label[:, -1] = ds.VOID  # void borders
    return label


def make_voc(root: Path, year="VOC2012", sizes=ODD_SIZES, splits=("seg11valid", "val")):
    folder = root / "VOCdevkit" / year
    labels = {}
    for i, (h, w) in enumerate(sizes):
        image_id = f"2007_{i:06d}"
        _save_jpg(folder / "JPEGImages" / f"{image_id}.jpg", h, w)
        labels[image_id] = _voc_label(h, w)
        _palette_png(folder / "SegmentationClass" / f"{image_id}.png", labels[image_id])
    for split in splits:
        write_split(folder / "ImageSets" / "Segmentation" / f"{split}.txt", list(labels))
    return folder, labels


def test_voc_items_match_the_upstream_layer(tmp_path):
    folder, labels = make_voc(tmp_path)
    data = ds.VOC(tmp_path, "seg11valid")
    assert len(data) == len(ODD_SIZES) and data.ids == list(labels) and data.n_classes == 21
    for image_id, inputs, label in data:
        expected = _upstream_image(folder / "JPEGImages" / f"{image_id}.jpg", pp.VOC_MEAN_BGR)
        assert list(inputs) == ["data"] and inputs["data"].dtype == np.float32
        np.testing.assert_array_equal(inputs["data"], expected)
        np.testing.assert_array_equal(label, labels[image_id])
        assert label.dtype == np.uint8 and (label == ds.VOID).any()
    dict_form = data.item(data.ids[0], all_labels=True).label
    assert list(dict_form) == ["label"]
    np.testing.assert_array_equal(dict_form["label"], labels[data.ids[0]])


@pytest.mark.parametrize("given", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc_locate_from_any_parent(tmp_path, given):
    folder, _ = make_voc(tmp_path, sizes=ODD_SIZES[:2])
    found = ds.locate("voc", tmp_path / given)
    assert found.path == folder
    assert str(folder) in found.message and "VOC2012" in found.message
    assert ("under" in found.message) == (given != "VOCdevkit/VOC2012")


def test_voc_prefers_the_splits_year(tmp_path):
    make_voc(tmp_path, "VOC2011", sizes=ODD_SIZES[:2])
    make_voc(tmp_path, "VOC2012", sizes=ODD_SIZES[:3])
    assert ds.VOC(tmp_path, "seg11valid").root.name == "VOC2011"
    assert len(ds.VOC(tmp_path, "val")) == 3
    assert "chose it among 2" in ds.locate("voc", tmp_path, "val").message


def test_voc_split_file_override(tmp_path):
    make_voc(tmp_path, sizes=ODD_SIZES[:4], splits=())
    with pytest.raises(ds.MissingFileError, match="seg11valid.txt.*--split FILE") as err:
        ds.VOC(tmp_path)
    assert "split_file=" not in str(err.value)     # a Python argument, not for the command line
    split = tmp_path / "mine.txt"
    split.write_text("2007_000002\n2007_000000\n")
    assert ds.VOC(tmp_path, split_file=split).ids == ["2007_000002", "2007_000000"]
    other = tmp_path / "more.txt"                  # several files: their ids joined in order
    other.write_bytes(b"2007_000001")               # (no final newline: nothing is fused)
    assert ds.VOC(tmp_path, split_file=[split, other]).ids == [
        "2007_000002", "2007_000000", "2007_000001"]


def test_voc_errors_name_the_file(tmp_path):
    folder, labels = make_voc(tmp_path, sizes=ODD_SIZES[:3])
    (folder / "JPEGImages" / "2007_000000.jpg").unlink()
    bad = labels["2007_000001"].copy()
    bad[1, 1] = 30
    _palette_png(folder / "SegmentationClass" / "2007_000001.png", bad)
    _palette_png(folder / "SegmentationClass" / "2007_000002.png", _voc_label(4, 4))
    data = ds.VOC(tmp_path)
    with pytest.raises(ds.MissingFileError, match="2007_000000.jpg"):
        data[0]
    jpg = folder / "JPEGImages" / "2007_000000.jpg"
    jpg.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ds.DatasetError, match="2007_000000.jpg: not a readable image"):
        data[0]
    with pytest.raises(ds.LabelError, match=r"2007_000001.png.*\[30\]"):
        data[1]
    with pytest.raises(ds.LabelError, match="2007_000002.png.*4x4"):
        data[2]
    with pytest.raises(ds.DatasetNotFoundError, match="no PASCAL VOC"):
        ds.VOC(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages")


def test_dataloader_with_workers_decodes_in_order(tmp_path):
    make_voc(tmp_path, sizes=ODD_SIZES[:4])
    data = ds.get_dataset("voc", tmp_path)
    loader = torch.utils.data.DataLoader(data, batch_size=1, num_workers=2)
    for (image_id, inputs, label), expected in zip(loader, data):
        assert list(image_id) == [expected.id]
        np.testing.assert_array_equal(inputs["data"][0].numpy(), expected.inputs["data"])
        np.testing.assert_array_equal(label[0].numpy(), expected.label)


# ----------------------------------------------------------------------------------- SBD

def test_sbd_reads_gtcls_segmentation(tmp_path):
    folder = tmp_path / "benchmark_RELEASE" / "dataset"
    labels = {}
    for i, (h, w) in enumerate(ODD_SIZES[:4]):
        image_id = f"2008_{i:06d}"
        _save_jpg(folder / "img" / f"{image_id}.jpg", h, w)
        labels[image_id] = RNG.integers(0, 21, size=(h, w), dtype=np.uint8)
        (folder / "cls").mkdir(exist_ok=True)
        scipy.io.savemat(folder / "cls" / f"{image_id}.mat", {"GTcls": {
            "Segmentation": labels[image_id], "CategoriesPresent": np.array([1])}})
    write_split(folder / "val.txt", list(labels))
    data = ds.SBD(tmp_path)
    assert data.located.path == folder and len(data) == 4
    for image_id, inputs, label in data:
        np.testing.assert_array_equal(label, labels[image_id])
        np.testing.assert_array_equal(
            inputs["data"], _upstream_image(folder / "img" / f"{image_id}.jpg", pp.SBD_MEAN_BGR))
    scipy.io.savemat(folder / "cls" / "2008_000000.mat", {"GTcls": {"Boundaries": np.zeros(1)}})
    with pytest.raises(ds.DatasetError, match="2008_000000.mat.*Segmentation"):
        data[0]


# ------------------------------------------------------------------------------ SIFT Flow

def _make_siftflow(root: Path, n_images=4):
    return make_siftflow(root, ODD_SIZES[:n_images], RNG)


def test_siftflow_shifts_labels_and_voids(tmp_path):
    folder, raw = _make_siftflow(tmp_path)
    sem_data = ds.SIFTFlow(tmp_path)
    geo_data = ds.get_dataset("siftflow", tmp_path, "test", task="geo")
    assert sem_data.n_classes == 33 and geo_data.n_classes == 3 and geo_data.label_name == "geo"
    for (image_id, inputs, sem), (_, _, geo) in zip(sem_data, geo_data):
        raw_sem, raw_geo = raw[image_id]
        np.testing.assert_array_equal(sem, np.where(raw_sem == 0, 255, raw_sem - 1))
        np.testing.assert_array_equal(geo, np.where(raw_geo <= 0, 255, raw_geo - 1))
        np.testing.assert_array_equal(inputs["data"], _upstream_image(
            folder / "Images" / SUBDIR / f"{image_id}.jpg", pp.SIFTFLOW_MEAN_BGR))


def test_siftflow_both_tasks_in_one_item(tmp_path):
    folder, raw = _make_siftflow(tmp_path, 2)
    data = ds.SIFTFlow(tmp_path)
    item = data.item(data.ids[1], all_labels=True)
    raw_sem, raw_geo = raw[data.ids[1]]
    assert set(item.label) == {"sem", "geo"}
    np.testing.assert_array_equal(item.label["sem"], data[1].label)
    np.testing.assert_array_equal(item.label["geo"], np.where(raw_geo <= 0, 255, raw_geo - 1))


def test_siftflow_out_of_range_label(tmp_path):
    folder, raw = _make_siftflow(tmp_path, 1)
    sem = raw["coast_n0"][0].copy()
    sem[0, 0] = 34
    scipy.io.savemat(folder / "SemanticLabels" / SUBDIR / "coast_n0.mat", {"S": sem})
    with pytest.raises(ds.LabelError, match=r"coast_n0.mat.*\[34"):
        ds.SIFTFlow(tmp_path)[0]
    scipy.io.savemat(folder / "SemanticLabels" / SUBDIR / "coast_n0.mat", {"T": sem})
    with pytest.raises(ds.DatasetError, match="no field 'S'"):
        ds.SIFTFlow(tmp_path)[0]
    (folder / "SemanticLabels" / SUBDIR / "coast_n0.mat").write_bytes(b"not a mat file" * 8)
    with pytest.raises(ds.DatasetError, match="coast_n0.mat: not a readable MATLAB file"):
        ds.SIFTFlow(tmp_path)[0]


# ---------------------------------------------------------------------------------- NYUD

def _make_nyud(root: Path, n_images=3):
    return make_nyud(root, ODD_SIZES[:n_images], RNG)


def test_nyud_inputs_and_labels(tmp_path):
    folder, raw = _make_nyud(tmp_path)
    data = ds.NYUDv2(tmp_path, inputs=("color", "hha", "depth"))
    assert data.n_classes == 40 and len(data) == 3
    for image_id, inputs, label in data:
        depth, seg = raw[image_id]
        assert list(inputs) == ["color", "hha", "depth"]
        np.testing.assert_array_equal(inputs["color"], _upstream_image(
            folder / "data" / "images" / f"img_{image_id}.png", pp.NYUD_MEAN_BGR))
        hha = np.array(Image.open(folder / "data" / "hha" / f"img_{image_id}.png"), np.float32)
        np.testing.assert_array_equal(
            inputs["hha"], (hha - np.array(pp.NYUD_MEAN_HHA, np.float32)).transpose(2, 0, 1))
        np.testing.assert_array_equal(
            inputs["depth"][0], np.log(depth.astype(np.float32)) - np.float32(7.844))
        np.testing.assert_array_equal(label, np.where(seg == 0, 255, seg - 1))


def test_nyud_inputs_named_as_the_net_blobs(tmp_path):
    """nyud-fcn32s-hha feeds HHA into a blob named `data`; the fusion nets use `color`/`depth`."""
    _make_nyud(tmp_path, 1)
    hha_net = ds.NYUDv2(tmp_path, inputs={"data": "hha"})
    both = ds.NYUDv2(tmp_path, inputs=("color", "hha"))
    image_id, inputs, _ = hha_net[0]
    assert list(inputs) == ["data"]
    np.testing.assert_array_equal(inputs["data"], both[0].inputs["hha"])
    assert inputs["data"].shape == (3, *ODD_SIZES[0])
    assert inputs_for(("data",), (pp.preprocess_nyud_hha,)) == {"data": "hha"}
    assert inputs_for(("color", "depth"), (pp.preprocess_nyud_color, pp.preprocess_nyud_depth)) \
        == {"color": "color", "depth": "depth"}
    with pytest.raises(ValueError, match="preprocess_voc"):
        inputs_for(("data",), (pp.preprocess_voc,))


def test_nyud_errors(tmp_path):
    folder, _ = _make_nyud(tmp_path, 1)
    with pytest.raises(ValueError, match="inputs"):
        ds.NYUDv2(tmp_path, inputs=("rgb",))
    (folder / "data" / "hha" / "img_5001.png").unlink()
    with pytest.raises(ds.MissingFileError, match="img_5001.png"):
        ds.NYUDv2(tmp_path, inputs=("hha",))[0]
    scipy.io.savemat(folder / "segmentation" / "img_5001.mat",
                     {"segmentation": np.full((5, 7), 297, np.uint16)})  # wraps to 40 in uint8
    with pytest.raises(ds.LabelError, match=r"img_5001.mat.*\[297\]"):
        ds.NYUDv2(tmp_path)[0]


# ------------------------------------------------------------------------- PASCAL-Context

def _upstream_context_label(label_400, labels_400, labels_59):
    """PASCALContextSegDataLayer.setup + load_label, transcribed."""
    labels_59 = list(labels_59)
    for main_label, task_label in zip(("table", "bedclothes", "cloth"),
                                      ("diningtable", "bedcloth", "clothes")):
        labels_59[labels_59.index(task_label)] = main_label
    label = np.zeros_like(label_400, dtype=np.uint8)
    for idx, name in enumerate(labels_59):
        idx_400 = labels_400.index(name) + 1
        label[label_400 == idx_400] = idx + 1
    return label


def _names(path: Path):
    return [line.split(":", 1)[1].replace(" ", "") for line in path.read_text().splitlines()]


def _check_context(tmp_path, class_lists, full_names, task_names):
    context, voc, raw = make_context(tmp_path, len(full_names), ODD_SIZES[:4], RNG)
    data = ds.PASCALContext(tmp_path, class_lists=class_lists)
    assert data.located.path == context and data.voc_root == voc and data.n_classes == 60
    for image_id, inputs, label in data:
        expected = _upstream_context_label(raw[image_id], full_names, task_names)
        np.testing.assert_array_equal(label, expected)
        np.testing.assert_array_equal(inputs["data"], _upstream_image(
            voc / "JPEGImages" / f"{image_id}.jpg", pp.CONTEXT_MEAN_BGR))
    return data, context


def test_context_with_synthetic_class_lists(tmp_path):
    """Lists in the Context download's names; the full list shuffled with decoy names."""
    lists = tmp_path / "lists"
    full_names, task_names = context_class_lists(lists, RNG)
    data, context = _check_context(tmp_path, lists, full_names, task_names)
    table = full_names.index("table") + 1
    scipy.io.savemat(context / "trainval" / f"{data.ids[0]}.mat",
                     {"LabelMap": np.full((5, 7), table, np.uint16)})
    assert (data[0].label == ds.CONTEXT_CLASSES.index("diningtable")).all()
    scipy.io.savemat(context / "trainval" / f"{data.ids[0]}.mat",
                     {"LabelMap": np.full((5, 7), len(full_names) + 1, np.uint16)})
    with pytest.raises(ds.LabelError, match=data.ids[0]):
        data[0]


def test_context_with_upstream_class_lists(tmp_path, upstream_dir):
    lists = upstream_dir / "data" / "pascal-context"
    full_names = _names(lists / "classes-400.txt")
    task_names = _names(lists / "classes-59.txt")[1:]   # upstream's 59_labels.txt has no background
    _check_context(tmp_path, lists, full_names, task_names)


def test_context_without_class_lists(tmp_path):
    make_context(tmp_path, 2, ODD_SIZES[:4], RNG)
    with pytest.raises(ds.MissingFileError, match="class_lists"):
        ds.PASCALContext(tmp_path)


# --------------------------------------------------------------------- class lists, registry

@pytest.mark.parametrize("path, names", [
    ("pascal/classes.txt", ds.VOC_CLASSES),
    ("nyud/classes.txt", ds.NYUD_CLASSES),
    ("pascal-context/classes-59.txt", ds.CONTEXT_CLASSES),
])
def test_class_names_match_upstream(upstream_dir, path, names):
    lines = [line.strip() for line in (upstream_dir / "data" / path).read_text().splitlines()]
    lines = [line.split(": ", 1)[-1] for line in lines if line][:len(names)]
    assert tuple(lines) == names


def test_siftflow_class_names_match_upstream(upstream_dir):
    text = (upstream_dir / "data" / "sift-flow" / "classes.txt").read_text()
    numbered = [line.split(" ", 1) for line in text.splitlines() if line[:2].isdigit()]
    names = [name for _, name in numbered]
    assert tuple(names) == ds.SIFTFLOW_SEMANTIC_CLASSES + ds.SIFTFLOW_GEOMETRIC_CLASSES


def test_upstream_split_sizes(upstream_dir):
    """The papers' evaluation splits: 736 (seg11valid), 200 (SIFT Flow test), 654 (NYUD test)."""
    data = upstream_dir / "data"
    for path, size in [("pascal/seg11valid.txt", 736), ("sift-flow/test.txt", 200),
                       ("nyud/test.txt", 654)]:
        assert len((data / path).read_text().split()) == size


def test_registry_and_locate_errors(tmp_path):
    assert set(ds.DATASETS) == {"voc", "sbd", "siftflow", "nyud", "pascalcontext"}
    with pytest.raises(KeyError, match="known"):
        ds.get_dataset("cityscapes", tmp_path)
    for name in ds.DATASETS:
        with pytest.raises(ds.DatasetNotFoundError, match=str(tmp_path)):
            ds.locate(name, tmp_path)
    with pytest.raises(ds.DatasetNotFoundError, match="not a folder.*--data DIR"):  # 19.13
        ds.locate("voc", tmp_path / "nonexistent")


def test_voc_year_asked_for_wins_over_the_splits_preference(tmp_path):
    """A recipe's ``year`` (FCN-GoogLeNet: 2011) picks that folder for every split; absent, the
    split's preference reads another, and the note says the year asked for is not there."""
    make_voc(tmp_path, "VOC2011", sizes=ODD_SIZES[:2], splits=("val", "train"))
    make_voc(tmp_path, "VOC2012", sizes=ODD_SIZES[:3], splits=("val", "train"))
    assert ds.VOC(tmp_path, "val").year == "2012"  # val alone prefers VOC2012
    for split in ("val", "train"):
        for year in ("2011", 2011, "VOC2011"):
            assert ds.VOC(tmp_path, split, year=year).year == "2011"
    asked = ds.locate("voc", tmp_path, "val", year="2011").message
    assert "chose it among 2 VOC folders for split 'val' (VOC2011 asked for)" in asked
    only_2012 = tmp_path / "VOCdevkit" / "VOC2012"
    reader = ds.VOC(only_2012, "val", year="2011")
    assert reader.year == "2012" and reader.table_split == "val"
    assert reader.located.message.endswith(
        "VOC2011 asked for: no VOC2011 folder here or below, reading VOC2012")
    assert ds.VOC.year_of(tmp_path / "VOCdevkit" / "VOC2011") == "2011"
    assert ds.VOC.year_of(tmp_path / "my-voc") is None


def test_the_year_chooses_the_folder_the_split_list_is_read_from(tmp_path):
    """``resolve.open_split`` looks for the list in the folder of the year asked for: a
    VOC2011 train.txt, not VOC2012's."""
    from reproduce.resolve import open_split
    make_voc(tmp_path, "VOC2011", sizes=ODD_SIZES[:2], splits=("train",))
    make_voc(tmp_path, "VOC2012", sizes=ODD_SIZES[:3], splits=("train",))
    reader, source = open_split("voc", tmp_path, "train", year="2011")
    listed = (tmp_path / "VOCdevkit" / "VOC2011" / "ImageSets" / "Segmentation" / "train.txt")
    assert reader.year == "2011" and reader.ids == listed.read_text().split()
    assert source.kind == "dataset"
    assert ds.dataset_class("sbd").locate_options == ()
