"""The reproduction harness end to end on data the tests make.

A synthetic PASCAL VOC tree (13 images of different odd sizes, palette labels with void
borders) and a 1/16-width val-style FCN-16s caffemodel with random weights written by the
project's own writer (``port.caffe.synth``), made once per worker by the fixtures of
``conftest.py``. Predictions must equal the argmax of the generic graph run independently
here, the metrics score.py's formulas computed here with numpy, and the loss the mean of the
graph's own ``loss`` blob (and of the cross-entropy computed here in float64).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from port.models.classes import VOC_CLASSES
from reproduce import harness as H
from reproduce.__main__ import main

N_CLASSES = len(VOC_CLASSES)
BAD_INDEX = 6          # the image the corrupt-file tests break


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


@dataclass
class Independent:
    """What the generic graph gives on each image, computed here without the harness."""

    labels: dict[str, np.ndarray]
    preds: dict[str, np.ndarray]
    graph_loss: dict[str, float]    # the net's own SoftmaxWithLoss top `loss`
    numpy_loss: dict[str, float]    # -sum log softmax over non-void pixels, float64 here


def cross_entropy_sum(score: np.ndarray, label: np.ndarray) -> float:
    """Caffe SoftmaxWithLoss with ``ignore_label: 255, normalize: false`` on a batch of one:
    the summed negative log-probability of the true class over non-void pixels."""
    logits = score.astype(np.float64)
    logits -= logits.max(0)
    log_prob = logits - np.log(np.exp(logits).sum(0))
    keep = label < score.shape[0]
    rows, cols = np.nonzero(keep)
    return float(-log_prob[label[keep], rows, cols].sum())


@pytest.fixture(scope="module")
def independent(synthetic_prototxt, voc_tree, caffemodel) -> Independent:
    """The generic graph on each image, preprocessed here by hand as voc_layers.py does, the
    label fed to its `label` input as the data layer does."""
    from port.caffe import load_caffemodel, load_net
    from port.net.engine import CaffeNet
    from port.run.speed import plain_path
    net = load_net(synthetic_prototxt)
    model = CaffeNet(net)
    model.load_blobs(load_caffemodel(caffemodel, net))
    model.eval()
    mean = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)
    voc = voc_tree[0] / "VOCdevkit" / "VOC2012"
    got = Independent({}, {}, {}, {})
    for image_id in voc_tree[1]:
        rgb = np.array(Image.open(voc / "JPEGImages" / f"{image_id}.jpg"), dtype=np.float32)
        data = (rgb[:, :, ::-1] - mean).transpose(2, 0, 1).copy()
        label = np.array(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))
        with torch.inference_mode(), plain_path():  # strict fp32 as the harness runs it
            blobs = model(data=torch.from_numpy(data)[None],
                          label=torch.from_numpy(label.astype(np.float32))[None, None],
                          return_blobs=True)
        score = blobs["score"][0].numpy()
        got.labels[image_id], got.preds[image_id] = label, score.argmax(0)
        got.graph_loss[image_id] = float(blobs["loss"])
        got.numpy_loss[image_id] = cross_entropy_sum(score, label)
    return got


def test_predictions_and_metrics_match_an_independent_evaluation(
        voc_tree, caffemodel, net_run, independent):
    root, ids = voc_tree
    preds = independent.preds
    hist = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    for image_id in ids:
        saved = np.array(Image.open(net_run / "pred" / f"{image_id}.png"))
        np.testing.assert_array_equal(saved, preds[image_id], err_msg=image_id)
        hist += fast_hist(independent.labels[image_id], preds[image_id], N_CLASSES)
    report = json.loads((net_run / "report" / "report.json").read_text())
    part = report["outputs"]["score"]
    np.testing.assert_array_equal(np.array(part["scores"]["confusion"]), hist)
    for metric, value in score_py(hist).items():
        assert part["metrics"][metric] == pytest.approx(value, rel=1e-12, abs=1e-12), metric
    assert report["images"] == len(ids) and report["skipped"] == []
    assert report["precision"] == "strict-fp32"
    assert report["limit"] is None and report["split_size"] == report["images_evaluated"] == len(ids)
    # the whole list, but a list of the tests' own with no published numbers: nothing reproduced
    assert not report["partial"] and report["like_for_like"] is None and not report["reproduction"]
    assert report["split_check"]["images"] == len(ids)
    # issue 19.2: and it says what it lacks, the published numbers and the released weights
    assert report["not_a_reproduction"][-1] == ("no published numbers for net:fcn on "
                                                "synthetic: nothing to compare with")
    assert report["weights_check"]["matches"] is None
    assert any(r.startswith("NOT THE RELEASED WEIGHTS") for r in report["not_a_reproduction"])
    assert report["weights_sha256"] == __import__("hashlib").sha256(caffemodel.read_bytes()).hexdigest()


def test_loss_is_the_mean_of_the_nets_own_loss_blob(voc_tree, net_run, independent):
    ids = voc_tree[1]
    report = json.loads((net_run / "report" / "report.json").read_text())
    part = report["outputs"]["score"]
    expected = sum(independent.graph_loss[i] for i in ids) / len(ids)   # score.py: loss / N
    assert part["loss"] == pytest.approx(expected, rel=1e-9)
    assert part["scores"]["loss"] == part["loss"]
    by_hand = sum(independent.numpy_loss[i] for i in ids) / len(ids)
    assert part["loss"] == pytest.approx(by_hand, rel=1e-5)  # fp32 port vs float64 here
    assert part["loss_layer"]["layer"] == "loss"
    row = [r for r in report["comparison"] if r["metric"] == "loss"]
    assert len(row) == 1 and row[0]["ours"] == part["loss"] and row[0]["published"] is None
    md = (net_run / "report" / "report.md").read_text()
    assert f"{part['loss']:.6f}" in md and f"{part['loss']:.4f}" in md  # the line and the table


def test_report_files_are_written(net_run):
    folder = net_run / "report"
    report = json.loads((folder / "report.json").read_text())
    assert (folder / "report.md").read_text().startswith("# net:fcn on voc synthetic")
    assert (folder / "per_class_iu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(report["files"]["overlays"]) == 2
    for rel in report["files"]["overlays"]:
        image = np.array(Image.open(folder / rel))
        assert image.ndim == 3 and image.shape[1] % 3 == 0  # image | truth | prediction
    assert not list(folder.glob(".*.tmp"))  # nothing half-written left behind


def test_named_model_converts_once_and_agrees_with_the_generic_graph(
        voc_tree, synthetic_split, caffemodel, net_run, independent, tmp_path, capsys):
    out, cache = tmp_path / "named", tmp_path / "cache"
    # the synthetic ids in a list named seg11valid: the split fcn16s has published numbers for
    own_list = tmp_path / "seg11valid.txt"
    own_list.write_text(synthetic_split.read_text())
    argv = ["fcn16s", "--weights", str(caffemodel), "--data", str(voc_tree[0]), "--out", str(out),
            "--split", str(own_list),
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
    assert any(r["published"] is not None for r in named["comparison"])  # fcn16s has targets
    # --limit 4 of the 13: compared with the published numbers, but marked as no reproduction
    split = len(voc_tree[1])
    assert (named["limit"], named["split_size"], named["images_evaluated"]) == (4, split, 4)
    assert named["partial"] and not named["reproduction"] and named["all_within_tolerance"] is None
    assert named["like_for_like"] is False   # 13 ids named seg11valid: not the papers' 736
    console = capsys.readouterr().out
    assert f"4 of {split} images" in console and "PARTIAL" in console
    assert "not a reproduction" in (out / "report.md").read_text()
    # the loss settings of the model's metadata are those of the net's own loss layer
    expected = sum(independent.graph_loss[i] for i in voc_tree[1][:4]) / 4
    assert named["outputs"]["score"]["loss"] == pytest.approx(expected, rel=1e-9)


def test_named_model_in_any_spelling_is_the_registrys_model_throughout(
        voc_tree, synthetic_split, caffemodel, tmp_path):
    """A model named as the registry accepts it (any case, dashes) is the registry's name
    wherever the run looks it up: its published numbers are compared and its weights checked
    as that model's (the command line once re-spelled the name by hand, dashes to underscores
    only: ``FCN16s`` was converted for a builder ``FCN16s`` and the run refused its own file)."""
    own_list = tmp_path / "seg11valid.txt"
    own_list.write_text(synthetic_split.read_text())
    out = tmp_path / "out"
    assert main(["FCN16s", "--weights", str(caffemodel), "--data", str(voc_tree[0]), "--out",
                 str(out), "--split", str(own_list), "--device", "cpu", "--quiet", "--cache",
                 str(tmp_path / "cache"), "--limit", "1", "--overlays", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "fcn16s"
    assert any(r["published"] is not None for r in report["comparison"])
    assert "released caffemodel of fcn16s " in report["weights_check"]["description"]


def test_cpu_fast_named_run_scores_like_the_generic_graph(voc_tree, synthetic_split, caffemodel,
                                                         net_run, tmp_path):
    """--precision cpu-fast (prepacked oneDNN, fused ReLU, constant canvas: fp32 arithmetic,
    other summation order) gives the generic graph's predictions on the synthetic split."""
    out = tmp_path / "fast"
    argv = ["fcn16s", "--weights", str(caffemodel), "--data", str(voc_tree[0]), "--out", str(out),
            "--split", str(synthetic_split),
            "--device", "cpu", "--quiet", "--cache", str(tmp_path / "cache"), "--limit", "4",
            "--overlays", "0", "--precision", "cpu-fast"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    preds = {p.stem: np.array(Image.open(p)) for p in (net_run / "pred").glob("*.png")}
    voc = voc_tree[0] / "VOCdevkit" / "VOC2012"
    hist = sum(fast_hist(np.array(Image.open(voc / "SegmentationClass" / f"{i}.png")), preds[i],
                         N_CLASSES) for i in voc_tree[1][:4])
    np.testing.assert_array_equal(np.array(report["outputs"]["score"]["scores"]["confusion"]), hist)
    assert "cpu-fast" in json.dumps(report["precision"])


def test_a_net_without_a_loss_layer_reports_no_loss(goldens_dir, voc_tree, synthetic_split,
                                                    make_caffemodel, tmp_path):
    deploy = "voc-fcn8s"   # the goldens' deploy net: no label input, no SoftmaxWithLoss
    weights = make_caffemodel(tmp_path / "deploy.caffemodel", net=deploy)
    out = tmp_path / "out"
    assert main(["--net", str(goldens_dir / deploy / "net.prototxt"), "--weights", str(weights),
                 "--data", str(voc_tree[0]), "--out", str(out), "--device", "cpu", "--quiet",
                 "--split", str(synthetic_split), "--limit", "1", "--overlays", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    part = report["outputs"]["score"]
    assert part["loss"] is None and part["loss_layer"] is None and report["images"] == 1
    assert not any(r["metric"] == "loss" for r in report["comparison"])


def test_loss_settings_are_read_from_each_loss_layer(goldens_dir):
    """SIFT Flow has two heads and two losses (`loss` on score_sem, `loss_geo` on score_geo):
    the settings read for each agree with the generic graph's layer and with the metadata."""
    from port.caffe import load_net
    from port.net.engine import CaffeNet
    from port.models import get_meta
    net = load_net(goldens_dir / "siftflow-fcn8s" / "net.prototxt")
    specs = H.net_loss_specs(net, ["score_sem", "score_geo"])
    layers = CaffeNet(net).caffe_layers()
    assert {o: s.layer for o, s in specs.items()} == {"score_sem": "loss", "score_geo": "loss_geo"}
    meta = get_meta("siftflow_fcn8s")
    for output, spec in specs.items():
        layer = layers[spec.layer]
        assert (spec.ignore_label, spec.normalization, spec.axis) == (
            layer.ignore_label, layer.normalization, layer.axis)
        assert H.meta_loss_spec(meta, output) == spec
    assert H.net_loss_specs(net, ["score"]) == {}


def test_the_command_line_precision_names_are_port_speeds_modes():
    """--fast and --precision give the very mode objects benchmarks/gpu_check.py measures."""
    from port.run import speed
    from reproduce.__main__ import _config, parser

    def mode(*argv: str):
        args = parser().parse_args(["fcn8s", *argv])
        return _config(args, torch.device("cpu"), Path("out")).precision
    assert mode() is speed.STRICT and mode("--fast") is speed.FAST_TF32_SPLIT5
    for name in ("strict-fp32", "cpu-fast", "strict-fp32-canvas", "fast-tf32", "fast-bf16",
                 "fast-tf32-conv5-split", "fast-tf32-conv5-fp32", "fast-fp16"):
        assert mode("--precision", name) is speed.MODES[name]
    assert all(type(m) is speed.SpeedMode for m in H.PRECISION_MODES.values())
    with pytest.raises(SystemExit):
        mode("--fast", "--precision", "strict-fp32")


def _flag_spec(seen: list[dict], config: H.EvalConfig) -> H.EvalSpec:
    """Two tiny items through a real builder net prepared by H.prepare_model (a speed.Runner);
    a hook on its first layer records the backend state and input layout it runs under."""
    from port.models import get_model
    from reproduce.checkpoint import RunIdentity

    model = get_model("fcn32s", width_divisor=16, num_classes=2)

    def record(module, args):
        seen.append({"tf32": (torch.backends.cudnn.allow_tf32,
                              torch.backends.cuda.matmul.allow_tf32),
                     "benchmark": torch.backends.cudnn.benchmark,
                     "autocast": torch.is_autocast_enabled("cpu"),
                     "nhwc": args[0].is_contiguous(memory_format=torch.channels_last)})
    runner = H.prepare_model(model, config)
    runner.model.conv1_1.register_forward_pre_hook(record)
    item = lambda ds, i: (i, {"data": np.zeros((3, 6, 8), np.float32)},  # noqa: E731
                          np.zeros((6, 8), np.uint8))
    identity = RunIdentity("m", "voc", "val", "0" * 64, "p", "x", (("score", 2),))
    return H.EvalSpec(H.ModelPredictor(runner, ("data",), ("score",)), None, ["a", "b"],
                      (H.Task("score", "label", ("x", "y")),), identity, item)


@pytest.mark.parametrize("name", ["strict-fp32", "fast-tf32", "fast-bf16"])
def test_evaluation_runs_under_the_modes_settings_and_restores_the_flags(name):
    """The predictor's speed.Runner runs the net under the mode's flags, autocast and input
    layout; the caller's flags are back after the run."""
    from port.run import speed
    mode, other = H.PRECISION_MODES[name], (speed.FAST_TF32 if name == "strict-fp32" else speed.STRICT)
    seen: list[dict] = []
    config = H.EvalConfig(precision=mode, progress=False)
    with speed.backend_flags(other):
        result = H.evaluate(_flag_spec(seen, config), config)
        after = (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    assert result.images == 2 and len(seen) == 2
    assert all(s == {"tf32": (mode.tf32, mode.tf32), "benchmark": mode.cudnn_benchmark,
                     "autocast": mode.autocast is not None, "nhwc": mode.channels_last}
               for s in seen), seen
    assert after == (other.tf32, other.cudnn_benchmark)   # the caller's flags are back


@pytest.mark.parametrize("kind", ["absent", "empty"])
@pytest.mark.parametrize("how", ["named", "net"])
def test_a_missing_data_folder_is_named_before_any_weights_are_touched(
        synthetic_prototxt, tmp_path, monkeypatch, capsys, kind, how):
    from port.hub import download

    def no_fetch(*args, **kwargs):
        raise AssertionError(f"fetched {args} before checking --data")
    monkeypatch.setattr(download, "fetch", no_fetch)
    data = tmp_path / "nonexistent"
    if kind == "empty":
        data.mkdir()
    what = (["fcn8s"] if how == "named" else
            ["--net", str(synthetic_prototxt), "--weights", str(tmp_path / "absent.caffemodel")])
    code = main([*what, "--data", str(data), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--quiet", "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 1 and str(data) in err and "absent.caffemodel" not in err, err


def _corrupt_copy(root: Path, ids: list[str], dest: Path) -> Path:
    import shutil
    shutil.copytree(root, dest)
    bad = dest / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{ids[BAD_INDEX]}.jpg"
    bad.write_bytes(b"not a jpeg at all")
    return bad


def test_a_corrupt_image_stops_the_run_naming_it(net_argv, voc_tree, caffemodel, tmp_path,
                                                 capsys):
    root, ids = voc_tree
    bad = _corrupt_copy(root, ids, tmp_path / "data")
    code = main(net_argv(caffemodel, tmp_path / "data", tmp_path / "out",
                         "--limit", str(BAD_INDEX + 2)))
    err = capsys.readouterr().err
    assert code == 1 and ids[BAD_INDEX] in err and str(bad) in err
    ckpt = json.loads((tmp_path / "out" / "checkpoint.json").read_text())
    assert ckpt["done"] == ids[:BAD_INDEX]          # everything before it, counted once
    assert not (tmp_path / "out" / "report.json").exists()


def test_skip_bad_records_the_item_and_goes_on(net_argv, voc_tree, caffemodel, independent,
                                               tmp_path):
    root, ids = voc_tree
    bad = _corrupt_copy(root, ids, tmp_path / "data")
    limit = BAD_INDEX + 2
    code = main(net_argv(caffemodel, tmp_path / "data", tmp_path / "out",
                         "--limit", str(limit), "--skip-bad", "--overlays", "0"))
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [s["id"] for s in report["skipped"]] == [ids[BAD_INDEX]]
    assert report["skipped"][0]["path"] == str(bad)
    assert report["images"] == limit - 1
    assert ids[BAD_INDEX] in (tmp_path / "out" / "report.md").read_text()
    scored = [i for i in ids[:limit] if i != ids[BAD_INDEX]]   # the skipped item has no loss
    expected = sum(independent.graph_loss[i] for i in scored) / len(scored)
    assert report["outputs"]["score"]["loss"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_cuda_is_named_before_any_work(voc_tree, tmp_path, monkeypatch, capsys):
    """``--device cuda`` where none is visible: the shared ``port.run.devices`` check, one line,
    exit 2, nothing fetched."""
    from port.hub import download

    def no_fetch(*args, **kwargs):
        raise AssertionError(f"fetched {args} before checking --device")
    monkeypatch.setattr(download, "fetch", no_fetch)
    code = main(["fcn8s", "--data", str(voc_tree[0]), "--out", str(tmp_path / "out"), "--device", "cuda",
                 "--quiet", "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "--device cuda: device 'cuda:0'" in err and "available: cpu" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model", ["nyud_fcn32s_hha", "siftflow_fcn32s"])
def test_named_nets_beyond_voc_are_evaluated_by_their_dataset_class(model, tmp_path):
    """One evaluation setup (``reproduce.evaluation``): the label maps, classes and reader
    options come from the dataset class. NYUD's HHA net reads the HHA image into its blob
    ``data`` (the reader was given 'data' as a modality before), SIFT Flow scores both heads."""
    from train_trees import TRAIN_SIZES, make_nyud, make_siftflow, random_init
    from port.models import get_meta
    (make_nyud if model.startswith("nyud") else make_siftflow)(tmp_path / "data", TRAIN_SIZES[:2])
    weights = random_init(model, tmp_path / "w.safetensors")
    out = tmp_path / "out"
    assert main([model, "--data", str(tmp_path / "data"), "--weights", str(weights), "--out",
                 str(out), "--device", "cpu", "--quiet", "--workers", "0", "--overlays", "0",
                 "--split", "test"]) == 0
    report = json.loads((out / "report.json").read_text())
    meta = get_meta(model)
    assert list(report["outputs"]) == list(meta.outputs) and report["images"] == 2
    for output, classes in zip(meta.outputs, meta.classes):
        assert report["outputs"][output]["classes"] == list(classes)


def test_a_users_net_gets_the_reader_options_its_input_blobs_name():
    """``--net``: what the reader needs is asked of the dataset class from the net's input
    blobs (``evaluation.net_reader_options``), as for a released net from its record: a
    two-stream NYUD prototxt reads both modalities, as the released fusion net does."""
    from port.models import get_meta
    from reproduce import evaluation as E
    assert E.net_reader_options("nyud", ["color", "hha", "label"]) == \
        E.model_reader_options(get_meta("nyud_fcn32s_color_hha"), "nyud")
    assert E.net_reader_options("voc", ["data", "label"]) == {}


def test_given_weights_are_the_released_ones_by_the_registrys_digest(caffemodel, tmp_path,
                                                                       monkeypatch):
    """The weights half of the verdict for a file the user gives: a caffemodel, or its
    converted safetensors, is the released one when the caffemodel's SHA-256 is the registry's
    (here recorded as by a verified download); any other file is not."""
    from port.hub import registry
    from reproduce import resolve
    monkeypatch.setenv("FCN_PORT_CACHE", str(tmp_path / "cache"))
    first = resolve.resolve_weights("fcn16s", caffemodel, tmp_path / "converted")
    assert not first.released
    registry.HashStore().record(registry.caffemodel_for("fcn16s").name, sha256=first.sha256)
    again = resolve.resolve_weights("fcn16s", caffemodel, tmp_path / "converted")
    assert again.released and again.path == first.path
    assert resolve.resolve_weights("fcn16s", first.path).released   # its converted file
