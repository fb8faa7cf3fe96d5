"""What a finished training run reports: its final validation beside the published numbers
(``reproduce.report``'s report.json/report.md, the evaluation's own format, with a
``training`` record and the training verdict) and ``curves.png`` (loss and mean IU against
iteration, the published mean IU as a line).

A training run is a reproduction of an upstream recipe only when it ran the whole recipe
(:func:`training_shortfalls`): the recipe's schedule (its iterations and passes an iteration),
full width, the recipe's init (the released ILSVRC classifier fetched through the registry or a
file of its recorded digest; for a later stage, the previous stage's final weights that are
themselves a reproduction), the recipe's VOC year where it names one (FCN-GoogLeNet: VOC2011;
:func:`year_shortfall`) and the papers' training list (where a digest of it is on record).
Every shortfall is a line of ``not_a_reproduction`` and of the top of report.md; the final
weights carry them in their metadata (``TRAINING_VERDICT``), so the next stage inherits them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from port.fileio import atomic_open, write_text_atomic
from port.run.devices import device_name
from port.weights import read_metadata, sha256_file
from port.hub import registry
from reproduce import report as R
from reproduce import verdict
from port.hub.registry import split_digest
from reproduce.splits import check_split, papers_ids
from reproduce.training.recipes import TRAIN_BATCHNORM, get_recipe, recipe_kind

__all__ = ["write_train_report", "plot_curves", "curves_figure", "NO_CURVES_NOTE", "training_shortfalls",
           "TRAINING_VERDICT", "papers_list_match", "year_shortfall"]

NO_CURVES_NOTE = ("curves.png not drawn: matplotlib is not installed (pip install "
                  "'fcn-port[plot]'); train_log.jsonl holds the numbers")
#: The metadata key of a training run's weights: the JSON list of its shortfalls.
TRAINING_VERDICT = "not_a_reproduction"


def curves_figure(records: Sequence[dict], published_mean_iu: float | None, title: str) -> Any:
    """The matplotlib ``Figure`` of :func:`plot_curves`: loss per iteration (left axis) and
    validation mean IU in percent (right axis), one legend naming every line."""
    import matplotlib  # optional: pip install 'fcn-port[plot]'
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7.0, 4.0), dpi=100)
    ax = fig.subplots()
    ax.plot([r["iter"] for r in records], [r["loss"] for r in records], color="C0", lw=0.8,
            label="loss (train)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss", color="C0")
    right = ax.twinx()
    vals = [(r["iter"], 100.0 * r["val"]["mean_iu"]) for r in records if "val" in r]
    if vals:
        right.plot(*zip(*vals), "o-", color="C1", label="mean IU (val, %)")
    if published_mean_iu is not None:
        right.axhline(published_mean_iu, color="C3", ls="--",
                      label=f"published {published_mean_iu:.1f} %")
    right.set_ylabel("mean IU (%)", color="C1")
    right.set_ylim(0, 100)
    # the twin axes each hold their own lines: one legend gathers both
    lines, labels = ax.get_legend_handles_labels()
    more_lines, more_labels = right.get_legend_handles_labels()
    right.legend(lines + more_lines, labels + more_labels, loc="lower right", fontsize="small")
    ax.set_title(title)
    return fig


def plot_curves(path: Path, records: Sequence[dict], published_mean_iu: float | None,
                title: str) -> Path:
    """``curves.png`` (:func:`curves_figure`), written atomically."""
    fig = curves_figure(records, published_mean_iu, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", bbox_inches="tight")
    return path


def papers_list_match(list_record: dict[str, Any]) -> bool | None:
    """Whether a training list is the papers' (upstream's): True for the lists shipped with
    fcn-port (their SHA-256 checked on reading) or a dataset's own list of the same ids,
    False for other ids, None where no record of the papers' list is kept (SBD train, VOC2010
    train: the dataset archives' own lists)."""
    if list_record.get("kind") == "shipped":
        return True
    ids = papers_ids(list_record.get("dataset"), list_record.get("split"))
    return None if ids is None else split_digest(ids) == list_record.get("ids_sha256")


def _init_shortfalls(recipe: Any, opts: Any, init_record: dict[str, Any]) -> list[str]:
    sources = init_record.get("sources", [])
    if recipe.init.kind == "classifier":
        artifact = registry.get(recipe.init.sources[0])
        if opts.init == "auto":
            return []
        known = {d.sha256 for d in artifact.known if getattr(d, "sha256", None)}
        digests = {s.get("sha256") for s in sources}
        if known and digests <= known:
            return []
        return [f"{opts.init} is not the released classifier {artifact.filename} "
                f"(--init auto fetches it{'' if known else '; no digest on record to recognise a copy'})"]
    out = []
    for source in sources:
        recorded = source.get("verdict")
        if recorded is None:
            out.append(f"{source['file']} records no training verdict (not the final weights "
                       f"of a training run of {', '.join(recipe.init.sources)})")
        elif recorded:
            out.append(f"{source['file']} is not a reproduction: {'; '.join(recorded)}")
    return out


def year_shortfall(recipe: Any, years: Mapping[str, str | None] | None) -> str | None:
    """The one line of a run whose VOC folders are not of the recipe's ``year`` (None: they
    are, or the recipe names none). ``years``: the year each reader read, ``{"train": ...,
    "val": ...}`` (the readers' ``year``; None where the dataset has no year folders)."""
    wanted = get_recipe(recipe.model).year
    if wanted is None or not years:
        return None
    read = [(what, split, years.get(role)) for role, what, split in
            (("train", "trained on", recipe.train_split), ("val", "validated on", recipe.val_split))]
    other = [f"{what} VOC{year} {split}" for what, split, year in read
             if year is not None and year != wanted]
    if not other:
        return None
    return (f"DATA: {' and '.join(other)}; {recipe_kind(recipe.model)} used VOC{wanted} "
            f"(no VOC{wanted} folder found under --data)")


def training_shortfalls(recipe: Any, opts: Any, total: int, world: int,
                        init_record: dict[str, Any], list_record: dict[str, Any],
                        skipped: dict[str, list],
                        years: Mapping[str, str | None] | None = None) -> list[str]:
    """What the run lacks of a complete upstream recipe, one line each (empty: it ran one);
    ``years``: the VOC year each reader read (:func:`year_shortfall`)."""
    upstream = get_recipe(recipe.model)
    reasons = []
    if total != upstream.iterations:
        reasons.append(f"SCHEDULE: {total} iterations, the recipe runs {upstream.iterations}")
    passes = recipe.solver.iter_size * world
    if passes != upstream.solver.iter_size:
        reasons.append(f"SCHEDULE: {passes} passes an iteration, the recipe's iter_size is "
                       f"{upstream.solver.iter_size}")
    if int(opts.width_divisor) != 1:
        reasons.append(f"WIDTH: the net at 1/{opts.width_divisor} width, the recipe trains it "
                       f"at full width")
    if getattr(opts, "train_batchnorm", False):
        reasons.append(f"BATCHNORM: {TRAIN_BATCHNORM} trained it on batch statistics, the recipe "
                       f"freezes it at the classifier's: another recipe")
    reasons += [f"INIT: {r}" for r in _init_shortfalls(recipe, opts, init_record)]
    data = year_shortfall(recipe, years)
    if data:
        reasons.append(data)
    if papers_list_match(list_record) is False:
        reasons.append(f"TRAINING LIST: {list_record['dataset']} {list_record['split']} of "
                       f"{list_record['images']} images is not the papers' list")
    left_out = len(skipped.get("train", []))
    if left_out:
        reasons.append(f"TRAINING LIST: {left_out} bad items left out (--skip-bad)")
    return reasons


def init_sources_with_digests(init_record: dict[str, Any]) -> dict[str, Any]:
    """The init record with each source file's SHA-256 and, for a training run's weights,
    its verdict (``TRAINING_VERDICT`` in its metadata)."""
    sources = []
    for source in init_record.get("sources", []):
        path = Path(source["file"])
        entry = {**source, "sha256": sha256_file(path) if path.is_file() else None}
        if path.suffix == ".safetensors" and path.is_file():
            recorded = read_metadata(path).get(TRAINING_VERDICT)
            entry["verdict"] = None if recorded is None else json.loads(recorded)
        sources.append(entry)
    return {**init_record, "sources": sources}


def _md_verdict(reasons: Sequence[str], kind: str = "the upstream recipe") -> list[str]:
    """The top of report.md: what the run lacks of its recipe (``recipe_kind``; nothing when
    it lacks nothing)."""
    if not reasons:
        return []
    return [f"**Not a reproduction of {kind}:**", "", *[f"- {r}" for r in reasons], ""]


def _md_training(training: dict[str, Any]) -> list[str]:
    """The report.md section of the training itself."""
    files = "; ".join(f"`{s['file']}` (SHA-256 `{s.get('sha256')}`)" for s in training["init_sources"])
    init = f"auto: {files}" if training["init"] == "auto" else (files or f"`{training['init']}`")
    tl = training["train_list"]
    match = {True: "the papers' list", False: "NOT the papers' list",
             None: "no record of the papers' list to check it against"}[training["papers_list"]]
    passes = training["passes_per_iteration"]
    skipped = training["skipped"]
    left_out = [f"{len(v)} {k}" for k, v in skipped.items() if v]
    return ["## Training", "",
            f"- iterations: {training['iterations']} (recipe: {training['recipe_iterations']}), "
            f"{passes} {R.plural(passes, 'pass', 'passes')} an iteration",
            f"- init: {init}",
            f"- width: 1/{training['width_divisor']}" if training["width_divisor"] != 1
            else "- width: full",
            *([f"- BatchNorm: {training['batchnorm']}"] if training.get("batchnorm") else []),
            *(["- VOC year: " + ", ".join(f"{k} VOC{v}" for k, v in training["voc_years"].items()
                                           if v)] if any((training.get("voc_years") or {}).values())
              else []),
            f"- training list: {tl['dataset']} {tl['split']}, {tl['images']} images (ids "
            f"SHA-256 `{tl['ids_sha256']}`): {match}",
            *([f"- left out by --skip-bad: {', '.join(left_out)} (init.json lists them)"]
              if left_out else []),
            f"- recipe: {training['recipe']}", ""]


def write_train_report(out: Path, recipe: Any, validator: Any, result: Any, records: Sequence[dict],
                       opts: Any, train: Any, val_reader: Any, device: Any, world: int,
                       skipped: dict[str, list], init_record: dict[str, Any],
                       shortfalls: Sequence[str]) -> dict[str, Any]:
    """report.json / report.md of the final validation (``reproduce.report``), the training
    record and verdict put first, and curves.png."""
    tasks = validator.tasks
    targets = R.published_targets(recipe.model, val_reader.table_split, [t.output for t in tasks])
    rows = R.compare(result.scores, targets)
    final = out / "final.safetensors"
    # trained weights stand for the published ones only as a complete upstream recipe's result
    kind = recipe_kind(recipe.model)
    weights = verdict.recipe_check(shortfalls, str(final), kind)
    training = {"recipe": recipe.source, "iterations": records[-1]["iter"] if records else 0,
                "recipe_iterations": get_recipe(recipe.model).iterations,
                "passes_per_iteration": recipe.solver.iter_size * world,
                "train": f"{train.reader.name} {train.reader.split} ({train.size} images)",
                "train_list": train.list_record, "papers_list": papers_list_match(train.list_record),
                "init": opts.init, "init_sources": init_record.get("sources", []),
                "width_divisor": opts.width_divisor, "skip_bad": bool(opts.skip_bad),
                "train_batchnorm": bool(getattr(opts, "train_batchnorm", False)),
                "batchnorm": init_record.get("batchnorm"),
                "voc_years": init_record.get("voc_years"),
                "skipped": skipped, "not_a_reproduction": list(shortfalls)}
    info = R.RunInfo(model=recipe.model, dataset=val_reader.name, dataset_path=str(val_reader.root),
                     split=val_reader.split, weights=str(final), weights_sha256=sha256_file(final),
                     device=str(device), device_name=device_name(device),
                     precision="strict-fp32", precision_description="training run's final validation",
                     world_size=world, split_size=len(val_reader.ids) + len(skipped.get("val", [])),
                     extra={"training": training}, weights_check=weights.as_dict(),
                     split_check=check_split(val_reader.name, val_reader.split, val_reader.ids).as_dict())
    paths = R.write_report(out, result, info, tasks, rows)
    # the training's shortfalls come first in the verdict and at the top of report.md, each on
    # its own line, in place of the evaluation's one line that sums them up
    report = json.loads(paths["json"].read_text())
    summed_up = verdict.weights_reason(weights.as_dict())
    reasons = list(shortfalls) + [r for r in report.get("not_a_reproduction", []) if r != summed_up]
    report.update(verdict.verdict(reasons))
    if reasons:
        report["all_within_tolerance"] = None
    write_text_atomic(paths["json"], json.dumps(report, indent=1) + "\n")
    md = paths["md"].read_text().split("\n")
    table = next((i for i, line in enumerate(md) if line.startswith("## ")), len(md))
    write_text_atomic(paths["md"], "\n".join(md[:2] + _md_verdict(shortfalls, kind) + md[2:table]
                                             + _md_training(training) + md[table:]))
    published = next((r.published for r in rows if r.output == tasks[0].output
                      and r.metric == "mean_iu" and r.published is not None), None)
    curves = None
    if R.has_matplotlib():
        curves = plot_curves(out / "curves.png", records, published,
                             f"{recipe.model.replace('_', '-')} training")
    else:
        print(NO_CURVES_NOTE)
    return {"report": str(paths["md"]), "report_json": str(paths["json"]),
            "curves": str(curves) if curves else None,
            "mean_iu": float(result.scores[tasks[0].output].mean_iu)}
