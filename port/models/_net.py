"""``CaffeFamilyNet``: the base of the explicit FCN modules.

A family net registers each Caffe layer under its Caffe name with :meth:`CaffeFamilyNet._add`,
which also records the layer as the prototxt declares it (a :class:`port.net.coord_map.Geometry`). From those
records the net derives every Crop offset the way Caffe's ``coord_map.py`` does, instead of
typing the numbers in, and a test compares them with the upstream prototxts. The forward
passes stay explicit code in each subclass.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from port.errors import PortError
from port.net.coord_map import Geometry, derive_crop_offsets
from port.models._layers import (
    LRN, BlobRecorder, Concat, Convolution, Crop, Deconvolution, Eltwise, Pooling, Scale,
)

#: Caffe V2 layer type of each module class a family net uses.
CAFFE_TYPES: Mapping[type, str] = {
    Convolution: "Convolution", Deconvolution: "Deconvolution", Pooling: "Pooling",
    LRN: "LRN", Crop: "Crop", Eltwise: "Eltwise", Scale: "Scale", Concat: "Concat",
    nn.ReLU: "ReLU", nn.Dropout: "Dropout",
}


class InputError(PortError):
    """An input tensor that does not fit the net's input blob (rank or channels)."""


def scaled_width(width: int, divisor: int) -> int:
    """A released layer width divided by ``width_divisor`` (16 gives the goldens' widths)."""
    if not isinstance(divisor, int) or divisor < 1 or width % divisor:
        raise ValueError(f"width_divisor must be a positive integer dividing the layer width "
                         f"{width}; got {divisor!r}")
    return width // divisor


def check_num_classes(num_classes: int, what: str = "num_classes") -> int:
    """``num_classes`` as a positive int, or a ValueError naming it."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{what} must be a positive integer, got {num_classes!r}")
    return num_classes


def _geometry(module: nn.Module) -> dict[str, int]:
    """Square kernel/stride/pad/dilation of the coordinate-moving layers, else identity."""
    if isinstance(module, Convolution):
        return dict(kernel=module.kernel_size[0], stride=module.stride[0],
                    pad=module.padding[0], dilation=module.dilation[0])
    if isinstance(module, (Deconvolution, Pooling)):
        return dict(kernel=module.kernel, stride=module.stride, pad=module.pad)
    return {}


class CaffeFamilyNet(nn.Module):
    """Base of the FCN family: Caffe-named layers, their prototxt records, derived crops.

    ``forward(..., return_blobs=True)`` in every subclass returns each named blob with the
    value Caffe holds after its forward pass (in-place ReLU/Dropout overwrite their bottom).
    """

    meta = None  # the ModelMeta, set by the registered builder

    def __init__(self) -> None:
        super().__init__()
        self._records: list[Geometry] = []
        self._input_channels: dict[str, int] = {}

    # -- construction --------------------------------------------------------------------
    def _input(self, name: str, channels: int) -> None:
        """Declare an input blob (a top of the upstream data layer) and its channel count."""
        self._input_channels[name] = channels

    def _add(self, name: str, module: nn.Module, bottoms: list[str],
             tops: list[str] | None = None) -> nn.Module:
        """Register ``module`` as Caffe layer ``name`` reading ``bottoms``, writing ``tops``
        (default: one top named like the layer); records it for the geometry."""
        module.layer_name = name  # type: ignore[attr-defined]
        self.add_module(name, module)
        self._records.append(Geometry(name, CAFFE_TYPES[type(module)], tuple(bottoms),
                                      tuple(tops or [name]), **_geometry(module)))
        return module

    def _derive_crops(self) -> None:
        """Set every Crop's offset from the layer geometry (Caffe ``coord_map.crop``)."""
        for name, offsets in derive_crop_offsets(self._records).items():
            getattr(self, name).offsets = offsets

    # -- introspection -------------------------------------------------------------------
    def caffe_layers(self) -> tuple[Geometry, ...]:
        """The net's layers as the upstream prototxt declares them (data and loss layers
        excluded), in Caffe's order."""
        return tuple(self._records)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The input blobs ``forward`` takes, in order."""
        return tuple(self._input_channels)

    # -- forward helpers -----------------------------------------------------------------
    def _check_input(self, name: str, x: torch.Tensor) -> torch.Tensor:
        expected = self._input_channels[name]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != expected:
            found = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"{type(self).__name__}: input blob {name!r} must be an "
                             f"N x {expected} x H x W tensor, got {found}")
        return x

    @staticmethod
    def _result(blobs: BlobRecorder, scores: dict[str, torch.Tensor]):
        """Every blob when recording, else the one score tensor or the dict of scores."""
        if blobs.enabled:
            return blobs.blobs
        return next(iter(scores.values())) if len(scores) == 1 else scores
