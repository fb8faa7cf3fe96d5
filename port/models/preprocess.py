"""Input preprocessing of the FCN reference models, one function per dataset.

Each function reproduces the ``load_image``/``load_depth``/``load_hha`` method of the upstream
Python data layer (shelhamer/fcn.berkeleyvision.org ``voc_layers.py``, ``siftflow_layers.py``,
``nyud_layers.py``, ``pascalcontext_layers.py``) operation for operation, in float32, so the
result is bit-identical to the array the data layer put into the Caffe ``data`` blob:

1. cast the decoded image (HxWxC, as ``np.array(PIL.Image.open(...))`` gives it) to float32;
2. reverse the channels RGB -> BGR (colour images only; HHA is not reversed upstream);
3. subtract the dataset's mean, given in the order of the channels after step 2;
4. transpose HWC -> CHW.

Native size: nothing is resized, cropped or padded (the nets pad by 100 and crop themselves).
The batch axis is not added; the caller stacks or uses ``[None]``.

:class:`InputTransform` is one of these functions as torchvision's ``weights.transforms()``
gives a model's preprocessing (``model.meta.transforms()``): a callable from the decoded image
to the input tensor, the arithmetic the function's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from port.errors import PortError

if TYPE_CHECKING:
    import torch

__all__ = [
    "PreprocessError",
    "VOC_MEAN_BGR", "SBD_MEAN_BGR", "CONTEXT_MEAN_BGR", "SIFTFLOW_MEAN_BGR",
    "NYUD_MEAN_BGR", "NYUD_MEAN_HHA", "NYUD_MEAN_LOGD",
    "caffe_bgr", "preprocess_voc", "preprocess_sbd", "preprocess_pascalcontext",
    "preprocess_siftflow", "preprocess_nyud_color", "preprocess_nyud_hha",
    "preprocess_nyud_depth", "PREPROCESSORS", "InputTransform",
]

# PASCAL VOC / SBD: the `mean` in the param_str of every voc-* train/val prototxt,
# (104.00699, 116.66877, 122.67892); infer.py writes it as below. Both spellings round to the
# same float32 values, which is all the data layer uses.
VOC_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
# SBD train images are VOC images; voc-*/train.prototxt passes the same mean to SBDDSegDataLayer.
SBD_MEAN_BGR = VOC_MEAN_BGR
# PASCAL-Context: PASCALContextSegDataLayer.setup hard-codes this rounded copy of the VOC mean
# (pascalcontext_layers.py); the float32 values differ from VOC_MEAN_BGR by up to 1e-3.
CONTEXT_MEAN_BGR = (104.007, 116.669, 122.679)
# SIFT Flow: SIFTFlowSegDataLayer.setup, siftflow_layers.py.
SIFTFLOW_MEAN_BGR = (114.578, 115.294, 108.353)
# NYUDv2: NYUDSegDataLayer.setup, nyud_layers.py (`mean_bgr`, `mean_hha`, `mean_logd`).
NYUD_MEAN_BGR = (116.190, 97.203, 92.318)
NYUD_MEAN_HHA = (132.431, 94.076, 118.477)
NYUD_MEAN_LOGD = (7.844,)

_COLOUR_CHANNELS = 3


class PreprocessError(PortError):
    """An input array that is not what the data layer expects (shape or dtype)."""


def _as_hwc(image, channels: int, name: str, integer: bool = True) -> np.ndarray:
    """The image as an array of shape HxWx``channels``, or a PreprocessError naming it."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != channels:
        raise PreprocessError(
            f"{name}: expected an HxWx{channels} image, got an array of shape {array.shape}")
    if integer and array.dtype.kind not in "ui":
        # A float image in [0, 1] would pass silently and be off by a factor of 255.
        raise PreprocessError(
            f"{name}: expected integer pixel values (uint8 as decoded), got dtype {array.dtype}")
    return array


def caffe_bgr(image, mean, *, name: str = "image") -> np.ndarray:
    """RGB HxWx3 -> BGR minus ``mean``, CHW float32: the shared body of every ``load_image``.

    Reproduces ``in_ = np.array(im, dtype=np.float32); in_ = in_[:,:,::-1]; in_ -= mean;
    in_ = in_.transpose((2,0,1))`` of the upstream data layers, in the same float32 arithmetic.
    """
    in_ = np.array(_as_hwc(image, _COLOUR_CHANNELS, name), dtype=np.float32)
    in_ = in_[:, :, ::-1]
    in_ -= np.asarray(mean, dtype=np.float32)
    return np.ascontiguousarray(in_.transpose((2, 0, 1)))


def preprocess_voc(image, *, name: str = "image") -> np.ndarray:
    """PASCAL VOC image (RGB uint8 HxWx3) -> the ``data`` blob (3xHxW float32).

    ``VOCSegDataLayer.load_image`` (voc_layers.py) with the prototxt's mean ``VOC_MEAN_BGR``.
    """
    return caffe_bgr(image, VOC_MEAN_BGR, name=name)


def preprocess_sbd(image, *, name: str = "image") -> np.ndarray:
    """SBD image -> ``data``: ``SBDDSegDataLayer.load_image`` (voc_layers.py), VOC mean."""
    return caffe_bgr(image, SBD_MEAN_BGR, name=name)


def preprocess_pascalcontext(image, *, name: str = "image") -> np.ndarray:
    """PASCAL-Context (VOC2010) image -> ``data``: ``PASCALContextSegDataLayer.load_image``."""
    return caffe_bgr(image, CONTEXT_MEAN_BGR, name=name)


def preprocess_siftflow(image, *, name: str = "image") -> np.ndarray:
    """SIFT Flow image -> ``data``: ``SIFTFlowSegDataLayer.load_image`` (siftflow_layers.py)."""
    return caffe_bgr(image, SIFTFLOW_MEAN_BGR, name=name)


def preprocess_nyud_color(image, *, name: str = "image") -> np.ndarray:
    """NYUDv2 colour image -> the ``color`` blob: ``NYUDSegDataLayer.load_image``."""
    return caffe_bgr(image, NYUD_MEAN_BGR, name=name)


def preprocess_nyud_hha(hha, *, name: str = "hha") -> np.ndarray:
    """NYUDv2 HHA image (HxWx3 uint8) -> the ``hha`` blob: ``NYUDSegDataLayer.load_hha``.

    Unlike the colour loaders, upstream does not reverse the channels: the mean is subtracted
    in the PNG's own channel order (horizontal disparity, height, angle).
    """
    hha_ = np.array(_as_hwc(hha, _COLOUR_CHANNELS, name), dtype=np.float32)
    hha_ -= np.asarray(NYUD_MEAN_HHA, dtype=np.float32)
    return np.ascontiguousarray(hha_.transpose((2, 0, 1)))


def preprocess_nyud_depth(depth, *, name: str = "depth") -> np.ndarray:
    """NYUDv2 depth PNG (HxW integers, 16-bit as stored) -> the ``depth`` blob (1xHxW float32).

    ``NYUDSegDataLayer.load_depth``: ``d = log(float32(png)) - 7.844``. As upstream, a zero
    depth gives ``-inf`` (the authors' depth maps are filled, so none occurs there).
    """
    array = np.asarray(depth)
    if array.ndim != 2 or array.dtype.kind not in "ui":
        raise PreprocessError(
            f"{name}: expected an HxW integer depth map, got shape {array.shape} "
            f"dtype {array.dtype}")
    with np.errstate(divide="ignore"):
        d = np.log(np.array(array, dtype=np.float32))
    d -= np.asarray(NYUD_MEAN_LOGD, dtype=np.float32)
    return d[np.newaxis, ...]


#: Dataset name -> preprocessing of its colour ``data``/``color`` input.
PREPROCESSORS = {
    "voc": preprocess_voc,
    "sbd": preprocess_sbd,
    "pascalcontext": preprocess_pascalcontext,
    "siftflow": preprocess_siftflow,
    "nyud": preprocess_nyud_color,
}


class InputTransform:
    """A net's preprocessing of one input as a callable (torchvision's ``weights.transforms()``):
    the image as decoded (an HxWx3 uint8 numpy array or a PIL image, RGB; for an HHA net its
    HHA image; for a depth input its HxW integer map) -> the input blob as a torch tensor,
    CHW float32, without a batch axis (as torchvision's transforms: ``model(t(image)[None])``),
    at the image's own size (nothing resized, cropped or padded).

    The arithmetic is ``function``'s, one of this module's (upstream's data layer operation for
    operation: BGR, minus the dataset's mean, no scaling); an image that is not what it takes
    raises its one-line :class:`PreprocessError`.
    """

    def __init__(self, function: Callable[..., np.ndarray], blob: str) -> None:
        self.function, self.blob = function, blob

    def __call__(self, image) -> "torch.Tensor":
        import torch  # only when called: the records and preprocessing import no torch
        return torch.from_numpy(self.function(np.asarray(image), name=self.blob))

    def __repr__(self) -> str:
        return (f"InputTransform({self.function.__name__} -> {self.blob!r}: "
                f"{(self.function.__doc__ or '').strip().splitlines()[0]})")
