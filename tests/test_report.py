"""The side-by-side comparison, the tolerance rule, the palette, and the report's NaN handling."""
from __future__ import annotations

import json

import numpy as np
import pytest

from port.models import tables
from reproduce.harness import EvalResult, Task
from reproduce.metrics import scores_from_matrix
from reproduce.palette import colour_to_label, to_palette_image, voc_palette
from reproduce.report import (
    FLOAT_ORDER_SLACK, RunInfo, Target, compare, format_table, is_partial, partial_warning,
    published_targets, write_report,
)


def test_palette_is_the_voc_colour_map_and_round_trips():
    palette = voc_palette()
    assert len({tuple(c) for c in palette}) == len(palette)           # one colour per label
    assert tuple(palette[0]) == (0, 0, 0)
    # VOClabelcolormap.m: label 1 sets the top bit of red, 2 of green, 4 of blue
    assert tuple(palette[1]) == (128, 0, 0) and tuple(palette[2]) == (0, 128, 0)
    assert tuple(palette[4]) == (0, 0, 128)
    label = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.array(to_palette_image(label).convert("RGB"))
    decoded, unknown = colour_to_label(rgb)
    assert unknown == 0 and np.array_equal(decoded, label)


def test_tolerance_is_the_published_rounding_plus_the_slack():
    hist = np.array([[90, 10], [5, 95]])
    scores = {"score": scores_from_matrix(hist)}
    ours = 100 * scores["score"].mean_iu
    inside = Target("score", "mean_iu", round(ours, 1), 1, "paper")
    outside = Target("score", "mean_iu", round(ours, 1) + 0.2, 1, "paper")
    rows = compare(scores, [inside, outside])
    by_value = {r.published: r for r in rows if r.published is not None}
    assert by_value[inside.value].within and not by_value[outside.value].within
    assert by_value[inside.value].tolerance == pytest.approx(0.05 + FLOAT_ORDER_SLACK)
    assert {r.metric for r in rows if r.published is None} == {"pixel_acc", "mean_acc", "fw_iu"}
    text = format_table(rows)
    assert "NO" in text and "yes" in text and "paper" in text


def test_published_targets_come_from_the_tables():
    targets = published_targets("fcn8s", "seg11valid", ["score"])
    rows = tables.published("fcn8s", "seg11valid", weights="released")
    expected = sum(v is not None for row in rows for v in row.metrics().values())
    assert len(targets) == expected and expected > 0
    assert published_targets("siftflow_fcn16s", "test", ["score_sem", "score_geo"]) == []


def test_the_loss_is_shown_beside_the_metrics(tmp_path):
    from reproduce.harness import LossSpec
    hist = np.array([[90, 10], [5, 95]])
    mean_loss = 1.0 / 3.0   # a value whose printed forms are easy to find
    task = Task("score", "label", ("a", "b"), LossSpec("loss", 255, "BATCH_SIZE"))
    result = EvalResult({"score": scores_from_matrix(hist, images=3, loss=mean_loss)}, 3, [],
                        1.0, 0)
    rows = compare(result.scores, [])
    assert [r.metric for r in rows][-1] == "loss" and rows[-1].ours == mean_loss
    assert f"{mean_loss:.4f}" in format_table(rows).splitlines()[-1]  # the console table
    info = RunInfo("m", "voc", "/d", "val", "w", "0" * 64, "cpu", "cpu", "strict-fp32", "fp32")
    paths = write_report(tmp_path, result, info, [task], rows)
    report = json.loads(paths["json"].read_text())
    assert report["outputs"]["score"]["loss"] == mean_loss
    assert report["outputs"]["score"]["loss_layer"]["normalization"] == "BATCH_SIZE"
    assert f"{mean_loss:.6f}" in paths["md"].read_text()


def test_an_empty_evaluation_still_writes_valid_json(tmp_path):
    task = Task("score", "label", ("a", "b"))
    result = EvalResult({"score": scores_from_matrix(np.zeros((2, 2)))}, 0,
                        [{"id": "x", "path": "/p/x.jpg", "error": "OSError: truncated"}], 0.0, 0)
    info = RunInfo("m", "voc", "/d", "val", "w", "0" * 64, "cpu", "cpu", "strict-fp32", "fp32")
    paths = write_report(tmp_path, result, info, [task], compare(result.scores, []))
    report = json.loads(paths["json"].read_text())
    assert report["outputs"]["score"]["metrics"]["mean_iu"] is None
    assert "/p/x.jpg" in paths["md"].read_text()


def _small_run(images: int, skipped: list[dict] | None = None) -> tuple[EvalResult, Task]:
    task = Task("score", "label", ("a", "b"))
    hist = np.array([[90, 10], [5, 95]])
    return EvalResult({"score": scores_from_matrix(hist, images=images)}, images, skipped or [],
                      1.0, 0, {"x": np.zeros((3, 9, 3), np.uint8)}), task


def _info(**kw) -> RunInfo:
    return RunInfo("m", "voc", "/d", "val", "w", "0" * 64, "cpu", "cpu", "strict-fp32", "fp32",
                   **kw)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_report_files_are_created_with_the_umasks_mode(tmp_path, umask):
    import os
    result, task = _small_run(3)
    previous = os.umask(umask)
    try:
        paths = write_report(tmp_path / "out", result, _info(), [task], compare(result.scores, []))
    finally:
        os.umask(previous)
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {paths["json"], paths["md"], paths["plot"]} <= set(written) and len(written) == 4
    for path in written:   # e.g. 0644 under umask 022: readable by others, as any other file
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_a_limited_run_is_marked_partial_not_a_reproduction(tmp_path):
    split_size, limit = 13, 4
    result, task = _small_run(limit)
    targets = [Target("score", "mean_iu", 100 * result.scores["score"].mean_iu, 4, "paper")]
    rows = compare(result.scores, targets)
    assert rows[2].within   # inside tolerance, yet not a reproduction: a part of the split
    info = _info(limit=limit, split_size=split_size)
    paths = write_report(tmp_path, result, info, [task], rows)
    report = json.loads(paths["json"].read_text())
    assert (report["limit"], report["split_size"], report["images_evaluated"]) == (
        limit, split_size, limit)
    assert report["partial"] and not report["reproduction"]
    assert report["all_within_tolerance"] is None
    md = paths["md"].read_text()
    assert "Partial" in md and "not a reproduction" in md
    assert f"images evaluated: {limit} of {split_size}" in md and f"--limit {limit}" in md
    warning = partial_warning(info, result)
    assert f"{limit} of {split_size}" in warning and "not a reproduction" in warning


def test_a_whole_split_is_a_reproduction_and_skipped_items_make_it_partial(tmp_path):
    result, task = _small_run(5)
    rows = compare(result.scores, [Target("score", "mean_iu", 100 * result.scores["score"].mean_iu,
                                          4, "paper")])
    # the whole split and the released weights (issue 19.2: both are needed)
    released = {"matches": True, "description": "the released weights of m"}
    whole = json.loads(write_report(tmp_path / "a", result, _info(split_size=5,
                                                                  weights_check=released),
                                    [task], rows)["json"].read_text())
    assert not whole["partial"] and whole["reproduction"] and whole["all_within_tolerance"]
    assert whole["limit"] is None and whole["images_evaluated"] == whole["split_size"] == 5
    bad = [{"id": "y", "path": "/p/y.jpg", "error": "OSError"}]
    skipped, _ = _small_run(4, bad)
    assert is_partial(_info(split_size=5), skipped)


def test_overlays_are_enlarged_captioned_and_carry_a_class_legend():
    """A 4x5 image: enlarged to the minimum side, three captioned panels, and a legend whose
    swatches are the palette colours of exactly the classes shown (plus void's empty box)."""
    from reproduce.report import MIN_OVERLAY_SIDE, compose_overlay
    rng = np.random.default_rng(0)
    truth = np.array([[0, 0, 2, 2, 255]] * 4, np.uint8)
    pred = np.array([[0, 2, 2, 7, 7]] * 4, np.uint8)
    parts = {"image": rng.integers(0, 256, (4, 5, 3), dtype=np.uint8), "truth": truth,
             "prediction": pred}
    names = tuple(f"c{i}" for i in range(21))
    picture = compose_overlay(parts, names)
    k = -(-MIN_OVERLAY_SIDE // 4)
    assert picture.shape[1] == 3 * 5 * k and picture.shape[0] > 4 * k   # + caption, legend
    caption_band = picture[:10]
    assert (caption_band != 255).any()                                    # captions drawn
    white = (picture == 255).all(axis=2).mean(axis=1)
    body_rows = np.flatnonzero(white < 0.5)                # the enlarged panels fill their rows
    assert len(body_rows) == 4 * k
    legend = picture[body_rows[-1] + 1:].reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(legend, axis=0)}
    palette = voc_palette()
    for c in (2, 7):                                       # (0 is black, as the text is)
        assert tuple(palette[c]) in colours, c
    for c in (1, 3, 15):
        assert tuple(palette[c]) not in colours, c


def test_each_metric_is_shown_once_with_its_published_values_beside_it():
    hist = np.array([[90, 10], [5, 95]])
    scores = {"score": scores_from_matrix(hist)}
    targets = [Target("score", "mean_iu", 65.5, 1, "paper A"),
               Target("score", "mean_iu", 65.5126, 4, "paper B")]
    for markdown in (False, True):
        text = format_table(compare(scores, targets), markdown=markdown)
        assert text.count("mean IU") == 1 and "paper A" in text and "paper B" in text
        line_a, line_b = [line for line in text.splitlines() if "paper" in line]
        assert f"{100 * scores['score'].mean_iu:.4f}" in line_a
        assert f"{100 * scores['score'].mean_iu:.4f}" not in line_b and "65.5126" in line_b


@pytest.mark.parametrize("check", [None, {"matches": False, "description": "weights w are not "
                                          "the released caffemodel of m"}])
def test_the_whole_split_with_other_weights_is_no_reproduction(tmp_path, check):
    """Issue 19.2: random weights over the whole split said ``reproduction: True``. Without
    the released weights (or unchecked ones) the verdict says what is lacking, in report.json
    and at the top of report.md; an unknown SHA-256 is not shown as an empty one."""
    result, task = _small_run(5)
    rows = compare(result.scores, [Target("score", "mean_iu", 100 * result.scores["score"].mean_iu,
                                          4, "paper")])
    info = RunInfo("m", "voc", "/d", "val", "w", "", "cpu", "cpu", "strict-fp32", "fp32",
                   split_size=5, weights_check=check)
    paths = write_report(tmp_path, result, info, [task], rows)
    report = json.loads(paths["json"].read_text())
    assert not report["partial"] and not report["reproduction"]
    assert report["all_within_tolerance"] is None
    assert [r for r in report["not_a_reproduction"] if "NOT THE RELEASED WEIGHTS" in r]
    md = paths["md"].read_text()
    top = md.split("## ")[0]
    assert "Not a reproduction" in top and "NOT THE RELEASED WEIGHTS" in top
    assert "SHA-256 ``" not in md and "(SHA-256" not in md


def test_released_weights_are_known_by_the_registrys_digest(tmp_path, monkeypatch):
    """The weights half of the verdict: a caffemodel SHA-256 is the released one when the
    registry knows it (here: recorded by a verified download into the cache)."""
    from port.hub import registry
    from reproduce import verdict
    monkeypatch.setenv("FCN_PORT_CACHE", str(tmp_path))
    sha = "ab" * 32
    assert not verdict.released_weights("fcn8s", sha)
    assert verdict.weights_check("fcn8s", "w", sha).matches is False
    registry.HashStore().record(registry.caffemodel_for("fcn8s").name, sha256=sha)
    assert verdict.released_weights("fcn8s", sha) and not verdict.released_weights("fcn32s", sha)
    assert verdict.weights_check("fcn8s", "w", sha).matches is True
    assert verdict.weights_check(None, "w", sha).matches is None
    assert not verdict.released_weights("fcn8s", "")


def test_the_plot_title_says_what_and_how_much_was_evaluated():
    """Issue 19.13: per_class_iu.png was titled "per-class IU, score" whatever the run; a
    partial run's title says it is partial and how many images it holds."""
    from reproduce.report import plot_title
    result, task = _small_run(4)
    partial = plot_title(_info(limit=4, split_size=13), result, task)
    assert "m on voc val" in partial and "PARTIAL: 4 of 13 images" in partial
    whole = plot_title(_info(split_size=4), result, task)
    assert "PARTIAL" not in whole and "4 images" in whole


def test_a_training_run_passes_its_recipe_check():
    """The training report's half of the verdict (helper: ``verdict.recipe_check``)."""
    from reproduce import verdict
    complete = verdict.recipe_check([], "final.safetensors")
    assert complete.matches and not verdict.reasons(
        split_check=None, partial=None, weights=complete.as_dict(), published=True, model="m",
        split="s")
    toy = verdict.recipe_check(["6 of 100000 iterations", "width 1/16"], "final.safetensors")
    [reason] = verdict.reasons(split_check=None, partial=None, weights=toy.as_dict(),
                               published=True, model="m", split="s")
    assert "6 of 100000 iterations" in reason and "width 1/16" in reason
