"""The reproduction harness end to end on data the tests make.

A synthetic PASCAL VOC tree (13 images of different odd sizes, palette labels with void
borders) and a 1/16-width FCN-8s caffemodel with random weights written by the project's own
writer (``port.caffe.synth``). Predictions must equal the argmax of the generic graph run
independently here, and the metrics must equal score.py's formulas computed here with numpy.
Other test files import the builders below (``from test_harness import ...``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reproduce import harness as H
from reproduce.__main__ import main
from reproduce.palette import VOID_LABEL, voc_palette

N_IMAGES = 13          # prime: not a multiple of 2 or 3 processes
N_CLASSES = 21
BAD_INDEX = 6          # the image the corrupt-file tests break
GOLDEN_NET = "voc-fcn8s"


def make_voc_tree(root: Path, n: int = N_IMAGES, seed: int = 0) -> list[str]:
    """VOCdevkit/VOC2012 with JPEGImages, SegmentationClass (palette PNGs) and a
    seg11valid split; images of odd sizes; label blocks with a void border. Returns the ids."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"2011_{i:06d}" for i in range(n)]
    for i, image_id in enumerate(ids):
        h, w = 15 + 2 * (i % 5), 19 + 2 * (i % 7)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        label = np.zeros((h, w), dtype=np.uint8)
        label[2:h - 2, 3:w - 3] = rng.integers(1, N_CLASSES)
        label[h // 2:, : w // 2] = rng.integers(0, N_CLASSES)
        label[1, :] = VOID_LABEL
        label[:, 2] = VOID_LABEL
        png = Image.fromarray(label, mode="P")
        png.putpalette(voc_palette().ravel().tolist())
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    (voc / "ImageSets" / "Segmentation" / "seg11valid.txt").write_text("\n".join(ids) + "\n")
    return ids


def make_caffemodel(goldens_dir: Path, path: Path, seed: int = 1) -> Path:
    """Random weights for the goldens' 1/16-width net, written by the project's writer."""
    from port.caffe import load_net
    from port.caffe.synth import make_caffemodel as write
    write(load_net(goldens_dir / GOLDEN_NET / "net.prototxt"), path, seed=seed)
    return path


def net_argv(goldens_dir: Path, weights: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--net", str(goldens_dir / GOLDEN_NET / "net.prototxt"), "--weights", str(weights),
            "--data", str(data), "--out", str(out), "--device", "cpu", "--quiet",
            "--workers", "0", *extra]


def fast_hist(label: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """score.py's fast_hist, written out again here."""
    k = (label >= 0) & (label < n)
    return np.bincount(n * label[k].astype(int) + pred[k], minlength=n ** 2).reshape(n, n)


def score_py(hist: np.ndarray) -> dict[str, float]:
    """score.py's four numbers, in percent."""
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        cls_acc = np.nanmean(np.diag(hist) / hist.sum(1))
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    freq = hist.sum(1) / hist.sum()
    return {"pixel_acc": 100 * acc, "mean_acc": 100 * cls_acc, "mean_iu": 100 * np.nanmean(iu),
            "fw_iu": 100 * (freq[freq > 0] * iu[freq > 0]).sum()}


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("voc")
    return root, make_voc_tree(root)


@pytest.fixture(scope="module")
def caffemodel(goldens_dir, tmp_path_factory) -> Path:
    return make_caffemodel(goldens_dir, tmp_path_factory.mktemp("w") / "fcn8s-w16.caffemodel")


@pytest.fixture(scope="module")
def net_run(goldens_dir, voc_tree, caffemodel, tmp_path_factory) -> Path:
    """One --net evaluation of the whole synthetic split, predictions saved."""
    out = tmp_path_factory.mktemp("run")
    code = main(net_argv(goldens_dir, caffemodel, voc_tree[0], out / "report",
                         "--save-predictions", str(out / "pred"), "--overlays", "2"))
    assert code == 0
    return out


def independent_predictions(goldens_dir: Path, caffemodel: Path, voc: Path,
                            ids: list[str]) -> dict[str, np.ndarray]:
    """The generic graph on each image, preprocessed here by hand as voc_layers.py does."""
    from port.caffe import load_caffemodel, load_net
    from port.graph import CaffeNet
    net = load_net(goldens_dir / GOLDEN_NET / "net.prototxt")
    model = CaffeNet(net)
    model.load_blobs(load_caffemodel(caffemodel, net))
    model.eval()
    mean = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)
    preds = {}
    for image_id in ids:
        rgb = np.array(Image.open(voc / "JPEGImages" / f"{image_id}.jpg"), dtype=np.float32)
        data = (rgb[:, :, ::-1] - mean).transpose(2, 0, 1).copy()
        with torch.inference_mode():
            score = model(data=torch.from_numpy(data)[None])["score"][0].numpy()
        preds[image_id] = score.argmax(0)
    return preds


def test_predictions_and_metrics_match_an_independent_evaluation(
        goldens_dir, voc_tree, caffemodel, net_run):
    root, ids = voc_tree
    voc = root / "VOCdevkit" / "VOC2012"
    preds = independent_predictions(goldens_dir, caffemodel, voc, ids)
    hist = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    for image_id in ids:
        saved = np.array(Image.open(net_run / "pred" / f"{image_id}.png"))
        np.testing.assert_array_equal(saved, preds[image_id], err_msg=image_id)
        label = np.array(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))
        hist += fast_hist(label, preds[image_id], N_CLASSES)
    report = json.loads((net_run / "report" / "report.json").read_text())
    part = report["outputs"]["score"]
    np.testing.assert_array_equal(np.array(part["scores"]["confusion"]), hist)
    for metric, value in score_py(hist).items():
        assert part["metrics"][metric] == pytest.approx(value, rel=1e-12, abs=1e-12), metric
    assert report["images"] == len(ids) and report["skipped"] == []
    assert report["precision"] == "strict-fp32"
    assert report["weights_sha256"] == __import__("hashlib").sha256(caffemodel.read_bytes()).hexdigest()


def test_report_files_are_written(net_run):
    folder = net_run / "report"
    report = json.loads((folder / "report.json").read_text())
    assert (folder / "report.md").read_text().startswith("# net:fcn on voc seg11valid")
    assert (folder / "per_class_iu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(report["files"]["overlays"]) == 2
    for rel in report["files"]["overlays"]:
        image = np.array(Image.open(folder / rel))
        assert image.ndim == 3 and image.shape[1] % 3 == 0  # image | truth | prediction
    assert not list(folder.glob(".*.tmp"))  # nothing half-written left behind


def test_named_model_converts_once_and_agrees_with_the_generic_graph(
        goldens_dir, voc_tree, caffemodel, net_run, tmp_path):
    out, cache = tmp_path / "named", tmp_path / "cache"
    argv = ["fcn8s", "--weights", str(caffemodel), "--data", str(voc_tree[0]), "--out", str(out),
            "--device", "cpu", "--quiet", "--cache", str(cache), "--limit", "4", "--overlays", "0"]
    assert main(argv) == 0
    converted = list(cache.glob("*.safetensors"))
    assert len(converted) == 1
    named = json.loads((out / "report.json").read_text())
    full = json.loads((net_run / "report" / "report.json").read_text())
    preds = {p.stem: np.array(Image.open(p)) for p in (net_run / "pred").glob("*.png")}
    voc = voc_tree[0] / "VOCdevkit" / "VOC2012"
    hist = sum(fast_hist(np.array(Image.open(voc / "SegmentationClass" / f"{i}.png")), preds[i],
                         N_CLASSES) for i in voc_tree[1][:4])
    np.testing.assert_array_equal(np.array(named["outputs"]["score"]["scores"]["confusion"]), hist)
    assert named["weights_sha256"] == full["weights_sha256"]
    assert any(r["published"] is not None for r in named["comparison"])  # fcn8s has targets


def test_precision_modes_set_the_backend_flags():
    H.apply_precision(H.FAST)
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    H.apply_precision(H.STRICT)
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def _corrupt_copy(root: Path, ids: list[str], dest: Path) -> Path:
    import shutil
    shutil.copytree(root, dest)
    bad = dest / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{ids[BAD_INDEX]}.jpg"
    bad.write_bytes(b"not a jpeg at all")
    return bad


def test_a_corrupt_image_stops_the_run_naming_it(goldens_dir, voc_tree, caffemodel, tmp_path,
                                                 capsys):
    root, ids = voc_tree
    bad = _corrupt_copy(root, ids, tmp_path / "data")
    code = main(net_argv(goldens_dir, caffemodel, tmp_path / "data", tmp_path / "out",
                         "--limit", str(BAD_INDEX + 2)))
    err = capsys.readouterr().err
    assert code == 1 and ids[BAD_INDEX] in err and str(bad) in err
    ckpt = json.loads((tmp_path / "out" / "checkpoint.json").read_text())
    assert ckpt["done"] == ids[:BAD_INDEX]          # everything before it, counted once
    assert not (tmp_path / "out" / "report.json").exists()


def test_skip_bad_records_the_item_and_goes_on(goldens_dir, voc_tree, caffemodel, tmp_path):
    root, ids = voc_tree
    bad = _corrupt_copy(root, ids, tmp_path / "data")
    limit = BAD_INDEX + 2
    code = main(net_argv(goldens_dir, caffemodel, tmp_path / "data", tmp_path / "out",
                         "--limit", str(limit), "--skip-bad", "--overlays", "0"))
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [s["id"] for s in report["skipped"]] == [ids[BAD_INDEX]]
    assert report["skipped"][0]["path"] == str(bad)
    assert report["images"] == limit - 1
    assert ids[BAD_INDEX] in (tmp_path / "out" / "report.md").read_text()
