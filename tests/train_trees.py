"""Tiny dataset trees (written with pillow and scipy.io.savemat, in each dataset's own layout)
and init weights, for the dataset and training tests (not a test module).

Each ``make_*`` returns the dataset folder and the raw values it wrote, so that a test can
compute what the upstream data layer would read from them."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io
from PIL import Image

#: Image sizes for the training trees: FCN-sized inputs stay tiny (~30-50 px).
TRAIN_SIZES = ((34, 40), (38, 46), (42, 36), (36, 50), (40, 44))


def _rng(rng):
    return np.random.default_rng(0) if rng is None else rng


def rgb(rng, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def save_jpg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)


def write_split(path: Path, ids: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(ids))  # no trailing newline, like the upstream split files


def make_siftflow(root: Path, sizes: Sequence[tuple[int, int]] = TRAIN_SIZES, rng=None,
                  splits: Sequence[str] = ("test",)):
    """``SiftFlowDataset/`` (Images, SemanticLabels, GeoLabels under SUBDIR; field ``S``) with
    every image in each list of ``splits``; raw: id -> (sem, geo) as written."""
    from reproduce.datasets.siftflow import SUBDIR
    rng = _rng(rng)
    folder = root / "SiftFlowDataset"
    raw = {}
    for i, (h, w) in enumerate(sizes):
        image_id = f"coast_n{i}"
        save_jpg(folder / "Images" / SUBDIR / f"{image_id}.jpg", rgb(rng, h, w))
        sem = rng.integers(0, 34, size=(h, w)).astype(np.float64)   # 0 void, 1..33
        geo = rng.integers(-1, 4, size=(h, w)).astype(np.int16)     # -1 void, 1..3
        for kind, value in (("SemanticLabels", sem), ("GeoLabels", geo)):
            (folder / kind / SUBDIR).mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(folder / kind / SUBDIR / f"{image_id}.mat", {"S": value})
        raw[image_id] = (sem, geo)
    for split in splits:
        write_split(folder / f"{split}.txt", list(raw))
    return folder, raw


def make_nyud(root: Path, sizes: Sequence[tuple[int, int]] = TRAIN_SIZES, rng=None,
              splits: Sequence[str] = ("test",)):
    """``nyud/`` (data/images, data/hha, data/depth PNGs, segmentation/*.mat) with every image
    in each list of ``splits``; raw: id -> (depth, segmentation) as written."""
    rng = _rng(rng)
    folder = root / "nyud"
    raw = {}
    for sub in ("images", "hha", "depth"):
        (folder / "data" / sub).mkdir(parents=True, exist_ok=True)
    (folder / "segmentation").mkdir(exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        image_id = f"{5001 + i:04d}"
        Image.fromarray(rgb(rng, h, w)).save(folder / "data" / "images" / f"img_{image_id}.png")
        Image.fromarray(rgb(rng, h, w)).save(folder / "data" / "hha" / f"img_{image_id}.png")
        depth = rng.integers(500, 10000, size=(h, w)).astype(np.uint16)
        Image.fromarray(depth).save(folder / "data" / "depth" / f"img_{image_id}.png")
        seg = rng.integers(0, 41, size=(h, w)).astype(np.uint16)
        scipy.io.savemat(folder / "segmentation" / f"img_{image_id}.mat", {"segmentation": seg})
        raw[image_id] = (depth, seg)
    for split in splits:
        write_split(folder / f"{split}.txt", list(raw))
    return folder, raw


def context_class_lists(folder: Path, rng=None) -> tuple[list[str], list[str]]:
    """``labels.txt`` / ``59_labels.txt`` in the Context download's names in ``folder``: the
    59 task classes, and a full list of them (three under the full list's spelling) shuffled
    with decoy names. Returns (full names, task names) in file order."""
    from reproduce.datasets import CONTEXT_CLASSES
    rng = _rng(rng)
    task_names = list(CONTEXT_CLASSES[1:])
    renamed = [{"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}.get(n, n)
               for n in task_names]
    full_names = renamed + ["clothestree", "pooltable", "tableware", "accordion"]
    full_names = [full_names[i] for i in rng.permutation(len(full_names))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.txt").write_text("".join(f"{i}: {n}\n" for i, n in enumerate(full_names, 1)))
    (folder / "59_labels.txt").write_text("".join(f"{i}: {n}\n" for i, n in enumerate(task_names, 1)))
    return full_names, task_names


def make_context(root: Path, n_full: int, sizes: Sequence[tuple[int, int]] = TRAIN_SIZES,
                 rng=None, splits: Sequence[str] = ("val",)):
    """``pascal-context/trainval/<id>.mat`` (``LabelMap``, ids 0..n_full of the full list) and
    ``VOCdevkit/VOC2010`` (JPEGImages, ImageSets/Main/<split>.txt with every image); returns
    (context folder, VOC2010 folder, raw: id -> LabelMap)."""
    rng = _rng(rng)
    context = root / "pascal-context"
    voc = root / "VOCdevkit" / "VOC2010"
    (context / "trainval").mkdir(parents=True, exist_ok=True)
    raw = {}
    for i, (h, w) in enumerate(sizes):
        image_id = f"2008_{i:06d}"
        save_jpg(voc / "JPEGImages" / f"{image_id}.jpg", rgb(rng, h, w))
        raw[image_id] = rng.integers(0, n_full + 1, size=(h, w)).astype(np.uint16)
        scipy.io.savemat(context / "trainval" / f"{image_id}.mat", {"LabelMap": raw[image_id]})
    for split in splits:
        write_split(voc / "ImageSets" / "Main" / f"{split}.txt", list(raw))
    return context, voc, raw


def make_sbd_voc(root: Path, n_train: int = 5, n_val: int = 3, seed: int = 0) -> Path:
    """SBD ``benchmark_RELEASE/dataset`` (img/, cls/*.mat GTcls, train.txt) and VOC2011 with a
    seg11valid.txt of its own, images ~40x50 of a few classes and void borders."""
    rng = np.random.default_rng(seed)
    sbd = root / "benchmark_RELEASE" / "dataset"
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    train = [f"2008_{i:06d}" for i in range(n_train)]
    for i, image_id in enumerate(train):
        h, w = 38 + 2 * (i % 3), 48 + 2 * (i % 2)
        label = _label(rng, h, w, 21)
        _image(rng, label).save(sbd / "img" / f"{image_id}.jpg", quality=95)
        scipy.io.savemat(sbd / "cls" / f"{image_id}.mat", {"GTcls": {"Segmentation": label,
                                                                     "Boundaries": np.zeros(1)}})
    (sbd / "train.txt").write_text("\n".join(train) + "\n")
    voc = root / "VOCdevkit" / "VOC2011"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    val = [f"2011_{i:06d}" for i in range(n_val)]
    from reproduce.palette import voc_palette
    for i, image_id in enumerate(val):
        label = _label(rng, 40, 46 + 2 * i, 21)
        _image(rng, label).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        im = Image.fromarray(label, mode="P")
        im.putpalette(voc_palette().ravel().tolist())
        im.save(voc / "SegmentationClass" / f"{image_id}.png")
    (voc / "ImageSets" / "Segmentation" / "seg11valid.txt").write_text("\n".join(val) + "\n")
    return root


def _label(rng, h: int, w: int, n_classes: int) -> np.ndarray:
    label = np.zeros((h, w), np.uint8)
    for _ in range(2):
        c = int(rng.integers(1, n_classes))
        y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        label[y:y + h // 2, x:x + w // 2] = c
    label[0, :] = 255
    return label


def _image(rng, label: np.ndarray) -> Image.Image:
    base = rng.integers(0, 80, (*label.shape, 3)).astype(np.int64)
    base += (label.astype(np.int64)[..., None] * 9) % 170
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def random_init(model: str, path: Path, seed: int = 0, width_divisor: int = 16) -> Path:
    """Random weights of the builder's net (every parameter), as a builder-names safetensors."""
    import torch
    from port.models import train_net
    from reproduce.training.recipes import get_recipe
    from reproduce.training.run import save_weights
    net = train_net(model, width_divisor=width_divisor)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.requires_grad:
                fan = max(1, p[0].numel()) if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan) ** 0.5 * (p.dim() > 1))
    return save_weights(net, path, get_recipe(model), width_divisor, {})


def sbd_voc_and_init(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny SBD/VOC tree (:func:`make_sbd_voc`) and random 1/16-width FCN-32s weights, the
    inputs of the ``reproduce train fcn32s`` tests."""
    root = make_sbd_voc(tmp_path_factory.mktemp("data"))
    return root, random_init("fcn32s", tmp_path_factory.mktemp("init") / "init.safetensors")
