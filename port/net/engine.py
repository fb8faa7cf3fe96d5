"""The net engine: a parsed Caffe net (``NetDef``) run as a ``torch.nn.Module``.

:class:`CaffeNet` reproduces Caffe's ``Net`` (net.cpp) for the layers of
:mod:`port.net.layers`: layers run in prototxt order; a blob name refers to the latest top of
that name, so in-place layers overwrite their bottom as in Caffe; the net's outputs are the tops
no later layer consumes (``Net::Init``'s ``available_blobs``). Net-level inputs, ``Input`` layers
and ``Python`` data layers' tops are the forward inputs. Each layer is a submodule named by its
Caffe layer name, so parameters read ``conv1_1.weight``, ``upscore2.weight``. Blob shapes are
inferred at construction as Caffe's ``Net::Init`` does, by each layer's ``Reshape`` arithmetic
(:meth:`port.net.layers.CaffeLayer.output_shapes`), without running a layer: building a net
touches no tensor data and compiles nothing.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from port.net.layers import LAYER_TYPES, CaffeGraphError, CaffeLayer, build_layer
# Net::Init's shape pass (inputs, the walk, the blob and crop checks) is port.net.shapes',
# shared with port.convert, which sizes a net without torch.
from port.net.shapes import (DATA_LAYER_CHANNELS, PROPAGATION_SIZE, check_blobs, check_layer_name,  # noqa: F401
                             data_input_shapes, net_state, walk, check_crop_offsets as _check_crop_offsets,
                             input_shapes as _input_shapes)
from port.weights import WeightsMismatchError

__all__ = ["CaffeNet", "BlobMismatchError", "InputError", "data_input_shapes", "DATA_LAYER_CHANNELS",
           "PROPAGATION_SIZE", "set_inference_executor"]

#: Runs a net in eval mode without autograd, or returns None to leave it to the plain path:
#: ``executor(net, inputs, return_blobs)``. The engine knows no run mode; the layer above it
#: that does (``port.run.prepared``) registers one.
_inference_executor: Callable[[Any, dict, bool], dict | None] | None = None


def set_inference_executor(executor: Callable[[Any, dict, bool], dict | None] | None) -> None:
    """Register the executor :meth:`CaffeNet.forward` consults in eval mode without autograd
    (None: always the plain path)."""
    global _inference_executor
    _inference_executor = executor


class InputError(CaffeGraphError):
    """An input that does not fit the net's input blob: its rank or its channels (axis 1)
    differ from the declared shape's. The batch and spatial sizes are free, as Caffe's
    ``Net::Reshape`` of an input blob lets them be."""


#: Caffemodel blobs that do not fill the net's parameters exactly: the one fit error of
#: :mod:`port.weights` (every mismatch in ``problems``). The name is kept for its users.
BlobMismatchError = WeightsMismatchError


class CaffeNet(nn.Module):
    """A parsed Caffe net (``port.caffe.NetDef``) as a module, for one ``NetState``: ``phase``,
    ``level`` and ``stages`` as Caffe's ``Net(param_file, phase, level, stages)`` takes them
    (level 0 and no stages by default; the prototxt's own ``state { stage }`` kept, its phase
    and level replaced), the layers those keep by their include/exclude rules
    (``NetDef.for_state``: ``Net::FilterNet``); :attr:`state` is the ``port.caffe.NetState``.

    ``forward(**inputs)`` takes one tensor (or array) per input blob (:attr:`input_names`) and
    returns the net's outputs by name; ``forward(..., return_blobs=True)`` returns every named
    blob as Caffe holds it after ``Net::Forward``. Shapes are propagated at construction from
    the declared input shapes (``input_shapes`` supplies those a Python data layer does not
    declare) by each layer's :meth:`CaffeLayer.output_shapes`, which sizes the parameters and
    checks the net as Caffe's ``Net::Init`` does; :attr:`blob_shapes` holds the result. Built
    under ``with torch.device("meta"):`` (as ``port.convert`` does) no parameter is allocated.
    Parameters start at Caffe's default fillers; :meth:`load_blobs` fills
    them from a caffemodel. Parameters with ``lr_mult: 0`` are frozen (``requires_grad=False``).
    """

    def __init__(self, netdef: Any, phase: str = "TEST",
                 input_shapes: Mapping[str, Sequence[int]] | None = None, check_crops: bool = True,
                 *, level: int = 0, stages: Sequence[str] = ()):
        super().__init__()
        # Net(param_file, phase, level, stages): phase and level replace the prototxt's own
        # state, the stages are added to its own stages.
        self.state = net_state(netdef, phase, level, stages)
        net = netdef.for_state(self.state)
        self.net_name, self.phase = net.name, phase
        self.netdef = net  # the phase-filtered definition the layers were built from
        shapes = _input_shapes(net, netdef, dict(input_shapes or {}))
        self.input_names = tuple(shapes)
        self.input_shapes = dict(shapes)  # as declared (or given): the channels forward checks
        self._steps: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        # Caffe keeps the unconsumed blobs in a std::set, so outputs come sorted by name.
        self.output_names = walk(net, shapes, self._add_layer, tuple(LAYER_TYPES))
        self._blob_shapes = shapes
        if check_crops:  # after the structural checks, whose errors say more
            _check_crop_offsets(net)

    def _add_layer(self, layer: Any, bottoms: list[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
        """Build, shape-check (Caffe's ``Reshape`` arithmetic) and register one layer (bottoms
        of these shapes); returns its tops' shapes."""
        module = build_layer(layer, bottoms, self.phase)
        # Arithmetic only: running the layer, even on "meta" tensors, would cost the first
        # import of torch's compiler stack (~1.3 s) for what a few integer formulas give.
        tops = module.output_shapes(bottoms)
        self._register(layer, module)
        self._steps.append((layer.name, tuple(layer.bottom), tuple(layer.top)))
        return tops

    def _register(self, layer: Any, module: CaffeLayer) -> None:
        check_layer_name(layer.name, self._modules)
        try:
            self.add_module(layer.name, module)
        except KeyError as err:
            raise CaffeGraphError(f"layer {layer.name!r}: name clashes with a CaffeNet attribute") from err
        for param, spec in zip(module.caffe_params(), layer.params):
            if float(spec.lr_mult) == 0:
                param.requires_grad_(False)
        shared = [spec.name for spec in layer.params if spec.name]
        if shared:
            # Caffe shares a named param's blob between layers (Net::AppendParam); here each layer
            # keeps its own copy, which loads and runs the same from a Caffe-written caffemodel
            # (it stores every copy) but would train apart.
            warnings.warn(f"layer {layer.name!r}: param names {shared} are not shared between "
                          f"layers here; each layer holds its own copy", stacklevel=3)

    @property
    def blob_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every named blob's shape after ``Net::Init`` at the construction's input shapes
        (the latest top of a name, as ``forward(..., return_blobs=True)`` holds it)."""
        return dict(self._blob_shapes)

    @property
    def steps(self) -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
        """The layers run by ``forward``, in order, as ``(name, bottoms, tops)``."""
        return tuple(self._steps)

    def caffe_layers(self) -> dict[str, CaffeLayer]:
        """Layer modules by Caffe layer name, in net order."""
        return {name: self._modules[name] for name, _, _ in self._steps}  # type: ignore[misc]

    def caffe_params(self) -> dict[str, list[nn.Parameter]]:
        """Each parameterised layer's parameters in Caffe's blob order, by layer name."""
        layers = self.caffe_layers().items()
        return {name: m.caffe_params() for name, m in layers if m.caffe_params()}

    def _inputs(self, args: Sequence[Any], inputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        inputs = dict(inputs)
        if len(args) > len(self.input_names):
            raise InputError(f"net {self.net_name!r}: {len(args)} positional inputs, but the net "
                             f"has {len(self.input_names)} ({', '.join(self.input_names)})")
        for name, value in zip(self.input_names, args):
            if name in inputs:
                raise InputError(f"net {self.net_name!r}: input {name!r} given twice")
            inputs[name] = value
        missing = [n for n in self.input_names if n not in inputs]
        unknown = sorted(set(inputs) - set(self.input_names))
        if missing or unknown:
            raise InputError(f"net {self.net_name!r}: inputs are {list(self.input_names)}; "
                             f"missing {missing}, unknown {unknown}")
        # Arrays become float32 tensors (Caffe blobs are float) on the parameters' device.
        device = next(self.parameters(), torch.empty(0)).device
        tensors = {n: v if isinstance(v, torch.Tensor) else
                   torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(device)
                   for n, v in inputs.items()}
        for name, tensor in tensors.items():
            self._check_input(name, tuple(tensor.shape))
        return tensors

    def _check_input(self, name: str, shape: tuple[int, ...]) -> None:
        declared = self.input_shapes[name]
        if len(declared) < 2:
            return
        if len(shape) != len(declared) or shape[1] != declared[1]:
            axes = " x ".join(["N", str(declared[1])] + ["H", "W", "D"][:len(declared) - 2])
            raise InputError(f"net {self.net_name or 'net'!r}: input blob {name!r} must be "
                             f"{axes} (declared {declared}), got shape {shape}")

    def forward(self, *args: Any, return_blobs: bool = False, **inputs: Any) -> dict[str, torch.Tensor]:
        """The net's outputs by name for its inputs, given by name or positionally in
        :attr:`input_names` order; with ``return_blobs`` every named blob. In eval mode without
        autograd the registered inference executor (:func:`set_inference_executor`) may run
        them in a prepared form; otherwise, and whenever it declines, :meth:`run_steps`."""
        blobs = self._inputs(args, inputs)
        if (_inference_executor is not None and not self.training and not torch.is_grad_enabled()
                and not torch.compiler.is_compiling()):  # a compiler traces the plain path
            out = _inference_executor(self, blobs, return_blobs)
            if out is not None:
                return out
        return self.run_steps(blobs, return_blobs)

    def run_steps(self, blobs: dict[str, torch.Tensor], return_blobs: bool = False) -> dict[str, torch.Tensor]:
        """The plain path: each layer in order over ``blobs`` (the checked inputs by name)."""
        for name, bottoms, tops in self._steps:
            outs = self._modules[name](*[blobs[b] for b in bottoms])
            blobs.update(zip(tops, outs))
        if return_blobs:
            return blobs
        return {name: blobs[name] for name in self.output_names}

    #: What the inference executor keeps for this net (its prepared form); None when nothing.
    #: Dropped when the net goes to training mode or is moved or cast (``to``, ``cuda``,
    #: ``float``: ``Module._apply``); the executor drops it itself when the weights change.
    inference_cache: Any = None

    def train(self, mode: bool = True) -> "CaffeNet":
        if mode:
            self.inference_cache = None
        return super().train(mode)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "CaffeNet":
        self.inference_cache = None
        return super()._apply(fn, *args, **kwargs)

    def load_blobs(self, netdef_with_blobs: Any, source: str | None = None) -> None:
        """Fill every parameter from a caffemodel's ``NetDef`` (``port.caffe.load_caffemodel``,
        or any weights file as ``port.weights.read_blobs`` gives it), matching layers by name
        and blobs by index as Caffe's ``Net::CopyTrainedLayersFrom``, but strictly
        (``port.weights.check_fit``: every parameter filled, every blob used, equal shapes,
        legacy 4-D shapes as ``Blob::ShapeEquals``); otherwise one :class:`BlobMismatchError`
        listing each. Blob i of layer L is named as the net names L's i-th parameter
        (``L.weight``, ``L.bias``)."""
        source = source or str(getattr(netdef_with_blobs, "path", None) or "caffemodel")
        found = {layer.name: list(layer.blobs) for layer in netdef_with_blobs.layers if len(layer.blobs)}
        params = self.caffe_params()
        names = {id(p): n.split(".", 1)[1] for n, p in self.named_parameters()}
        check_blobs({layer: [(names[id(p)], tuple(p.shape)) for p in ps] for layer, ps in params.items()},
                    found, source, f"net {self.net_name!r}")
        with torch.no_grad():
            for name, layer_params in params.items():
                for param, blob in zip(layer_params, found[name]):
                    param.copy_(torch.from_numpy(np.asarray(blob, dtype=np.float32).reshape(param.shape)))

    #: The name the family helper's converter and the brief use.
    load_caffemodel_blobs = load_blobs
