"""reproduce.metrics against a straightforward numpy transcription of upstream score.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from reproduce.metrics import ConfusionMatrix, Scores, scores_from_matrix

VOID = 255


def reference_hist(labels, preds, n):
    """score.py's fast_hist summed over images, with explicit loops (no bincount)."""
    hist = np.zeros((n, n), dtype=np.int64)
    for label, pred in zip(labels, preds):
        for a, b in zip(label.ravel().tolist(), pred.ravel().tolist()):
            if 0 <= a < n:
                hist[a, b] += 1
    return hist


def reference_scores(hist):
    """do_seg_tests' four numbers, as written upstream (np.nanmean and all)."""
    hist = hist.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        mean_acc = np.nanmean(np.diag(hist) / hist.sum(1))
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        freq = hist.sum(1) / hist.sum()
    return acc, mean_acc, np.nanmean(iu), (freq[freq > 0] * iu[freq > 0]).sum(), iu


def _random_split(rng, n, images, void_frac=0.1, absent=()):
    labels, preds = [], []
    for _ in range(images):
        h, w = rng.integers(1, 9, size=2)
        label = rng.integers(0, n, size=(h, w)).astype(np.uint8)
        for c in absent:
            label[label == c] = 0
        label[rng.random((h, w)) < void_frac] = VOID
        labels.append(label)
        preds.append(rng.integers(0, n, size=(h, w)))
    return labels, preds


def _assert_matches_reference(scores: Scores, hist):
    acc, mean_acc, mean_iu, fw_iu, iu = reference_scores(hist)
    np.testing.assert_array_equal(scores.confusion, hist)
    assert scores.pixel_acc == pytest.approx(acc, rel=1e-12)
    assert scores.mean_acc == pytest.approx(mean_acc, rel=1e-12)
    assert scores.mean_iu == pytest.approx(mean_iu, rel=1e-12)
    assert scores.fw_iu == pytest.approx(fw_iu, rel=1e-12)
    np.testing.assert_allclose(scores.per_class_iu, iu, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), images=st.integers(1, 5),
       void_frac=st.sampled_from([0.0, 0.2, 0.9]))
def test_matches_score_py_on_random_data(seed, n, images, void_frac):
    rng = np.random.default_rng(seed)
    labels, preds = _random_split(rng, n, images, void_frac)
    cm = ConfusionMatrix(n)
    for label, pred in zip(labels, preds):
        cm.update(pred, label)
    hist = reference_hist(labels, preds, n)
    if hist.sum() == 0:
        assert math.isnan(cm.compute().pixel_acc)
        return
    _assert_matches_reference(cm.compute(), hist)


def test_absent_classes_follow_nanmean_semantics():
    """A class never labelled nor predicted is NaN and left out; predicted-only counts as 0."""
    rng = np.random.default_rng(1)
    n = 6
    labels, preds = _random_split(rng, n, 4, absent=(3, 4))
    preds = [np.where(p == 3, 0, p) for p in preds]          # 3: never labelled, never predicted
    preds[0][0, 0] = 4                                       # 4: predicted, never labelled
    cm = ConfusionMatrix(n)
    for label, pred in zip(labels, preds):
        cm.update(pred, label)
    scores = cm.compute()
    assert math.isnan(scores.per_class_iu[3]) and math.isnan(scores.per_class_acc[3])
    assert scores.per_class_iu[4] == 0.0
    assert scores.gt_pixels[3] == scores.gt_pixels[4] == 0
    _assert_matches_reference(scores, reference_hist(labels, preds, n))


def test_scores_from_argmax_and_batches():
    rng = np.random.default_rng(2)
    n = 5
    score = rng.standard_normal((2, n, 4, 6)).astype(np.float32)
    label = rng.integers(0, n, size=(2, 4, 6))
    cm = ConfusionMatrix(n)
    cm.update_scores(score, label)
    assert cm.images == 2
    expected = reference_hist(list(label), list(score.argmax(1)), n)
    np.testing.assert_array_equal(cm.compute().confusion, expected)


def test_uint8_labels_do_not_overflow():
    """n * label must not wrap in uint8 (21 * 20 = 420)."""
    n = 21
    label = np.full((3, 3), 20, np.uint8)
    pred = np.full((3, 3), 19, np.int64)
    cm = ConfusionMatrix(n)
    cm.update(pred, label)
    assert cm.compute().confusion[20, 19] == 9


def test_merge_and_loss_average():
    rng = np.random.default_rng(3)
    n = 4
    labels, preds = _random_split(rng, n, 6)
    whole, left, right = ConfusionMatrix(n), ConfusionMatrix(n), ConfusionMatrix(n)
    losses = rng.random(6)
    for i, (label, pred) in enumerate(zip(labels, preds)):
        whole.update(pred, label)
        whole.add_loss(losses[i])
        part = left if i % 2 else right
        part.update(pred, label)
        part.add_loss(losses[i])
    merged = left + right
    a, b = whole.compute(), merged.compute()
    np.testing.assert_array_equal(a.confusion, b.confusion)
    assert a.images == b.images == 6
    assert a.loss == pytest.approx(losses.mean()) and b.loss == pytest.approx(losses.mean())
    left += right
    np.testing.assert_array_equal(left.compute().confusion, a.confusion)


def test_state_dict_round_trip():
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 1, 2]]), np.array([[0, 2, 255]]))
    cm.add_loss(1.5)
    restored = ConfusionMatrix(3)
    restored.load_state_dict(cm.state_dict())
    assert restored.compute().as_dict() == cm.compute().as_dict()
    with pytest.raises(ValueError, match="3 classes"):
        ConfusionMatrix(4).load_state_dict(cm.state_dict())


def test_bad_input_raises_clear_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        cm.update(np.full((2, 2), 3), np.zeros((2, 2), int))
    with pytest.raises(TypeError):
        cm.update(np.zeros((2, 2), np.float32), np.zeros((2, 2), int))
    with pytest.raises(ValueError):
        cm + ConfusionMatrix(4)
    # a prediction outside the range where the label is void is ignored, as fast_hist does
    cm.update(np.array([[7]]), np.array([[VOID]]))
    assert cm.compute().pixels == 0


def test_result_is_frozen_and_json_ready():
    scores = scores_from_matrix(np.array([[3, 1], [0, 0]]), images=1)
    with pytest.raises(AttributeError):
        scores.mean_iu = 1.0
    with pytest.raises(ValueError):
        scores.confusion[0, 0] = 9
    d = scores.as_dict()
    assert d["per_class_acc"][1] is None and d["loss"] is None and d["confusion"] == [[3, 1], [0, 0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_accumulates_on_cuda():
    rng = np.random.default_rng(4)
    labels, preds = _random_split(rng, 7, 3)
    cm = ConfusionMatrix(7, device="cuda")
    for label, pred in zip(labels, preds):
        cm.update(pred, label)
    assert cm.matrix.device.type == "cuda"
    np.testing.assert_array_equal(cm.compute().confusion, reference_hist(labels, preds, 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_defers_the_range_check_to_the_next_read():
    """On a GPU update() never waits for the device; a bad prediction still raises, at the
    next read of the matrix."""
    cm = ConfusionMatrix(3, device="cuda")
    cm.update(torch.full((2, 2), 3, device="cuda"), torch.zeros((2, 2), dtype=torch.long, device="cuda"))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        cm.compute()


def test_ignored_pixels_and_batches_count_like_fast_hist():
    """The spare-bin counting (no boolean indexing) equals fast_hist with void and
    out-of-range labels, for a batch of two images."""
    rng = np.random.default_rng(7)
    label = rng.integers(0, 5, size=(2, 9, 11))
    label[:, 0] = VOID
    label[:, :, 0] = 4  # outside [0, 4): ignored like void
    pred = rng.integers(0, 4, size=(2, 9, 11))
    cm = ConfusionMatrix(4)
    cm.update(pred, label)
    np.testing.assert_array_equal(cm.compute().confusion, reference_hist(list(label), list(pred), 4))
    assert cm.images == 2


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), stripes=st.sampled_from([2, 3, 7, 128]))
def test_striped_counting_equals_fast_hist(seed, stripes):
    """The GPU's interleaved copies of the bins (``stripes``) sum to fast_hist's matrix exactly,
    whatever the stripe count and for images larger, then smaller, than the cached offsets."""
    rng = np.random.default_rng(seed)
    n = 5
    labels, preds = _random_split(rng, n, 4, void_frac=0.3)
    cm = ConfusionMatrix(n, stripes=stripes)
    for label, pred in zip(labels, preds):
        cm.update(pred, label)
    big = rng.integers(0, n, size=(2, 13, 17))
    cm.update(big, big[::-1].copy())
    expected = reference_hist(labels + list(big[::-1]), preds + list(big), n)
    np.testing.assert_array_equal(cm.compute().confusion, expected)
    assert (cm + ConfusionMatrix(n)).stripes == stripes


def test_stripes_default_and_validation():
    assert ConfusionMatrix(3).stripes == 1  # the CPU scatter is a serial loop: nothing to spread
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="stripes must be a positive int"):
            ConfusionMatrix(3, stripes=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_stripes_count_a_skewed_batch_exactly():
    """A batch where nearly every pixel falls in one bin (the contended case) counts exactly."""
    from reproduce.metrics import GPU_STRIPES
    label = torch.zeros((4, 61, 67), dtype=torch.long)
    pred = torch.zeros_like(label)
    label[:, :3] = VOID
    pred[:, 10:12, 5:9] = 2
    expected = reference_hist(list(label.numpy()), list(pred.numpy()), 3)
    for stripes in (None, GPU_STRIPES):  # the default counts this small batch into one copy
        cm = ConfusionMatrix(3, device="cuda", stripes=stripes)
        assert cm.stripes == GPU_STRIPES
        cm.update(pred.cuda(), label.cuda())
        np.testing.assert_array_equal(cm.compute().confusion, expected)
