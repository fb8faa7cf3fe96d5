"""Whether a run reproduces a published number, and every reason it does not: the one rule
that evaluation (``reproduce.report``) and training (``reproduce.training.report``) report.

A published number (``port.models.tables``) is a net's weights scored over the papers' whole
split. A run reproduces it only when it has both halves:

- **the papers' split, whole**: the evaluated ids are the registry's list of that split
  (``reproduce.splits.SplitCheck``: count and digest of the ids), every image scored;
- **the weights the number was computed with**: the released caffemodel, recognised by the
  registry's digest (``released_weights``), or weights a complete upstream recipe produced
  (the recipe's schedule, full width, the released classifier as init, the papers' training
  list: what the training report checks and passes in as a ``WeightsCheck``).

Every other run says which it lacks, one line per reason (``reasons``), in ``report.json``'s
``not_a_reproduction`` and at the top of ``report.md`` (``markdown``); ``reproduction`` is true
only when the list is empty.

The nets cast from a classifier (``registry.CAST_BUILDERS``: FCN-GoogLeNet, FCN-ResNet) have no
released weights, so none of their runs is a reproduction; one line (``cast_reason``) stands for
both the weights and the published numbers. FCN-ResNet is the project's own recipe: no number
to match. FCN-GoogLeNet has the paper's Table 1 row, which the comparison shows; a complete run
of its recipe is compared with it but is no reproduction either, by the rule the VGG recipes
follow: a recipe's result stands for the published weights only when the recipe is the one
that computed them (upstream's ``solve.py`` and ``solver.prototxt``), and the paper gives only
part of FCN-GoogLeNet's (weight decay, loss normalisation, iterations, seed are the project's
choices: ``reproduce.training.recipes``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from port.hub import registry
from port.models import tables

__all__ = ["WeightsCheck", "released_weights", "weights_check", "recipe_check", "weights_reason",
           "cast_reason", "reasons", "verdict", "markdown"]


@dataclass(frozen=True)
class WeightsCheck:
    """Whether the weights are those the published numbers were computed with: ``matches``
    True (the released caffemodel, or a complete upstream recipe's result), False (other
    weights: ``description`` says what they lack) or None (not known)."""

    matches: bool | None
    description: str

    def as_dict(self) -> dict[str, Any]:
        return {"matches": self.matches, "description": self.description}


def released_weights(model: str, sha256: str) -> bool:
    """Whether ``sha256`` is the SHA-256 of ``model``'s released caffemodel as the registry
    knows it: published with the artifact, or recorded by an earlier verified download of it
    (``registry.HashStore``: a download checked against the published MD5, or the first one
    where nothing was published)."""
    if not sha256:
        return False
    try:
        artifact = registry.caffemodel_for(model)
    except LookupError:
        return False
    known = {d.sha256 for d in artifact.known if d.sha256}
    record = registry.HashStore().get(artifact.name)
    if record is not None:
        known.add(str(record["sha256"]))
    return sha256 in known


def weights_check(model: str | None, weights: str, sha256: str,
                  released: bool | None = None) -> WeightsCheck:
    """The check of evaluated weights against ``model``'s released caffemodel (``released``:
    already decided by whoever verified the file, e.g. a registry download; None: decided
    here from ``sha256``)."""
    if model is None:
        return WeightsCheck(None, f"weights {weights} not compared with any released "
                                  f"caffemodel (no model named)")
    if released is None:
        released = released_weights(model, sha256)
    if released:
        return WeightsCheck(True, f"the released weights of {model} (SHA-256 {sha256[:12]})")
    digest = f" (SHA-256 {sha256[:12]})" if sha256 else ""
    return WeightsCheck(False, f"weights {weights}{digest} are not the released caffemodel "
                               f"of {model} (its registry digest)")


def recipe_check(lacking: Sequence[str], weights: str,
                 recipe: str = "the upstream recipe") -> WeightsCheck:
    """The check of trained weights: a complete recipe's result when nothing is ``lacking``
    (each item one thing the run lacks, e.g. ``"6 of 100000 iterations"``, ``"width 1/16"``,
    ``"init not the released classifier"``, ``"not the papers' training list"``); ``recipe``
    names it (``reproduce.training.recipes.recipe_kind``)."""
    if not lacking:
        return WeightsCheck(True, f"{weights}: trained by {recipe} in full")
    return WeightsCheck(False, f"{weights}: not {recipe} in full (" + "; ".join(lacking) + ")")


def weights_reason(weights: Mapping[str, Any] | None) -> str | None:
    """The line a weights check adds to :func:`reasons` (None when the weights are the ones the
    published numbers came from): ``WeightsCheck.as_dict()``, None when not judged."""
    if weights is None:
        return ("NOT THE RELEASED WEIGHTS: the weights were checked neither against the "
                "released caffemodel nor against a complete upstream recipe")
    if not weights.get("matches"):
        return f"NOT THE RELEASED WEIGHTS: {weights['description']}"
    return None


def cast_reason(model: str, published: bool) -> str | None:
    """The one line of a net cast from a classifier (``registry.CAST_BUILDERS``), in place of
    the weights check's and the published numbers' lines (None for any other net): FCN-ResNet
    is the project's own recipe with no number to match; FCN-GoogLeNet has the paper's row
    (``tables``), which the comparison shows when ``published`` (a row of this split was
    compared), and which no run of it reproduces (the module's docstring says why)."""
    if model not in registry.CAST_BUILDERS:
        return None
    rows = tables.published(model, weights="original") if model in tables.MODELS else []
    if not rows:
        return (f"THE PROJECT'S OWN RECIPE: {model} is cast from an ILSVRC classifier by fcnize, "
                f"no paper reports it: no published number to match")
    row = rows[0]
    where = (f"{row.source.paper} {row.source.table}'s {row.label} row ({row.mean_iu:.{row.decimals}f} "
             f"mean IU on {row.split})")
    if published:
        return (f"NO RELEASED WEIGHTS: {model} was never released; the comparison shows {where}, "
                f"which a run compares with but never reproduces (the paper gives only part of "
                f"its recipe)")
    return (f"NO RELEASED WEIGHTS: {model} was never released; its one published number is "
            f"{where}, not of this split: nothing to compare with")


def reasons(*, split_check: Mapping[str, Any] | None, partial: str | None,
            weights: Mapping[str, Any] | None, published: bool, model: str,
            split: str, original: Sequence[str] = ()) -> list[str]:
    """Every reason a run is no reproduction of the published numbers, one line each (empty:
    it is one). ``split_check``: ``SplitCheck.as_dict()`` of the whole list; ``partial``: the
    line saying fewer images than the list holds were scored (None: all were); ``weights``:
    ``WeightsCheck.as_dict()`` (None: not judged, which is no reproduction either);
    ``published``: whether any published number was compared; ``original``: the sources of
    compared numbers that describe the paper's own nets, never released (``tables``' weights
    ``"original"``), which no weights reproduce."""
    out = []
    if split_check is not None and split_check.get("matches") is False:
        out.append(f"NOT LIKE FOR LIKE: {split_check['description']}")
    if partial:
        out.append(partial)
    cast = cast_reason(model, published)
    if cast:
        return out + [cast]
    lacking = weights_reason(weights)
    if lacking:
        out.append(lacking)
    if original:
        out.append(f"THE PAPER'S OWN NETS: the compared numbers ({'; '.join(original)}) are of "
                   f"the paper's nets, never released: no weights here are theirs")
    if not published:
        out.append(f"no published numbers for {model} on {split}: nothing to compare with")
    return out


def verdict(found: Sequence[str]) -> dict[str, Any]:
    """``report.json``'s verdict fields from ``reasons``' list."""
    return {"reproduction": not found, "not_a_reproduction": list(found)}


def markdown(found: Sequence[str]) -> list[str]:
    """The verdict at the top of ``report.md``: what the run reproduces, or every reason it
    does not, in bold."""
    if not found:
        return ["**Reproduction: the papers' whole split and the weights the published numbers "
                "were computed with.**", ""]
    return ["**Not a reproduction of the published numbers:**", "",
            *[f"- **{reason}**" for reason in found], ""]
