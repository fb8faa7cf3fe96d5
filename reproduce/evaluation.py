"""One evaluation, built the same way for ``python -m reproduce`` and for training's
validation, as upstream's ``score.seg_tests`` serves ``solve.py`` and testing alike.

An evaluation (``harness.EvalSpec``) is: the net's predictor, the opened dataset, its ids (up
to ``--limit``), one ``Task`` per scored output (the label map it is scored against and its
classes: properties of the dataset class, ``reproduce.datasets``), the run's identity (what a
checkpoint must match), the item loader and the colour inverse for overlays. ``for_model``
builds it for a released net from its ``port.models`` metadata; ``for_net`` for a user's
Caffe net from its prototxt; both through ``build``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from reproduce import harness as H
from reproduce import resolve as R
from reproduce.checkpoint import RunIdentity
from reproduce.datasets import dataset_class

__all__ = ["build", "for_model", "for_net", "model_reader_options", "net_reader_options",
           "limited_ids"]


def limited_ids(dataset: Any, limit: int | None) -> list[str]:
    """The dataset's ids in split order, the first ``limit`` of them (``--limit``)."""
    if limit is not None and limit < 1:
        raise R.ResolveError(f"--limit must be at least 1, got {limit}")
    return list(dataset.ids[:limit] if limit else dataset.ids)


def build(predict: H.Predictor, dataset: Any, *, outputs: Sequence[str], model: str,
          weights_sha256: str, preprocess: Mapping[str, Callable[..., np.ndarray]],
          precision: str, classes: Mapping[str, Sequence[str]] | None = None,
          losses: Mapping[str, H.LossSpec | None] | None = None, limit: int | None = None,
          label_input: bool = False) -> H.EvalSpec:
    """The evaluation of ``outputs`` of a net on ``dataset`` (an opened reader).

    ``classes``: the class names of each output (default: the dataset's of its label map);
    ``losses``: the loss layer on each output; ``preprocess``: {input blob: preprocessing};
    ``label_input``: the net also takes the label as its ``label`` input (a val prototxt)."""
    classes, losses = classes or {}, losses or {}
    tasks = []
    for output in outputs:
        key = dataset.label_key(output)
        tasks.append(H.Task(output, key, tuple(classes.get(output) or dataset.classes_for(key)),
                            losses.get(output)))
    tasks = tuple(tasks)
    identity = RunIdentity(model, dataset.name, dataset.split, weights_sha256,
                           R.preprocessing_identity(dataset.name, list(preprocess.values())),
                           precision, tuple((t.output, t.num_classes) for t in tasks))
    load = R.load_item_with_label_blob if label_input else R.load_item
    return H.EvalSpec(predict, dataset, limited_ids(dataset, limit), tasks, identity, load,
                      R.colour_inverse(preprocess))


def model_reader_options(meta: Any, dataset: str) -> dict[str, Any]:
    """What the reader of ``dataset`` needs to feed released net ``meta`` (NYUD: which
    modality each input blob takes)."""
    return dataset_class(dataset).reader_options(meta.inputs, meta.preprocess)


def net_reader_options(dataset: str, input_names: Sequence[str]) -> dict[str, Any]:
    """What the reader of ``dataset`` needs to feed a user's net with these input blobs
    (:func:`for_net`'s preprocessing: NYUD, the modality of each blob named after one)."""
    reader = dataset_class(dataset)
    preprocess = reader.preprocessing(input_names)
    return reader.reader_options(list(preprocess), list(preprocess.values()))


def for_model(meta: Any, runner: Any, dataset: Any, *, weights_sha256: str, precision: str,
              limit: int | None = None) -> H.EvalSpec:
    """A released net's evaluation: its outputs, classes and loss layers from its
    ``port.models`` metadata (``ModelMeta``), ``runner`` the prepared net."""
    return build(H.ModelPredictor(runner, meta.inputs, meta.outputs), dataset,
                 outputs=meta.outputs, model=meta.name, weights_sha256=weights_sha256,
                 preprocess=dict(zip(meta.inputs, meta.preprocess)), precision=precision,
                 classes=dict(zip(meta.outputs, meta.classes)),
                 losses={o: H.meta_loss_spec(meta, o) for o in meta.outputs}, limit=limit)


def for_net(netdef: Any, runner: Any, input_names: Sequence[str], dataset: Any, *, model: str,
            weights_sha256: str, precision: str, outputs: Sequence[str] | None = None,
            limit: int | None = None) -> H.EvalSpec:
    """A user's Caffe net's evaluation: ``outputs`` (default: the dataset's score blobs),
    each with the net's own ``SoftmaxWithLoss`` on it (``harness.net_loss_specs``), the
    label fed to its ``label`` input where it has one."""
    outputs = list(outputs or dataset.score_blobs)
    return build(H.CaffeNetPredictor(runner, outputs), dataset, outputs=outputs, model=model,
                 weights_sha256=weights_sha256,
                 preprocess=dataset.preprocessing(input_names), precision=precision,
                 losses=H.net_loss_specs(netdef, outputs), limit=limit,
                 label_input="label" in input_names)
