"""Backward exactness per layer type of the FCN family: gradients w.r.t. inputs and parameters
against float64 finite differences (torch.autograd.gradcheck) or against the upstream
semantics written out from Caffe's Backward_cpu (pooling_layer.cpp, softmax_loss_layer.cpp,
eltwise_layer.cpp, dropout_layer.cpp)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from port.caffe import parse_text
from port.caffe.net import netdef_from_message
from port.net import ops
from port.net.engine import CaffeNet


def _rand(*shape, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(requires_grad)


def test_crop_gradient():
    x = _rand(2, 3, 9, 8)
    ref = torch.zeros(2, 3, 5, 4, dtype=torch.float64)
    assert gradcheck(lambda t: ops.crop(t, ref, 2, (3, 1)), (x,))
    assert gradcheck(lambda t: ops.crop(t, ref[:1, :2], 0, (1, 1, 2, 4)), (x,))
    # upstream: the diff lands in the cropped window, zero elsewhere
    y = ops.crop(x, ref, 2, (3, 1))
    y.backward(torch.ones_like(y))
    expected = torch.zeros_like(x)
    expected[:, :, 3:8, 1:5] = 1
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("groups,stride,pad", [(1, 2, 0), (3, 2, 1), (3, 3, 2)])
def test_deconvolution_with_groups_gradient(groups, stride, pad):
    x = _rand(1, 6, 4, 5, seed=1)
    w = _rand(6, 9 // groups if groups == 3 else 2, 4, 4, seed=2)
    b = _rand(w.shape[1] * groups, seed=3)
    assert gradcheck(lambda a, c, d: ops.deconv2d(a, c, d, stride, pad, groups), (x, w, b))


def test_convolution_with_dilation_and_groups_gradient():
    x = _rand(1, 4, 9, 8, seed=4)
    w = _rand(6, 2, 3, 3, seed=5)
    b = _rand(6, seed=6)
    assert gradcheck(lambda a, c, d: ops.conv2d(a, c, d, 1, 2, 2, 2), (x, w, b))


def caffe_max_pool_backward(x, kernel, stride, pad, top_diff):
    """pooling_layer.cpp MAX: each output's diff goes to the first maximum of its window
    (rows then columns, `>`), the window clipped to the input; output size with ceil."""
    n, c, height, width = x.shape
    oh, ow = top_diff.shape[2:]
    grad = np.zeros_like(x)
    for i in range(n):
        for ch in range(c):
            for ph in range(oh):
                for pw in range(ow):
                    hs, ws = ph * stride - pad, pw * stride - pad
                    he, we = min(hs + kernel, height), min(ws + kernel, width)
                    hs, ws = max(hs, 0), max(ws, 0)
                    best, where = -np.inf, None
                    for h in range(hs, he):
                        for w in range(ws, we):
                            if x[i, ch, h, w] > best:
                                best, where = x[i, ch, h, w], (h, w)
                    grad[i, ch][where] += top_diff[i, ch, ph, pw]
    return grad


def caffe_ave_pool_backward(shape, kernel, stride, pad, top_diff):
    """pooling_layer.cpp AVE: pool_size from the window clipped to the *padded* input, then the
    diff / pool_size spread over the window clipped to the input."""
    n, c, height, width = shape
    oh, ow = top_diff.shape[2:]
    grad = np.zeros(shape)
    for ph in range(oh):
        for pw in range(ow):
            hs, ws = ph * stride - pad, pw * stride - pad
            he, we = min(hs + kernel, height + pad), min(ws + kernel, width + pad)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, height), min(we, width)
            grad[:, :, hs:he, ws:we] += top_diff[:, :, ph:ph + 1, pw:pw + 1] / size
    return grad


@pytest.mark.parametrize("size,kernel,stride,pad", [((7, 9), 2, 2, 0), ((7, 8), 3, 2, 0), ((8, 7), 3, 2, 1),
                                                     ((6, 6), 3, 3, 1)])
def test_max_pooling_gradient_ceil_window_and_first_max_ties(size, kernel, stride, pad):
    rng = np.random.default_rng(7)
    # integers in a small range: many ties inside windows
    x = torch.tensor(rng.integers(-3, 3, (2, 3, *size)).astype(np.float64), requires_grad=True)
    y = ops.pool2d(x, kernel, stride, pad, "MAX")
    expected_shape = [ops.pool_output_size(s, kernel, stride, pad) for s in size]
    assert list(y.shape[2:]) == expected_shape
    if pad == 0:  # the extra ceil window exists here: odd sizes with stride 2
        assert any((o - 1) * stride + kernel > s for o, s in zip(expected_shape, size))
    top = torch.tensor(rng.standard_normal(tuple(y.shape)))
    y.backward(top)
    want = caffe_max_pool_backward(x.detach().numpy(), kernel, stride, pad, top.numpy())
    assert np.allclose(x.grad.numpy(), want, rtol=0, atol=1e-12)
    distinct = _rand(1, 2, *size, seed=8)
    assert gradcheck(lambda t: ops.pool2d(t, kernel, stride, pad, "MAX"), (distinct,))


@pytest.mark.parametrize("size,kernel,stride,pad", [((7, 9), 2, 2, 0), ((7, 8), 3, 2, 1), ((6, 5), 3, 3, 2)])
def test_ave_pooling_gradient_counts_padding_as_caffe(size, kernel, stride, pad):
    x = _rand(2, 2, *size, seed=9)
    y = ops.pool2d(x, kernel, stride, pad, "AVE")
    top = _rand(*y.shape, seed=10, requires_grad=False)
    y.backward(top)
    want = caffe_ave_pool_backward(tuple(x.shape), kernel, stride, pad, top.numpy())
    assert np.allclose(x.grad.numpy(), want, rtol=1e-12, atol=1e-14)
    assert gradcheck(lambda t: ops.pool2d(t, kernel, stride, pad, "AVE"), (x.detach().requires_grad_(),))


def test_eltwise_sum_with_coeff_gradient():
    a, b, c = _rand(1, 3, 4, 5, seed=11), _rand(1, 3, 4, 5, seed=12), _rand(1, 3, 4, 5, seed=13)
    assert gradcheck(lambda *t: ops.eltwise(t, "SUM", [1.0, -0.5, 2.0]), (a, b, c))
    y = ops.eltwise([a, b, c], "SUM", [1.0, -0.5, 2.0])
    top = _rand(1, 3, 4, 5, seed=14, requires_grad=False)
    y.backward(top)
    # eltwise_layer.cpp SUM: bottom_diff = coeff * top_diff
    assert torch.equal(b.grad, -0.5 * top) and torch.equal(c.grad, 2.0 * top) and torch.equal(a.grad, top)
    assert gradcheck(lambda *t: ops.eltwise(t, "PROD"), (a, b))
    assert gradcheck(lambda *t: ops.eltwise(t, "MAX"), (a, b))


def test_eltwise_max_routes_a_tie_to_the_first_bottom():
    """eltwise_layer.cpp MAX: `if (bottom_data_b[idx] > top_data[idx])` keeps the first of
    equal maxima in the mask; Backward_cpu sends the whole diff there."""
    a = torch.tensor([1.0, 2.0, 3.0, 5.0], requires_grad=True)
    b = torch.tensor([1.0, 4.0, 3.0, 0.0], requires_grad=True)
    c = torch.tensor([1.0, 4.0, 3.0, 6.0], requires_grad=True)
    y = ops.eltwise([a, b, c], "MAX")
    assert torch.equal(y, torch.tensor([1.0, 4.0, 3.0, 6.0]))
    y.backward(torch.tensor([10.0, 20.0, 30.0, 40.0]))
    assert torch.equal(a.grad, torch.tensor([10.0, 0.0, 30.0, 0.0]))
    assert torch.equal(b.grad, torch.tensor([0.0, 20.0, 0.0, 0.0]))
    assert torch.equal(c.grad, torch.tensor([0.0, 0.0, 0.0, 40.0]))


def test_scale_gradient_with_bias_and_as_second_bottom():
    x = _rand(2, 3, 4, 5, seed=15)
    w, b = _rand(3, seed=16), _rand(3, seed=17)
    assert gradcheck(lambda t, s, c: ops.scale(t, s, c, 1), (x, w, b))
    w2 = _rand(3, 4, seed=18)
    assert gradcheck(lambda t, s: ops.scale(t, s, None, 1), (x, w2))


def test_inner_product_relu_lrn_gradients():
    x = _rand(2, 3, 2, 2, seed=19)
    w, b = _rand(5, 12, seed=20), _rand(5, seed=21)
    assert gradcheck(lambda t, c, d: ops.inner_product(t, c, d, 1), (x, w, b))
    y = _rand(1, 7, 3, 3, seed=22)
    assert gradcheck(lambda t: ops.lrn_across_channels(t, 5, 1e-2, 0.75, 1.0), (y,))


def caffe_softmax_loss_backward(score, label, ignore, normalizer):
    """softmax_loss_layer.cpp Backward_cpu: prob, minus 1 at the label, 0 where ignored,
    times loss_weight / normalizer (loss_weight 1 here)."""
    prob = torch.softmax(score.detach(), 1).numpy()
    lab = label[:, 0].astype(int)
    grad = prob.copy()
    for i in range(score.shape[0]):
        for h in range(score.shape[2]):
            for w in range(score.shape[3]):
                if lab[i, h, w] == ignore:
                    grad[i, :, h, w] = 0
                else:
                    grad[i, lab[i, h, w], h, w] -= 1
    return grad / normalizer


@pytest.mark.parametrize("mode", ["VALID", "FULL", "BATCH_SIZE", "NONE"])
def test_softmax_with_loss_gradient_with_ignored_pixels(mode):
    rng = np.random.default_rng(23)
    score = _rand(2, 4, 3, 5, seed=24)
    label = rng.integers(0, 4, (2, 1, 3, 5)).astype(np.float64)
    label[0, 0, 1, :3] = 255
    label[1, 0, 2, 4] = 255
    loss = ops.softmax_with_loss(score, torch.from_numpy(label), 255, mode)
    loss.backward()
    valid = int((label != 255).sum())
    normalizer = {"VALID": valid, "FULL": label.size, "BATCH_SIZE": 2, "NONE": 1}[mode]
    want = caffe_softmax_loss_backward(score, label, 255, normalizer)
    assert np.allclose(score.grad.numpy(), want, rtol=1e-10, atol=1e-14)
    assert gradcheck(lambda s: ops.softmax_with_loss(s, torch.from_numpy(label), 255, mode),
                     (score.detach().requires_grad_(),))


def test_softmax_with_loss_gradient_where_the_forward_clamps():
    """A probability below FLT_MIN: the loss is Caffe's clamped -log(FLT_MIN), the gradient
    still prob - onehot (Backward_cpu does not see the clamp)."""
    score = torch.tensor([[[[0.0]], [[200.0]]]], requires_grad=True)
    label = torch.zeros(1, 1, 1, 1)
    loss = ops.softmax_with_loss(score, label)
    assert float(loss.detach()) == pytest.approx(-math.log(ops.FLT_MIN), rel=1e-6)
    loss.backward()
    assert torch.allclose(score.grad[0, :, 0, 0], torch.tensor([-1.0, 1.0]))
    with torch.no_grad():  # without autograd the same value, computed once
        assert float(ops.softmax_with_loss(score, label)) == float(loss.detach())


def test_dropout_backward_uses_the_forward_mask_and_scale():
    netdef = netdef_from_message(parse_text(
        'input: "x" input_shape { dim: 1 dim: 2 dim: 20 dim: 20 }\n'
        'layer { name: "d" type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.4 } }'))
    net = CaffeNet(netdef, "TRAIN").train()
    x = torch.ones(1, 2, 20, 20, requires_grad=True)
    y = net(x=x)["y"]
    y.backward(torch.full_like(y, 3.0))
    mask = (y != 0).float()
    # dropout_layer.cpp Backward_cpu: bottom_diff = top_diff * mask * 1/(1 - ratio)
    assert torch.allclose(x.grad, 3.0 * mask / 0.6)


def test_frozen_deconvolution_passes_gradient_below():
    netdef = netdef_from_message(parse_text(
        'input: "x" input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n'
        'layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n'
        'layer { name: "up" type: "Deconvolution" bottom: "c" top: "up" param { lr_mult: 0 }\n'
        '  convolution_param { num_output: 2 group: 2 kernel_size: 4 stride: 2 bias_term: false } }'))
    net = CaffeNet(netdef, "TRAIN").double()
    with torch.no_grad():
        net.up.weight.copy_(ops.bilinear_kernel(4).double().expand(2, 1, 4, 4))
        net.c.weight.normal_()
    assert not net.up.weight.requires_grad and net.c.weight.requires_grad
    x = _rand(1, 2, 4, 4, seed=25, requires_grad=False)
    net(x=x)["up"].sum().backward()
    assert net.up.weight.grad is None and net.c.weight.grad is not None
    assert net.c.weight.grad.abs().sum() > 0


# -- BatchNorm, Scale, Bias and the layers around them (batch_norm_layer.cpp, scale_layer.cpp) --


def caffe_batch_norm_backward(top, top_diff, std, use_global_stats):
    """batch_norm_layer.cpp Backward_cpu on (N, C, ...) float64 arrays: with
    use_global_stats ``top_diff / std``; else, with ``top`` the normalised output,
    ``(dy - mean(dy) - mean(dy * y) * y) / std``, means over every axis but 1."""
    view = (1, -1) + (1,) * (top.ndim - 2)
    if use_global_stats:
        return top_diff / std.reshape(view)
    axes = (0,) + tuple(range(2, top.ndim))
    mean_dy = top_diff.mean(axes).reshape(view)
    mean_dy_y = (top_diff * top).mean(axes).reshape(view)
    return (top_diff - mean_dy - mean_dy_y * top) / std.reshape(view)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (5, 4), (1, 2, 3, 2, 2)])
def test_batch_norm_gradient_with_batch_statistics(shape):
    x = _rand(*shape, seed=30)

    def forward(t):
        mean, var = ops.batch_norm_batch_stats(t)
        return ops.batch_norm(t, mean, var, 1e-5)
    assert gradcheck(forward, (x,))
    y = forward(x)
    top = _rand(*shape, seed=31, requires_grad=False)
    y.backward(top)
    std = np.sqrt(ops.batch_norm_batch_stats(x.detach())[1].numpy() + np.float32(1e-5))
    want = caffe_batch_norm_backward(y.detach().numpy(), top.numpy(), std, False)
    assert np.allclose(x.grad.numpy(), want, rtol=1e-9, atol=1e-12)


def test_batch_norm_gradient_with_global_statistics():
    x = _rand(2, 3, 4, 5, seed=32)
    mean_sum, var_sum = _rand(3, seed=33, requires_grad=False), _rand(3, seed=34, requires_grad=False).abs()
    factor = torch.tensor([2.5], dtype=torch.float64)
    mean, var = ops.batch_norm_global_stats(mean_sum, var_sum, factor)
    assert gradcheck(lambda t: ops.batch_norm(t, mean, var, 1e-3), (x,))
    y = ops.batch_norm(x, mean, var, 1e-3)
    top = _rand(2, 3, 4, 5, seed=35, requires_grad=False)
    y.backward(top)
    want = caffe_batch_norm_backward(y.detach().numpy(), top.numpy(), np.sqrt(var.numpy() + np.float32(1e-3)),
                                     True)
    assert np.allclose(x.grad.numpy(), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("phase,global_stats", [("TRAIN", False), ("TEST", True), ("TRAIN", True)])
def test_batch_norm_layer_gradient_in_both_modes(phase, global_stats):
    """Through the engine (in place, as ResNet writes it): the input's gradient is Caffe's in
    the mode the phase (or ``use_global_stats``) picks; the statistics get none."""
    option = "batch_norm_param { use_global_stats: true }" if phase == "TRAIN" and global_stats else ""
    netdef = netdef_from_message(parse_text(
        'input: "x" input_shape { dim: 2 dim: 3 dim: 4 dim: 3 }\n'
        f'layer {{ name: "bn" type: "BatchNorm" bottom: "x" top: "x" {option} }}'))
    net = CaffeNet(netdef, phase).double()
    with torch.no_grad():
        net.bn.mean.copy_(torch.tensor([0.5, -1.0, 2.0])), net.bn.variance.copy_(torch.tensor([1.0, 3.0, 0.5]))
        net.bn.scale_factor.fill_(2.0)
    assert net.bn.use_global_stats == global_stats
    x = _rand(2, 3, 4, 3, seed=36)
    y = net(x=x)["x"]
    top = _rand(2, 3, 4, 3, seed=37, requires_grad=False)
    y.backward(top)
    var = (torch.tensor([1.0, 3.0, 0.5]) / 2 if global_stats else x.detach().var((0, 2, 3), unbiased=False))
    want = caffe_batch_norm_backward(y.detach().numpy(), top.numpy(),
                                     np.sqrt(var.double().numpy() + np.float32(1e-5)), global_stats)
    assert np.allclose(x.grad.numpy(), want, rtol=1e-9, atol=1e-12)
    assert all(p.grad is None and not p.requires_grad for p in net.bn.caffe_params())


@pytest.mark.parametrize("x_shape,axis,w_shape", [
    ((2, 3, 2, 3), 1, (3,)),            # per channel
    ((2, 3, 2, 3), 1, (3, 2, 3)),       # num_axes: -1
    ((2, 3, 2, 3), -1, (3,)),           # a negative axis
    ((2, 3, 2, 3), 1, ()),              # num_axes: 0, a scalar
    ((2, 3, 2, 3), 0, (2, 3)),          # axis 0, num_axes 2: per sample and channel
    ((2, 6), -1, (6,)),                 # a 2-D bottom (after an InnerProduct)
])
def test_scale_and_bias_variants_gradients(x_shape, axis, w_shape):
    x = _rand(*x_shape, seed=38)
    w, b = (_rand(*w_shape, seed=seed) if w_shape else _rand(1, seed=seed).detach()[0].requires_grad_()
            for seed in (39, 40))
    assert gradcheck(lambda t, s, c: ops.scale(t, s, c, axis), (x, w, b))
    assert gradcheck(lambda t, s: ops.scale(t, s, None, axis), (x, w))
    assert gradcheck(lambda t, c: ops.bias(t, c, axis), (x, b))


def test_sigmoid_flatten_and_global_pooling_gradients():
    x = _rand(2, 2, 3, 4, seed=41)
    assert gradcheck(ops.sigmoid, (x,))
    y = ops.sigmoid(x)
    top = _rand(2, 2, 3, 4, seed=42, requires_grad=False)
    y.backward(top)
    s = y.detach()
    assert torch.allclose(x.grad, top * s * (1 - s), rtol=1e-12, atol=0)  # sigmoid_layer.cpp
    for mode in ("AVE", "MAX"):
        assert gradcheck(lambda t: ops.pool2d(t, 0, 1, 0, mode, global_pooling=True).flatten(1), (x,))
