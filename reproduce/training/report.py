"""What a finished training run reports: its final validation beside the published numbers
(``reproduce.report``'s report.json/report.md, the evaluation's own format) and ``curves.png``
(loss and mean IU against iteration, the published mean IU as a line)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from port.fileio import atomic_open

__all__ = ["write_train_report", "plot_curves", "NO_CURVES_NOTE"]

NO_CURVES_NOTE = ("curves.png not drawn: matplotlib is not installed (pip install "
                  "'fcn-port[plot]'); train_log.jsonl holds the numbers")


def plot_curves(path: Path, records: Sequence[dict], published_mean_iu: float | None,
                title: str) -> Path:
    """Loss per iteration (left axis) and validation mean IU in percent (right axis)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7.0, 4.0), dpi=100)
    ax = fig.subplots()
    ax.plot([r["iter"] for r in records], [r["loss"] for r in records], color="C0", lw=0.8,
            label="loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss", color="C0")
    right = ax.twinx()
    vals = [(r["iter"], 100.0 * r["val"]["mean_iu"]) for r in records if "val" in r]
    if vals:
        right.plot(*zip(*vals), "o-", color="C1", label="mean IU (val)")
    if published_mean_iu is not None:
        right.axhline(published_mean_iu, color="C3", ls="--", label=f"published {published_mean_iu:.1f}")
    right.set_ylabel("mean IU (%)", color="C1")
    right.set_ylim(0, 100)
    right.legend(loc="lower right", fontsize="small")
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", bbox_inches="tight")
    return path


def write_train_report(out: Path, recipe: Any, validator: Any, result: Any, records: Sequence[dict],
                       opts: Any, train: Any, val_reader: Any, device: Any,
                       world: int) -> dict[str, Any]:
    from port.run.devices import device_name
    from reproduce import report as R
    from reproduce.splits import check_split
    tasks = validator.tasks
    targets = R.published_targets(recipe.model, val_reader.split, [t.output for t in tasks])
    rows = R.compare(result.scores, targets)
    info = R.RunInfo(model=recipe.model, dataset=val_reader.name, dataset_path=str(val_reader.root),
                     split=val_reader.split, weights=str(out / "final.safetensors"),
                     weights_sha256="", device=str(device), device_name=device_name(device),
                     precision="strict-fp32", precision_description="training run's final validation",
                     world_size=world, split_size=len(val_reader.ids),
                     extra={"training": {"recipe": recipe.source, "iterations": records[-1]["iter"] if records else 0,
                                         "train": f"{train.reader.name} {train.reader.split} "
                                                  f"({train.size} images)",
                                         "train_list": train.list_record,
                                         "init": opts.init, "width_divisor": opts.width_divisor}},
                     split_check=check_split(val_reader.name, val_reader.split, val_reader.ids).as_dict())
    paths = R.write_report(out, result, info, tasks, rows)
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
