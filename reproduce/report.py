"""What an evaluation leaves behind: the console table, ``report.json``, ``report.md``, a plot
of per-class IU and colour overlays, all written atomically into the run's ``--out`` folder.

Numbers are percent, as the papers print them (``score.py`` prints fractions; both are in
``report.json``: ``metrics`` in percent, ``scores`` as ``reproduce.metrics.Scores.as_dict``).
A published value is "within tolerance" when ours differs by no more than half a unit of the
value's last printed decimal (its rounding) plus a small allowance for float summation order.
Where the net has a loss layer, ``score.py``'s loss (the mean per-image loss) is shown beside
the metrics, as a number (not percent); nobody published it, so it has no target.

The published numbers are over whole splits. A run that scored fewer images than its split
holds (``--limit``, or bad items skipped) is marked *partial* in the console, ``report.json``
(``partial: true``, ``reproduction: false``, ``all_within_tolerance: null``) and ``report.md``:
its rows still show the published values, but they are not a reproduction of them. The same
holds for a whole list that is not the split the numbers were published for: its identity
(``reproduce.splits.SplitCheck``: the count and digest of its ids against the registry's) is
recorded as ``split_check``, and when it differs the run is *not like for like*
(``like_for_like: false``). A reproduction also needs the weights the numbers were computed
with (``weights_check``: the released caffemodel by the registry's digest, or a complete
upstream recipe's result). ``not_a_reproduction`` lists every reason, one line each, and
report.md says them at its top (the rule: ``reproduce.verdict``).
"""
from __future__ import annotations

import json
import math
import platform
import textwrap
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

import port
from port.fileio import atomic_open, write_text_atomic
from reproduce.harness import EvalResult, Task
from reproduce.metrics import Scores
from port.models import tables
from reproduce import verdict
from reproduce.palette import VOID_LABEL, overlay, voc_palette

__all__ = ["METRICS", "LOSS", "Target", "published_targets", "Comparison", "RunInfo", "compare",
           "format_table", "is_partial", "coverage_text", "partial_warning", "like_for_like",
           "not_a_reproduction", "LEGEND", "NO_PLOT_NOTE", "has_matplotlib", "build_report",
           "write_report", "versions", "FLOAT_ORDER_SLACK"]

#: score.py's four numbers: (Scores attribute, label as the papers' tables print it).
METRICS = (("pixel_acc", "pixel acc."), ("mean_acc", "mean acc."), ("mean_iu", "mean IU"),
           ("fw_iu", "f.w. IU"))
#: ``score.py``'s loss, shown after the metrics (a mean per-image loss, not a percent).
LOSS = ("loss", "loss/image")
PERCENT = 100.0
#: Percentage points allowed beyond the published rounding: a strict-fp32 port differs from
#: Caffe's BLAS in summation order, which flips the argmax of a few near-tied pixels.
FLOAT_ORDER_SLACK = 0.02
_SIDE_BY_SIDE_OVERLAYS = "overlays"
#: The one legend line under every comparison table (console and report.md).
LEGEND = (f"legend: (checked) = read in the cited source, (recalled) = from a secondary "
          f"citation, not yet read in the source itself; tol. = the largest |delta| that counts "
          f"as agreeing (half a unit of the published value's last printed decimal + "
          f"{FLOAT_ORDER_SLACK} points for float summation order); within = |delta| <= tol.; "
          f"numbers in percent, loss per image")
#: Said instead of drawing per_class_iu.png where matplotlib (the ``plot`` extra) is missing.
NO_PLOT_NOTE = ("per_class_iu.png not drawn: matplotlib is not installed (pip install "
                "'fcn-port[plot]' to draw it); report.json and report.md hold every number")


@dataclass(frozen=True)
class Target:
    """One published value for a metric of one scored output, with its source."""

    output: str
    metric: str           # a METRICS attribute name
    value: float          # percent
    decimals: int         # decimals as printed in the source
    source: str
    weights: str = "released"  # the weights it was computed with (port.models.tables' kinds)

    @property
    def tolerance(self) -> float:
        return 0.5 * 10.0 ** -self.decimals + FLOAT_ORDER_SLACK


@dataclass(frozen=True)
class Comparison:
    """Ours beside one published value."""

    output: str
    metric: str
    ours: float
    published: float | None
    source: str
    tolerance: float | None
    weights: str = ""     # the published value's weights ("released", "original"); "" for none

    @property
    def delta(self) -> float | None:
        return None if self.published is None else self.ours - self.published

    @property
    def within(self) -> bool | None:
        return None if self.delta is None else abs(self.delta) <= self.tolerance

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(delta=self.delta, within_tolerance=self.within)
        return out


@dataclass
class RunInfo:
    """How the numbers were made (everything ``report.json`` records besides the scores)."""

    model: str
    dataset: str
    dataset_path: str
    split: str
    weights: str
    weights_sha256: str
    device: str
    device_name: str
    precision: str
    precision_description: str
    world_size: int = 1
    limit: int | None = None           # --limit, as given
    split_size: int | None = None      # images in the whole split (None: not known)
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    extra: dict[str, Any] = field(default_factory=dict)
    #: ``reproduce.splits.SplitCheck.as_dict()`` of the evaluated list (None: not checked)
    split_check: dict[str, Any] | None = None
    #: ``reproduce.verdict.WeightsCheck.as_dict()`` of the weights (None: not checked, which
    #: is no reproduction)
    weights_check: dict[str, Any] | None = None


def _table_task(output: str) -> str:
    """``port.models.tables``' task of a score blob: ``score_geo`` -> ``geo``; ``score`` -> ``""``."""
    return output.split("_", 1)[1] if "_" in output else ""


#: The tables of the paper's own (never released) nets that a report compares with where no
#: number of released weights is filed for the split: Table 1, the paper's comparison of the
#: classifiers it casts (FCN-AlexNet, FCN-VGG16, FCN-GoogLeNet on VOC 2011 val; issue 21), the
#: only numbers FCN-GoogLeNet has. The other tables of original nets stay out of comparisons.
COMPARED_ORIGINAL = (tables.CVPR_T1,)


def published_targets(model: str, split: str, outputs: Sequence[str]) -> list[Target]:
    """Every published value for the released weights of ``model`` on ``split``
    (``port.models.tables``; ``split`` in the tables' names: the reader's ``table_split``);
    where none was published for that split, the values of :data:`COMPARED_ORIGINAL`
    (``weights="original"``: the paper's own nets), which a comparison shows but which no
    weights here reproduce (``verdict.reasons``)."""
    if model not in tables.MODELS:
        return []
    targets = []
    for output in outputs:
        task = _table_task(output)
        rows = (tables.published(model, split, weights="released", task=task)
                or [row for row in tables.published(model, split, weights="original", task=task)
                    if row.source in COMPARED_ORIGINAL])
        targets += [Target(output, metric, value, row.decimals, str(row.source), row.weights)
                    for row in rows for metric, value in row.metrics().items() if value is not None]
    return targets


def _pct(value: float) -> float:
    return PERCENT * value


def compare(scores: dict[str, Scores], published: Iterable[Target]) -> list[Comparison]:
    """One row per published value, and a row without one for each metric nobody published."""
    rows, covered = [], set()
    for pub in published:
        if pub.output not in scores:
            continue
        ours = _pct(getattr(scores[pub.output], pub.metric))
        rows.append(Comparison(pub.output, pub.metric, ours, pub.value, pub.source, pub.tolerance,
                               pub.weights))
        covered.add((pub.output, pub.metric))
    for output, result in scores.items():
        for metric, _ in METRICS:
            if (output, metric) not in covered:
                rows.append(Comparison(output, metric, _pct(getattr(result, metric)), None, "", None))
        if result.loss is not None:
            rows.append(Comparison(output, LOSS[0], result.loss, None, "", None))
    order = {m: i for i, (m, _) in enumerate(METRICS + (LOSS,))}
    outputs = list(scores)
    return sorted(rows, key=lambda r: (outputs.index(r.output), order[r.metric]))


def _cell(value: float | None, fmt: str) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _rows_as_text(rows: Sequence[Comparison], several: bool) -> list[list[str]]:
    labels = dict(METRICS + (LOSS,))
    out, previous = [], None
    for r in rows:
        name = f"{r.output} {labels[r.metric]}" if several else labels[r.metric]
        ok = "" if r.within is None else ("yes" if r.within else "NO")
        # each metric once: a second published value of it goes on the next line, beside it
        first = (r.output, r.metric) != previous
        previous = (r.output, r.metric)
        out.append([name if first else "", _cell(r.ours, ".4f") if first else "",
                    _cell(r.published, ".4f"), _cell(r.delta, "+.4f"),
                    _cell(r.tolerance, ".3f"), ok, r.source])
    return out


_HEADER = ["metric", "ours", "published", "delta", "tol.", "within", "source"]


def format_table(rows: Sequence[Comparison], *, markdown: bool = False) -> str:
    """The side-by-side table: ours, published, delta, tolerance, within it, source."""
    several = len({r.output for r in rows}) > 1
    body = _rows_as_text(rows, several)
    if markdown:
        lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(x) for x in col) for col in zip(_HEADER, *body)]
    fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(_HEADER), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


def is_partial(info: RunInfo, result: EvalResult) -> bool:
    """Whether fewer images were scored than the whole split holds (``--limit``, or bad items
    skipped), so a comparison with the published numbers is no reproduction."""
    if info.split_size is None:
        return info.limit is not None
    return result.images < info.split_size


def coverage_text(info: RunInfo, result: EvalResult) -> str:
    """``"4 of 736 images of the split evaluated (--limit 4), 0 skipped"``."""
    of = "" if info.split_size is None else f" of {info.split_size}"
    limit = "" if info.limit is None else f" (--limit {info.limit})"
    total = info.split_size if info.split_size is not None else result.images
    return (f"{result.images}{of} {plural(total, 'image')} of the split evaluated{limit}, "
            f"{len(result.skipped)} skipped")


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``noun`` for one, else its plural (``many``, or ``noun + 's'``)."""
    return noun if n == 1 else (many or noun + "s")


def partial_warning(info: RunInfo, result: EvalResult) -> str:
    """The line saying that a partial run is not a reproduction of the published numbers."""
    return (f"PARTIAL: {coverage_text(info, result)} of {info.split}; the published numbers "
            f"are for the whole split, so this comparison is not a reproduction")


def like_for_like(info: RunInfo) -> bool | None:
    """Whether the evaluated list is the split of the published numbers: True (same ids as the
    registry's), False (other ids), None (no record of the split to check it against)."""
    return None if info.split_check is None else info.split_check.get("matches")


def not_a_reproduction(info: RunInfo, result: EvalResult,
                       rows: Sequence[Comparison]) -> list[str]:
    """Every reason the comparison is no reproduction of the published numbers, one line
    each; empty when it is one (the rule: ``reproduce.verdict.reasons``)."""
    return verdict.reasons(
        split_check=info.split_check,
        partial=partial_warning(info, result) if is_partial(info, result) else None,
        weights=info.weights_check, published=any(r.published is not None for r in rows),
        model=info.model, split=info.split,
        original=sorted({r.source for r in rows if r.published is not None and r.weights == "original"}))


def versions() -> dict[str, str | None]:
    """Versions of what computed the numbers."""
    cuda = torch.version.cuda if torch.cuda.is_available() else None
    cudnn = str(torch.backends.cudnn.version()) if cuda else None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "fcn-port": port.__version__, "cuda": cuda,
            "cudnn": cudnn, "platform": platform.platform()}


def build_report(result: EvalResult, info: RunInfo, tasks: Sequence[Task],
                 rows: Sequence[Comparison]) -> dict[str, Any]:
    """The content of ``report.json``."""
    outputs = {}
    for task in tasks:
        scores = result.scores[task.output]
        outputs[task.output] = {
            "classes": list(task.class_names),
            "metrics": {m: _pct(getattr(scores, m)) for m, _ in METRICS},
            "loss": scores.loss,
            "loss_layer": asdict(task.loss) if task.loss is not None else None,
            "per_class_iu": {c: (None if math.isnan(v) else _pct(v))
                             for c, v in zip(task.class_names, scores.per_class_iu)},
            "scores": scores.as_dict(),
        }
    info_d = asdict(info)
    extra = info_d.pop("extra")
    partial = is_partial(info, result)
    reasons = not_a_reproduction(info, result, rows)
    return {
        "format": "fcn-port-report/1", **info_d, **extra,
        "images": result.images, "images_evaluated": result.images, "skipped": result.skipped,
        "partial": partial, "like_for_like": like_for_like(info), **verdict.verdict(reasons),
        "resumed_from_images": result.resumed_from,
        "seconds": result.seconds,
        "images_per_second": result.images / result.seconds if result.seconds > 0 else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(), "outputs": outputs,
        "comparison": [r.as_dict() for r in rows],
        # a partial run, or another list, is not judged against whole-split numbers
        "all_within_tolerance": None if reasons else _all_within(rows),
    }


def _json_safe(value: Any) -> Any:
    """NaN/inf (a metric of an empty matrix) as JSON null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _all_within(rows: Sequence[Comparison]) -> bool | None:
    judged = [r.within for r in rows if r.within is not None]
    return all(judged) if judged else None


def _per_class_md(report: dict[str, Any]) -> list[str]:
    lines = []
    for output, part in report["outputs"].items():
        lines += ["", f"### Per-class IU ({output})", "", "| class | IU |", "|---|---|"]
        lines += [f"| {c} | {'' if v is None else f'{v:.2f}'} |"
                  for c, v in part["per_class_iu"].items()]
    return lines


def _loss_md(report: dict[str, Any]) -> list[str]:
    """One line per scored output with a loss layer: score.py's mean per-image loss."""
    lines = []
    for output, part in report["outputs"].items():
        layer = part.get("loss_layer")
        if layer is not None and part.get("loss") is not None:
            lines.append(f"- loss ({output}, mean per image as score.py): {part['loss']:.6f} "
                         f"(SoftmaxWithLoss `{layer['layer']}`, ignore_label "
                         f"{layer['ignore_label']}, normalization {layer['normalization']})")
    return lines


def _partial_md(report: dict[str, Any]) -> list[str]:
    """Why the table is no reproduction, in bold above it (nothing when it is one)."""
    lines = []
    check = report.get("split_check") or {}
    if report.get("like_for_like") is False:
        lines += [f"**Not like for like: {check['description']}. The published numbers are "
                  f"for the papers' list: this comparison is not a reproduction.**", ""]
    if report["partial"]:
        of = "" if report["split_size"] is None else f" of the {report['split_size']}"
        total = report["split_size"] or report["images_evaluated"]
        lines += [f"**Partial: {report['images_evaluated']}{of} {plural(total, 'image')} of "
                  f"{report['split']} "
                  f"evaluated. The published numbers are for the whole split: this comparison "
                  f"is not a reproduction.**", ""]
    return lines


def _check_md(report: dict[str, Any], key: str) -> list[str]:
    """The report.md line of a recorded check (``split_check``, ``weights_check``): its
    description; none when the run recorded no such check."""
    check = report.get(key)
    return [] if not check else [f"- {check['description']}"]


def format_markdown(report: dict[str, Any], rows: Sequence[Comparison],
                    plot: str | None, overlays: Sequence[str]) -> str:
    """``report.md``: settings, the side-by-side table, per-class IU, skipped items, images."""
    rate = report["images_per_second"]
    of = "" if report["split_size"] is None else f" of {report['split_size']} in the split"
    limit = "" if report["limit"] is None else f", --limit {report['limit']}"
    sha = report["weights_sha256"]
    lines = [f"# {report['model']} on {report['dataset']} {report['split']}", "",
             *verdict.markdown(report["not_a_reproduction"]),
             f"- images evaluated: {report['images_evaluated']}{of} "
             f"(skipped: {len(report['skipped'])}{limit})",
             f"- data: `{report['dataset_path']}`",
             *_check_md(report, "split_check"),
             f"- weights: `{report['weights']}`" + (f" (SHA-256 `{sha}`)" if sha else ""),
             *_check_md(report, "weights_check"),
             f"- device: {report['device']} ({report['device_name']}), "
             f"{report['world_size']} {plural(report['world_size'], 'process', 'processes')}",
             f"- precision: {report['precision']} ({report['precision_description']})",
             f"- time: {report['seconds']:.1f} s" + (f", {rate:.2f} img/s" if rate else ""),
             f"- torch {report['versions']['torch']}, fcn-port {report['versions']['fcn-port']}",
             *_loss_md(report),
             "", "## Ours and published (percent; loss per image)", "",
             *_partial_md(report),
             format_table(rows, markdown=True), "", LEGEND[0].upper() + LEGEND[1:] + "."]
    lines += _per_class_md(report)
    if report["skipped"]:
        lines += ["", "## Skipped bad items (--skip-bad)", ""]
        lines += [f"- `{s['id']}` `{s.get('path')}`: {s['error']}" for s in report["skipped"]]
    if plot:
        lines += ["", "## Per-class IU", "", f"![per-class IU]({plot})"]
    else:
        lines += ["", "## Per-class IU", "", NO_PLOT_NOTE + "."]
    if overlays:
        lines += ["", "## Overlays (image | ground truth | prediction, classes in the legend "
                  "below each)", ""]
        lines += [f"![{Path(o).stem}]({o})" for o in overlays]
    return "\n".join(lines) + "\n"


def plot_title(info: RunInfo, result: EvalResult, task: Task) -> str:
    """The per-class IU plot's title: what was evaluated, and over how much of the split (a
    partial run says so: its bars are not the split's)."""
    head = f"{info.model} on {info.dataset} {info.split}: per-class IU, {task.output}"
    if is_partial(info, result):
        of = "" if info.split_size is None else f" of {info.split_size}"
        return f"{head}\nPARTIAL: {result.images}{of} {plural(result.images, 'image')}"
    return f"{head}\n{result.images} {plural(result.images, 'image')}, the whole list"


def plot_per_class(path: Path, task: Task, scores: Scores, rows: Sequence[Comparison],
                   published_per_class: dict[str, float] | None = None,
                   title: str | None = None) -> Path:
    """Bar chart of our per-class IU, with the published per-class IU where the source gives
    it and the published mean IU as a line; ``title`` (default: the output's name); PNG, Agg
    backend, written atomically."""
    import matplotlib  # optional: pip install 'fcn-port[plot]'
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    ours = [_pct(v) if not math.isnan(v) else 0.0 for v in scores.per_class_iu]
    x = np.arange(task.num_classes)
    fig = Figure(figsize=(max(6.0, 0.35 * task.num_classes), 4.0), dpi=100)
    ax = fig.subplots()
    width = 0.4 if published_per_class else 0.8
    ax.bar(x - (width / 2 if published_per_class else 0), ours, width, label="ours")
    if published_per_class:
        pub = [published_per_class.get(c, np.nan) for c in task.class_names]
        ax.bar(x + width / 2, pub, width, label="published")
    ax.axhline(_pct(scores.mean_iu), color="C0", linestyle=":", label="ours mean IU")
    for row in rows:
        if row.output == task.output and row.metric == "mean_iu" and row.published is not None:
            ax.axhline(row.published, color="C3", linestyle="--",
                       label=textwrap.fill(f"published mean IU ({row.source})", 34))
            break
    ax.set_xticks(x, task.class_names, rotation=90)
    ax.set_ylabel("IU (%)")
    ax.set_ylim(0, PERCENT)
    ax.set_title(title or f"per-class IU, {task.output}")
    # Right of the axes: a trained net's bars reach the top wherever a legend inside would sit,
    # and below the class names it left an empty band whose height depends on the longest
    # name. savefig's tight bounding box takes it in.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        fig.savefig(handle, format="png", bbox_inches="tight")
    return path


#: Tiny images are enlarged (nearest neighbour, whole pixels) until their shorter side is at
#: least this many pixels, so that a 20-pixel test image or a small crop can be looked at.
MIN_OVERLAY_SIDE = 160
OVERLAY_CAPTIONS = ("image", "ground truth", "prediction")


def _font(size: int = 14) -> Any:
    try:
        return ImageFont.load_default(size=size)      # Pillow >= 10.1 with FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def compose_overlay(parts: dict[str, np.ndarray], class_names: Sequence[str],
                    captions: Sequence[str] = OVERLAY_CAPTIONS) -> np.ndarray:
    """One picture of an evaluated image: the image, the ground truth and the prediction
    blended with the VOC palette side by side (``harness`` keeps the three as ``parts``),
    enlarged to ``MIN_OVERLAY_SIDE``, a caption over each panel (``captions``: the demo names
    its columns image, released, ours) and a legend of the classes shown (their palette colour
    and name; void is left uncoloured: it is not scored)."""
    rgb = np.asarray(parts["image"], dtype=np.uint8)
    truth, pred = np.asarray(parts["truth"]), np.asarray(parts["prediction"])
    h, w = truth.shape
    k = max(1, math.ceil(MIN_OVERLAY_SIDE / max(1, min(h, w))))
    panels = [rgb, overlay(rgb, truth), overlay(rgb, pred)]
    body = np.concatenate([np.repeat(np.repeat(p, k, 0), k, 1) for p in panels], axis=1)
    font, width = _font(), body.shape[1]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = int(probe.textbbox((0, 0), "Ag", font=font)[3]) + 8
    present = sorted(set(np.unique(truth).tolist()) | set(np.unique(pred).tolist()))
    palette = voc_palette()
    entries = [(tuple(int(v) for v in palette[c]),
                class_names[c] if c < len(class_names) else f"class {c}")
               for c in present if c != VOID_LABEL]
    if VOID_LABEL in present:
        entries.append((None, "void (not scored, left uncoloured)"))
    # lay the legend out in rows that fit the width
    rows, x = [[]], 4
    for colour, name in entries:
        size = line - 8 + 4 + int(probe.textlength(name, font=font)) + 14
        if x + size > width and rows[-1]:
            rows.append([])
            x = 4
        rows[-1].append((x, colour, name))
        x += size
    canvas = Image.new("RGB", (width, line + body.shape[0] + line * len(rows) + 4), "white")
    canvas.paste(Image.fromarray(body), (0, line))
    draw = ImageDraw.Draw(canvas)
    panel = w * k
    for i, caption in enumerate(captions):
        text_w = probe.textlength(caption, font=font)
        draw.text((i * panel + max(0.0, (panel - text_w) / 2), 3), caption, fill="black", font=font)
    top = line + body.shape[0] + 4
    swatch = line - 8
    for r, row in enumerate(rows):
        y = top + r * line
        for x, colour, name in row:
            box = (x, y, x + swatch, y + swatch)
            if colour is None:
                draw.rectangle(box, outline="black")
            else:
                draw.rectangle(box, fill=colour, outline="black")
            draw.text((x + swatch + 4, y - 1), name, fill="black", font=font)
    return np.asarray(canvas)


def write_overlays(out_dir: Path, overlays: dict[str, Any],
                   class_names: Sequence[str] = ()) -> list[str]:
    """The overlays as PNGs under ``out_dir/overlays``; their relative paths. A value is
    either the parts ``compose_overlay`` draws or an RGB array written as it is."""
    written = []
    for item_id in sorted(overlays):
        value = overlays[item_id]
        picture = compose_overlay(value, class_names) if isinstance(value, dict) else value
        rel = f"{_SIDE_BY_SIDE_OVERLAYS}/{item_id.replace('/', '__')}.png"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(out_dir / rel) as handle:
            Image.fromarray(picture).save(handle, format="PNG")
        written.append(rel)
    return written


def write_report(out_dir: str | Path, result: EvalResult, info: RunInfo, tasks: Sequence[Task],
                 rows: Sequence[Comparison],
                 published_per_class: dict[str, float] | None = None) -> dict[str, Path]:
    """Write report.json, report.md, the per-class IU plot (skipped, with ``NO_PLOT_NOTE``, where
    matplotlib is not installed: it is the optional ``plot`` extra) and the overlays; their
    paths (``plot``: None when skipped)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(result, info, tasks, rows)
    plot: Path | None = out / "per_class_iu.png"
    if has_matplotlib():
        plot_per_class(plot, tasks[0], result.scores[tasks[0].output], rows, published_per_class,
                       plot_title(info, result, tasks[0]))
    else:
        plot = None
    overlays = write_overlays(out, result.overlays, tasks[0].class_names)
    report["files"] = {"plot": plot.name if plot else None, "overlays": overlays}
    paths = {"json": out / "report.json", "md": out / "report.md", "plot": plot}
    write_text_atomic(paths["json"], json.dumps(_json_safe(report), indent=1, allow_nan=False)
                      + "\n")
    write_text_atomic(paths["md"], format_markdown(report, rows, plot.name if plot else None,
                                                   overlays))
    return paths


def has_matplotlib() -> bool:
    """Whether the optional plot dependency (``pip install 'fcn-port[plot]'``) is there."""
    try:
        import matplotlib  # noqa: F401  (optional: this is the check)
    except ImportError:
        return False
    return True
