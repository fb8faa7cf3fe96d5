"""port.run.speed: every mode runs on the CPU and keeps the outputs of strict fp32; the prepacked
oneDNN path is the same arithmetic; flags are restored; FLOPs are counted from the shapes.
Also the pure helpers of benchmarks/gpu_check.py. Functional only: nothing here is timed."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from port.net import ops
from port.run import canvas, speed
from port.models import get_model
from port.caffe import load_caffemodel, load_net
from port.net.engine import CaffeNet
from port.net.layers import Convolution, Identity
from port.cli.selfcheck import randomize

from helpers import data, rel_err, tiny


def run(model: nn.Module, mode: speed.SpeedMode, x: torch.Tensor, **kw):
    """``model`` in ``mode`` alone, as a Runner runs it (no default prepared path on top)."""
    with speed.backend_flags(mode), speed.autocast(mode, "cpu"), torch.inference_mode(), speed.plain_path():
        return model(speed.to_input(x, mode), **kw)


@pytest.mark.parametrize("mode", list(speed.MODES.values()), ids=list(speed.MODES))
def test_each_mode_runs_on_cpu_and_keeps_strict_outputs(mode):
    model, x = tiny(), data()
    reference = run(model, speed.STRICT, x)
    got = run(speed.prepare_model(tiny(), mode), mode, x)
    assert got.shape == reference.shape
    agree = float((got.argmax(1) == reference.argmax(1)).double().mean())
    if mode.exact:  # fp32 throughout: only the summation order may differ
        assert rel_err(got, reference) < 1e-5
        assert agree == 1.0
    else:  # bf16 keeps 8 bits of mantissa
        assert rel_err(got, reference) < 0.1
        assert agree > 0.9


@pytest.mark.parametrize("name", ["fcn8s", "fcn_alexnet", "siftflow_fcn16s"])
def test_prepack_keeps_every_blob_and_parameter(name):
    model, x = tiny(name), data(1)
    packed = speed.prepack_cpu(model)
    assert any(isinstance(m, speed.PackedConvolution) for m in packed.modules())
    assert not any(isinstance(m, speed.PackedConvolution) for m in model.modules())  # a copy
    assert {k: v.shape for k, v in packed.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with torch.inference_mode(), speed.plain_path():
        expected, got = model(x, return_blobs=True), packed(x, return_blobs=True)
    assert set(got) == set(expected)
    for blob, value in expected.items():
        assert torch.allclose(got[blob], value, rtol=1e-5, atol=1e-5 * float(value.abs().max()) + 1e-30), blob


def test_prepack_fuses_exactly_the_in_place_relus():
    packed = speed.prepack_cpu(tiny())
    fused = {n for n, m in packed.named_children() if isinstance(m, speed.PackedConvolution) and m.relu}
    layers = packed.caffe_layers()
    relus = [(n, b) for n, b, _ in packed.steps if layers[n].caffe_type == "ReLU"]
    assert fused == {b[0] for _, b in relus}
    assert all(type(layers[n]) is Identity for n, _ in relus)
    assert not packed.score_fr.relu  # a convolution without a ReLU after it stays linear


def test_prepacked_weights_follow_a_weight_change():
    model, x = tiny(), data(2)
    packed = speed.prepack_cpu(model)
    with torch.inference_mode():
        packed(x)  # packs the weights once
    new = randomize(get_model("fcn8s", width_divisor=16), seed=4).eval()
    packed.load_state_dict(new.state_dict())
    with torch.inference_mode(), speed.plain_path():
        assert rel_err(packed(x), new(x)) < 1e-5


def test_packed_convolution_falls_back_with_autograd():
    model, x = tiny(), data()
    packed = speed.prepack_cpu(model)
    x.requires_grad_(True)
    packed(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_prepack_needs_a_caffe_net():
    with pytest.raises(TypeError, match="CaffeNet"):
        speed.prepack_cpu(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_backend_flags_are_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    benchmarked = dataclasses.replace(speed.FAST_TF32, cudnn_benchmark=True)
    with speed.backend_flags(benchmarked):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before


def test_exact_modes_are_the_fp32_ones():
    assert {m.name for m in speed.MODES.values() if m.exact} == {"strict-fp32", "strict-fp32-canvas", "cpu-fast"}
    assert speed.STRICT == speed.SpeedMode("strict-fp32", description=speed.STRICT.description)


@pytest.mark.parametrize("mode", list(speed.MODES.values()), ids=list(speed.MODES))
def test_skip_constant_puts_the_trunk_on_the_canvas_and_strict_stays_plain(mode):
    model = speed.prepare_model(tiny(), mode)
    on_canvas = [n for n, m in model.named_children() if isinstance(m, (canvas.CanvasConvolution, canvas.CanvasPooling))]
    assert bool(on_canvas) == mode.skip_constant
    if mode.skip_constant:  # conv1_1 .. pool5
        assert on_canvas[0] == "conv1_1" and on_canvas[-1] == "pool5"
    assert not speed.STRICT.skip_constant and speed.CPU_FAST.skip_constant


def test_set_threads():
    previous = torch.get_num_threads()
    try:
        assert speed.set_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            speed.set_threads(0)
    finally:
        torch.set_num_threads(previous)


def test_count_flops_from_blob_shapes():
    model, x = tiny("fcn16s"), data()
    total, per_layer = speed.count_flops(model, data=x)
    with torch.inference_mode():
        blobs = model(x, return_blobs=True)
    expected = {}
    for name, bottoms, tops in model.steps:
        module = model.caffe_layers()[name]
        if type(module) is not Convolution:
            continue
        w = module.weight.shape
        if not module.transposed:  # every output value: C_in/group x kh x kw multiply-adds
            expected[name] = 2 * w[1] * w[2] * w[3] * blobs[tops[0]].numel()
        else:  # Deconvolution, every input value: C_out/group x kh x kw
            expected[name] = 2 * w[1] * w[2] * w[3] * blobs[bottoms[0]].numel()
    assert per_layer == expected and total == sum(expected.values())


def test_compile_failure_gives_the_eager_model(monkeypatch):
    model = tiny()

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here\nsecond line")

    monkeypatch.setattr(torch, "compile", broken)
    result = speed.compile_model(model, {"data": data()})
    assert result.model is model and not result.compiled
    assert "RuntimeError: no compiler here" in result.reason and "second line" not in result.reason


# -- benchmarks/gpu_check.py helpers -----------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_check():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_synthetic_sizes_look_like_seg11valid(gpu_check):
    import numpy as np
    sizes = gpu_check.image_sizes(736, 1.0, np.random.default_rng(0))
    assert len(sizes) == 736
    assert all(max(s) == gpu_check.LONG_SIDE for s in sizes)
    assert all(gpu_check.SHORT_RANGE[0] <= min(s) <= gpu_check.LONG_SIDE for s in sizes)
    landscape = sum(w == gpu_check.LONG_SIDE and h < w for h, w in sizes) / len(sizes)
    assert abs(landscape - gpu_check.LANDSCAPE) < 0.1
    assert max(set(sizes), key=sizes.count) == (375, 500)


def test_buckets_hold_equal_sizes_and_every_image_once(gpu_check):
    sizes = [(3, 4), (5, 6), (3, 4), (3, 4), (5, 6), (7, 8)]
    batches = gpu_check.buckets(sizes, 2)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    assert all(len(b) <= 2 and len({sizes[i] for i in b}) == 1 for b in batches)
    assert math.ceil(3 / 2) + 1 + 1 == len(batches)


def test_gpu_check_refuses_unknown_sections_and_modes(gpu_check):
    for argv in (["--sections", "throughput,bogus"], ["--modes", "strict-fp32,nonsense"]):
        with pytest.raises(SystemExit):
            gpu_check.main(["--quick", *argv])
    assert {m.name for m in gpu_check.THROUGHPUT_MODES} >= {"strict-fp32", "strict-fp32-canvas"} | gpu_check.DEFAULT_THROUGHPUT


def test_keep_fp32_runs_the_named_layers_in_fp32_inside_autocast():
    """The mixed modes' islands: under bf16 autocast the named layers see and give float32,
    the others compute in bf16, and the process-wide TF32 flags come back after each island."""
    model = speed.keep_fp32(tiny(), speed.CONV5)
    seen: dict[str, torch.dtype] = {}

    def record(name):
        def hook(module, args, out):
            seen.setdefault(name, out[0].dtype)
        return hook
    for name in ("conv4_3", *speed.CONV5, "fc6"):
        getattr(model, name).register_forward_hook(record(name))
    mode = dataclasses.replace(speed.FAST_BF16, name="bf16 + conv5 fp32", fp32_layers=speed.CONV5)
    with speed.backend_flags(mode), speed.autocast(mode, "cpu"), torch.inference_mode():
        model(data())
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32  # restored
    assert {n: seen[n] for n in speed.CONV5} == dict.fromkeys(speed.CONV5, torch.float32)
    assert seen["conv4_3"] == seen["fc6"] == torch.bfloat16


def test_keep_fp32_in_fp32_changes_nothing_and_names_a_missing_layer():
    x = data(5)
    with torch.inference_mode(), speed.plain_path():
        assert torch.equal(speed.keep_fp32(tiny(), speed.CONV5)(x), tiny()(x))
    with pytest.raises(ValueError, match="no layer.*conv5_1"):
        speed.keep_fp32(tiny("fcn_alexnet"), speed.CONV5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_keep_fp32_turns_tf32_off_inside_the_island_on_cuda():
    """Under fast-tf32-conv5-fp32, conv5_1 computes what strict fp32 cuDNN computes from the
    same input (TF32 would be ~1e-3 off); a TF32 layer outside the island is not."""
    model = speed.prepare_model(randomize(get_model("fcn8s", width_divisor=4), seed=0), speed.FAST_TF32_CONV5, "cuda")
    got = {}

    def keep(name):
        def hook(module, args, out):
            got.setdefault(name, (args[0].clone(), out[0].clone()))  # before the in-place ReLU
        return hook
    for name in ("conv5_1", "conv4_1"):
        getattr(model, name).register_forward_hook(keep(name))
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0)).cuda() * 50
    with speed.backend_flags(speed.FAST_TF32_CONV5), torch.inference_mode():
        model(speed.to_input(x, speed.FAST_TF32_CONV5))
    with speed.backend_flags(speed.STRICT), torch.inference_mode():
        errors = {}
        for name, (inp, out) in got.items():
            layer = getattr(model, name)
            ref = ops.conv2d(inp.contiguous(), layer.weight.contiguous(), layer.bias, layer.stride,
                             layer.pad, layer.groups, layer.dilation)
            errors[name] = rel_err(out.contiguous(), ref)
    assert errors["conv5_1"] < 1e-5 < errors["conv4_1"], errors


def test_split_tf32_parts_are_exact_and_follow_the_weight():
    model = tiny()
    layer = speed.split_tf32(model, speed.CONV5).conv5_2
    assert isinstance(layer, speed.SplitTf32Convolution)
    hi, lo = layer.parts()
    assert torch.equal(hi + lo, layer.weight.detach())               # the split loses nothing
    assert torch.equal(speed.to_tf32(hi), hi)                         # hi fits TF32's 10 bits
    assert float(lo.abs().max()) <= float(layer.weight.detach().abs().max()) * 2.0 ** -11
    assert set(model.state_dict()) == set(tiny().state_dict())       # same parameters, same keys
    with torch.no_grad():
        layer.weight.mul_(2)
    assert torch.equal(sum(layer.parts()), layer.weight.detach())     # re-split after a change


def test_split_tf32_in_fp32_equals_the_plain_convolution():
    x = data(6)
    with torch.inference_mode(), speed.plain_path():
        plain = tiny()(x)
        split = speed.prepare_model(tiny(), dataclasses.replace(speed.FAST_TF32_SPLIT5, tf32=False,
                                                                channels_last=False))(x)
    assert rel_err(split, plain) < 1e-5 and torch.equal(split.argmax(1), plain.argmax(1))
    with pytest.raises(ValueError, match="no plain Convolution.*conv5_1"):
        speed.split_tf32(tiny("fcn_alexnet"), speed.CONV5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_split_tf32_keeps_fp32_weights_under_tf32_on_cuda():
    """With an input that TF32 holds exactly, the split convolution under TF32 gives what
    strict fp32 gives (the weights keep ~fp32 precision); the plain TF32 one does not."""
    conv = randomize(get_model("fcn8s", width_divisor=4), seed=0).conv5_1.cuda()
    split = speed.SplitTf32Convolution.of(conv)
    x = speed.to_tf32(torch.randn(2, conv.weight.shape[1], 24, 31, generator=torch.Generator().manual_seed(0)).cuda())
    with torch.inference_mode():
        with speed.backend_flags(speed.STRICT):
            (reference,) = conv(x)
        with speed.backend_flags(speed.FAST_TF32):
            (plain,), (got,) = conv(x), split(x)
    assert rel_err(got, reference) < 1e-5 < rel_err(plain, reference)


@pytest.mark.parametrize("mode", [speed.FAST_TF32_SPLIT5, speed.FAST_TF32_CONV5], ids=lambda m: m.name)
def test_mixed_modes_on_a_net_without_conv5_1_warn_and_run(mode):
    """FCN-AlexNet has no conv5_1..conv5_3: the mode runs without its islands, and says so."""
    with pytest.warns(UserWarning, match=f"{mode.name}: .*no layer.*conv5_1"):
        model = speed.prepare_model(tiny("fcn_alexnet"), mode)
    assert not any(isinstance(m, speed.SplitTf32Convolution) for m in model.modules())
    reference = run(tiny("fcn_alexnet"), speed.STRICT, data())
    assert rel_err(run(model, mode, data()), reference) < 1e-5  # on the CPU TF32 is a no-op


def _goldens_net(goldens_dir, folder: str = "voc-fcn8s") -> CaffeNet:
    """A net read from a prototxt (the ``--net`` path) with Caffe-written weights."""
    net = CaffeNet(load_net(goldens_dir / folder / "net.prototxt"))
    net.load_blobs(load_caffemodel(goldens_dir / folder / "weights.caffemodel"))
    return net.eval()


@pytest.mark.parametrize("source", ["builder", "prototxt"])
@pytest.mark.parametrize("mode", list(speed.MODES.values()), ids=list(speed.MODES))
def test_every_mode_runs_a_builder_net_and_a_prototxt_net(mode, source, goldens_dir):
    """One engine: every mode the CPU can run, on a builder's net and on a net read from a
    prototxt (``--net``), against strict fp32 of the same net. (On the CPU the TF32 modes run
    in fp32 arithmetic with their layouts and layer variants; on a GPU they are checked by
    benchmarks/gpu_check.py.)"""
    if source == "builder":
        model, inputs = tiny(), {"data": data()}
    else:
        model = _goldens_net(goldens_dir)
        inputs = {n: torch.from_numpy(a) for n, a in np.load(goldens_dir / "voc-fcn8s" / "blobs-48x64.npz").items()
                  if n in model.input_names}
    def outputs(net, m):
        with speed.backend_flags(m), speed.autocast(m, "cpu"), torch.inference_mode(), speed.plain_path():
            out = net(**{n: speed.to_input(v, m) for n, v in inputs.items()})
        return out if isinstance(out, dict) else {"score": out}
    reference = outputs(model, speed.STRICT)
    got = outputs(speed.prepare_model(model, mode), mode)
    assert set(got) == set(reference)
    for name, value in reference.items():
        if value.dim() == 0:  # a loss
            assert abs(float(got[name]) - float(value)) <= (1e-4 if mode.exact else 0.05) * abs(float(value))
            continue
        assert rel_err(got[name], value) < (1e-5 if mode.exact else 0.1), name


def test_runner_is_the_mode_put_together():
    """Runner = prepare_model + to_input + backend_flags + autocast + inference mode, restoring
    the flags after each call; names a mode by name too."""
    model, x = tiny(), data(7)
    manual = run(speed.prepare_model(tiny(), speed.CPU_FAST), speed.CPU_FAST, x)
    before = torch.get_float32_matmul_precision()
    runner = speed.Runner("cpu-fast", model, "cpu")
    got = runner(x)
    assert torch.get_float32_matmul_precision() == before
    assert torch.equal(got, manual) and not got.requires_grad
    assert isinstance(runner.model.conv1_1, canvas.CanvasConvolution)
    assert runner(data=x).shape == got.shape  # by input name as well
    with pytest.raises(speed.UnknownModeError, match="unknown precision mode 'fast-fp8'.*cpu-fast"):
        speed.Runner("fast-fp8", model)


RELUS = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 8 dim: 8 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "relu_a" type: "ReLU" bottom: "a" top: "a" }
layer { name: "b" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "relu_b" type: "ReLU" bottom: "b" top: "b_out" }
layer { name: "c" type: "Convolution" bottom: "b_out" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "leaky_c" type: "ReLU" bottom: "c" top: "c" relu_param { negative_slope: 0.1 } }
layer { name: "d" type: "Deconvolution" bottom: "c" top: "d" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "relu_d" type: "ReLU" bottom: "d" top: "d" }
layer { name: "e" type: "Convolution" bottom: "d" top: "e" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "pool" type: "Pooling" bottom: "e" top: "e2" pooling_param { kernel_size: 1 } }
layer { name: "relu_e2" type: "ReLU" bottom: "e2" top: "e2" }
"""


def test_one_rule_finds_the_in_place_relu_after_a_convolution():
    """port.net.layers.relu_in_place_after is the rule; prepack fuses what it finds, and the
    canvas (which also accepts the Identity a fused ReLU becomes) finds the same pairs."""
    from port.caffe import parse_text
    from port.caffe.net import netdef_from_message
    from port.net.layers import relu_in_place_after
    net = CaffeNet(netdef_from_message(parse_text(RELUS)))
    found = {net.steps[i][0]: relu_in_place_after(net.steps, net.caffe_layers(), i)
             for i in range(len(net.steps))}
    # not in place (b), leaky (c), after a Deconvolution (d) or a Pooling, or last: none
    assert {k: v for k, v in found.items() if v} == {"a": "relu_a"}
    assert speed.fusable_relus(net) == {"a": "relu_a"}
    assert [canvas._fused_relu(net, i) for i in range(len(net.steps))] == list(found.values())
    packed = speed.prepack_cpu(net)
    if type(packed.a) is speed.PackedConvolution:  # oneDNN present: the ReLU became an Identity
        assert packed.a.relu and type(packed.relu_a) is Identity
        assert relu_in_place_after(packed.steps, packed.caffe_layers(), 0) is None
        assert canvas._fused_relu(packed, 0) == "relu_a"
        assert speed.fusable_relus(packed) == {}


def test_a_large_kernel_runs_as_one_matrix_product_without_a_packed_copy():
    """fc6 (7x7, no pad) runs as im2col + addmm over the weight as it is: no packed copy,
    the plain convolution's output (with its fused ReLU) to fp32 rounding, any batch size."""
    if not speed.mkldnn_ok():
        pytest.skip("no oneDNN in this torch")
    model = tiny()
    packed = speed.prepack_cpu(model)
    fc6, conv1 = packed.fc6, packed.conv1_1
    assert fc6._as_matmul() and fc6.relu and not conv1._as_matmul()
    x = torch.randn(2, fc6.weight.shape[1], 9, 11, generator=torch.Generator().manual_seed(5))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        (got,) = fc6(x)
        with speed.plain_path():
            expected = torch.relu(model.fc6(x)[0])
    assert got.shape == expected.shape == (2, fc6.weight.shape[0], 3, 5)
    assert rel_err(got, expected) < 1e-5 and fc6._packed[0] is None
    with torch.inference_mode():
        conv1(torch.randn(1, 3, 8, 8))
    assert conv1._packed[0] is not None  # a small kernel still goes to oneDNN, packed
