"""port.net.ops against direct transcriptions of the Caffe loops they reproduce, on tiny tensors."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from port.net import ops
from port.net.ops import CaffeSemanticsError
from helpers import upsample_filt

FLT_MAX = float(np.finfo(np.float32).max)


def caffe_pool_reference(x: np.ndarray, k: int, s: int, p: int, mode: str) -> np.ndarray:
    """pooling_layer.cpp Reshape + Forward_cpu, loop for loop (square geometry)."""
    n, c, h, w = x.shape

    def size(length: int) -> int:
        out = int(math.ceil(float(length + 2 * p - k) / s)) + 1
        if p and (out - 1) * s >= length + p:
            out -= 1
        return out

    oh, ow = size(h), size(w)
    top = np.zeros((n, c, oh, ow), np.float64)
    for ph, pw in itertools.product(range(oh), range(ow)):
        hs, ws = ph * s - p, pw * s - p
        if mode == "MAX":
            he, we = min(hs + k, h), min(ws + k, w)
            window = x[:, :, max(hs, 0):he, max(ws, 0):we].reshape(n, c, -1)
            top[:, :, ph, pw] = window.max(-1) if window.shape[-1] else -FLT_MAX
        else:
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            pool_size = (he - hs) * (we - ws)
            window = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
            with np.errstate(invalid="ignore", divide="ignore"):  # Caffe divides by <= 0 too
                top[:, :, ph, pw] = window.sum((-1, -2)) / pool_size
    return top


POOL_CASES = [(size, k, s, p) for size in (1, 4, 5, 7, 10) for k in (1, 2, 3, 4) for s in (1, 2, 3)
              for p in range(k) if size + 2 * p >= k]


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
def test_pool2d_matches_caffe_loops(mode):
    gen = torch.Generator().manual_seed(0)
    for size, k, s, p in POOL_CASES:
        x = torch.randn(1, 2, size, size + 1, generator=gen)
        ours = ops.pool2d(x, k, s, p, mode).double().numpy()
        ref = caffe_pool_reference(x.double().numpy(), k, s, p, mode)
        assert ours.shape == ref.shape, (size, k, s, p)
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6, err_msg=str((size, k, s, p)))
        assert ours.shape[2] == ops.pool_output_size(size, k, s, p)


def test_pool_output_size_rounds_up_unlike_floor():
    # Caffe ceil-rounds: some (size, k, s) give one more output than PyTorch's default floor mode.
    differs = [(size, k, s) for size, k, s, p in POOL_CASES if p == 0
               and ops.pool_output_size(size, k, s) != F.max_pool2d(torch.zeros(1, 1, size, size), k, s).shape[-1]]
    assert differs, "ceil and floor rounding never differed"
    for size, k, s in differs:
        assert ops.pool_output_size(size, k, s) == (size - k) // s + 2


def test_pool_drops_last_window_starting_in_padding():
    for size, k, s, p in POOL_CASES:
        out = ops.pool_output_size(size, k, s, p)
        if p:  # every window starts inside the image or the leading padding
            assert (out - 1) * s - p < size


def test_pool2d_rectangular_and_global():
    x = torch.randn(2, 3, 6, 9)
    y = ops.pool2d(x, (2, 3), (2, 3), 0, "MAX")
    assert y.shape == (2, 3, 3, 3)
    torch.testing.assert_close(y[:, :, 0, 0], x[:, :, :2, :3].amax((-1, -2)))
    g = ops.pool2d(x, 1, 1, 0, "AVE", global_pooling=True)
    torch.testing.assert_close(g[:, :, 0, 0], x.mean((-1, -2)))


def test_pool2d_errors_name_layer():
    with pytest.raises(CaffeSemanticsError, match="pool9"):
        ops.pool2d(torch.zeros(1, 1, 4, 4), 2, 1, 2, layer="pool9")
    with pytest.raises(CaffeSemanticsError, match="STOCHASTIC"):
        ops.pool2d(torch.zeros(1, 1, 4, 4), 2, 1, 0, "STOCHASTIC")


def test_output_size_formulas_match_torch_ops():
    for size, k, s, p, d in itertools.product((5, 8), (1, 3, 4), (1, 2), (0, 1), (1, 2)):
        x = torch.zeros(1, 1, size + 2 * d * k, 1)
        n = x.shape[2]
        conv = F.conv2d(x, torch.zeros(1, 1, k, 1), stride=(s, 1), padding=(p, 0), dilation=(d, 1))
        assert ops.conv_output_size(n, k, s, p, d) == conv.shape[2]
        deconv = F.conv_transpose2d(x, torch.zeros(1, 1, k, 1), stride=(s, 1), padding=(p, 0), dilation=(d, 1))
        if deconv.shape[2] > 0:
            assert ops.deconv_output_size(n, k, s, p, d) == deconv.shape[2]
    with pytest.raises(CaffeSemanticsError, match="conv7"):
        ops.conv_output_size(2, 5, layer="conv7")


def test_crop_single_and_per_axis_offsets():
    x = torch.arange(2 * 3 * 8 * 9, dtype=torch.float32).reshape(2, 3, 8, 9)
    ref = torch.zeros(2, 3, 4, 5)
    torch.testing.assert_close(ops.crop(x, ref, 2, (3,)), x[:, :, 3:7, 3:8])
    torch.testing.assert_close(ops.crop(x, ref, 2, (1, 4)), x[:, :, 1:5, 4:9])
    torch.testing.assert_close(ops.crop(x, (2, 2, 4, 5), 1, (1,)), x[:, 1:3, 1:5, 1:6])
    torch.testing.assert_close(ops.crop(x, (2, 3, 8, 5), -1, (2,)), x[:, :, :, 2:7])
    assert ops.crop(x, ref, 2, ()).shape == ref.shape


def test_crop_errors_name_layer_and_values():
    x, ref = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 5, 5)
    with pytest.raises(CaffeSemanticsError, match=r"score.*offset 4.*reference size 5.*input size 8"):
        ops.crop(x, ref, 2, (4,), layer="score")
    with pytest.raises(CaffeSemanticsError, match="3 offsets; expected 1 or 2"):
        ops.crop(x, ref, 2, (1, 1, 1), layer="c")


def naive_deconv(x: np.ndarray, w: np.ndarray, s: int, p: int) -> np.ndarray:
    """Caffe deconvolution as col2im scatters: every input pixel adds its weighted kernel."""
    n, cin, h, wd = x.shape
    _, cout, k, _ = w.shape
    full = np.zeros((n, cout, s * (h - 1) + k, s * (wd - 1) + k))
    for y, xx in itertools.product(range(h), range(wd)):
        full[:, :, y * s:y * s + k, xx * s:xx * s + k] += np.einsum("nc,cokl->nokl", x[:, :, y, xx], w)
    return full[:, :, p:full.shape[2] - p, p:full.shape[3] - p]


def test_deconv2d_layout_and_size():
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 3, 4, 5, generator=gen), torch.randn(3, 2, 4, 4, generator=gen)
    y = ops.deconv2d(x, w, torch.tensor([0.5, -1.0]), stride=2, pad=1)
    ref = naive_deconv(x.double().numpy(), w.double().numpy(), 2, 1) + np.array([0.5, -1.0])[:, None, None]
    np.testing.assert_allclose(y.double().numpy(), ref, rtol=1e-5, atol=1e-5)
    assert y.shape[2:] == (ops.deconv_output_size(4, 4, 2, 1), ops.deconv_output_size(5, 4, 2, 1))
    with pytest.raises(CaffeSemanticsError, match="C_in, C_out/group"):
        ops.deconv2d(x, torch.randn(2, 3, 4, 4), layer="up")


def test_conv2d_checks_groups():
    x = torch.randn(1, 4, 5, 5)
    assert ops.conv2d(x, torch.randn(6, 2, 3, 3), groups=2).shape == (1, 6, 3, 3)
    with pytest.raises(CaffeSemanticsError, match="conv1"):
        ops.conv2d(x, torch.randn(6, 3, 3, 3), layer="conv1")


def test_lrn_across_channels_matches_caffe_formula():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 7, 3, 4, generator=gen)
    size, alpha, beta, k = 5, 1e-2, 0.75, 2.0
    xn = x.double().numpy()
    ref = np.empty_like(xn)
    pre = (size - 1) // 2
    for c in range(7):  # lrn_layer.cpp: window c - pre_pad .. c - pre_pad + size - 1, clipped
        lo, hi = max(c - pre, 0), min(c - pre + size, 7)
        scale = k + alpha / size * (xn[:, lo:hi] ** 2).sum(1)
        ref[:, c] = xn[:, c] * scale ** -beta
    np.testing.assert_allclose(ops.lrn_across_channels(x, size, alpha, beta, k).double().numpy(), ref, rtol=1e-5)
    torch.testing.assert_close(ops.lrn_across_channels(x, size, alpha, beta, k),
                               F.local_response_norm(x, size, alpha, beta, k))
    with pytest.raises(CaffeSemanticsError, match="odd"):
        ops.lrn_across_channels(x, 4)


def test_lrn_within_channel_uses_caffe_ave_pooling():
    x = torch.randn(1, 2, 5, 6)
    avg = torch.from_numpy(caffe_pool_reference((x * x).double().numpy(), 3, 1, 1, "AVE")).float()
    torch.testing.assert_close(ops.lrn_within_channel(x, 3, 0.5, 0.75), x * (1 + 0.5 * avg) ** -0.75)


def test_eltwise_operations_and_errors():
    a, b, c = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(ops.eltwise([a, b, c]), a + b + c)
    torch.testing.assert_close(ops.eltwise([a, b], "SUM", [0.5, -2.0]), 0.5 * a - 2.0 * b)
    torch.testing.assert_close(ops.eltwise([a, b, c], "PROD"), a * b * c)
    torch.testing.assert_close(ops.eltwise([a, b], "MAX"), torch.maximum(a, b))
    with pytest.raises(CaffeSemanticsError, match="fuse.*bottom 1"):
        ops.eltwise([a, torch.randn(3, 2)], layer="fuse")
    with pytest.raises(CaffeSemanticsError, match="one coefficient per bottom"):
        ops.eltwise([a, b], "SUM", [1.0])


def test_scale_broadcasts_over_weight_axes():
    x = torch.randn(2, 3, 4, 5)
    w, bias = torch.randn(3), torch.randn(3)
    torch.testing.assert_close(ops.scale(x, w, bias), x * w[:, None, None] + bias[:, None, None])
    w2 = torch.randn(3, 4)
    torch.testing.assert_close(ops.scale(x, w2), x * w2[:, :, None])
    torch.testing.assert_close(ops.scale(x, torch.tensor(2.0)), 2 * x)
    torch.testing.assert_close(ops.scale(x, torch.randn(5) * 0 + 1, axis=-1), x)
    with pytest.raises(CaffeSemanticsError, match="scale_pool4"):
        ops.scale(x, torch.randn(4), layer="scale_pool4")


def numpy_softmax_loss(score, label, ignore, normalizer_mode):
    s = score.astype(np.float64)
    prob = np.exp(s - s.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    lab = label.reshape(score.shape[0], *score.shape[2:]).astype(int)
    valid = lab != ignore
    picked = np.take_along_axis(prob, np.where(valid, lab, 0)[:, None], 1)[:, 0]
    total = -np.log(np.maximum(picked, np.finfo(np.float32).tiny))[valid].sum()
    normalizer = {"VALID": valid.sum(), "FULL": lab.size, "BATCH_SIZE": score.shape[0], "NONE": 1}[normalizer_mode]
    return total / max(normalizer, 1)


@pytest.mark.parametrize("mode", ops.NORMALIZATION_MODES)
def test_softmax_with_loss_normalizations(mode):
    gen = torch.Generator().manual_seed(3)
    score = torch.randn(2, 4, 3, 5, generator=gen) * 3
    label = torch.randint(0, 4, (2, 1, 3, 5), generator=gen).float()
    label[0, 0, 0, :3] = 255
    ours = ops.softmax_with_loss(score, label, 255, mode)
    assert ours.shape == ()
    ref = numpy_softmax_loss(score.numpy(), label.numpy(), 255, mode)
    assert ours.item() == pytest.approx(ref, rel=1e-6)


def test_softmax_with_loss_clamps_at_flt_min_and_legacy_normalize():
    score = torch.tensor([[0.0, 200.0]]).reshape(1, 2, 1, 1)
    loss = ops.softmax_with_loss(score, torch.zeros(1, 1, 1, 1))
    assert loss.item() == pytest.approx(-math.log(ops.FLT_MIN), rel=1e-6)
    assert ops.loss_normalization(None, False) == "BATCH_SIZE"
    assert ops.loss_normalization(None, True) == "VALID"
    assert ops.loss_normalization(None, None) == "VALID"
    assert ops.loss_normalization("FULL", False) == "FULL"
    all_ignored = ops.softmax_with_loss(score, torch.full((1, 1, 1, 1), 255.0), 255)
    assert all_ignored.item() == 0.0
    with pytest.raises(CaffeSemanticsError, match="loss.*label count"):
        ops.softmax_with_loss(score, torch.zeros(2), layer="loss")


def test_accuracy_top_k_and_ignore():
    gen = torch.Generator().manual_seed(4)
    score, label = torch.randn(3, 5, 2, 2, generator=gen), torch.randint(0, 5, (3, 1, 2, 2), generator=gen)
    label[0, 0, 0, 0] = 255
    s, lab = score.numpy(), label.numpy()[:, 0]
    for k in (1, 2):
        hits = count = 0
        for n, i, j in itertools.product(range(3), range(2), range(2)):
            if lab[n, i, j] == 255:
                continue
            count += 1
            hits += (s[n, :, i, j] > s[n, lab[n, i, j], i, j]).sum() < k
        assert ops.accuracy(score, label.float(), k, ignore_label=255).item() == pytest.approx(hits / count)


def test_bilinear_kernel_is_upsample_filt():
    for size in range(1, 9):
        np.testing.assert_array_equal(ops.bilinear_kernel(size).numpy(), upsample_filt(size).astype(np.float32))


def test_bilinear_weight_upsamples_constant_interior():
    factor, channels = 4, 3
    w = ops.bilinear_weight(channels, 2 * factor)
    x = torch.ones(1, channels, 5, 5) * torch.arange(1.0, channels + 1)[:, None, None]
    y = ops.deconv2d(x, w, stride=factor)
    inner = y[:, :, 2 * factor:-2 * factor, 2 * factor:-2 * factor]
    torch.testing.assert_close(inner, torch.ones_like(inner) * torch.arange(1.0, channels + 1)[:, None, None])


def test_is_bilinear():
    w = ops.bilinear_weight(3, 4)
    assert ops.is_bilinear(w) and ops.is_bilinear(w.numpy())
    off = w.clone()
    off[0, 1, 0, 0] = 0.1
    assert not ops.is_bilinear(off)
    assert not ops.is_bilinear(w * 1.01)
    assert not ops.is_bilinear(torch.zeros(3, 3, 4, 4))
    assert not ops.is_bilinear(torch.zeros(3, 2, 4, 4)) and not ops.is_bilinear(np.zeros((3, 3, 4)))


def shape_and_tensor_errors(shape_call, tensor_call) -> tuple[str, str]:
    """The messages a shape-only function and its tensor function raise on the same input."""
    messages = []
    for call in (shape_call, tensor_call):
        with pytest.raises(CaffeSemanticsError) as info:
            call()
        messages.append(str(info.value))
    return messages[0], messages[1]


@pytest.mark.parametrize("n, k, s, p, d, groups", [(9, 3, 1, 1, 1, 1), (11, 4, 2, 0, 1, 2),
                                                   (10, 3, 3, 2, 2, 1), (7, 1, 1, 0, 1, 3)])
def test_conv2d_output_shape_is_the_forward_shape(n, k, s, p, d, groups):
    x = torch.randn(2, 6, n, n + 2)
    w = torch.randn(*ops.conv_weight_shape(6, 3 * groups, k, groups, transposed=False))
    got = ops.conv2d_output_shape(x.shape, w.shape, s, p, groups, d, layer="c")
    assert got == tuple(ops.conv2d(x, w, None, s, p, groups, d, "c").shape)
    wt = torch.randn(*ops.conv_weight_shape(6, 2 * groups, (k, k + 1), groups, transposed=True))
    assert wt.shape == (6, 2, k, k + 1)
    got = ops.conv2d_output_shape(x.shape, wt.shape, s, p, groups, d, transposed=True, layer="up")
    assert got == tuple(ops.deconv2d(x, wt, None, s, p, groups, d, "up").shape)


def test_conv2d_output_shape_raises_the_forward_errors():
    x, w = torch.randn(1, 4, 5, 5), torch.randn(6, 3, 3, 3)
    shape_msg, tensor_msg = shape_and_tensor_errors(
        lambda: ops.conv2d_output_shape(x.shape, w.shape, layer="conv1"),
        lambda: ops.conv2d(x, w, layer="conv1"))
    assert shape_msg == tensor_msg and "'conv1'" in shape_msg and "C_in/group = 4" in shape_msg
    shape_msg, tensor_msg = shape_and_tensor_errors(
        lambda: ops.conv2d_output_shape(x.shape, (3, 2, 4, 4), transposed=True, layer="up"),
        lambda: ops.deconv2d(x, torch.randn(3, 2, 4, 4), layer="up"))
    assert shape_msg == tensor_msg and "C_in, C_out/group" in shape_msg
    shape_msg, tensor_msg = shape_and_tensor_errors(
        lambda: ops.conv2d_output_shape((1, 3, 2, 2), (4, 3, 5, 5), layer="big"),
        lambda: ops.conv2d(torch.randn(1, 3, 2, 2), torch.randn(4, 3, 5, 5), layer="big"))
    assert shape_msg == tensor_msg and "(< 1)" in shape_msg


@pytest.mark.parametrize("kernel, stride, pad, global_pooling", [
    (3, 2, 1, False), (2, 2, 0, False), ((3, 2), (1, 2), (1, 0), False), (5, 3, 0, False), (3, 1, 1, True)])
def test_pool2d_output_shape_is_the_forward_shape(kernel, stride, pad, global_pooling):
    x = torch.randn(2, 3, 7, 10)
    got = ops.pool2d_output_shape(x.shape, kernel, stride, pad, global_pooling, "pool")
    for mode in ("MAX", "AVE"):
        assert got == tuple(ops.pool2d(x, kernel, stride, pad, mode, global_pooling, "pool").shape)


@pytest.mark.parametrize("shape, kernel, pad", [((1, 1, 4, 4), 2, 2), ((1, 1, 4), 2, 0),
                                                ((1, 1, 1, 1), 3, 0), ((1, 1, 4, 4), (2, 2, 2), 0)])
def test_pool2d_output_shape_raises_the_forward_errors(shape, kernel, pad):
    shape_msg, tensor_msg = shape_and_tensor_errors(
        lambda: ops.pool2d_output_shape(shape, kernel, 1, pad, layer="pool3"),
        lambda: ops.pool2d(torch.zeros(shape), kernel, 1, pad, layer="pool3"))
    assert shape_msg == tensor_msg and "'pool3'" in shape_msg


def test_crop_output_shape_is_the_forward_shape_and_raises_its_errors():
    x, ref = torch.zeros(2, 3, 8, 9), torch.zeros(2, 1, 4, 5)
    for axis, offsets in ((2, (3,)), (2, (1, 4)), (-2, ()), (1, (0, 2, 4))):
        expected = tuple(ops.crop(x, ref, axis, offsets).shape)
        assert ops.crop_output_shape(x.shape, ref.shape, axis, offsets) == expected
    for ref_shape, axis, offsets in (((2, 1, 4, 5), 2, (5,)), ((2, 1, 4), 2, (0,)),
                                     ((2, 1, 4, 5), 2, (1, 1, 1)), ((2, 1, 4, 5), 4, (0,)),
                                     ((2, 1, 4, 5), 2, (-1,))):
        shape_msg, tensor_msg = shape_and_tensor_errors(
            lambda: ops.crop_output_shape(x.shape, ref_shape, axis, offsets, layer="score"),
            lambda: ops.crop(x, torch.zeros(ref_shape), axis, offsets, layer="score"))
        assert shape_msg == tensor_msg and "'score'" in shape_msg


def test_eltwise_and_scale_and_lrn_output_shapes_match_their_forward():
    a = torch.randn(2, 3, 4)
    assert ops.eltwise_output_shape([a.shape] * 3, "MAX") == tuple(ops.eltwise([a] * 3, "MAX").shape)
    for inputs, operation, coeff in (([a, torch.randn(2, 3, 5)], "SUM", None), ([a], "SUM", None),
                                     ([a, a], "PROD", [1.0, 2.0]), ([a, a], "SUM", [1.0]),
                                     ([a, a], "MIN", None)):
        shape_msg, tensor_msg = shape_and_tensor_errors(
            lambda: ops.eltwise_output_shape([t.shape for t in inputs], operation, coeff, "fuse"),
            lambda: ops.eltwise(inputs, operation, coeff, "fuse"))
        assert shape_msg == tensor_msg and "'fuse'" in shape_msg
    w = torch.randn(3, 4)
    assert ops.scale_output_shape(a.shape, w.shape, w.shape, 1) == tuple(ops.scale(a, w, w, 1).shape)
    for weight, bias, axis in ((torch.randn(4), None, 1), (w, torch.randn(3), 1), (w, None, 5)):
        shape_msg, tensor_msg = shape_and_tensor_errors(
            lambda: ops.scale_output_shape(a.shape, weight.shape, None if bias is None else bias.shape,
                                           axis, "sc"),
            lambda: ops.scale(a, weight, bias, axis, "sc"))
        assert shape_msg == tensor_msg and "'sc'" in shape_msg
    x = torch.rand(1, 4, 3, 3)
    assert ops.lrn_output_shape(x.shape, 3) == tuple(ops.lrn_across_channels(x, 3).shape)
    assert ops.lrn_output_shape(x.shape, 3) == tuple(ops.lrn_within_channel(x, 3).shape)
    shape_msg, tensor_msg = shape_and_tensor_errors(lambda: ops.lrn_output_shape(x.shape, 4, "norm1"),
                                                    lambda: ops.lrn_across_channels(x, 4, layer="norm1"))
    assert shape_msg == tensor_msg and "'norm1'" in shape_msg


def test_label_target_shape_checks_the_count_as_the_losses():
    score = torch.randn(2, 5, 3, 4)
    assert ops.label_target_shape(score.shape, (2, 1, 3, 4), 1) == (2, 3, 4)
    assert ops.label_target_shape(score.shape, (24,), 1) == (2, 3, 4)  # Caffe checks only the count
    bad = torch.zeros(2, 1, 3, 3)
    shape_msg, tensor_msg = shape_and_tensor_errors(
        lambda: ops.label_target_shape(score.shape, bad.shape, 1, "SoftmaxWithLoss", "loss"),
        lambda: ops.softmax_with_loss(score, bad, layer="loss"))
    assert shape_msg == tensor_msg and "label count 18" in shape_msg
    shape_msg, tensor_msg = shape_and_tensor_errors(
        lambda: ops.label_target_shape(score.shape, bad.shape, 1, "Accuracy", "acc"),
        lambda: ops.accuracy(score, bad, layer="acc"))
    assert shape_msg == tensor_msg and shape_msg.startswith("layer 'acc': Accuracy")


@pytest.mark.parametrize("shape, axis, transpose", [((2, 3, 4, 5), 1, False), ((2, 3, 4, 5), 2, True),
                                                     ((2, 3, 4, 5), -1, False), ((6, 7), 0, True)])
def test_inner_product_shapes_follow_the_flatten_rule(shape, axis, transpose):
    x, num_output, start = torch.randn(*shape), 4, axis % len(shape)
    k = int(np.prod(shape[start:]))  # InnerProductLayer: K_ = bottom[0]->count(axis)
    weight_shape = ops.inner_product_weight_shape(shape, num_output, axis, transpose, "fc")
    assert weight_shape == ((k, num_output) if transpose else (num_output, k))
    expected = shape[:start] + (num_output,)
    assert ops.inner_product_output_shape(shape, weight_shape, axis, transpose, "fc") == expected
    w, b = torch.randn(*weight_shape), torch.randn(num_output)
    y = ops.inner_product(x, w, b, axis, transpose, "fc")
    flat = x.reshape(*shape[:start], k).to(torch.float64)
    w_nk = (w.t() if transpose else w).to(torch.float64)
    torch.testing.assert_close(y.to(torch.float64), flat @ w_nk.t() + b, rtol=1e-5, atol=1e-5)


def test_inner_product_shape_errors_name_the_layer():
    x, w = torch.randn(2, 3, 4), torch.randn(5, 11)
    k = int(np.prod(x.shape[1:]))
    shape_msg, tensor_msg = shape_and_tensor_errors(
        lambda: ops.inner_product_output_shape(x.shape, w.shape, 1, layer="fc6"),
        lambda: ops.inner_product(x, w, axis=1, layer="fc6"))
    assert shape_msg == tensor_msg == f"layer 'fc6': input has {k} features from axis 1, weights expect 11"
    untransposed = (k, 5)  # a (K, N) weight read without transpose: K taken from its axis 1
    shape_msg, tensor_msg = shape_and_tensor_errors(
        lambda: ops.inner_product_output_shape(x.shape, untransposed, 1, transpose=False, layer="fc7"),
        lambda: ops.inner_product(x, torch.randn(*untransposed), axis=1, layer="fc7"))
    assert shape_msg == tensor_msg and shape_msg.endswith(f"weights expect {untransposed[1]}")
    for axis in (x.dim(), -x.dim() - 1):  # just outside CanonicalAxisIndex's [-ndim, ndim)
        message = f"'fc8': axis {axis} out of range for a blob of {x.dim()} axes"
        with pytest.raises(CaffeSemanticsError, match=message):
            ops.inner_product_weight_shape(x.shape, 5, axis, layer="fc8")
        with pytest.raises(CaffeSemanticsError, match=message):
            ops.inner_product_output_shape(x.shape, w.shape, axis, layer="fc8")


@pytest.mark.parametrize("shapes, axis", [([(2, 3, 4, 5), (2, 1, 4, 5), (2, 6, 4, 5)], 1),
                                          ([(2, 3, 4, 5), (2, 3, 4, 2)], -1), ([(1, 2)], 0)])
def test_concat_output_shape_sums_the_axis(shapes, axis):
    inputs = [torch.randn(*s) for s in shapes]
    expected = np.concatenate([np.zeros(s) for s in shapes], axis=axis).shape
    assert ops.concat_output_shape(shapes, axis, "cat") == expected
    torch.testing.assert_close(ops.concat(inputs, axis, "cat"),
                               torch.from_numpy(np.concatenate([t.numpy() for t in inputs], axis=axis)))


@pytest.mark.parametrize("shapes, axis, message", [
    ([(2, 3, 4, 5), (2, 3, 5, 5)], 1, "Concat bottom 1 has shape \\(2, 3, 5, 5\\), bottom 0 has "
                                      "\\(2, 3, 4, 5\\); all must be equal except on axis 1"),
    ([(2, 3, 4, 5), (2, 3, 4)], -1, "Concat bottom 1 has shape \\(2, 3, 4\\).*except on axis 3"),
    ([(2, 3), (2, 3)], 2, "concat axis 2 out of range for a blob of 2 axes"),
    ([], 1, "Concat needs at least 1 bottom"),
])
def test_concat_shape_errors_name_the_layer(shapes, axis, message):
    shape_msg, tensor_msg = shape_and_tensor_errors(
        lambda: ops.concat_output_shape(shapes, axis, "fuse"),
        lambda: ops.concat([torch.zeros(s) for s in shapes], axis, "fuse"))
    assert shape_msg == tensor_msg and shape_msg.startswith("layer 'fuse': ")
    with pytest.raises(CaffeSemanticsError, match=message):
        ops.concat_output_shape(shapes, axis, "fuse")


def test_ops_compile_without_graph_breaks():
    def net(x, w, label):
        y = ops.pool2d(ops.lrn_across_channels(x, 3, 1e-2, 0.75), 3, 2, 1, "MAX")
        up = ops.deconv2d(ops.pool2d(y, 2, 2, 0, "AVE"), w, stride=4)
        score = ops.crop(up, x, 2, (2,))
        return ops.softmax_with_loss(score, label, 255), ops.eltwise([score, score], "SUM", [0.5, 0.5])

    x, w = torch.randn(1, 3, 9, 11), ops.bilinear_weight(3, 8)
    label = torch.zeros(1, 1, 9, 11)
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    for a, b in zip(compiled(x, w, label), net(x, w, label)):
        torch.testing.assert_close(a, b)


def test_scale_and_bias_blob_shapes_as_caffe_sizes_them():
    """scale_layer.cpp / bias_layer.cpp LayerSetUp: the blob takes ``num_axes`` axes of the
    bottom from the canonical ``axis`` (-1: to the end; 0: a scalar); Reshape applies a 0-axis
    blob from axis 0 whatever ``axis`` says."""
    x = (2, 3, 4, 5)
    assert ops.param_blob_shape(x, 1, 1) == (3,) and ops.param_blob_shape(x, 1, -1) == (3, 4, 5)
    assert ops.param_blob_shape(x, -1, 1) == (5,) and ops.param_blob_shape(x, 1, 0) == ()
    assert ops.param_blob_shape(x, 0, 2) == (2, 3) and ops.param_blob_shape((2, 10), -1, 1) == (10,)
    with pytest.raises(CaffeSemanticsError, match="'sc'.*num_axes -2 must be >= -1"):
        ops.param_blob_shape(x, 1, -2, layer="sc")
    with pytest.raises(CaffeSemanticsError, match="'sc'.*extends past"):
        ops.param_blob_shape(x, 2, 3, layer="sc")
    with pytest.raises(CaffeSemanticsError, match="'sc'.*scale axis 4 out of range"):
        ops.param_blob_shape(x, 4, 0, layer="sc")
    assert ops.broadcast_shape(x, (), 3) == (1, 1, 1, 1) and ops.broadcast_shape(x, (2, 3), 0) == (2, 3, 1, 1)
    y = torch.randn(x)
    torch.testing.assert_close(ops.bias(y, torch.randn(4, 5) * 0 + 2, axis=-2), y + 2)
    with pytest.raises(CaffeSemanticsError, match="'b'.*bias of shape \\(4,\\)"):
        ops.bias(y, torch.zeros(4), axis=1, layer="b")


def test_batch_norm_global_statistics_use_the_float32_reciprocal():
    """batch_norm_layer.cpp: ``scale_factor = 1 / blob2[0]`` in the blob's float type, then
    ``caffe_cpu_scale``: the product, not a division (they differ in the last bit)."""
    rng = np.random.default_rng(0)
    m, v = rng.normal(size=64).astype(np.float32), rng.uniform(0.5, 2, 64).astype(np.float32)
    for s in (np.float32(3.0), np.float32(4.7), np.float32(0.0)):
        mean, var = ops.batch_norm_global_stats(torch.from_numpy(m), torch.from_numpy(v), torch.tensor([s]))
        reciprocal = np.float32(0) if s == 0 else np.float32(1) / s
        assert mean.numpy().tobytes() == (m * reciprocal).tobytes()
        assert var.numpy().tobytes() == (v * reciprocal).tobytes()
    division = m / np.float32(4.7)
    assert (division != m * (np.float32(1) / np.float32(4.7))).any()  # so the test can tell


def test_batch_norm_normalises_with_batch_statistics_and_updates_the_sums():
    x = torch.randn(3, 4, 5, 2, dtype=torch.float64)
    mean, var = ops.batch_norm_batch_stats(x)
    xn = x.numpy()
    np.testing.assert_allclose(mean.numpy(), xn.mean((0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), xn.var((0, 2, 3)), rtol=1e-12)  # biased
    y = ops.batch_norm(x, mean, var, 1e-5)
    np.testing.assert_allclose(y.numpy(), (xn - xn.mean((0, 2, 3), keepdims=True))
                               / np.sqrt(xn.var((0, 2, 3), keepdims=True) + np.float32(1e-5)), rtol=1e-12)
    sums = [torch.full((4,), 2.0), torch.full((4,), 3.0), torch.tensor([5.0])]
    ops.batch_norm_update_(*sums, mean.float(), var.float(), 30, 0.9)
    f, m = float(np.float32(0.9)), 30
    np.testing.assert_allclose(sums[0].numpy(), f * 2 + mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(sums[1].numpy(), f * 3 + m / (m - 1) * var.numpy(), rtol=1e-6)
    np.testing.assert_allclose(sums[2].numpy(), [f * 5 + 1], rtol=1e-7)
    one = [torch.zeros(4), torch.zeros(4), torch.zeros(1)]
    ops.batch_norm_update_(*one, mean.float(), var.float(), 1)  # m = 1: no correction
    assert torch.equal(one[1], var.float()) and one[2].item() == 1
    with pytest.raises(CaffeSemanticsError, match="'bn'.*BatchNorm of 4 channels"):
        ops.batch_norm(x[:, :3], mean, var, layer="bn")
