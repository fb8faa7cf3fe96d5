"""port.run.canvas: the constant-canvas trunk computes what the plain trunk computes.

The per-axis plan is checked against a brute-force walk over every output position (the rule
of benchmarks/analyze_padding.py); the evaluation against the plain forward of the same net at
many odd sizes (pool5 and every score within 1e-6 of the plain values, relative to their
largest magnitude), and against Caffe's own blobs (the goldens) at the goldens' tolerance."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from port.net import ops
from port.run import canvas, speed
from port.models import get_model
from port.net.engine import CaffeNet
from port.net.layers import Identity
from port.net.spec import NetSpec
from port.cli.selfcheck import randomize

from conftest import GOLDEN_NETS
from helpers import rel_err, tiny as _tiny

TOLERANCE = 1e-6
SIZES = [(1, 1), (7, 9), (48, 64), (97, 131), (120, 200)]


def tiny(name: str = "fcn8s", **kw):
    """This file's nets: seed 5."""
    return _tiny(name, seed=5, **kw)


def check_close(fast: nn.Module, model: nn.Module, x: dict[str, torch.Tensor], names) -> None:
    """``fast``'s blobs ``names`` within TOLERANCE of ``model``'s, or, where the plain fp32
    forward is itself further than half of that from the same net in float64 (its own
    rounding), within twice that rounding error: the canvas is then as exact as the plain path."""
    plain, got = blobs(model, x), blobs(fast, x)
    exact = blobs(copy.deepcopy(model).double(), {k: v.double() for k, v in x.items()})
    for name in names:
        assert got[name].shape == plain[name].shape, name
        allowed = max(TOLERANCE, 2 * rel_err(plain[name], exact[name]))
        assert rel_err(got[name], plain[name]) <= allowed, name


def inputs(model: nn.Module, size, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, channels, *size, generator=gen) * 50
            for name, channels in ((n, s[1]) for n, s in model.input_shapes.items())}


def blobs(model: nn.Module, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every blob of ``model`` as its layers compute them (the plain path: a plain net is not
    put on the canvas by the default prepared path behind the test's back)."""
    with torch.inference_mode(), speed.plain_path():
        return model(**x, return_blobs=True)


# -- the plan against a brute-force walk -------------------------------------------------------
def brute_force(stencil: canvas.Stencil, size: int, inner, rims, background_pad: bool):
    """Per output: (sees the image, sees a canvas edge), from its clipped window."""
    n = stencil.out_size(size)
    flags = []
    for o in range(n):
        lo, hi = o * stencil.stride - stencil.pad, o * stencil.stride - stencil.pad + stencil.kernel
        read = range(max(lo, 0), min(hi, size))
        padded = stencil.kind == "Convolution" and (lo < 0 or hi > size) and not background_pad
        edge = padded or any(i < rims[0] or i >= size - rims[1] for i in read)
        flags.append((any(inner[0] <= i < inner[1] for i in read), edge))
    return flags


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["Convolution", "Pooling"]), kernel=st.integers(1, 7), stride=st.integers(1, 4),
       pad=st.integers(0, 6), size=st.integers(1, 60), data=st.data(), background=st.booleans())
def test_plan_axis_matches_a_brute_force_walk(kind, kernel, stride, pad, size, data, background):
    if kind == "Pooling":  # the trunk's poolings: no pad, windows that tile the input
        pad, kernel = 0, max(kernel, stride)
    stencil = canvas.Stencil(kind, kernel, stride, pad)
    try:
        n = stencil.out_size(size)
    except ops.CaffeSemanticsError:
        return
    a = data.draw(st.integers(0, size - 1))
    inner = (a, data.draw(st.integers(a + 1, size)))
    lead = data.draw(st.integers(0, size // 3))
    rims = (0, 0) if background else (lead, data.draw(st.integers(0, size // 3)))  # only the first layer
    plan = canvas.plan_axis(stencil, size, inner, rims, background)
    flags = brute_force(stencil, size, inner, rims, background)
    assert plan.size == n
    sees_image = [o for o, (i, _) in enumerate(flags) if i]
    assert list(range(*plan.inner)) == sees_image
    sees_edge = {o for o, (_, e) in enumerate(flags) if e}
    lead, trail = plan.rims
    assert set(range(min(lead, n))) | set(range(n - trail, n)) == sees_edge
    free = [o for o, (i, e) in enumerate(flags) if not i and not e]
    assert (plan.generic is None) == (not free)
    assert plan.generic is None or plan.generic in free


def test_vgg16_plan_keeps_the_image_block_and_thin_rims():
    model = tiny()
    (chain,) = canvas.trunk_chains(model)
    names = [n for n, _ in chain]
    assert names[0] == "conv1_1" and names[-1] == "pool5" and len(names) == 18
    plans = canvas.plan_chain([canvas._stencils(getattr(model, n)) for n in names], (97, 131), names)
    first_rows, _ = plans[0]
    conv = model.conv1_1
    assert first_rows.rims == (0, 0)  # conv1_1's padding is the zero canvas itself
    assert first_rows.inner[1] - first_rows.inner[0] == 97 + conv.kernel - 1
    rows, _ = plans[1]
    assert rows.rims == (model.conv1_2.pad,) * 2  # conv1_2's zero pad meets relu(bias)
    plain, fewer = canvas.canvas_flops(model, (97, 131))
    assert fewer < plain


# -- the evaluation against the plain forward --------------------------------------------------
@pytest.fixture(scope="module")
def vgg():
    model = tiny()
    return model, canvas.constant_canvas(model)


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_fcn8s_pool5_and_score_equal_the_plain_forward(vgg, size):
    model, fast = vgg
    x = inputs(model, size)
    assert set(blobs(fast, x)) == set(blobs(model, x))
    check_close(fast, model, x, ("pool3", "pool4", "pool5", "score"))


def test_fcn8s_at_a_voc_size(vgg):
    model, fast = vgg
    check_close(fast, model, inputs(model, (375, 500), batch=1), ("pool5", "score"))


@pytest.mark.parametrize("name,size", [("fcn_alexnet", (7, 9)), ("fcn_alexnet", (97, 131)),
                                       ("nyud_fcn32s_color_hha", (48, 64)), ("nyud_fcn32s_color_d", (37, 50)),
                                       ("siftflow_fcn16s", (45, 61))])
def test_other_trunks_equal_the_plain_forward(name, size):
    kw = {"num_classes": 10} if name.startswith("nyud") else {}
    model = tiny(name, **kw)
    fast = canvas.constant_canvas(model)
    streams = len(model.input_names) if name == "nyud_fcn32s_color_hha" else 1  # late fusion: two trunks
    assert len(canvas.trunk_chains(model)) == streams
    pools = [n for n, m in fast.named_children() if isinstance(m, canvas.CanvasPooling)]
    assert pools
    check_close(fast, model, inputs(model, size), pools + list(model.meta.outputs))


def test_same_parameters_and_keys_and_weight_changes_follow(vgg):
    model, fast = vgg
    assert list(fast.state_dict()) == list(model.state_dict())
    assert isinstance(fast.conv1_1, canvas.CanvasConvolution) and isinstance(fast.relu1_1, Identity)
    assert not isinstance(model.conv1_1, canvas.CanvasConvolution)  # a copy
    other = randomize(get_model("fcn8s", width_divisor=16), seed=9).eval()
    loaded = canvas.constant_canvas(tiny())
    loaded.load_state_dict(other.state_dict())
    check_close(loaded, other, inputs(model, (48, 64)), ("score",))


def test_a_layer_called_on_another_tensor_runs_plainly(vgg):
    model, fast = vgg
    x = torch.randn(1, model.conv2_1.weight.shape[1], 30, 40, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        fast(**inputs(model, (48, 64)))  # leaves no state a later call could pick up
        assert torch.allclose(fast.conv2_1(x)[0], torch.relu(model.conv2_1(x)[0]), rtol=1e-6, atol=1e-5)


def pooling(**param):
    """One Pooling layer of the engine, built from its definition."""
    n = NetSpec()
    n.Input("input", tops=["x"], input_param=dict(shape=dict(dim=[1, 1, 8, 8])))
    n.Pooling("p", "x", **param)
    return CaffeNet(n.netdef()).p


def test_unsupported_layers_end_the_trunk():
    assert canvas._stencils(pooling(kernel_size=2, stride=2)) is not None
    assert canvas._stencils(pooling(kernel_size=3, stride=2, pad=1)) is None  # padded windows: not handled
    assert canvas._stencils(pooling(kernel_size=2, stride=2, pool="AVE")) is None  # AVE divides clipped windows
    assert canvas._stencils(pooling(kernel_size=1, stride=2)) is None  # a last window could start past the input
    with pytest.raises(TypeError, match="CaffeNet"):
        canvas.constant_canvas(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_cpu_fast_runs_the_canvas_on_prepacked_convolutions():
    model = tiny()
    fast = speed.prepare_model(tiny(), speed.CPU_FAST)
    conv = fast.conv3_1
    assert isinstance(conv, canvas.CanvasConvolution)
    if speed.mkldnn_ok():
        assert all(isinstance(m, speed.PackedConvolution) for m in conv._impl)
    check_close(fast, model, inputs(model, (97, 131)), ("pool5", "score"))


# -- Caffe's own blobs -------------------------------------------------------------------------
@pytest.mark.parametrize("folder", GOLDEN_NETS)
def test_goldens_through_the_canvas(folder, goldens_dir, tmp_path):
    from test_models_goldens import TOLERANCE as GOLDEN_TOLERANCE, check_losses, load_builder
    model = canvas.constant_canvas(load_builder(goldens_dir, folder, tmp_path), inplace=True)
    assert any(isinstance(m, canvas.CanvasPooling) for m in model.modules())
    arrays = np.load(goldens_dir / folder / "blobs-48x64.npz")
    got = blobs(model, {n: torch.from_numpy(arrays[n]) for n in model.input_names})
    for name in set(got) & set(arrays.files):  # every blob Caffe computed
        assert rel_err(got[name], arrays[name]) <= GOLDEN_TOLERANCE, name
    arrays = np.load(goldens_dir / folder / "outputs-97x131.npz")
    got = blobs(model, {n: torch.from_numpy(arrays[n]) for n in model.input_names})
    outputs = [n for n in model.meta.outputs if n in arrays.files]
    for name in outputs:
        assert rel_err(got[name], arrays[name]) <= GOLDEN_TOLERANCE, name
    assert check_losses(goldens_dir, folder, got, arrays) + len(outputs) > 0


def test_the_canvas_is_used_only_where_it_pays_off():
    """VGG16 trunks start with a stride-1 conv1_1 (the canvas pays); AlexNet's conv1 has
    stride 4 (measured slower on the canvas), so speed modes leave it plain."""
    from port.run import canvas, speed
    from port.models import fcn8s, fcn_alexnet

    vgg, alex = fcn8s(width_divisor=16), fcn_alexnet(width_divisor=16)
    assert canvas.pays_off(vgg) and not canvas.pays_off(alex)
    prepared = speed.prepare_model(alex, speed.STRICT_CANVAS)
    assert not any(isinstance(m, canvas.CanvasConvolution) for m in prepared.modules())
    prepared = speed.prepare_model(vgg, speed.STRICT_CANVAS)
    assert any(isinstance(m, canvas.CanvasConvolution) for m in prepared.modules())
