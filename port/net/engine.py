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

from port.caffe.net import NetState
from port.net import coord_map
from port.net.layers import INPUT_LAYER_TYPES, LAYER_TYPES, CaffeGraphError, CaffeLayer, build_layer
from port.net.ops import CaffeSemanticsError
from port.weights import BLOB_NAMES, WeightsMismatchError, check_fit

__all__ = ["CaffeNet", "BlobMismatchError", "InputError", "data_input_shapes", "DATA_LAYER_CHANNELS",
           "PROPAGATION_SIZE", "set_inference_executor"]

#: Spatial size given to a data layer's tops whose size Caffe learns only at run time; any
#: size the net accepts gives the same parameter shapes.
PROPAGATION_SIZE = 500
#: Channels of the tops of upstream's Python data layers (voc_layers.py, siftflow_layers.py,
#: nyud_layers.py, pascalcontext_layers.py): images 3, depth and labels 1.
DATA_LAYER_CHANNELS = {"data": 3, "color": 3, "hha": 3, "depth": 1, "label": 1, "sem": 1, "geo": 1}


def data_input_shapes(net: Any, blobs: Mapping[str, Sequence] | None = None,
                      size: int = PROPAGATION_SIZE) -> dict[str, tuple[int, ...]]:
    """``(1, C, size, size)`` for each top of the net's ``Python`` data layers, which Caffe
    sizes only when the layer runs: ``C`` from the weight blob of the convolution reading the
    top (times its ``group``) when ``blobs`` (a caffemodel's, by layer name) has it, else
    :data:`DATA_LAYER_CHANNELS` (1 for a name it does not know, e.g. a label)."""
    blobs = blobs or {}
    shapes = {}
    for layer in net.layers:
        if layer.type != "Python":
            continue
        for top in layer.top:
            channels = DATA_LAYER_CHANNELS.get(top, 1)
            for reader in net.layers:
                if (reader.type == "Convolution" and reader.bottom[:1] == [top]
                        and len(blobs.get(reader.name, ())) > 0):
                    channels = int(blobs[reader.name][0].shape[1]) * int(reader.convolution_param.group)
                    break
            shapes[top] = (1, channels, size, size)
    return shapes


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


def _input_shapes(net: Any, original: Any, overrides: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Forward inputs in Caffe's order (net-level ``input`` first, then ``Input`` and ``Python``
    layers' tops) with their shapes; ``overrides`` supplies or replaces shapes."""
    for layer in net.layers:
        if layer.type in INPUT_LAYER_TYPES and len(layer.bottom):
            raise CaffeGraphError(f"layer {layer.name!r}: a {layer.type} layer with bottoms computes "
                                  f"in code the port cannot run; only data layers (no bottoms) are supported")
    layer_tops = {t for layer in original.layers if layer.type in INPUT_LAYER_TYPES for t in layer.top}
    names = [n for n in net.inputs if n not in layer_tops]
    names += [t for layer in net.layers if layer.type in INPUT_LAYER_TYPES for t in layer.top]
    shapes = {}
    for name in names:
        shape = overrides.get(name, net.inputs.get(name))
        if shape is None:
            raise CaffeGraphError(
                f"net {net.name!r}: input blob {name!r} (a Python data layer's top) has no declared "
                f"shape; pass input_shapes={{{name!r}: (N, C, H, W)}}")
        shapes[name] = tuple(int(s) for s in shape)
    unknown = sorted(set(overrides) - set(shapes))
    if unknown:
        raise CaffeGraphError(f"net {net.name!r}: input_shapes names {unknown}, not inputs of the net {names}")
    return shapes


def _located(err: Exception, net: Any, layer: Any) -> Exception:
    """``err`` with the file and place of ``layer`` in front (``net.prototxt: 12:1: layer ...``)
    when the net was read from a file, so a mistake in a prototxt names the prototxt."""
    pos = getattr(getattr(layer, "msg", None), "source_pos", None)
    path = getattr(net, "path", None)
    where = ": ".join(str(p) for p in (path, pos) if p)
    if not where or str(err).startswith(where):
        return err
    located = type(err)(f"{where}: {err}")
    return located


def _legacy_equal(blob_shape: tuple[int, ...], param_shape: tuple[int, ...]) -> bool:
    """Caffe ``Blob::ShapeEquals`` for legacy (num, channels, height, width) blobs: the shape
    padded with leading 1s to 4 axes (e.g. V1 InnerProduct weights ``1 x 1 x out x in``)."""
    pad = 4 - len(param_shape)
    return len(blob_shape) == 4 and pad > 0 and blob_shape == (1,) * pad + param_shape


def _check_crop_offsets(net: Any) -> None:
    """Refuse a net whose written Crop offsets disagree with its geometry (``coord_map``).

    Caffe itself crops wherever the prototxt says, so a wrong offset would run silently and
    shift every score; the derivation is how ``net_spec``/``coord_map.py`` meant the offsets to
    be made. A crop whose map cannot be derived (a path through a layer without an affine
    spatial map, or no common ancestor) cannot be checked: that is a warning, not an error."""
    if not any(layer.type == "Crop" for layer in net.layers):
        return
    try:
        coord_map.check_crops(net)
    except coord_map.CropMismatchError:
        raise
    except coord_map.CoordMapError as err:
        warnings.warn(f"{net.name or 'net'}: crop offsets not checked: {err}", stacklevel=3)


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
        own = NetState().merge(netdef.own_state)
        self.state = own.built(phase, level, stages)
        net = netdef.for_state(self.state)
        self.net_name, self.phase = net.name, phase
        self.netdef = net  # the phase-filtered definition the layers were built from
        shapes = _input_shapes(net, netdef, dict(input_shapes or {}))
        self.input_names = tuple(shapes)
        self.input_shapes = dict(shapes)  # as declared (or given): the channels forward checks
        self._steps: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        available = dict.fromkeys(shapes)
        for layer in net.layers:
            if layer.type in INPUT_LAYER_TYPES:
                continue
            try:
                tops = self._add_layer(layer, shapes)
            except (CaffeGraphError, CaffeSemanticsError) as err:
                raise _located(err, net, layer) from None
            for bottom in layer.bottom:
                available.pop(bottom, None)
            available.update(dict.fromkeys(tops))
        # Caffe keeps the unconsumed blobs in a std::set, so outputs come sorted by name.
        self.output_names = tuple(sorted(available))
        self._blob_shapes = shapes
        if check_crops:  # after the structural checks, whose errors say more
            _check_crop_offsets(net)

    def _add_layer(self, layer: Any, shapes: dict[str, tuple[int, ...]]) -> tuple[str, ...]:
        """Build, shape-check (Caffe's ``Reshape`` arithmetic) and register one layer;
        returns its tops."""
        if layer.type not in LAYER_TYPES:
            build_layer(layer, (), self.phase)  # raises the unknown-type error first
        missing = [b for b in layer.bottom if b not in shapes]
        if missing:
            raise CaffeGraphError(f"layer {layer.name!r}: bottom blob(s) {missing} are produced by "
                                  f"no earlier layer or input")
        bottoms = [shapes[b] for b in layer.bottom]
        module = build_layer(layer, bottoms, self.phase)
        # Arithmetic only: running the layer, even on "meta" tensors, would cost the first
        # import of torch's compiler stack (~1.3 s) for what a few integer formulas give.
        shapes.update(zip(layer.top, module.output_shapes(bottoms)))
        self._register(layer, module)
        self._steps.append((layer.name, tuple(layer.bottom), tuple(layer.top)))
        return tuple(layer.top)

    def _register(self, layer: Any, module: CaffeLayer) -> None:
        if layer.name in self._modules or not layer.name or "." in layer.name:
            raise CaffeGraphError(f"layer {layer.name!r}: layer names must be unique, non-empty "
                                  f"and without '.' to name parameters")
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
        names = {id(p): n for n, p in self.named_parameters()}

        def key(layer: str, index: int) -> str:
            own = params.get(layer, [])
            if index < len(own):
                return names[id(own[index])]
            return f"{layer}.{BLOB_NAMES[index]}" if index < len(BLOB_NAMES) else f"{layer} blob {index}"
        check_fit({key(n, i): tuple(p.shape) for n, ps in params.items() for i, p in enumerate(ps)},
                  {key(n, i): tuple(np.shape(b)) for n, bs in found.items() for i, b in enumerate(bs)},
                  source, f"net {self.net_name!r}", equal=lambda got, want: got == want or _legacy_equal(got, want))
        with torch.no_grad():
            for name, layer_params in params.items():
                for param, blob in zip(layer_params, found[name]):
                    param.copy_(torch.from_numpy(np.asarray(blob, dtype=np.float32).reshape(param.shape)))

    #: The name the family helper's converter and the brief use.
    load_caffemodel_blobs = load_blobs
