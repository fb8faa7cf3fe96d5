"""port.convert: round trips with caffemodels written by port.caffe's writer, strict errors,
atomic writes, metadata."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch

from port.caffe import load_caffemodel, load_net, write_caffemodel, write_caffemodel_h5
from port.convert import ConversionError, convert, load_weights
from port.models import weights as fmt

from helpers import OWN_STAGE_NET
from port.models import get_model, list_models


@pytest.fixture
def fcn16s_files(goldens_dir, tmp_path, make_caffemodel):
    """voc-fcn16s at 1/16 width: its prototxt and a seeded random caffemodel in tmp_path."""
    caffemodel = make_caffemodel(tmp_path / "fcn16s.caffemodel", seed=3, net="voc-fcn16s")
    return goldens_dir / "voc-fcn16s" / "net.prototxt", caffemodel


def blobs_by_key(netdef):
    return {f"{layer}.{fmt.BLOB_NAMES[i]}": blob for layer, blobs in netdef.blobs().items()
            for i, blob in enumerate(blobs)}


def test_round_trip_is_exact_and_records_metadata(fcn16s_files, tmp_path):
    from port.caffe import load_caffemodel
    prototxt, caffemodel = fcn16s_files
    out = tmp_path / "out" / "fcn16s.safetensors"
    report = convert(caffemodel, prototxt, out=out)
    state, metadata = load_weights(out)
    expected = blobs_by_key(load_caffemodel(caffemodel))
    assert set(state) == set(expected)
    for key, blob in expected.items():
        assert np.array_equal(state[key].numpy(), blob), key
    assert metadata[fmt.SOURCE_SHA256] == hashlib.sha256(caffemodel.read_bytes()).hexdigest()
    assert metadata[fmt.NET_NAME] == load_net(prototxt).name == report.net_name
    assert metadata[fmt.BUILDER] == report.builder == "fcn16s"
    assert "fcn16s" in metadata[fmt.CANDIDATES].split(",")
    assert json.loads(metadata[fmt.BUILDER_KWARGS]) == {"num_classes": 21, "width_divisor": 16}
    model = get_model("fcn16s", weights=out)  # width and classes from the metadata
    assert torch.equal(model.score_pool4.weight, state["score_pool4.weight"])


def test_without_prototxt_uses_stored_definitions(fcn16s_files, tmp_path):
    _, caffemodel = fcn16s_files
    report = convert(caffemodel, out=tmp_path / "a.safetensors")
    with_prototxt = convert(caffemodel, fcn16s_files[0], out=tmp_path / "b.safetensors")
    assert report.shapes == with_prototxt.shapes and report.builder == "fcn16s"


def test_hdf5_round_trip(fcn16s_files, tmp_path):
    from port.caffe import load_caffemodel
    prototxt, caffemodel = fcn16s_files
    h5 = tmp_path / "fcn16s.caffemodel.h5"
    write_caffemodel_h5(h5, load_caffemodel(caffemodel))
    a, _ = load_weights(convert(caffemodel, out=tmp_path / "a.safetensors").out)
    b, _ = load_weights(convert(h5, prototxt, out=tmp_path / "b.safetensors").out)
    c, _ = load_weights(convert(h5, out=tmp_path / "c.safetensors").out)  # matched by structure
    assert set(a) == set(b) == set(c)
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)


def test_wrong_net_lists_every_mismatch(goldens_dir, fcn16s_files, tmp_path):
    _, caffemodel = fcn16s_files
    out = tmp_path / "x.safetensors"
    with pytest.raises(ConversionError) as info:
        convert(caffemodel, goldens_dir / "voc-fcn8s" / "net.prototxt", out=out)
    # issue 20: the one fit check of port.weights names each tensor; the message is one line
    problems = "\n".join(info.value.problems)
    for key in ("upscore_pool4.weight", "score_pool3.weight", "score_pool3.bias", "upscore8.weight"):
        assert f"{key}: missing" in problems
    assert "upscore16.weight: unexpected" in problems
    assert len(info.value.problems) == 5 and "\n" not in str(info.value)
    assert not out.exists()


def test_shape_mismatch_names_layer_blob_and_shapes(fcn16s_files, tmp_path):
    from port.caffe import load_caffemodel
    prototxt, caffemodel = fcn16s_files
    net = load_caffemodel(caffemodel)
    net.layer("score_fr").blobs[1] = np.zeros(7, np.float32)
    bad = tmp_path / "bad.caffemodel"
    write_caffemodel(bad, net)
    with pytest.raises(ConversionError, match=r"score_fr.bias: shape \(7,\), expected \(21,\)"):
        convert(bad, prototxt, out=tmp_path / "bad.safetensors")


def test_named_builder_must_fit(fcn16s_files, tmp_path):
    _, caffemodel = fcn16s_files
    with pytest.raises(ConversionError, match="does not fit builder 'fcn8s'") as info:
        convert(caffemodel, out=tmp_path / "x.safetensors", builder="fcn8s")
    assert any("upscore16.weight" in p for p in info.value.problems)
    report = convert(caffemodel, out=tmp_path / "y.safetensors", builder="pascalcontext_fcn16s")
    assert report.builder == "pascalcontext_fcn16s"


def test_released_file_name_picks_among_equal_structures(fcn16s_files, tmp_path):
    _, caffemodel = fcn16s_files
    renamed = tmp_path / "pascalcontext-fcn16s-heavy.caffemodel"
    renamed.write_bytes(caffemodel.read_bytes())
    assert convert(renamed, out=tmp_path / "p.safetensors").builder == "pascalcontext_fcn16s"


def test_failed_conversion_leaves_existing_output_untouched(goldens_dir, fcn16s_files, tmp_path):
    _, caffemodel = fcn16s_files
    out = tmp_path / "keep.safetensors"
    out.write_bytes(b"previous")
    with pytest.raises(ConversionError):
        convert(caffemodel, goldens_dir / "voc-fcn8s" / "net.prototxt", out=out)
    assert out.read_bytes() == b"previous"
    convert(caffemodel, out=out)
    assert out.read_bytes() != b"previous"
    assert sorted(os.listdir(tmp_path)) == ["fcn16s.caffemodel", "keep.safetensors"]


def test_unreadable_or_missing_caffemodel(tmp_path):
    with pytest.raises(ConversionError, match="not found"):
        convert(tmp_path / "absent.caffemodel")
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"\xff\xff\xff")
    with pytest.raises(ConversionError, match="cannot read"):
        convert(junk, out=tmp_path / "j.safetensors")
    assert not (tmp_path / "j.safetensors").exists()


def test_convert_and_load_do_not_import_the_compiler(fcn16s_files, tmp_path):
    """Shapes come from Caffe's Reshape arithmetic, not from running layers on meta tensors,
    which would import torch._dynamo (over a second) for a conversion."""
    import subprocess
    import sys
    from pathlib import Path
    _, caffemodel = fcn16s_files
    out = tmp_path / "fcn16s.safetensors"
    code = ("import sys\nimport port.convert\nfrom port.models import get_model\n"
            f"port.convert.convert({str(caffemodel)!r}, out={str(out)!r})\n"
            f"get_model('fcn16s', weights={str(out)!r})\n"
            "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))")
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert out.is_file()


@pytest.mark.parametrize("name", list_models())
def test_released_structure_is_the_one_inferred_from_itself(name):
    """match_builders takes a builder's released structure as fitting without a second build:
    it is the builder's at the arguments inferred from it."""
    from port.convert import _infer_kwargs, _meta_shapes
    released = _meta_shapes(name)
    kwargs = _infer_kwargs(name, released)
    assert kwargs["width_divisor"] == 1 and _meta_shapes(name, **kwargs) == released


def test_matching_casts_no_classifier_for_a_file_that_lacks_its_trunk(monkeypatch):
    """The cast nets are ruled out by their classifier's convolution names (casting is
    matching's costly part), never a net of the file's own structure: a VGG file matches
    without writing a cast net, and each cast net (at another width and class count) still
    matches itself."""
    from port import convert as conv
    from port.models import get_meta
    casts = [name for name in list_models() if get_meta(name).classifier]
    assert casts
    written = []
    real = conv._released_structure
    monkeypatch.setattr(conv, "_released_structure",
                        lambda name, kwargs: written.append(name) or real(name, kwargs))
    shapes = conv._meta_shapes("fcn8s", width_divisor=16, num_classes=5)
    assert "fcn8s" in conv.match_builders(shapes)[1]
    assert written and not set(written) & set(casts)
    for name in casts:
        shapes = conv._meta_shapes(name, width_divisor=8, num_classes=3)
        builder, candidates, kwargs = conv.match_builders(shapes)
        assert name in candidates and kwargs["width_divisor"] == 8 and kwargs["num_classes"] == 3


def test_no_cast_net_has_the_parameter_names_of_another_released_net():
    """What lets matching skip the cast nets once a released net that is not one fits."""
    from port.convert import _cast, _meta_shapes
    names = {name: set(_meta_shapes(name)) for name in list_models()}
    for cast in filter(_cast, names):
        assert all(names[cast] != names[other] for other in names if not _cast(other)), cast


def test_matching_leaves_the_garbage_collector_as_it_was():
    import gc
    from port.convert import _meta_shapes, match_builders
    shapes = _meta_shapes("fcn32s", width_divisor=16, num_classes=5)
    was = gc.isenabled()
    try:
        for enabled in (False, True):
            (gc.enable if enabled else gc.disable)()
            builder, candidates, kwargs = match_builders(shapes)
            assert gc.isenabled() is enabled
            assert "fcn32s" in candidates and kwargs == {"width_divisor": 16, "num_classes": 5}
    finally:
        (gc.enable if was else gc.disable)()


def test_default_output_name_keeps_dots_before_the_caffemodel_suffix():
    """a.b.caffemodel -> a.b.safetensors, not a.safetensors (which a.c.caffemodel would
    overwrite)."""
    from port.convert import _stem
    assert _stem("fcn8s-heavy-pascal.caffemodel") == "fcn8s-heavy-pascal"
    assert _stem("run.v2.caffemodel") == "run.v2"
    assert _stem("run.v2.caffemodel.h5") == "run.v2"


# -- files a user brings that are not a released FCN (issue 13, items 6, 9, 9b) --------------------
def test_legacy_classifier_without_its_prototxt_converts_every_blob_as_caffe_loads_it(goldens_dir, tmp_path):
    """The ILSVRC classifiers store layers and blobs but no input shape: converting needs none
    (every blob has its shape); the report says what was and was not checked."""
    folder = goldens_dir / "vgg16-v1"
    report = convert(folder / "weights.caffemodel", out=tmp_path / "vgg.safetensors")
    expected = json.loads((folder / "params.json").read_text())["layers"]
    state, _ = load_weights(report.out)
    for layer, blobs in expected.items():
        for name, blob in zip(fmt.BLOB_NAMES, blobs):
            tensor = state[f"{layer}.{name}"].numpy()
            assert list(tensor.shape) == blob["shape"], (layer, name)
            assert hashlib.sha256(np.ascontiguousarray(tensor, "<f4").tobytes()).hexdigest() == blob["sha256"]
    assert len(state) == sum(len(b) for b in expected.values())
    notes = " ".join(report.notes)
    assert "declares no input for data" in notes and "--net deploy.prototxt" in notes
    assert "fc8" in notes and report.builder == ""


def test_legacy_classifier_blob_that_does_not_fit_its_layer_is_refused(goldens_dir, tmp_path):
    from port.caffe import load_caffemodel
    from port.caffe.writer import blob_message
    src = load_caffemodel(goldens_dir / "vgg16-v1" / "weights.caffemodel")
    msg = src.msg.copy()
    conv = next(l for l in msg.layer if l.name == "conv2_1")
    conv.blobs[0] = blob_message(np.zeros((5, 4, 3, 3), np.float32))  # num_output is 8
    bad = tmp_path / "bad.caffemodel"
    write_caffemodel(bad, msg)
    with pytest.raises(ConversionError, match=r"conv2_1.*blob 0: shape \(5, 4, 3, 3\) does not fit num_output 8"):
        convert(bad, out=tmp_path / "o.safetensors")


def test_a_file_cut_short_at_a_layer_boundary_says_so(goldens_dir, tmp_path):
    from port.caffe import load_caffemodel
    msg = load_caffemodel(goldens_dir / "voc-fcn8s" / "weights.caffemodel").msg.copy()
    msg.set("layer", list(msg.layer)[:-6])  # up to fuse_pool3: score_pool3c... upscore8 gone
    cut = tmp_path / "cut.caffemodel"
    write_caffemodel(cut, msg)
    report = convert(cut, out=tmp_path / "cut.safetensors")
    assert report.builder == "" and not report.candidates
    assert any("nearest: fcn8s" in n and "upscore8" in n and "cut short" in n for n in report.notes)
    assert "note: its layers match no released FCN net" in report.summary()


def test_a_caffemodel_without_any_blob_is_refused(goldens_dir, tmp_path):
    from port.caffe import load_caffemodel
    msg = load_caffemodel(goldens_dir / "voc-fcn8s" / "weights.caffemodel").msg.copy()
    for layer in msg.layer:
        layer.clear("blobs")
    empty = tmp_path / "definitions.caffemodel"
    write_caffemodel(empty, msg)
    with pytest.raises(ConversionError, match="holds no parameter blobs"):
        convert(empty, out=tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()
    (tmp_path / "zero.caffemodel").write_bytes(b"")
    with pytest.raises(ConversionError, match="no layers"):
        convert(tmp_path / "zero.caffemodel", out=tmp_path / "o.safetensors")


# -- no torch on the caffemodel -> safetensors path (issue 22 item 2) -------------------------
def test_convert_command_imports_no_torch(goldens_dir, tmp_path, make_caffemodel):
    """``python -m port convert`` of a caffemodel written by the project's writer (its stored
    net, --net, --model) reads, checks, matches and writes without importing torch: read from
    sys.modules in a fresh interpreter after the command ran (a behaviour, never a time)."""
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    caffemodel = make_caffemodel(tmp_path / "fcn16s.caffemodel", seed=5, net="voc-fcn16s")
    code = ("import sys\nfrom port.__main__ import main\n"
            "rc = main(sys.argv[1:])\n"
            "print(rc, sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])")
    env = dict(os.environ, PYTHONPATH=str(repo))
    for i, extra in enumerate(([], ["--net", str(goldens_dir / "voc-fcn16s" / "net.prototxt")],
                               ["--model", "fcn16s"])):
        out = tmp_path / f"out{i}.safetensors"
        proc = subprocess.run([sys.executable, "-c", code, "convert", str(caffemodel), "-o", str(out), *extra],
                              capture_output=True, text=True, cwd=repo, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout
        state, metadata = load_weights(out)  # this process has torch: the file is the usual one
        assert metadata[fmt.BUILDER] == "fcn16s" and len(state) == len(blobs_by_key(load_caffemodel(caffemodel)))


@pytest.mark.parametrize("name", list_models())
def test_released_structure_without_torch_is_the_builders(name):
    """The shapes matching reads from a released net's definition (no net built) are its
    builder's module's state dict: names, order and shapes, at the released arguments and at
    another width and class count."""
    from port.convert import _meta_shapes, _structure
    from port.models import get_builder
    for kwargs in ({}, {"width_divisor": 16, "num_classes": 5}):
        built = dict(_structure(get_builder(name), tuple(sorted(kwargs.items()))))
        shapes = _meta_shapes(name, **kwargs)
        assert list(shapes.items()) == list(built.items())


def test_a_builder_registered_by_a_user_is_still_matched(monkeypatch):
    """A builder outside the released ones has no definition to read: it is built on meta."""
    import dataclasses
    from port.convert import _meta_shapes, match_builders
    from port.models import _registry, fcn32s, get_meta
    from port.models._registry import is_released, register
    meta = dataclasses.replace(get_meta("fcn32s"), name="my_fcn32s", caffemodel="")
    monkeypatch.setattr(_registry, "_BUILDERS", dict(_registry._BUILDERS))
    monkeypatch.setattr(_registry, "_METAS", dict(_registry._METAS))
    register(meta)(lambda **kwargs: fcn32s(**kwargs))
    assert not is_released("my_fcn32s") and is_released("fcn32s")
    assert _meta_shapes("my_fcn32s", width_divisor=16) == _meta_shapes("fcn32s", width_divisor=16)
    _, candidates, _ = match_builders(_meta_shapes("fcn32s", width_divisor=16))
    assert {"fcn32s", "my_fcn32s"} <= set(candidates)


@pytest.mark.parametrize("net", ["voc-fcn8s", "voc-fcn8s-atonce", "siftflow-fcn8s", "nyud-fcn32s-color-hha",
                                 "voc-fcn-alexnet", "resnet50-div8", "googlenet-div8", "batchnorm-zoo"])
def test_the_shape_pass_sizes_what_the_engine_builds(goldens_dir, net):
    """port.net.shapes.net_shapes (what convert checks against) names and sizes every
    parameter as CaffeNet does (TEST and TRAIN), for the goldens' FCNs and classifiers
    (BatchNorm, Scale, InnerProduct, Concat, LRN)."""
    from port.load import build_net
    from port.net.shapes import data_input_shapes, net_shapes
    netdef = load_net(goldens_dir / net / "net.prototxt")
    for phase in ("TEST", "TRAIN"):
        graph = build_net(netdef, phase, meta=True)
        sized = net_shapes(netdef, phase, data_input_shapes(netdef.for_phase(phase)))
        assert list(sized.state_shapes().items()) == [(k, tuple(v.shape)) for k, v in graph.state_dict().items()]
        assert sized.blobs == graph.blob_shapes and sized.outputs == graph.output_names


def test_the_registry_needs_no_torch_and_builders_still_load():
    """Listing the models, reading a record and writing a released net import no torch (what
    convert's matching reads); a builder named on port.models loads the builders then."""
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    code = ("import sys\nimport port.models as m\nfrom port.models.released import deploy_netdef\n"
            "names = m.list_models()\ndeploy_netdef(m.get_meta('voc-fcn8s'), width_divisor=16)\n"
            "print(len(names), 'torch' in sys.modules)\n"
            "from port.models import fcn32s\n"
            "print(m.zoo.FCN.__name__, m.get_builder('fcn32s') is fcn32s, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo,
                          env=dict(os.environ, PYTHONPATH=str(repo)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(len(list_models())), "False", "FCN", "True", "True"]


def test_data_layers_are_sized_in_the_net_the_engine_builds(tmp_path):
    """The data layers whose tops port.load and port.convert size are those of the net
    CaffeNet builds, the prototxt's own ``state { stage }`` included (Caffe's
    ``Net(param_file, phase, level, stages)``): a Python data layer the net's own stage leaves
    out is not sized, so its ``label`` is not named as an input the net lacks."""
    from port.caffe.synth import make_caffemodel
    from port.load import build_net
    from port.net.engine import CaffeNet
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(OWN_STAGE_NET)
    netdef = load_net(prototxt)
    assert build_net(netdef, meta=True).input_names == CaffeNet(netdef).input_names == ("data",)
    caffemodel = tmp_path / "w.caffemodel"
    make_caffemodel(netdef, caffemodel, seed=3, input_channels={"data": 3})
    report = convert(caffemodel, prototxt, out=tmp_path / "w.safetensors")
    assert report.shapes == {"conv.weight": (2, 3, 3, 3), "conv.bias": (2,)}
