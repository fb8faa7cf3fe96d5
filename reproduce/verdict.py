"""Whether a run reproduces a published number, and every reason it does not: the one rule
that evaluation (``reproduce.report``) and training (``reproduce.training.report``) report.

A published number (``reproduce.tables``) is a net's weights scored over the papers' whole
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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from port.hub import registry

__all__ = ["WeightsCheck", "released_weights", "weights_check", "recipe_check", "weights_reason", "reasons",
           "verdict", "markdown"]


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


def recipe_check(lacking: Sequence[str], weights: str) -> WeightsCheck:
    """The check of trained weights: a complete upstream recipe's result when nothing is
    ``lacking`` (each item one thing the run lacks, e.g. ``"6 of 100000 iterations"``,
    ``"width 1/16"``, ``"init not the released classifier"``, ``"not the papers' training
    list"``)."""
    if not lacking:
        return WeightsCheck(True, f"{weights}: trained by the complete upstream recipe")
    return WeightsCheck(False, f"{weights}: not the complete upstream recipe ("
                               + "; ".join(lacking) + ")")


def weights_reason(weights: Mapping[str, Any] | None) -> str | None:
    """The line a weights check adds to :func:`reasons` (None when the weights are the ones the
    published numbers came from): ``WeightsCheck.as_dict()``, None when not judged."""
    if weights is None:
        return ("NOT THE RELEASED WEIGHTS: the weights were checked neither against the "
                "released caffemodel nor against a complete upstream recipe")
    if not weights.get("matches"):
        return f"NOT THE RELEASED WEIGHTS: {weights['description']}"
    return None


def reasons(*, split_check: Mapping[str, Any] | None, partial: str | None,
            weights: Mapping[str, Any] | None, published: bool, model: str,
            split: str) -> list[str]:
    """Every reason a run is no reproduction of the published numbers, one line each (empty:
    it is one). ``split_check``: ``SplitCheck.as_dict()`` of the whole list; ``partial``: the
    line saying fewer images than the list holds were scored (None: all were); ``weights``:
    ``WeightsCheck.as_dict()`` (None: not judged, which is no reproduction either);
    ``published``: whether any published number was compared."""
    out = []
    if split_check is not None and split_check.get("matches") is False:
        out.append(f"NOT LIKE FOR LIKE: {split_check['description']}")
    if partial:
        out.append(partial)
    lacking = weights_reason(weights)
    if lacking:
        out.append(lacking)
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
