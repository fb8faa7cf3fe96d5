"""Caffe's fillers, as training imports them: they live in :mod:`port.net.fillers` (a net built
without weights is what Caffe's fillers make, so the layer library and the builders use them
too); this module keeps the ``port.training.fillers`` names working."""
from port.net.fillers import (FILLER_TYPES, SCALE_DEFAULT, FillerError, fan_in_out, fill, fill_,
                              fill_net, filler_type, layer_fillers)

__all__ = ["FillerError", "FILLER_TYPES", "SCALE_DEFAULT", "fill", "fill_", "filler_type", "fan_in_out",
           "fill_net", "layer_fillers"]
