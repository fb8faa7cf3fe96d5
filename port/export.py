"""A net with its weights written for deployment: a caffemodel for Caffe, an ONNX file, or a
saved ``torch.export`` ExportedProgram (``.pt2``) -- one file for every input size.

The ONNX and ``.pt2`` forms trace the engine's plain path (``port.net.engine.CaffeNet``, TEST
phase; every prepared fast form declines while ``torch.compiler.is_compiling()``, which
``torch.export`` sets) with the height and width of every input dynamic
(``torch.export.Dim``), so the sizes Caffe derives at run time stay formulas of the input
size in the file: ceil-rounded pooling (``PoolingLayer::Reshape``), convolution and
deconvolution sizes, and each Crop's output size, which follows its reference blob
(``CropLayer::Reshape``; the offsets are the fixed numbers coord_map derived). The batch is
1. ``port.net.ops`` keeps sizes symbolic while traced (no ``int()`` of a size, checks that add
no guard, the padded form of ceil pooling, a crop by index); in eager mode it computes the same
numbers as before.

Sizes: one range, ``[min_size(net), inf)`` for both height and width: the smallest size from
which every layer takes its input (Caffe's checks: each convolution and pooling output at
least 1, each crop inside its input) and every spatial blob is at least 2 x 2 (PyTorch's
export treats a size of 1 apart), checked for :data:`SIZE_SPAN` sizes on (a crop's fit varies
with the size modulo the net's stride). For the released FCNs (``pad: 100``) that is 27 or
so; :func:`min_size` computes it and the ``.pt2`` checks it at run time.

ONNX: opset :data:`ONNX_OPSET`, written by PyTorch's dynamo exporter
(``torch.onnx.export(exported_program, dynamo=True)``), which needs the ``onnx`` and
``onnxscript`` packages (``pip install 'fcn-port[export]'``, which also brings
``onnxruntime`` to run the file). Inputs keep the net's input names (``data``, or ``color``
and ``hha``), outputs its output names (``score``, or ``score_sem`` and ``score_geo``); the
dynamic axes are named ``height`` and ``width``.

A net that cannot be exported is refused in one line naming the layer: a data layer that
reads its own files (``Python``), a loss or an accuracy (they need labels), an input that is
not N x C x H x W.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from port.errors import PortError

__all__ = ["ExportError", "FORMATS", "ONNX_OPSET", "SIZE_SPAN", "Deployable", "export",
           "export_caffemodel", "export_program", "export_refusal", "fit_hint", "format_of",
           "load_net", "min_size", "write_onnx", "write_pt2"]

#: What ``python -m port export --format`` writes, with the suffix each output must have.
FORMATS = {"caffemodel": ".caffemodel", "onnx": ".onnx", "pt2": ".pt2"}
#: The ONNX opset of the exported files (Pad with negative pads, Gather, ConvTranspose, MaxPool).
ONNX_OPSET = 18
#: How many sizes from :func:`min_size` on must all be taken by every layer.
SIZE_SPAN = 128
#: The names of the dynamic axes (the ONNX file's ``dim_param``).
AXES = ("height", "width")

#: Layer types whose blobs are not computed from the net's inputs alone, beside every
#: ``...Loss`` type (which :func:`export_refusal` tells by its name).
_NEEDS_LABELS = ("Accuracy",)


class ExportError(PortError):
    """An export whose files, options or net do not fit (named in the message)."""


def export_refusal(net: Any) -> str | None:
    """Why ``net`` (a :class:`port.net.engine.CaffeNet`) cannot be exported for inference, as
    one line naming the first layer or input at fault; None when it can."""
    for layer in net.netdef.layers:
        if layer.type == "Python":
            return (f"layer {layer.name!r} (Python): a data layer reads its own files at run time; "
                    f"export the deploy net (an Input layer, e.g. `python -m port prototxt NAME --deploy`)")
        if layer.type in _NEEDS_LABELS or layer.type.endswith("Loss"):
            return (f"layer {layer.name!r} ({layer.type}): needs labels, not part of inference; "
                    f"export the deploy net (no loss or accuracy layers)")
    for name, shape in net.input_shapes.items():
        if len(shape) != 4:
            return f"input {name!r}: shape {tuple(shape)} is not N x C x H x W (height and width are exported dynamic)"
    return None


def _sizes_taken(net: Any, height: int, width: int) -> bool:
    """Whether every layer of ``net`` takes inputs of ``height`` x ``width`` (its ``Reshape``
    arithmetic and checks, :meth:`port.net.layers.CaffeLayer.output_shapes`) and every
    spatial blob is at least 2 x 2."""
    from port.net.ops import CaffeSemanticsError
    from port.net.layers import CaffeGraphError
    shapes = {n: (1, s[1], height, width) for n, s in net.input_shapes.items()}
    layers = net.caffe_layers()
    try:
        for name, bottoms, tops in net.steps:
            shapes.update(zip(tops, layers[name].output_shapes([shapes[b] for b in bottoms])))
    except (CaffeSemanticsError, CaffeGraphError):
        return False
    return all(min(s[2:4]) >= 2 for s in shapes.values() if len(s) == 4)


def min_size(net: Any, limit: int = 4096) -> int:
    """The smallest input height and width from which ``net`` takes every size (the next
    :data:`SIZE_SPAN` sizes checked too): the lower bound of the exported sizes."""
    size, start = 2, 2
    while size < limit:
        if not _sizes_taken(net, size, size):
            start = size + 1
        elif size - start >= SIZE_SPAN:
            return start
        size += 1
    raise ExportError(f"net {net.net_name!r}: no input size up to {limit} that every layer takes")


def load_net(weights: str | os.PathLike, *, net_path: str | os.PathLike | None = None,
             model: str | None = None, width_divisor: int | None = None) -> Any:
    """The TEST-phase net to export, with ``weights`` (any weights file, through
    ``port.weights``) loaded strictly: the deploy net of the released net ``model`` (its
    classes and width from the weights' metadata unless ``width_divisor`` says), or the net of
    the prototxt ``net_path``."""
    from port.weights import kind_of, load_into, read_metadata
    if model is not None:
        from port.models import get_meta, get_model
        from port.weights import resolve_kwargs
        released = get_meta(model)  # an unknown name raises with the nearest names
        is_safetensors = kind_of(weights) == "safetensors"
        kwargs = resolve_kwargs(weights if is_safetensors else None, released.name,
                                *_released_kwargs(released, width_divisor))
        net = get_model(released.name, **kwargs)
    else:
        if net_path is None or not Path(net_path).is_file():
            raise ExportError(f"{net_path}: net prototxt not found")
        from port.caffe import load_net as read_prototxt
        from port.load import build_net
        net = build_net(read_prototxt(net_path), "TEST")
        refusal = export_refusal(net)
        if refusal:
            raise ExportError(f"{net_path}: {refusal}")
        is_safetensors = kind_of(weights) == "safetensors"
    load_into(net, weights, hint=fit_hint(read_metadata(weights)) if is_safetensors else "")
    return net.eval()


def fit_hint(meta: dict[str, str]) -> str:
    """What the weights' metadata says they are for, as the options to pass."""
    from port.weights import BUILDER, builder_kwargs
    builder, width = meta.get(BUILDER, ""), builder_kwargs(meta).get("width_divisor")
    if not builder:
        return f"the weights record --width-divisor {width}" if width not in (None, 1) else ""
    option = f"--model {builder}" + (f" --width-divisor {width}" if width not in (None, 1) else "")
    return f"they are weights of {builder}" + (f" at --width-divisor {width}" if width else "") + f": pass {option}"


class Deployable(torch.nn.Module):
    """A :class:`port.net.engine.CaffeNet` as an exporter wants it: the inputs positionally in
    :attr:`input_names` order, the outputs as a tuple in :attr:`output_names` order (Caffe's:
    the unconsumed blobs, sorted by name)."""

    def __init__(self, net: Any):
        super().__init__()
        self.net = net
        self.input_names, self.output_names = tuple(net.input_names), tuple(net.output_names)

    def forward(self, *inputs: Any) -> tuple:
        from port.net.engine import CaffeNet
        # CaffeNet's forward (not a subclass's, e.g. FCN's single-tensor form): the outputs by name.
        out = CaffeNet.forward(self.net, *inputs)
        return tuple(out[name] for name in self.output_names)


@contextlib.contextmanager
def _torch_internal_warnings_off():
    """PyTorch's exporters warn about their own deprecated internals (``isinstance(treespec,
    LeafSpec)``, raised inside ``torch.utils._pytree`` while the program is copied) and log that
    torchvision's operators are not registered (``torchvision is not installed. Skipping
    torchvision::nms``): nothing a user of ``port export`` did or can change, and no FCN layer
    uses them, so neither is printed; every other warning is."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def export_program(net: Any, size: int | None = None) -> Any:
    """``torch.export.export`` of ``net`` (TEST phase, eval) with every input's height and width
    dynamic, from :func:`min_size` on; traced at ``size`` (default: 64 or the minimum)."""
    refusal = export_refusal(net)
    if refusal:
        raise ExportError(f"net {net.net_name!r}: {refusal}")
    lowest = min_size(net)
    size = max(size or 64, lowest)
    height, width = torch.export.Dim(AXES[0], min=lowest), torch.export.Dim(AXES[1], min=lowest)
    module = Deployable(net).eval()
    device = next(net.parameters(), torch.empty(0)).device
    example = tuple(torch.zeros(1, net.input_shapes[n][1], size, size, device=device) for n in net.input_names)
    dynamic = ({2: height, 3: width},) * len(example)
    # Traced with autograd on: a prepared inference form (eval without autograd) never
    # stands in for the plain path, on top of its declining under torch.compiler.is_compiling().
    # Guards PyTorch cannot prove over the range (its own ceil-mode and contiguity checks,
    # true for every size taken) become run-time asserts instead of failing the export.
    with torch.enable_grad(), _torch_internal_warnings_off():
        return torch.export.export(module, example, dynamic_shapes=(dynamic,), strict=False,
                                   prefer_deferred_runtime_asserts_over_guards=True)


def write_pt2(program: Any, out: str | os.PathLike) -> Path:
    """The ExportedProgram saved (``torch.export.save``) at ``out``, atomically."""
    from port.fileio import atomic_open
    out = Path(out)
    with atomic_open(out) as fh:
        torch.export.save(program, fh)
    return out


def write_onnx(program: Any, out: str | os.PathLike, input_names: Sequence[str],
               output_names: Sequence[str]) -> Path:
    """The ExportedProgram as ONNX (opset :data:`ONNX_OPSET`) at ``out``, atomically, its
    dynamic axes named ``height`` and ``width``."""
    from port.fileio import atomic_open
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ExportError(f"--format onnx needs the onnx and onnxscript packages ({err.name} is "
                          f"missing): pip install 'fcn-port[export]'") from None
    with _torch_internal_warnings_off():
        onnx_program = torch.onnx.export(program, (), dynamo=True, input_names=list(input_names),
                                         output_names=list(output_names), opset_version=ONNX_OPSET,
                                         optimize=False, verbose=False)
    model = onnx_program.model_proto
    _name_axes(model, program)
    out = Path(out)
    with atomic_open(out) as fh:
        fh.write(model.SerializeToString())
    return out


def _name_axes(model: Any, program: Any) -> None:
    """Rename the symbols of the inputs' height and width (``s18``...) to :data:`AXES`
    wherever they stand alone in the graph's declared shapes."""
    names = {}
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            for axis, name in zip((2, 3), AXES):
                names[str(node.meta["val"].shape[axis])] = name
    graph = model.graph
    for info in (*graph.input, *graph.output, *graph.value_info):
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def format_of(out: str | os.PathLike, fmt: str | None = None) -> str:
    """The format written at ``out``: ``fmt`` (one of :data:`FORMATS`) or, without it, told by
    the suffix; a suffix that does not fit is an :class:`ExportError` naming the one expected."""
    name = Path(out).name
    if fmt is None:
        fmt = next((f for f, suffix in FORMATS.items() if name.endswith(suffix)), None)
        if fmt is None:
            raise ExportError(f"{out}: the output must end in {', '.join(FORMATS.values())} "
                              f"(or name the format: --format {'|'.join(FORMATS)})")
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
    if not name.endswith(FORMATS[fmt]) or name == FORMATS[fmt]:
        raise ExportError(f"{out}: the output of --format {fmt} must end in {FORMATS[fmt]}")
    return fmt


def export_caffemodel(weights: str | os.PathLike, out: str | os.PathLike, phase: str = "TEST", *,
                      net_path: str | os.PathLike | None = None, model: str | None = None,
                      width_divisor: int | None = None) -> Path:
    """``weights`` (safetensors) written as a caffemodel of ``phase`` at ``out``: the net of
    ``net_path`` (a prototxt) or of the released net ``model`` (its ``test`` or ``train``
    form, at the width and classes the file records unless ``width_divisor`` says), filled
    strictly, written by ``port.weights.write_net`` as Caffe's ``Net::ToProto`` saves a net."""
    from port.caffe import load_net as read_prototxt
    from port.load import build_net
    from port.weights import kind_of, load_into, output_kind, read_metadata, resolve_kwargs, write_net
    weights, out = Path(weights), Path(out)
    if kind_of(weights) != "safetensors":
        raise ExportError(f"{weights}: export reads a .safetensors (a caffemodel is Caffe's already)")
    output_kind(out, (".caffemodel",))
    meta = read_metadata(weights)
    if model is not None:
        from port.models import get_meta, net_spec
        released = get_meta(model)  # an unknown name raises with the nearest names
        kwargs = resolve_kwargs(weights, released.name, *_released_kwargs(released, width_divisor))
        netdef = net_spec(released.name, "train" if phase == "TRAIN" else "test", **kwargs).netdef()
    else:
        if net_path is None or not Path(net_path).is_file():
            raise ExportError(f"{net_path}: net prototxt not found")
        netdef = read_prototxt(net_path)
    net = build_net(netdef, phase)
    load_into(net, weights, hint=fit_hint(meta))
    return write_net(net, out)


def _released_kwargs(released: Any, width_divisor: int | None) -> tuple[dict, dict]:
    """``(requested, defaults)`` builder arguments of a released net for
    ``port.weights.resolve_kwargs``."""
    from port.models.released import builder_defaults
    defaults = builder_defaults(released)
    return {k: None for k in defaults} | {"width_divisor": width_divisor}, defaults


def export(weights: str | os.PathLike, out: str | os.PathLike, fmt: str | None = None, *,
           net_path: str | os.PathLike | None = None, model: str | None = None,
           width_divisor: int | None = None, phase: str = "TEST") -> Path:
    """``weights`` of the net of ``net_path`` (a prototxt) or of the released net ``model``
    written at ``out`` as ``fmt`` (:data:`FORMATS`; None: by ``out``'s suffix): a caffemodel
    (:func:`export_caffemodel`, any ``phase``), or ONNX / ``.pt2`` of the TEST net with a
    dynamic height and width."""
    fmt = format_of(out, fmt)
    if fmt == "caffemodel":
        return export_caffemodel(weights, out, phase, net_path=net_path, model=model,
                                 width_divisor=width_divisor)
    if phase != "TEST":
        raise ExportError(f"--format {fmt} exports the TEST net for inference, not {phase}")
    out = Path(out)
    if not out.parent.is_dir():
        raise ExportError(f"{out}: folder {out.parent} does not exist")
    net = load_net(weights, net_path=net_path, model=model, width_divisor=width_divisor)
    program = export_program(net)
    if fmt == "pt2":
        return write_pt2(program, out)
    return write_onnx(program, out, net.input_names, net.output_names)
