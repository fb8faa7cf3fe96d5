"""The reports of the nets cast from a classifier (issue 21 item 3): one verdict line each in
place of "NOT THE RELEASED WEIGHTS" and "no published numbers" (FCN-ResNet: the project's own
recipe; FCN-GoogLeNet: the paper's Table 1 row, compared with, never reproduced), and Table 1's
rows (FCN-AlexNet, FCN-VGG16, FCN-GoogLeNet) in the comparison of a VOC 2011 val run."""
from __future__ import annotations

import json

import pytest

from port.models import tables
from reproduce import verdict
from reproduce.report import published_targets

T1 = {"fcn_alexnet", "fcn32s", "fcn_googlenet"}


def _reasons(model, weights, published, original=()):
    return verdict.reasons(split_check=None, partial=None, weights=weights, published=published,
                           model=model, split="seg11valid", original=original)


def test_a_resnet_says_own_recipe_in_one_line():
    complete = verdict.recipe_check([], "final.safetensors", "the project's own recipe").as_dict()
    other = verdict.weights_check("fcn_resnet50_8s", "w.safetensors", "ab" * 32).as_dict()
    for weights in (complete, other, None):
        [line] = _reasons("fcn_resnet50_8s", weights, False)
        assert line.startswith("THE PROJECT'S OWN RECIPE: fcn_resnet50_8s ")
        assert "no published number to match" in line
        assert "NOT THE RELEASED WEIGHTS" not in line and "nothing to compare with" not in line
    assert tables.published("fcn_resnet50_8s") == []


def test_googlenet_names_its_table_1_row_and_is_never_a_reproduction():
    row = next(r for r in tables.published("fcn_googlenet") if r.source == tables.CVPR_T1)
    complete = verdict.recipe_check([], "final.safetensors", "the paper's recipe").as_dict()
    [shown] = _reasons("fcn_googlenet", complete, True)
    assert shown.startswith("NO RELEASED WEIGHTS: fcn_googlenet was never released; the "
                            "comparison shows ")
    assert f"{row.source.table}'s {row.label} row" in shown and row.split in shown
    assert "never reproduces" in shown
    [absent] = _reasons("fcn_googlenet", complete, False)
    assert absent.startswith("NO RELEASED WEIGHTS: ") and "nothing to compare with" in absent
    assert not verdict.verdict([shown])["reproduction"]
    # the other nets keep their lines
    assert verdict.cast_reason("fcn8s", True) is None
    assert _reasons("fcn8s", None, False)[0].startswith("NOT THE RELEASED WEIGHTS")


@pytest.mark.parametrize("model", sorted(T1))
def test_table_1_rows_are_targets_on_voc2011_val(model):
    [row] = [r for r in tables.published(model, "voc2011-val") if r.source == tables.CVPR_T1]
    targets = published_targets(model, "voc2011-val", ["score"])
    assert [(t.metric, t.value, t.weights) for t in targets] == [("mean_iu", row.mean_iu, "original")]
    assert "Table 1" in targets[0].source
    # seg11valid keeps the released weights' numbers alone
    assert all(t.weights == "released" for t in published_targets(model, "seg11valid", ["score"]))


def test_released_weights_against_table_1_are_no_reproduction():
    released = verdict.WeightsCheck(True, "the released weights of fcn32s").as_dict()
    source = str(tables.CVPR_T1)
    [line] = _reasons("fcn32s", released, True, original=[source])
    assert line.startswith("THE PAPER'S OWN NETS: ") and source in line
    assert _reasons("fcn32s", released, True) == []


def test_voc_2011_val_is_filed_as_table_1s_split(tmp_path):
    from reproduce.datasets.voc import VOC
    from train_trees import make_sbd_voc
    root = make_sbd_voc(tmp_path, n_train=1, n_val=2)
    folder = root / "VOCdevkit" / "VOC2011"
    (folder / "ImageSets" / "Segmentation" / "val.txt").write_text("2011_000000\n2011_000001\n")
    assert VOC(root, "val").table_split == "voc2011-val"
    assert VOC(root, "seg11valid").table_split == "seg11valid"
    renamed = folder.rename(folder.with_name("VOC2012"))
    assert VOC(renamed, "val").table_split == "val"


def test_an_evaluation_of_fcn_googlenet_compares_with_table_1(tmp_path, capsys):
    """``reproduce fcn-googlenet --weights W --split val`` on VOC 2011: the comparison holds
    Table 1's row, the verdict its one line, report.md says it at the top."""
    from port.models import train_net
    from reproduce.__main__ import main as reproduce_main
    from reproduce.training.recipes import get_recipe
    from reproduce.training.run import save_weights
    from train_trees import make_sbd_voc
    root = make_sbd_voc(tmp_path / "data", n_train=1, n_val=2)
    (root / "VOCdevkit" / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt").write_text(
        "2011_000000\n2011_000001\n")
    weights = save_weights(train_net("fcn_googlenet", width_divisor=16),
                           tmp_path / "w.safetensors", get_recipe("fcn_googlenet"), 16, {})
    out = tmp_path / "report"
    assert reproduce_main(["fcn-googlenet", "--weights", str(weights), "--data", str(root),
                           "--split", "val", "--out", str(out), "--device", "cpu",
                           "--quiet", "--overlays", "0"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    [line] = report["not_a_reproduction"]
    assert line.startswith("NO RELEASED WEIGHTS: fcn_googlenet") and "comparison shows" in line
    assert line in printed and "NOT THE RELEASED WEIGHTS" not in printed
    compared = [r for r in report["comparison"] if r["published"] is not None]
    assert [(r["metric"], r["weights"]) for r in compared] == [("mean_iu", "original")]
    assert "Table 1" in compared[0]["source"] and report["reproduction"] is False
    md = (out / "report.md").read_text().split("## ")[0]
    assert f"- **{line}**" in md


def test_a_googlenet_training_report_names_the_papers_recipe_and_table_1(tmp_path, capsys):
    """A (toy) run of FCN-GoogLeNet's recipe on VOC 2011: the training verdict is the paper's
    recipe's, the comparison Table 1's row, the published numbers' verdict the one line."""
    from port.models import train_net
    from reproduce.__main__ import main as reproduce_main
    from reproduce.training.recipes import get_recipe
    from reproduce.training.run import save_weights
    from train_trees import make_sbd_voc
    root = make_sbd_voc(tmp_path / "data", n_train=1, n_val=2)
    lists = root / "VOCdevkit" / "VOC2011" / "ImageSets" / "Segmentation"
    (lists / "val.txt").write_text("2011_000000\n")
    (lists / "train.txt").write_text("2011_000001\n")
    init = save_weights(train_net("fcn_googlenet", width_divisor=16), tmp_path / "w.safetensors",
                        get_recipe("fcn_googlenet"), 16, {})
    out = tmp_path / "fcn-googlenet"
    assert reproduce_main(["train", "fcn-googlenet", "--data", str(root), "--out", str(out),
                           "--init", str(init), "--width-divisor", "16", "--iters", "1",
                           "--iter-size", "1", "--test-interval", "0", "--snapshot", "0",
                           "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    reasons = report["not_a_reproduction"]
    assert reasons[:len(report["training"]["not_a_reproduction"])] == \
        report["training"]["not_a_reproduction"]
    assert reasons[-1].startswith("NO RELEASED WEIGHTS: fcn_googlenet") and \
        "comparison shows" in reasons[-1]
    assert not any("NOT THE RELEASED WEIGHTS" in r or "upstream recipe" in r for r in reasons)
    assert "paper's recipe" in report["weights_check"]["description"]
    assert [r["weights"] for r in report["comparison"] if r["published"] is not None] == ["original"]
    md = (out / "report.md").read_text().splitlines()
    assert md[2] == "**Not a reproduction of the paper's recipe:**"
