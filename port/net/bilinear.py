"""FCN's bilinear upsampling kernel (fcn.berkeleyvision.org ``surgery.upsample_filt``) in numpy,
without torch: what :mod:`port.net.ops` fills weights with (``bilinear_kernel``,
``set_upsample_filt_``) and what ``python -m port convert`` and ``inspect`` test a
Deconvolution's weight against (:func:`is_bilinear`) without importing torch.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from port.net.shapes import CaffeSemanticsError

__all__ = ["upsample_filt", "upsample_filt_refusal", "bilinear_array", "is_bilinear"]


def upsample_filt(size: int) -> np.ndarray:
    """The 2-D bilinear interpolation kernel of upstream ``surgery.upsample_filt``:
    ``factor = (size+1)//2``, centre ``factor-1`` (odd) or ``factor-0.5`` (even),
    ``(1 - |i-centre|/factor) * (1 - |j-centre|/factor)``; computed in float64 as numpy does,
    returned as float32 ``(size, size)``."""
    if size < 1:
        raise CaffeSemanticsError(f"bilinear kernel size must be >= 1, got {size}")
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - np.abs(np.arange(size, dtype=np.float64) - centre) / factor
    return np.outer(ramp, ramp).astype(np.float32)


def upsample_filt_refusal(shape: Sequence[int]) -> str | None:
    """Why upstream ``surgery.interp`` refuses a weight of ``shape`` ``(m, k, h, w)``: not
    4-D, input and output channels neither equal nor ``k == 1``, or a non-square kernel; None
    when it takes it (the message is upstream's ``print`` before its ``raise``)."""
    if len(shape) != 4:
        return "not 4-D"
    m, k, h, w = (int(s) for s in shape)
    if m != k and k != 1:
        return "input and output channels need to be the same or |output| == 1"
    if h != w:
        return "filters need to be square"
    return None


def bilinear_array(channels: int, size: int) -> np.ndarray:
    """A ``(channels, channels, size, size)`` float32 deconvolution weight that upsamples each
    channel on its own: :func:`upsample_filt` on the diagonal ``[i, i]``, zeros elsewhere."""
    weight = np.zeros((channels, channels, size, size), dtype=np.float32)
    weight[np.arange(channels), np.arange(channels)] = upsample_filt(size)
    return weight


def is_bilinear(weight: Any, atol: float = 1e-6) -> bool:
    """Whether ``weight`` (a numpy array, or a torch tensor) is a square ``(C, C, k, k)``
    bilinear upsampling weight as :func:`bilinear_array` builds (``atol`` allows a float32
    round trip)."""
    w = weight.detach().cpu().numpy() if hasattr(weight, "detach") else np.asarray(weight)
    if w.ndim != 4 or w.shape[0] != w.shape[1] or w.shape[2] != w.shape[3] or w.shape[2] < 1:
        return False
    return bool(np.allclose(w.astype(np.float64), bilinear_array(w.shape[0], w.shape[2]), rtol=0.0, atol=atol))
