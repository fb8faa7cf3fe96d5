"""Tiny dataset trees and init weights for the training tests (not a test module)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


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
