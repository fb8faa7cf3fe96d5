"""The published FCN numbers, each with its source, as typed records.

Values are in percent, as printed (pixel accuracy, mean accuracy, mean IU, frequency-weighted
IU); a cell the source does not give is ``None``, never guessed. ``weights`` says which weights a
row describes: ``"released"`` (the caffemodels behind the upstream ``caffemodel-url`` files, the
ones this project converts) or ``"original"`` (the CVPR 2015 models, never released).
``status`` is ``"checked"`` (read in the cited source) or ``"recalled"`` (from a secondary
citation, not yet read in the paper itself). Collected in the project's
``reference/published-numbers.md``.

``published(model, split)`` lists the rows of a model; ``reference(model, split)`` picks the
sharpest target for the released weights.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

__all__ = ["Source", "Published", "PUBLISHED", "MODELS", "METRICS", "OWN_RECIPE", "published",
           "reference"]

METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


@dataclass(frozen=True)
class Source:
    """Where a number was printed: the paper (or README), its table, and whether it was read."""

    paper: str
    table: str
    status: str  # "checked" | "recalled"
    note: str = ""

    def __str__(self) -> str:
        return f"{self.paper}, {self.table} ({self.status})"


@dataclass(frozen=True)
class Published:
    """One published row: a model on a split, its four metrics in percent (``None`` = not given).

    ``model`` is the builder name in ``port.models`` (or a paper-only name such as
    ``fcn32s_fixed``); ``label`` is the name as printed; ``task`` is ``"geo"`` for SIFT Flow's
    geometric labels, else ``""``; ``extra`` holds other printed numbers (name, value).
    """

    model: str
    label: str
    dataset: str
    split: str
    weights: str  # "released" | "original"
    pixel_acc: float | None
    mean_acc: float | None
    mean_iu: float | None
    fw_iu: float | None
    source: Source
    decimals: int = 1
    task: str = ""
    extra: tuple[tuple[str, float], ...] = ()

    def metrics(self) -> dict[str, float | None]:
        """The four metrics by name (``METRICS``), in percent."""
        return {name: getattr(self, name) for name in METRICS}


# ------------------------------------------------------------------------------- sources
CVPR_T1 = Source("CVPR 2015 (arXiv 1411.4038)", "Table 1", "recalled",
                 "secondary copy (two independent transcriptions agree); mean IU on PASCAL VOC "
                 "2011 seg val of nets trained on VOC 2011 train only (1112 images, section 4.3), "
                 "forward time (K40c, 500 x 500) and parameters in extra; the full val set by "
                 "reference/classifier-facts.md's reading (the paper keeps '56.0 on val' apart "
                 "from '59.4 on a subset'), not the 736-image seg11valid")
CVPR_T2 = Source("CVPR 2015 (arXiv 1411.4038 v2+)", "Table 2", "checked",
                 "original (non-heavy) models on the VOC2011 val subset (seg11valid)")
CVPR_T3 = Source("CVPR 2015 (arXiv 1411.4038)", "Table 3", "checked", "PASCAL VOC test server")
CVPR_T4 = Source("CVPR 2015 (arXiv 1411.4038)", "Table 4", "checked", "NYUDv2 test, 40 classes")
CVPR_T5 = Source("CVPR 2015 (arXiv 1411.4038)", "Table 5", "checked",
                 "SIFT Flow test; mean IU over the classes present in the test set")
CVPR_T6 = Source("CVPR 2015 (arXiv 1411.4038 v2 appendix)", "Table 6", "checked",
                 "PASCAL-Context val, 59-class task")
PAMI_VOC = Source("PAMI 2016 (arXiv 1605.06211)", "PASCAL VOC seg11valid", "recalled",
                  "released heavy models; agrees to 0.1 with the independent evaluations")
PAMI_NYUD = Source("PAMI 2016 (arXiv 1605.06211)", "NYUDv2", "recalled",
                   "assumed to describe the released (online, high-momentum) NYUD models")
PAMI_CONTEXT = Source("PAMI 2016 (arXiv 1605.06211)", "PASCAL-Context", "recalled",
                      "assumed to describe the released (online, high-momentum) Context models")
README = Source("fcn.berkeleyvision.org README", "model list", "checked",
                "released models; mean IU only")
INDEPENDENT = Source("pytorch-fcn README (868c961) and wkentaro/fcn README", "VOC2011 val",
                     "checked", "independent evaluations of the released caffemodels after "
                     "conversion, on seg11valid; the two agree to ~0.01")


def _rows(source, dataset, split, weights, rows, decimals=1, task=""):
    """Published records for ``rows`` of (model, label, pixel, mean acc, mean IU, fw IU)."""
    return tuple(Published(model, label, dataset, split, weights, *values, source=source,
                           decimals=decimals, task=task)
                 for model, label, *values in rows)


PUBLISHED: tuple[Published, ...] = (
    *_rows(CVPR_T2, "voc", "seg11valid", "original", [
        ("fcn32s_fixed", "FCN-32s-fixed", 83.0, 59.7, 45.4, 72.0),
        ("fcn32s", "FCN-32s", 89.1, 73.3, 59.4, 81.4),
        ("fcn16s", "FCN-16s", 90.0, 75.7, 62.4, 83.0),
        ("fcn8s", "FCN-8s", 90.3, 75.9, 62.7, 83.2)]),
    *_rows(PAMI_VOC, "voc", "seg11valid", "released", [
        ("fcn32s", "FCN-32s", 90.5, 76.5, 63.6, 83.5),
        ("fcn16s", "FCN-16s", 91.0, 78.1, 65.0, 84.3),
        ("fcn8s_atonce", "FCN-8s at-once", 91.1, 78.5, 65.4, 84.4),
        ("fcn8s", "FCN-8s", 91.2, 77.6, 65.5, 84.5)]),
    *_rows(README, "voc", "seg11valid", "released", [
        ("fcn32s", "FCN-32s PASCAL", None, None, 63.6, None),
        ("fcn16s", "FCN-16s PASCAL", None, None, 65.0, None),
        ("fcn8s", "FCN-8s PASCAL", None, None, 65.5, None),
        ("fcn8s_atonce", "FCN-8s PASCAL at-once", None, None, 65.4, None),
        ("fcn_alexnet", "FCN-AlexNet PASCAL", None, None, 48.0, None)]),
    *_rows(README, "voc", "voc2012-test", "released", [
        ("fcn8s", "FCN-8s PASCAL", None, None, 67.2, None)]),
    *_rows(INDEPENDENT, "voc", "seg11valid", "released", [
        ("fcn32s", "FCN-32s", 90.4810, 76.4824, 63.6261, 83.4580),
        ("fcn16s", "FCN-16s", 90.9971, 78.0710, 65.0050, 84.2614),
        ("fcn8s", "FCN-8s", 91.2212, 77.6146, 65.5126, 84.5445),
        ("fcn8s_atonce", "FCN-8s at-once", 91.1288, 78.4979, 65.3998, 84.4326)], decimals=4),
    *_rows(CVPR_T3, "voc", "voc2011-test", "original", [
        ("fcn8s", "FCN-8s", None, None, 62.7, None)]),
    *_rows(CVPR_T3, "voc", "voc2012-test", "original", [
        ("fcn8s", "FCN-8s", None, None, 62.2, None)]),
    *_rows(CVPR_T4, "nyud", "test", "original", [
        ("nyud_fcn32s_color", "FCN-32s RGB", 60.0, 42.2, 29.2, 43.9),
        ("nyud_fcn32s_color_d", "FCN-32s RGBD", 61.5, 42.4, 30.5, 45.5),
        ("nyud_fcn32s_hha", "FCN-32s HHA", 57.1, 35.2, 24.2, 40.4),
        ("nyud_fcn32s_color_hha", "FCN-32s RGB-HHA", 64.3, 44.9, 32.8, 48.0),
        ("nyud_fcn16s_color_hha", "FCN-16s RGB-HHA", 65.4, 46.1, 34.0, 49.5)]),
    *_rows(PAMI_NYUD, "nyud", "test", "released", [
        ("nyud_fcn32s_color", "FCN-32s RGB", 61.8, 44.7, 31.6, 46.0),
        ("nyud_fcn32s_color_d", "FCN-32s RGBD", 62.1, 44.8, 31.7, 46.3),
        ("nyud_fcn32s_hha", "FCN-32s HHA", 58.3, 35.7, 25.2, 41.7),
        ("nyud_fcn32s_color_hha", "FCN-32s RGB-HHA", 65.3, 44.0, 33.3, 48.6)]),
    *_rows(CVPR_T5, "siftflow", "test", "original", [
        ("siftflow_fcn16s", "FCN-16s", 85.2, 51.7, 39.5, 76.1)], task="sem"),
    *_rows(CVPR_T5, "siftflow", "test", "original", [
        ("siftflow_fcn16s", "FCN-16s geometric", 94.3, None, None, None)], task="geo"),
    *_rows(CVPR_T6, "pascalcontext", "val", "original", [
        ("pascalcontext_fcn32s", "FCN-32s", 63.8, 42.7, 31.8, 48.3),
        ("pascalcontext_fcn16s", "FCN-16s", 65.7, 46.2, 34.8, 50.7),
        ("pascalcontext_fcn8s", "FCN-8s", 65.9, 46.5, 35.1, 51.0)]),
    *_rows(PAMI_CONTEXT, "pascalcontext", "val", "released", [
        ("pascalcontext_fcn32s", "FCN-32s", 65.5, 49.1, 36.7, 50.9),
        ("pascalcontext_fcn16s", "FCN-16s", 66.9, 51.3, 38.4, 52.3),
        ("pascalcontext_fcn8s", "FCN-8s", 67.5, 52.3, 39.1, 53.0)]),
    *(Published(model, label, "voc", "voc2011-val", "original", None, None, mean_iu, None,
                source=CVPR_T1, extra=(("forward_ms", ms), ("params_millions", params)))
      for model, label, mean_iu, ms, params in [
          ("fcn_alexnet", "FCN-AlexNet", 39.8, 50, 57),
          ("fcn32s", "FCN-VGG16", 56.0, 210, 134),
          ("fcn_googlenet", "FCN-GoogLeNet", 42.5, 59, 6)]),
)

#: The nets fcnize casts that no paper reports (issue 21): the project's own recipe, nothing to
#: match. ``published`` gives none of their rows (an empty list, not an unknown model).
OWN_RECIPE = {f"fcn_resnet{d}_{s}s": "the project's own recipe (FCN-ResNet): no published number"
              for d in (50, 101, 152) for s in (32, 16, 8)}

#: Every model name the tables know: the released nets (port.models) and paper-only ones.
MODELS = tuple(sorted({
    "fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce", "fcn_alexnet",
    "siftflow_fcn32s", "siftflow_fcn16s", "siftflow_fcn8s",
    "nyud_fcn32s_color", "nyud_fcn32s_hha", "nyud_fcn32s_color_d", "nyud_fcn32s_color_hha",
    "pascalcontext_fcn32s", "pascalcontext_fcn16s", "pascalcontext_fcn8s",
} | {row.model for row in PUBLISHED} | set(OWN_RECIPE)))


def _check_model(model: str) -> None:
    if model not in MODELS:
        near = difflib.get_close_matches(model, MODELS, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else f"; known: {', '.join(MODELS)}"
        raise KeyError(f"no published numbers are kept for model {model!r}{hint}")


def published(model: str, split: str | None = None, *, weights: str | None = None,
              task: str | None = None) -> list[Published]:
    """The rows of ``model`` (optionally one ``split``, ``weights`` kind, ``task``) in table order.

    An empty list means the model is known but nothing was published for that choice.
    """
    _check_model(model)
    return [row for row in PUBLISHED
            if row.model == model and split in (None, row.split)
            and weights in (None, row.weights) and task in (None, row.task)]


def reference(model: str, split: str, *, task: str | None = None) -> Published | None:
    """The sharpest published target for the released weights of ``model`` on ``split``:
    most decimals first, then most metrics given, then checked before recalled; None if none."""
    rows = published(model, split, weights="released", task=task)
    if not rows:
        return None
    return max(rows, key=lambda row: (row.decimals,
                                      sum(v is not None for v in row.metrics().values()),
                                      row.source.status == "checked"))
