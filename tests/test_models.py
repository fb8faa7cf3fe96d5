"""The builders: structure against the upstream prototxts (full width, on the ``meta``
device: nothing full-width is allocated), registry, metadata, weights errors. (Field-for-field
equality of every net written out with the upstream files: tests/test_nets.py.)"""
from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from port.models import preprocess
from port.caffe import load_net
from port.caffe.synth import param_shapes
from port.models import (
    DuplicateModelError, InputError, UnknownModelError, WeightsError, get_meta, get_model,
    list_models, register,
)
from port.models import weights as fmt

#: Registered name -> upstream prototxt (the TEST/val net of each released model).
UPSTREAM = {
    "fcn32s": "voc-fcn32s/val.prototxt", "fcn16s": "voc-fcn16s/val.prototxt",
    "fcn8s": "voc-fcn8s/val.prototxt", "fcn8s_atonce": "voc-fcn8s-atonce/val.prototxt",
    "fcn_alexnet": "voc-fcn-alexnet/val.prototxt",
    "siftflow_fcn32s": "siftflow-fcn32s/test.prototxt", "siftflow_fcn16s": "siftflow-fcn16s/test.prototxt",
    "siftflow_fcn8s": "siftflow-fcn8s/test.prototxt",
    "nyud_fcn32s_color": "nyud-fcn32s-color/test.prototxt", "nyud_fcn32s_hha": "nyud-fcn32s-hha/test.prototxt",
    "nyud_fcn32s_color_d": "nyud-fcn32s-color-d/test.prototxt",
    "nyud_fcn32s_color_hha": "nyud-fcn32s-color-hha/test.prototxt",
    "pascalcontext_fcn32s": "pascalcontext-fcn32s/val.prototxt",
    "pascalcontext_fcn16s": "pascalcontext-fcn16s/val.prototxt",
    "pascalcontext_fcn8s": "pascalcontext-fcn8s/val.prototxt",
}
#: Channels of the upstream Python data layers' tops (images 3, depth and labels 1).
DATA_CHANNELS = {"data": 3, "color": 3, "hha": 3, "depth": 1, "label": 1, "sem": 1, "geo": 1}
#: What a builder's deploy net leaves out of the val/test net (upstream deploy.prototxt):
#: the data layer, the loss, and Dropout (the identity in the TEST phase).
NOT_MODELLED = ("Python", "Input", "SoftmaxWithLoss", "Dropout")


def meta_model(name: str, **kwargs):
    with torch.device("meta"):
        return get_model(name, **kwargs)


@pytest.fixture(scope="module")
def upstream_nets(upstream_dir):
    return {name: load_net(upstream_dir / path).for_phase("TEST") for name, path in UPSTREAM.items()}


def test_registry_lists_every_released_net():
    # and the nets fcnize casts from the shipped classifiers (issue 21 item 3; tests/test_new_nets.py)
    from port.models.cast_meta import CAST_MODELS
    assert list_models() == sorted([*UPSTREAM, *CAST_MODELS])


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_parameter_shapes_equal_upstream_prototxt(name, upstream_nets):
    net = upstream_nets[name]
    expected = {}
    for layer, shapes in param_shapes(net, DATA_CHANNELS).items():
        for index, shape in enumerate(shapes):
            expected[f"{layer}.{fmt.BLOB_NAMES[index]}"] = tuple(shape)
    model = meta_model(name)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_layers_and_wiring_equal_upstream_prototxt(name, upstream_nets):
    layers = [l for l in upstream_nets[name].layers if l.type not in NOT_MODELLED]
    expected = [(l.name, l.type, tuple(l.bottom), tuple(l.top)) for l in layers]
    model = meta_model(name)
    assert [(n, model.caffe_layers()[n].caffe_type, b, t) for n, b, t in model.steps] == expected


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_derived_crop_offsets_equal_written_ones(name, upstream_nets):
    crops = [l for l in upstream_nets[name].layers if l.type == "Crop"]
    model = meta_model(name)
    assert crops
    for crop in crops:
        assert getattr(model, crop.name).offsets == tuple(crop.crop_param.offset)


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_lr_mult_zero_parameters_are_frozen(name, upstream_nets):
    model = meta_model(name)
    params = dict(model.named_parameters())
    for layer in upstream_nets[name].layers:
        for index, spec in enumerate(layer.params):
            key = f"{layer.name}.{fmt.BLOB_NAMES[index]}"
            if key in params:
                assert params[key].requires_grad == (spec.lr_mult != 0), key


def test_fcn8s_parameter_count_and_fcn32s_upscore_shape():
    # The published figures for the released (full-width, 21-class) models.
    assert sum(p.numel() for p in meta_model("fcn8s").parameters()) == 134_489_759
    assert tuple(meta_model("fcn32s").upscore.weight.shape) == (21, 21, 64, 64)


def test_state_dict_keys_are_caffe_layer_names():
    keys = meta_model("fcn8s_atonce").state_dict()
    for key in ("conv1_1.weight", "fc6.bias", "upscore2.weight", "score_pool4.weight",
                "scale_pool4.weight"):
        assert key in keys
    assert "upscore2.bias" not in keys  # bias_term: false


def _classes_from(path, numbered: bool):
    lines = [l.strip() for l in path.read_text().splitlines() if l.strip()]
    if numbered:
        return [re.sub(r"^\d+:?\s*", "", l) for l in lines]
    return lines


def test_class_names_copied_from_upstream(upstream_dir):
    data = upstream_dir / "data"
    voc = _classes_from(data / "pascal/classes.txt", False)
    assert list(get_meta("fcn8s").classes[0]) == voc[:len(get_meta("fcn8s").classes[0])]
    assert list(get_meta("pascalcontext_fcn8s").classes[0]) == _classes_from(
        data / "pascal-context/classes-59.txt", True)
    nyud = _classes_from(data / "nyud/classes.txt", False)
    assert list(get_meta("nyud_fcn32s_color").classes[0]) == nyud[:len(get_meta("nyud_fcn32s_color").classes[0])]
    sift = (data / "sift-flow/classes.txt").read_text()
    numbered = re.findall(r"^\d\d (.+)$", sift, re.M)
    sem, geo = get_meta("siftflow_fcn8s").classes
    assert list(sem) + list(geo) == numbered


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_meta_matches_upstream(name, upstream_nets, upstream_dir):
    meta = get_meta(name)
    net = upstream_nets[name]
    assert meta.upstream_prototxt == UPSTREAM[name]
    scores = {l.top[0]: l for l in net.layers if l.type == "Crop" and l.top[0].startswith("score")
              and not l.top[0].endswith("c")}
    assert tuple(scores) == meta.outputs
    deconvs = [l for l in net.layers if l.type == "Deconvolution"]
    for output, classes in zip(meta.outputs, meta.classes):
        head = output[len("score"):]
        assert [l for l in deconvs if l.name.endswith(head)][-1].convolution_param.num_output == len(classes)
    data_tops = [t for l in net.layers if l.type == "Python" for t in l.top]
    assert set(meta.inputs) <= set(data_tops)
    assert all(getattr(preprocess, f.__name__) is f for f in meta.preprocess)
    url_file = upstream_dir / UPSTREAM[name].split("/")[0] / "caffemodel-url"
    if url_file.exists():
        assert meta.caffemodel_url == url_file.read_text().strip()
    else:
        assert meta.caffemodel_url is None
    losses = [l for l in net.layers if l.type == "SoftmaxWithLoss"]
    expected = "VALID" if losses[0].loss_param.normalize else "BATCH_SIZE"
    assert meta.loss_normalization == expected


def test_unknown_name_suggests_near_names():
    with pytest.raises(UnknownModelError, match="did you mean 'fcn8s'"):
        get_model("fcn8")


def test_duplicate_registration_refused():
    with pytest.raises(DuplicateModelError, match="fcn8s"):
        register(get_meta("fcn8s"))(lambda **kw: None)


def test_forward_shapes_and_inputs():
    model = get_model("siftflow_fcn16s", width_divisor=16).eval()
    data = torch.randn(2, 3, 21, 30)
    with torch.no_grad():
        out = model(data)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"score_sem": (2, 33, 21, 30),
                                                           "score_geo": (2, 3, 21, 30)}
    with pytest.raises(InputError, match="'data'"):
        model(torch.randn(1, 4, 21, 30))
    fused = get_model("nyud_fcn32s_color_d", width_divisor=16, num_classes=5).eval()
    with torch.no_grad():
        assert tuple(fused(color=torch.randn(1, 3, 17, 19), depth=torch.randn(1, 1, 17, 19)).shape) == (1, 5, 17, 19)


def test_width_divisor_must_divide_widths():
    with pytest.raises(ValueError, match="width_divisor"):
        meta_model("fcn8s", width_divisor=3)
    with pytest.raises(ValueError, match="num_classes"):
        meta_model("fcn8s", num_classes=0)


@pytest.fixture
def small_weights(tmp_path):
    """fcn16s at 1/16 width saved as a converted file would be."""
    model = get_model("fcn16s", width_divisor=16)
    path = tmp_path / "fcn16s.safetensors"
    meta = {fmt.BUILDER: "fcn16s", fmt.CANDIDATES: "fcn16s,pascalcontext_fcn16s",
            fmt.BUILDER_KWARGS: json.dumps({"num_classes": 21, "width_divisor": 16})}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), meta)
    return path, model


def test_weights_load_with_arguments_from_metadata(small_weights):
    path, source = small_weights
    model = get_model("fcn16s", weights=path)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    assert not model.upscore2.weight.requires_grad
    same_structure = get_model("pascalcontext_fcn16s", weights=path)
    assert same_structure.score_fr.weight.shape[0] == 21


def test_weights_conflicting_num_classes(small_weights):
    with pytest.raises(WeightsError, match=r"num_classes=21.*num_classes=60"):
        get_model("fcn16s", weights=small_weights[0], num_classes=60)


def test_weights_for_another_builder(small_weights):
    with pytest.raises(WeightsError, match="'fcn16s'.*not 'fcn8s'"):
        get_model("fcn8s", weights=small_weights[0])


def test_weights_missing_or_not_safetensors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        get_model("fcn8s", weights=tmp_path / "absent.safetensors")
    bogus = tmp_path / "model.caffemodel"
    bogus.write_bytes(b"\x0a\x03fcn")
    with pytest.raises(WeightsError, match="python -m port convert"):
        get_model("fcn8s", weights=bogus)


def test_weights_shape_mismatch_lists_every_problem(tmp_path):
    state = {k: v.contiguous() for k, v in get_model("fcn16s", width_divisor=16).state_dict().items()}
    state["score_fr.weight"] = torch.zeros(5, 256, 1, 1)
    del state["upscore16.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError) as info:
        get_model("fcn16s", weights=path, width_divisor=16)
    message = str(info.value)
    assert "3 problems" in message
    assert "upscore16.weight: missing" in message and "extra.weight: unexpected" in message
    assert "score_fr.weight: shape (5, 256, 1, 1), expected (21, 256, 1, 1)" in message


def test_weights_load_into_a_model_built_on_meta(small_weights):
    """With weights= the model is built on the meta device; loading leaves nothing there."""
    path, source = small_weights
    model = get_model("fcn16s", weights=path)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert tensors and all(t.device.type == "cpu" and not t.is_meta for t in tensors.values())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())


def test_weights_leaving_a_tensor_on_meta_is_refused(small_weights, monkeypatch):
    """A tensor the file cannot fill (a non-persistent buffer) would stay on meta: refused."""
    from port.models import zoo

    class WithScratch(zoo.FCN):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_buffer("scratch", torch.zeros(3), persistent=False)

    monkeypatch.setattr(zoo, "FCN", WithScratch)
    with pytest.raises(WeightsError, match="without data after loading: scratch"):
        get_model("fcn16s", weights=small_weights[0])
    assert get_model("fcn16s", width_divisor=16).scratch.device.type == "cpu"
