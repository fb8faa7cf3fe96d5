"""Helpers several test files share, written once (issue 20 item 5). Fixtures live in
conftest.py; these are plain functions, imported as ``from helpers import ...`` (this folder is
on sys.path beside conftest.py, as for ``train_trees``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from port.caffe import load_caffemodel, load_net
from port.cli.selfcheck import randomize
from port.models import get_model
from port.net.engine import CaffeNet

#: The size of the small runs of a released net: the odd height gives the ceil-rounded
#: poolings a clipped last window.
SIZE = (37, 50)


def upsample_filt(size: int) -> np.ndarray:
    """fcn.berkeleyvision.org surgery.upsample_filt, as upstream writes it (float64)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


def rel_err(got, ref) -> float:
    """max |got - ref| / max |ref| in float64 (tensors or arrays; a zero reference counts 1e-30)."""
    got, ref = _float64(got), _float64(ref)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def _float64(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, of any dtype or device
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def tiny(name: str = "fcn8s", seed: int = 3, **kw):
    """A released net at 1/16 width with random weights (selfcheck's ``randomize``), in eval mode."""
    return randomize(get_model(name, width_divisor=16, **kw), seed=seed).eval()


def data(seed: int = 0, size: tuple[int, int] = SIZE):
    """A seeded random image batch of one, ``(1, 3, *size)``, of the scale of mean-subtracted pixels."""
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed)) * 50


def train_log(out: Path) -> list[dict]:
    """A training run's ``train_log.jsonl`` in ``out``, one record a line."""
    return [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]


def golden_net(goldens_dir: Path, name: str):
    """A caffe-goldens net (its ``net.prototxt``, else its ``deploy.prototxt``) with the golden
    weights loaded, in eval mode."""
    folder = goldens_dir / name
    prototxt = folder / "net.prototxt"
    net = CaffeNet(load_net(prototxt if prototxt.exists() else folder / "deploy.prototxt"))
    net.load_blobs(load_caffemodel(folder / "weights.caffemodel"))
    return net.eval()


#: A net whose prototxt names its own ``state { stage }``: its Python data layer is left out by
#: that stage and an Input layer stands in (the data layers to size are the built net's).
OWN_STAGE_NET = """name: "own-stage"
state { stage: "deploy" }
layer { name: "data" type: "Python" top: "data" top: "label" include { not_stage: "deploy" }
  python_param { module: "voc_layers" layer: "VOCSegDataLayer" } }
layer { name: "input" type: "Input" top: "data" include { stage: "deploy" }
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 2 kernel_size: 3 } }
"""
