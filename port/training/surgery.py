"""Net surgery as upstream FCN does it (fcn.berkeleyvision.org 1305c73 ``surgery.py``).

:func:`transplant` copies a source net's parameters into a destination net by layer name
(``surgery.transplant``): equal shapes are copied; equal element counts with different shapes
are *coerced* by a flat copy in C order (``new.data.flat = old.data.flat``: fc6 ``4096 x 25088``
-> ``4096 x 512 x 7 x 7``); different counts are refused (upstream's flat assignment would
repeat or truncate silently) with an error naming layer, blob and both shapes; source layers
the destination lacks are dropped, as are source blobs past the destination layer's count;
destination parameters the source lacks keep what they hold (fill them first with
:func:`port.net.fillers.fill_net`, as Caffe's ``LayerSetUp`` fills a fresh net).

:func:`interp` sets Deconvolution weights to the bilinear kernel of ``surgery.upsample_filt``
on the class diagonal (``weight[range(m), range(k)] = filt``), with upstream's checks (square
kernels; as many inputs as outputs per group, or one output). Upstream's ``solve.py`` picks the
layers by ``'up' in name``; here, by default, by structure: every Deconvolution whose weight
has ``lr_mult: 0`` (the frozen upsampling layers). Which layers those are and what the weight
becomes are :mod:`port.net`'s rules (``port.net.fillers.frozen_deconvolutions``,
``port.net.ops.set_upsample_filt_``), which the builders without weights follow too
(``port.models.zoo.init_unweighted``); this module is their home under upstream's names.

:func:`init_from` is upstream ``solve.py``'s initialisation in one call: a TRAIN-phase
:class:`port.net.engine.CaffeNet` of the destination, Caffe's fillers (seeded), the
transplant, and optionally the interp.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from port.errors import PortError
from port.net import ops
from port.net.engine import CaffeNet, data_input_shapes
from port.net.fillers import fill_net, frozen_deconvolutions
from port.net.shapes import net_state

__all__ = ["SurgeryError", "TransplantReport", "transplant", "interp", "frozen_deconvolutions",
           "data_shapes", "init_from"]

class SurgeryError(PortError):
    """A transplant or interp the nets do not allow, named by layer, blob and shapes."""


@dataclass
class TransplantReport:
    """What happened to each blob: ``entries["<layer>.<index>"]`` is ``"copied"``,
    ``"coerced (src shape) -> (dst shape)"``, ``"dropped"`` (a source blob past the
    destination's count) or ``"filled"`` (kept its filler); ``entries["<layer>"] = "dropped"``
    for a source layer the destination lacks. :func:`interp` appends ``" + interp"``."""

    entries: dict[str, str] = field(default_factory=dict)

    def by_kind(self) -> dict[str, list[str]]:
        """Blob keys per first word of their entry (copied, coerced, dropped, filled)."""
        out: dict[str, list[str]] = {"copied": [], "coerced": [], "dropped": [], "filled": []}
        for key, what in self.entries.items():
            out.setdefault(what.split()[0], []).append(key)
        return out

    def mark_interp(self, layers: Iterable[str]) -> None:
        for name in layers:
            key = f"{name}.0"
            self.entries[key] = self.entries.get(key, "filled") + " + interp"

    def as_dict(self) -> dict[str, str]:
        return dict(self.entries)

    def lines(self) -> list[str]:
        width = max((len(k) for k in self.entries), default=0)
        return [f"{key:<{width}}  {what}" for key, what in self.entries.items()]


def _params(net: Any) -> dict[str, list[torch.nn.Parameter]]:
    return net.caffe_params()


def transplant(dst_net: Any, src_netdef: Any, suffix: str = "") -> TransplantReport:
    """Copy ``src_netdef``'s blobs (a ``NetDef`` from ``port.caffe.load_caffemodel``) into
    ``dst_net`` (a ``CaffeNet``) by layer name (``name + suffix`` in the destination), as
    upstream ``surgery.transplant``; returns the :class:`TransplantReport`. Checks everything
    before changing anything: a count mismatch leaves ``dst_net`` as it was."""
    dst = _params(dst_net)
    report: dict[str, str] = {}
    copies: list[tuple[torch.nn.Parameter, np.ndarray]] = []
    source = str(getattr(src_netdef, "path", None) or "source")
    seen = set()
    for layer in src_netdef.layers:
        if not len(layer.blobs):
            continue
        target = layer.name + suffix
        if target not in dst:
            report[layer.name] = "dropped"
            continue
        seen.add(target)
        params = dst[target]
        for index, blob in enumerate(layer.blobs):
            if index >= len(params):
                report[f"{layer.name}.{index}"] = "dropped"
                break  # upstream: print 'dropping', p, i; break
            want, got = tuple(params[index].shape), tuple(np.shape(blob))
            if math.prod(want) != math.prod(got):
                raise SurgeryError(
                    f"{source}: layer {layer.name!r} blob {index}: source shape {got} "
                    f"({math.prod(got)} values) cannot fill {target!r} blob {index} of shape "
                    f"{want} ({math.prod(want)} values)")
            report[f"{target}.{index}"] = "copied" if want == got else f"coerced {got} -> {want}"
            copies.append((params[index], np.asarray(blob, dtype=np.float32)))
    for name, params in dst.items():
        for index in range(len(params)):
            key = f"{name}.{index}"
            if key not in report:
                report[key] = "filled"
    with torch.no_grad():
        for param, blob in copies:
            flat = torch.from_numpy(np.ascontiguousarray(blob).reshape(-1))
            param.copy_(flat.reshape(param.shape).to(param.device))
    # destination order for the filled and copied blobs, source layers dropped at their place
    ordered = {k: report[k] for name in dst for k in [f"{name}.{i}" for i in range(len(dst[name]))]}
    ordered.update({k: v for k, v in report.items() if k not in ordered})
    return TransplantReport(ordered)


def interp(net: Any, layers: Sequence[str] | None = None) -> list[str]:
    """Upstream ``surgery.interp``: set each layer's weight ``(m, k, h, w)`` to
    ``upsample_filt(h)`` at ``[range(m), range(k)]`` (the diagonal when ``m == k``, every
    ``[i, 0]`` when ``k == 1``), leaving the other values as they are
    (:func:`port.net.ops.set_upsample_filt_`); ``layers`` defaults to
    :func:`frozen_deconvolutions`. A weight upstream refuses
    (:func:`port.net.ops.upsample_filt_refusal`) is a :class:`SurgeryError`, raised before any
    weight changes. Returns the layers set."""
    params = _params(net)
    names = frozen_deconvolutions(net) if layers is None else list(layers)
    checked = []
    for name in names:
        if name not in params:
            raise SurgeryError(f"interp: no parameterised layer {name!r} in the net")
        weight = params[name][0]
        reason = ops.upsample_filt_refusal(tuple(weight.shape))
        if reason is not None:
            raise SurgeryError(f"interp: layer {name!r} weight {tuple(weight.shape)}: {reason}")
        checked.append(weight)
    for weight in checked:
        ops.set_upsample_filt_(weight)
    return names


def data_shapes(netdef: Any, src_netdef: Any | None = None,
                overrides: Mapping[str, Sequence[int]] | None = None) -> dict[str, tuple[int, ...]]:
    """Shapes for the tops of ``Python`` data layers so a net can be built: ``overrides``
    first, else :func:`port.net.engine.data_input_shapes` (channels from the source's
    convolution reading the top)."""
    shapes = data_input_shapes(netdef, src_netdef.blobs() if src_netdef is not None else None)
    shapes.update({k: tuple(int(s) for s in v) for k, v in (overrides or {}).items() if k in shapes})
    return shapes


def init_from(dst_netdef: Any, src_netdef: Any | None = None, seed: int = 0, do_interp: bool = False,
              input_shapes: Mapping[str, Sequence[int]] | None = None, require: Iterable[str] = ()
              ) -> tuple[Any, TransplantReport]:
    """Upstream ``solve.py``'s starting point: the TRAIN-phase ``CaffeNet`` of ``dst_netdef``,
    every parameter from its Caffe filler (seeded by ``seed``), ``src_netdef``'s blobs
    transplanted, and, with ``do_interp``, :func:`interp` on the frozen Deconvolutions.
    ``require``: layers whose parameters must come from the source (an FCN's trunk); one the
    source leaves at its filler is a :class:`SurgeryError`."""
    # sized in the net CaffeNet builds: TRAIN and the prototxt's own state (Net::FilterNet)
    shapes = data_shapes(dst_netdef.for_state(net_state(dst_netdef, "TRAIN")), src_netdef, input_shapes)
    net = CaffeNet(dst_netdef, "TRAIN", input_shapes=shapes)
    fill_net(net, seed)
    if src_netdef is not None:
        report = transplant(net, src_netdef)
        missing = [name for name in require if report.entries.get(f"{name}.0") == "filled"]
        if missing:
            source = str(getattr(src_netdef, "path", None) or "source")
            raise SurgeryError(f"{source}: no blobs for layer(s) {', '.join(map(repr, missing))} of "
                               f"the net to fill: the weights are not this classifier's")
    else:
        report = TransplantReport({f"{n}.{i}": "filled" for n, ps in net.caffe_params().items()
                                   for i in range(len(ps))})
    if do_interp:
        report.mark_interp(interp(net))
    return net, report
