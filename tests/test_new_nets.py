"""The nets fcnize casts from the shipped classifiers (issue 21 item 3): FCN-GoogLeNet (the
paper's Table 1) and FCN-ResNet-50/101/152 at 32s/16s/8s. Builders at reduced width, full-size
scores at odd sizes, parameter names, a caffemodel the project writes round-trips through
convert/forward/export, ``port fcnize`` -> ``port solve`` on a ResNet-50 FCN, the recipes'
provenance and the registry's classifier records against the publishers' files."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import torch

from port.__main__ import main
from port.caffe import load_caffemodel, load_net
from port.caffe.text_writer import format_text
from port.models import get_meta, get_model, list_models, net_spec, train_net
from port.models import classifiers as C
from port.models import fcnize
from port.models.cast_meta import CAST_MODELS
from port.net.engine import CaffeNet
from port.weights import blob_names, load_weights, write_net
from port.hub import registry
from reproduce.training.recipes import CAST_RECIPES, RECIPES, STAGED_CHAINS

#: The shipped file of each classifier -> its copy in ../shared/classifiers.
SHARED = {"bvlc_googlenet": "googlenet/deploy.prototxt",
          "resnet50": "resnet-50/ResNet-50-deploy.prototxt",
          "resnet101": "resnet-101/ResNet-101-deploy.prototxt",
          "resnet152": "resnet-152/ResNet-152-deploy.prototxt"}
LEARNED = ("Convolution", "Deconvolution", "BatchNorm", "Scale")


def _randomized(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (BatchNorm's variance sum and scale factor positive), in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.state_dict().items():
            values = torch.rand(p.shape, generator=g) + 0.5
            if not name.endswith(("variance", "scale_factor")):
                values = torch.randn(p.shape, generator=g) * 0.1
            p.copy_(values)
    return net


def test_the_shipped_classifiers_are_the_publishers_files(shared_dir):
    for name, classifier in C.CLASSIFIERS.items():
        shipped = (C.DATA_DIR / classifier.path).read_bytes()
        assert shipped == (shared_dir / "classifiers" / SHARED[name]).read_bytes()
        assert hashlib.sha1(shipped).hexdigest() == classifier.sha1
    assert (C.DATA_DIR / "resnet" / "LICENSE").read_text().startswith("The MIT License")


@pytest.mark.parametrize("name, stride", [("bvlc_googlenet", 32), ("resnet50", 32), ("resnet50", 8)])
def test_the_recorded_pad_is_the_padding_rules(name, stride):
    """The pad each build uses is what fcnize's rule derives (ResNet-101/152 share ResNet-50's
    geometry stage by stage: the same stem, more blocks of stride-1 3 x 3 pad-1 convolutions)."""
    assert fcnize.cast(C.classifier_net(name), 21, stride).pad == C.CLASSIFIERS[name].pad


def test_the_package_data_ships_them(package_data_patterns):
    patterns = package_data_patterns("port.models")
    for classifier in C.CLASSIFIERS.values():
        assert any((C.DATA_DIR / classifier.path).match(f"*/{p}") for p in patterns), classifier.path


def test_names_and_metadata():
    assert set(CAST_MODELS) <= set(list_models()) and len(CAST_MODELS) == 10
    for spelled, name in (("fcn-resnet50-8s", "fcn_resnet50_8s"), ("FCN-GoogLeNet", "fcn_googlenet"),
                          ("voc-fcn-resnet152-16s", "fcn_resnet152_16s")):
        assert get_meta(spelled).name == name
    googlenet = get_meta("fcn_googlenet")
    assert googlenet.classifier == "bvlc_googlenet" and "Table 1" in googlenet.provenance
    assert googlenet.loss_normalization == "VALID" and googlenet.caffemodel_url is None
    for name in CAST_MODELS:
        meta = get_meta(name)
        assert meta.dataset == "voc" and meta.num_classes == (21,) and meta.classifier in C.CLASSIFIERS
        if name.startswith("fcn_resnet"):
            assert "no published number" in meta.provenance and meta.loss_normalization == "BATCH_SIZE"


@pytest.mark.parametrize("name, divisor, size", [
    ("fcn_googlenet", 8, (41, 29)), ("fcn_resnet50_32s", 16, (37, 53)),
    ("fcn_resnet50_16s", 16, (1, 70)), ("fcn_resnet50_8s", 16, (45, 31))])
def test_reduced_builders_score_every_pixel_at_odd_sizes(name, divisor, size):
    model = get_model(name, width_divisor=divisor, num_classes=5)
    with torch.no_grad():
        score = model(torch.randn(1, 3, *size))
    assert tuple(score.shape) == (1, 5, *size) and torch.isfinite(score).all()


def test_state_dict_keys_are_the_classifiers_layers_and_upstreams_head():
    model = get_model("fcn_resnet50_8s", width_divisor=16)
    classifier = C.classifier_net("resnet50", 16)
    trunk = {f"{l.name}.{b}" for l in classifier.layers if l.type in LEARNED
             for b in blob_names(l.type)[:len(l.param) or None] if not (l.type == "Convolution" and
                                                                       b == "bias" and not l.convolution_param.bias_term)}
    keys = list(model.state_dict())
    head = {k for k in keys if k.split(".")[0] in ("score_fr", "upscore2", "score_pool4", "upscore_pool4",
                                                   "score_pool3", "upscore8")}
    assert set(keys) == trunk | head
    assert {k.split(".")[0] for k in head} == {"score_fr", "upscore2", "score_pool4", "upscore_pool4",
                                               "score_pool3", "upscore8"}
    assert {"bn_conv1.mean", "bn_conv1.variance", "bn_conv1.scale_factor", "conv1.bias"} <= set(keys)
    assert keys == list(get_model("fcn_resnet50_8s", width_divisor=16).state_dict())  # stable order


def test_widths_divide_as_the_goldens_reduced_nets():
    """Rounded down, at least 1 (synth.divide_width's rule): GoogLeNet's 24-wide layers at 16."""
    net = C.classifier_net("bvlc_googlenet", 16)
    assert net.layer("inception_4b/5x5_reduce").convolution_param.num_output == 1
    assert C.classifier_net("resnet50", 8).layer("res5c_branch2c").convolution_param.num_output == 256
    with pytest.raises(ValueError, match="width_divisor"):
        C.classifier_net("resnet50", 0)


def test_net_spec_and_train_net_forms():
    train = net_spec("fcn_resnet101_8s", "train", width_divisor=16).netdef()
    assert train.layers[0].type == "Python" and train.layer("loss").loss_param.normalize is False
    # BatchNorm frozen at the classifier's statistics in the train net (the recipe's rule)
    assert all(l.batch_norm_param.use_global_stats for l in train.layers if l.type == "BatchNorm")
    assert net_spec("fcn_googlenet", "train", width_divisor=8).netdef().layer("loss").loss_param.normalize
    deploy = net_spec("fcn_resnet152_32s", "deploy", width_divisor=16).netdef()
    assert deploy.layers[0].type == "Input" and deploy.layers[-1].name == "score"
    net = train_net("fcn_resnet50_32s", width_divisor=16, num_classes=3, size=(35, 29))
    out = net(data=torch.randn(1, 3, 35, 29), label=torch.randint(0, 3, (1, 1, 35, 29)).float())
    assert torch.isfinite(out["loss"])


def test_a_caffemodel_the_project_writes_round_trips(tmp_path, capsys):
    """deploy net + caffemodel (the project's writer) -> convert -> the builder -> forward ->
    export: every blob (BatchNorm's three too) comes back, the command's scores are the
    builder's; ``reproduce <net> --weights`` evaluates it (no published number to compare)."""
    name = "fcn_resnet50_8s"
    netdef = net_spec(name, "deploy", width_divisor=16, num_classes=21).netdef()
    prototxt, caffemodel = tmp_path / "deploy.prototxt", tmp_path / "w.caffemodel"
    prototxt.write_text(format_text(net_spec(name, "deploy", width_divisor=16, num_classes=21).to_proto()))
    engine = _randomized(CaffeNet(netdef, "TEST"), 3)
    write_net(engine, caffemodel)
    weights = tmp_path / "w.safetensors"
    assert main(["convert", str(caffemodel), "--net", str(prototxt), "-o", str(weights), "--model", name]) == 0
    model = get_model("fcn-resnet50-8s", weights=weights)
    state, _ = load_weights(weights)
    for key, value in engine.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
        assert np.array_equal(np.asarray(state[key]).reshape(value.shape), value.numpy()), key
    data = np.random.default_rng(0).normal(0, 50, (1, 3, 39, 27)).astype(np.float32)
    np.savez(tmp_path / "in.npz", data=data)
    assert main(["forward", str(weights), "--model", name, "--inputs", str(tmp_path / "in.npz"),
                 "--out", str(tmp_path / "out.npz")]) == 0
    score = np.load(tmp_path / "out.npz")["score"]
    with torch.no_grad():
        want = model(torch.from_numpy(data)).numpy()
    assert score.shape == (1, 21, 39, 27)
    assert np.abs(score - want).max() <= 1e-5 * np.abs(want).max()
    back = tmp_path / "back.caffemodel"
    write_net(model, back)
    blobs = {l.name: l.blobs for l in load_caffemodel(back).layers}
    for l in load_caffemodel(caffemodel).layers:
        for a, b in zip(l.blobs, blobs[l.name]):
            assert np.array_equal(np.asarray(a.data), np.asarray(b.data)), l.name
    from train_trees import make_sbd_voc
    from reproduce.__main__ import main as reproduce_main
    root = make_sbd_voc(tmp_path / "data", n_train=1, n_val=2)
    capsys.readouterr()
    assert reproduce_main(["fcn-resnet50-8s", "--weights", str(weights), "--data", str(root),
                           "--out", str(tmp_path / "report"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "THE PROJECT'S OWN RECIPE: fcn_resnet50_8s" in out  # issue 21 item 3: one line for a cast net
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert 0 <= report["outputs"]["score"]["metrics"]["mean_iu"] <= 100


def test_fcnize_then_solve_a_resnet50_fcn(tmp_path, capsys):
    """``port fcnize`` of ResNet-50 (tiny width, its classifier's caffemodel written by the
    project) writes a train net, solver and init that ``port solve`` runs; BatchNorm's blobs
    stay the classifier's (frozen), the score layers learn."""
    classifier = tmp_path / "resnet50.prototxt"
    classifier.write_text(format_text(C.classifier_net("resnet50", 16).msg))
    weights = tmp_path / "resnet50.caffemodel"
    write_net(_randomized(CaffeNet(C.classifier_net("resnet50", 16), "TEST"), 5), weights)
    out = tmp_path / "fcn"
    assert main(["fcnize", str(classifier), "--classes", "3", "--stride", "16", "--weights", str(weights),
                 "--out", str(out)]) == 0
    rng = np.random.default_rng(1)
    seq = {}
    for k in range(2):
        seq[f"data{k}"] = rng.normal(0, 50, (1, 3, 33, 41)).astype(np.float32)
        seq[f"label{k}"] = rng.integers(0, 3, (1, 1, 33, 41)).astype(np.float32)
    np.savez(tmp_path / "seq.npz", **seq)
    # a rate that moves the summed loss's weights visibly in two iterations
    solver = (out / "solver.prototxt").read_text()
    (out / "solver.prototxt").write_text(re.sub(r"base_lr: \S+", "base_lr: 1e-6", solver))
    assert main(["solve", str(out / "solver.prototxt"), "--weights", str(out / "init.caffemodel"),
                 "--inputs", str(tmp_path / "seq.npz"), "--iters", "2", "--out", str(tmp_path / "run")]) == 0
    losses = json.loads((tmp_path / "run" / "losses.json").read_text())
    assert len(losses["passes"]) == 2 and np.isfinite(np.asarray(losses["passes"], dtype=float)).all()
    params = np.load(tmp_path / "run" / "params-iter2.npz")  # "<layer>.<blob index>"
    init = {l.name: l.blobs for l in load_caffemodel(out / "init.caffemodel").layers}
    bn = [k for k in params.files if k.split(".")[0].startswith("bn")]
    assert len(bn) == 3 * sum(l.type == "BatchNorm" for l in load_net(out / "train.prototxt").layers)
    for key in bn:
        layer, index = key.rsplit(".", 1)
        assert np.array_equal(params[key].ravel(), np.asarray(init[layer][int(index)].data).ravel()), key
    assert not np.any(np.asarray(init["score_fr"][0].data)) and np.abs(params["score_fr.0"]).max() > 0


def test_recipes_say_where_each_setting_comes_from():
    googlenet = RECIPES["fcn_googlenet"]
    s = googlenet.solver
    assert (s.base_lr, s.momentum, s.iter_size, s.lr_policy) == (5e-5, 0.9, 20, "fixed")
    assert "4.1" in googlenet.source and "choices" in googlenet.source
    assert googlenet.init.sources == ("classifier/bvlc-googlenet",)
    assert (googlenet.train_dataset, googlenet.train_split) == ("voc", "train")
    for depth in (50, 101, 152):
        first = RECIPES[f"fcn_resnet{depth}_32s"]
        assert first.init.kind == "classifier" and first.init.sources == (f"classifier/resnet-{depth}",)
        assert STAGED_CHAINS[f"fcn_resnet{depth}_8s"] == tuple(f"fcn_resnet{depth}_{s}s" for s in (32, 16, 8))
        for stride in (32, 16, 8):
            r = RECIPES[f"fcn_resnet{depth}_{stride}s"]
            assert "own recipe" in r.source and "no published number" in r.source
            assert r.solver.momentum == 0.99 and r.solver.iter_size == 1
            # upstream's heavy VOC rate of the same stride (voc-fcn<stride>s)
            assert r.solver == RECIPES[f"fcn{stride}s"].solver and r.upstream_dir == f"voc-fcn{stride}s"
    assert set(CAST_RECIPES) == set(CAST_MODELS)


def _sha1s_in(text: str) -> set[str]:
    return set(re.findall(r"\b[0-9a-f]{40}\b", text))


def test_registry_records_the_publishers_digests(shared_dir):
    facts = (shared_dir / "reference" / "classifier-facts.md").read_text()
    for name, folder in (("bvlc-googlenet", "googlenet"), ("bvlc-alexnet", "alexnet"),
                         ("bvlc-reference-caffenet", "caffenet")):
        artifact = registry.get(f"classifier/{name}")
        readme = (shared_dir / "classifiers" / folder / "readme.md").read_text()
        assert artifact.known[0].sha1 in _sha1s_in(readme)
        assert artifact.urls[0] in readme and "readme.md" in artifact.known[0].source
    for depth in (50, 101, 152):
        artifact = registry.get(f"classifier/resnet-{depth}")
        row = next(line for line in facts.splitlines() if line.startswith(f"| ResNet-{depth}-model.caffemodel"))
        assert artifact.known[0].sha1 in _sha1s_in(row) and artifact.filename in row
        assert "mxnet" in artifact.known[0].source and artifact.urls[0].endswith(artifact.filename)
    for name in CAST_MODELS:
        with pytest.raises(registry.NoReleasedWeightsError, match=name):
            registry.caffemodel_for(name)


def test_tables_keep_table_1_and_mark_the_resnets_as_unpublished():
    from port.models import tables
    rows = {r.model: r for r in tables.published("fcn_googlenet")}
    assert rows["fcn_googlenet"].source.table == "Table 1" and rows["fcn_googlenet"].weights == "original"
    assert {r.model for r in tables.PUBLISHED if r.source is tables.CVPR_T1} == {"fcn_alexnet", "fcn32s", "fcn_googlenet"}
    for name in CAST_MODELS:
        if name.startswith("fcn_resnet"):
            assert tables.published(name) == [] and "no published number" in tables.OWN_RECIPE[name]


def test_reproduce_train_runs_a_cast_net_from_its_classifier(tmp_path, capsys):
    """``reproduce train fcn-resnet50-32s --init CLASSIFIER.caffemodel`` (two iterations, 1/16
    width): the classifier's blobs transplant by name (BatchNorm's three too), and the final
    weights load in the builder."""
    from train_trees import make_sbd_voc
    from reproduce.__main__ import main as reproduce_main
    root = make_sbd_voc(tmp_path / "data", n_train=2, n_val=1)
    classifier = _randomized(CaffeNet(C.classifier_net("resnet50", 16), "TEST"), 7)
    write_net(classifier, tmp_path / "resnet50.caffemodel")
    out = tmp_path / "run"
    assert reproduce_main(["train", "fcn-resnet50-32s", "--data", str(root), "--out", str(out),
                           "--init", str(tmp_path / "resnet50.caffemodel"), "--width-divisor", "16",
                           "--iters", "2", "--test-interval", "2", "--snapshot", "2", "--quiet",
                           "--device", "cpu"]) == 0
    model = get_model("fcn_resnet50_32s", weights=out / "final.safetensors")
    state = model.state_dict()
    for key in ("bn_conv1.mean", "bn_conv1.variance", "bn_conv1.scale_factor", "bn5c_branch2c.mean"):
        assert torch.equal(state[key], classifier.state_dict()[key]), key  # frozen BatchNorm
