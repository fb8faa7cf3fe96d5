"""port.models.tables against the project's reference/published-numbers.md."""
from __future__ import annotations

import dataclasses
import re

import pytest

from port.models import tables
from port.models.tables import PUBLISHED, published, reference

QUAD = re.compile(r"(\d+\.\d+)\s*/\s*(\d+\.\d+)\s*/\s*(\d+\.\d+)\s*/\s*(\d+\.\d+)")
TABLE_ROW = re.compile(r"^\|\s*([^|]+?)\s*\|\s*(\d+\.\d+)\s*\|\s*(\d+\.\d+)\s*\|"
                       r"\s*(\d+\.\d+)\s*\|\s*(\d+\.\d+)\s*\|\s*$")


def _quadruples_in(text: str) -> set[tuple[float, ...]]:
    """Every (pixel, mean acc, mean IU, fw IU) the reference file prints, tables and inline."""
    found = set()
    for line in text.splitlines():
        row = TABLE_ROW.match(line)
        if row:
            found.add(tuple(float(v) for v in row.groups()[1:]))
        found.update(tuple(float(v) for v in quad) for quad in QUAD.findall(line))
    return found


def _full_rows():
    return [row for row in PUBLISHED if None not in row.metrics().values()]


def test_every_full_row_is_in_the_reference_file_and_back(shared_dir):
    printed = _quadruples_in((shared_dir / "reference" / "published-numbers.md").read_text())
    ours = {tuple(row.metrics().values()) for row in _full_rows()}
    assert printed == ours


def test_single_numbers_of_the_reference_file(shared_dir):
    text = (shared_dir / "reference" / "published-numbers.md").read_text()
    readme = re.search(r"FCN-32s\s+(\d+\.\d), FCN-16s (\d+\.\d), FCN-8s (\d+\.\d), FCN-8s at-once "
                       r"(\d+\.\d), FCN-AlexNet (\d+\.\d)", text)
    models = ["fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce", "fcn_alexnet"]
    for model, value in zip(models, readme.groups()):
        rows = [r for r in published(model, "seg11valid") if r.source is tables.README]
        assert [r.mean_iu for r in rows] == [float(value)]
    test_2012 = float(re.search(r"FCN-8s (\d+\.\d) mean IU on\s+VOC2012 test", text).group(1))
    assert [r.mean_iu for r in published("fcn8s", "voc2012-test", weights="released")] == [test_2012]
    geo = float(re.search(r"geometric accuracy (\d+\.\d)", text).group(1))
    assert published("siftflow_fcn16s", "test", task="geo")[0].pixel_acc == geo


def test_issue_numbers_for_the_released_voc_models():
    """The sharpest targets are the four-decimal independent evaluations."""
    for model, mean_iu in [("fcn32s", 63.6261), ("fcn16s", 65.0050), ("fcn8s", 65.5126),
                           ("fcn8s_atonce", 65.3998)]:
        row = reference(model, "seg11valid")
        assert row.mean_iu == mean_iu and row.decimals == 4 and row.source is tables.INDEPENDENT
        pami = [r for r in published(model, "seg11valid") if r.source is tables.PAMI_VOC][0]
        for name, value in row.metrics().items():
            assert abs(value - pami.metrics()[name]) <= 0.1 + 1e-9  # "agreeing to 0.1"


def test_unknown_cells_are_none_and_lookup_filters():
    alexnet = reference("fcn_alexnet", "seg11valid")
    assert alexnet.mean_iu == 48.0 and alexnet.pixel_acc is None and alexnet.fw_iu is None
    assert published("nyud_fcn16s_color_hha", "test", weights="released") == []
    assert reference("siftflow_fcn8s", "test") is None
    original = published("fcn8s", "seg11valid", weights="original")
    assert [r.source.table for r in original] == ["Table 2"]
    assert all(r.split == "test" for r in published("nyud_fcn32s_hha", "test"))


def test_unknown_model_suggests_near_names():
    with pytest.raises(KeyError, match="fcn8s_atonce"):
        published("fcn8s-atonce")


def test_records_are_typed_and_sane():
    for row in PUBLISHED:
        assert row.source.status in {"checked", "recalled"}
        assert row.weights in {"released", "original"}
        assert row.model in tables.MODELS and row.task in {"", "sem", "geo"}
        assert all(v is None or 0 < v < 100 for v in row.metrics().values())
        assert str(row.source).startswith(row.source.paper)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PUBLISHED[0].mean_iu = 0.0
    keys = [(r.model, r.split, r.weights, r.task, r.source) for r in PUBLISHED]
    assert len(keys) == len(set(keys)), "a row is listed twice"


def test_released_model_names_are_the_builders():
    models = pytest.importorskip("port.models")
    if not hasattr(models, "list_models"):
        pytest.skip("port.models.list_models not written yet")
    released = {row.model for row in PUBLISHED if row.weights == "released"}
    assert released <= set(models.list_models())
