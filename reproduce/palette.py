"""The PASCAL VOC colour palette: label maps as palette PNGs, overlays, and back to labels.

The palette is the one of the VOC development kit's ``VOClabelcolormap.m`` (and of every
``SegmentationClass/*.png``): colour ``i`` spreads the bits of ``i`` over the high bits of R, G
and B, three bits per round. Upstream ``demo/output.png`` and ``vis.py`` use the same colours,
so a prediction written here opens in any VOC tool and compares with the released output.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from port.errors import PortError
from port.fileio import atomic_open

__all__ = [
    "PaletteError", "voc_palette", "VOID_LABEL", "to_palette_image", "save_label_png",
    "overlay", "colour_to_label",
]

#: Label of the "void" pixels of VOC ground truth (object borders, difficult regions).
VOID_LABEL = 255
_BITS_PER_BYTE = 8
_ENTRIES = 256
_CHANNELS = 3
_OVERLAY_ALPHA = 0.5


class PaletteError(PortError):
    """A label map or colour image that cannot be written or read with the VOC palette."""


def voc_palette() -> np.ndarray:
    """The 256 x 3 uint8 VOC colour map (``VOClabelcolormap.m``, ``bitget`` construction)."""
    palette = np.zeros((_ENTRIES, _CHANNELS), dtype=np.uint8)
    for index in range(_ENTRIES):
        c, rgb = index, [0, 0, 0]
        for bit in range(_BITS_PER_BYTE):
            for channel in range(_CHANNELS):
                rgb[channel] |= ((c >> channel) & 1) << (_BITS_PER_BYTE - 1 - bit)
            c >>= _CHANNELS
        palette[index] = rgb
    return palette


def _check_label(label: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(label)
    if array.ndim != 2:
        raise PaletteError(f"{name}: expected an HxW label map, got shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= _ENTRIES):
        raise PaletteError(
            f"{name}: labels must lie in [0, {_ENTRIES - 1}] for a palette PNG, "
            f"got [{array.min()}, {array.max()}]")
    return array.astype(np.uint8)


def to_palette_image(label: np.ndarray, *, name: str = "label") -> Image.Image:
    """An HxW label map as a PIL ``P`` image carrying the VOC palette (as VOC's PNGs)."""
    image = Image.fromarray(_check_label(label, name), mode="P")
    image.putpalette(voc_palette().ravel().tolist())
    return image


def save_label_png(label: np.ndarray, path: str | Path) -> Path:
    """Write ``label`` as a VOC palette PNG at ``path``, atomically; return the path."""
    path = Path(path)
    image = to_palette_image(label, name=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        image.save(handle, format="PNG")
    return path


def overlay(image_rgb: np.ndarray, label: np.ndarray, *, alpha: float = _OVERLAY_ALPHA
            ) -> np.ndarray:
    """The RGB image blended with the palette colours of ``label`` (void left unblended)."""
    rgb = np.asarray(image_rgb)
    label = _check_label(label, "label")
    if rgb.shape != label.shape + (_CHANNELS,):
        raise PaletteError(
            f"overlay: image of shape {rgb.shape} does not match label map {label.shape}")
    colours = voc_palette()[label].astype(np.float32)
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colours
    blended[label == VOID_LABEL] = rgb[label == VOID_LABEL]
    return np.clip(np.rint(blended), 0, _ENTRIES - 1).astype(np.uint8)


def _colour_keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 2 * _BITS_PER_BYTE) | (rgb[..., 1] << _BITS_PER_BYTE) | rgb[..., 2]


def colour_to_label(image_rgb: np.ndarray, *, name: str = "image") -> tuple[np.ndarray, int]:
    """Decode an RGB rendering of a VOC label map (such as upstream ``demo/output.png``).

    Returns ``(label, unknown)``: the HxW int64 labels, with ``-1`` where a pixel's colour is
    not in the palette, and how many such pixels there were (a lossy re-encoding shows here).
    """
    rgb = np.asarray(image_rgb)
    if rgb.ndim != 3 or rgb.shape[2] != _CHANNELS:
        raise PaletteError(f"{name}: expected an HxWx3 RGB image, got shape {rgb.shape}")
    keys = _colour_keys(voc_palette())
    order = np.argsort(keys)
    pixel_keys = _colour_keys(rgb)
    pos = np.clip(np.searchsorted(keys[order], pixel_keys), 0, _ENTRIES - 1)
    found = keys[order][pos] == pixel_keys
    label = np.where(found, order[pos], -1).astype(np.int64)
    return label, int((~found).sum())
