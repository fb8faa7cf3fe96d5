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


def _googlenet_run(tmp_path, capsys, layout):
    """A one-iteration FCN-GoogLeNet run on a tree whose VOC folders are ``layout``: ``both``
    (VOC2011 and a VOC2012 with other lists) or ``2012`` (VOC2012 alone). Returns the printed
    lines, report.json and report.md's lines."""
    import shutil
    from port.models import train_net
    from reproduce.__main__ import main as reproduce_main
    from reproduce.training.recipes import get_recipe
    from reproduce.training.run import save_weights
    from train_trees import make_sbd_voc
    root = make_sbd_voc(tmp_path / "data", n_train=1, n_val=2)
    voc2011 = root / "VOCdevkit" / "VOC2011"
    (voc2011 / "ImageSets" / "Segmentation" / "val.txt").write_text("2011_000000\n")
    (voc2011 / "ImageSets" / "Segmentation" / "train.txt").write_text("2011_000001\n")
    if layout == "both":
        voc2012 = shutil.copytree(voc2011, voc2011.with_name("VOC2012"))
        (voc2012 / "ImageSets" / "Segmentation" / "val.txt").write_text("2011_000001\n")
        (voc2012 / "ImageSets" / "Segmentation" / "train.txt").write_text("2011_000000\n")
    else:
        voc2011.rename(voc2011.with_name("VOC2012"))
    init = save_weights(train_net("fcn_googlenet", width_divisor=16), tmp_path / "w.safetensors",
                        get_recipe("fcn_googlenet"), 16, {})
    out = tmp_path / "fcn-googlenet"
    capsys.readouterr()
    assert reproduce_main(["train", "fcn-googlenet", "--data", str(root), "--out", str(out),
                           "--init", str(init), "--width-divisor", "16", "--iters", "1",
                           "--iter-size", "1", "--test-interval", "0", "--snapshot", "0",
                           "--quiet", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.splitlines()
    return (printed, json.loads((out / "report.json").read_text()),
            (out / "report.md").read_text().splitlines())


def test_googlenet_reads_voc2011_when_voc2012_is_there_too(tmp_path, capsys):
    """Its recipe asks for VOC 2011 (the paper's): with both folders under --data, train and
    val are VOC2011's (VOC's val alone would prefer VOC2012), so Table 1's row is compared."""
    printed, report, md = _googlenet_run(tmp_path, capsys, "both")
    training = report["training"]
    assert training["voc_years"] == {"train": "2011", "val": "2011"}
    assert "VOC2011" in report["dataset_path"]
    from port.hub.registry import split_digest
    lists = tmp_path / "data" / "VOCdevkit" / "VOC2011" / "ImageSets" / "Segmentation"
    assert training["train_list"]["ids_sha256"] == split_digest((lists / "train.txt").read_text().split())
    assert not any(r.startswith("DATA:") for r in report["not_a_reproduction"])
    assert not any(line.startswith("DATA:") for line in printed)
    assert [r["weights"] for r in report["comparison"] if r["published"] is not None] == ["original"]
    assert "- VOC year: train VOC2011, val VOC2011" in md


def test_googlenet_on_voc2012_alone_goes_on_and_says_so(tmp_path, capsys):
    """Only VOC2012 under --data: the run goes on on it; one DATA line says the paper used VOC
    2011, among the log's first lines (before the first iteration) and in the verdict."""
    printed, report, md = _googlenet_run(tmp_path, capsys, "2012")
    [line] = [r for r in report["training"]["not_a_reproduction"] if r.startswith("DATA:")]
    assert line == ("DATA: trained on VOC2012 train and validated on VOC2012 val; the paper's "
                    "recipe used VOC2011 (no VOC2011 folder found under --data)")
    assert line in report["not_a_reproduction"]
    assert line in report["weights_check"]["description"]  # verdict.recipe_check lists it
    first_iteration = next(i for i, text in enumerate(printed) if text.startswith("final mean IU"))
    assert printed.index(line) < first_iteration and printed.count(line) == 1
    assert any("VOC2011 asked for: no VOC2011 folder here or below, reading VOC2012" in text
               for text in printed[:printed.index(line)])
    assert f"- {line}" in md[:md.index("## Training")]
    assert "- VOC year: train VOC2012, val VOC2012" in md
    # VOC2012's val is not Table 1's split: nothing compared, the cast line says so
    assert all(r["published"] is None for r in report["comparison"])
    assert "nothing to compare with" in report["not_a_reproduction"][-1]
