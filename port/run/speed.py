"""Inference speed settings: named precision modes and the CPU/GPU knobs they switch.

A :class:`SpeedMode` names one way of running a net: the numeric precision (strict IEEE fp32,
TF32 tensor cores, bf16 autocast) and the speed knobs that do not change the arithmetic
(channels-last memory, cuDNN's algorithm search, oneDNN prepacked weights with the in-place
ReLU fused into the convolution, ``torch.compile``). The exact modes give Caffe's numbers to
within fp32 summation order; the fast modes trade that for speed, and their agreement with
strict fp32 (mean IU difference, argmax agreement) is measured by ``benchmarks/gpu_check.py``
and recorded in ``benchmarks/RESULTS.md``.

>>> mode = MODES["cpu-fast"]
>>> model = prepare_model(model, mode, "cpu")          # doctest: +SKIP
>>> with backend_flags(mode), autocast(mode, "cpu"):   # doctest: +SKIP
...     score = model(to_input(data, mode))
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from port.errors import PortError
from port.net import ops
from port.net.engine import CaffeNet
from port.net.layers import Convolution, Identity, redress, relu_in_place_after
from port.run import canvas
from port.run.fold import fold_batchnorm

__all__ = ["SpeedMode", "STRICT", "STRICT_CANVAS", "CPU_FAST", "FAST_TF32", "FAST_BF16", "MODES",
           "FAST_TF32_CONV5", "FAST_TF32_SPLIT5", "FAST_FP16", "FAST_FP16_CONV5", "keep_fp32",
           "to_tf32", "SplitTf32Convolution", "split_tf32",
           "PackedConvolution", "set_backend_flags", "backend_flags", "autocast", "to_input",
           "set_threads", "prepack_cpu", "prepare_model", "compile_model", "CompileResult",
           "count_flops", "Runner", "mode_named", "UnknownModeError", "plain_path", "on_plain_path",
           "cpu_fast_net", "mkldnn_ok", "weight_key", "fusable_relus"]


@dataclass(frozen=True)
class SpeedMode:
    """One named way of running a net.

    ``tf32``: TF32 tensor cores for matmuls and cuDNN convolutions (10-bit mantissa inputs);
    ``autocast``: ``"bfloat16"`` (or ``"float16"``) autocast, else None; ``channels_last``: NHWC
    memory for model and inputs; ``cudnn_benchmark``: cuDNN times and picks algorithms;
    ``cudnn_deterministic``: only deterministic cuDNN algorithms (None: when not benchmarking);
    ``prepack``: on the CPU, oneDNN weights reordered once and each in-place ReLU fused into
    its convolution (:func:`prepack_cpu`); ``compile``:
    ``torch.compile`` the model (:func:`compile_model`); ``fp32_layers``: layers (by Caffe layer
    name) that run in IEEE fp32 -- TF32 and autocast off, inputs cast to float32 -- inside an
    otherwise reduced-precision mode (:func:`keep_fp32`); ``split_tf32_layers``: convolutions
    whose weight enters TF32 as two parts, ``hi + lo`` (:class:`SplitTf32Convolution`).
    """

    name: str
    tf32: bool = False
    autocast: str | None = None
    channels_last: bool = False
    cudnn_benchmark: bool = False
    cudnn_deterministic: bool | None = None
    prepack: bool = False
    compile: bool = False
    skip_constant: bool = False
    fp32_layers: tuple[str, ...] = ()
    split_tf32_layers: tuple[str, ...] = ()
    description: str = ""

    @property
    def exact(self) -> bool:
        """Whether the arithmetic is IEEE fp32 throughout (only summation order may differ)."""
        return not self.tf32 and self.autocast is None


#: Reproduction first: IEEE fp32 everywhere, deterministic cuDNN algorithms, contiguous NCHW.
STRICT = SpeedMode("strict-fp32", description="fp32, TF32 off (matmul and cuDNN), deterministic cuDNN")
#: Strict fp32 arithmetic with the trunk's constant canvas (conv1_1's zero padding) computed
#: once per channel instead of at every position.
STRICT_CANVAS = SpeedMode("strict-fp32-canvas", skip_constant=True,
                          description="strict fp32 (as strict-fp32); trunk's constant canvas computed once")
#: Still strict fp32, laid out for the CPU: NHWC, weights reordered once for oneDNN, ReLU fused,
#: the trunk's constant canvas computed once.
CPU_FAST = SpeedMode("cpu-fast", channels_last=True, prepack=True, skip_constant=True,
                     description="strict fp32; channels_last, oneDNN prepacked weights, conv+ReLU fused, "
                                 "constant canvas skipped")
#: GPU fast modes; their agreement with STRICT is measured, not assumed. No cudnn.benchmark:
#: it autotunes again for every new input size, and seg11valid has 122 of them; on an H200 it
#: cut fast-tf32 from 300 to ~21 images/s (benchmarks/RESULTS.md, "GPU evaluation").
FAST_TF32 = SpeedMode("fast-tf32", tf32=True, channels_last=True,
                      description="TF32 matmul and cuDNN, channels_last")
FAST_BF16 = SpeedMode("fast-bf16", tf32=True, autocast="bfloat16", channels_last=True,
                      description="bf16 autocast, TF32, channels_last")
#: VGG16's conv5 block: with random weights, emulated TF32 rounding in its three layers alone
#: flips as many argmaxes as in all other layers together (benchmarks/analyze_tf32.py), for
#: 7.7% of FCN-8s's FLOPs, so the mixed modes treat it apart: in fp32, or with its weights
#: split in two TF32 parts (mostly the weights' rounding flips them).
CONV5 = ("conv5_1", "conv5_2", "conv5_3")
FAST_TF32_CONV5 = SpeedMode("fast-tf32-conv5-fp32", tf32=True, channels_last=True, fp32_layers=CONV5,
                            description="TF32 matmul and cuDNN except conv5_1-conv5_3 (fp32), channels_last")
FAST_TF32_SPLIT5 = SpeedMode("fast-tf32-conv5-split", tf32=True, channels_last=True, split_tf32_layers=CONV5,
                             description="TF32 matmul and cuDNN, channels_last; conv5_1-conv5_3 with their "
                                         "weights split in two TF32 parts (about fp32 weights)")
FAST_FP16 = SpeedMode("fast-fp16", tf32=True, autocast="float16", channels_last=True,
                      description="fp16 autocast, TF32, channels_last")
FAST_FP16_CONV5 = SpeedMode("fast-fp16-conv5-fp32", tf32=True, autocast="float16", channels_last=True,
                            fp32_layers=CONV5,
                            description="fp16 autocast and TF32 except conv5_1-conv5_3 (fp32), channels_last")
MODES: dict[str, SpeedMode] = {m.name: m for m in (STRICT, STRICT_CANVAS, CPU_FAST, FAST_TF32, FAST_BF16,
                                                   FAST_TF32_CONV5, FAST_TF32_SPLIT5, FAST_FP16,
                                                   FAST_FP16_CONV5)}


# -- process-wide backend flags ----------------------------------------------------------------
def _flags() -> dict[str, Any]:
    return {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "matmul_precision": torch.get_float32_matmul_precision()}


def _restore(flags: dict[str, Any]) -> None:
    torch.backends.cuda.matmul.allow_tf32 = flags["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = flags["cudnn_tf32"]
    torch.backends.cudnn.benchmark = flags["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = flags["cudnn_deterministic"]
    torch.set_float32_matmul_precision(flags["matmul_precision"])


def set_backend_flags(mode: SpeedMode) -> dict[str, Any]:
    """Set the global flags of ``mode`` (torch keeps them per process); returns the previous."""
    previous = _flags()
    _restore({"matmul_tf32": mode.tf32, "cudnn_tf32": mode.tf32,
              "cudnn_benchmark": mode.cudnn_benchmark,
              "cudnn_deterministic": (not mode.cudnn_benchmark if mode.cudnn_deterministic is None
                                      else mode.cudnn_deterministic),
              "matmul_precision": "high" if mode.tf32 else "highest"})
    return previous


@contextlib.contextmanager
def backend_flags(mode: SpeedMode) -> Iterator[None]:
    """``mode``'s backend flags inside the block, the previous ones after it."""
    previous = set_backend_flags(mode)
    try:
        yield
    finally:
        _restore(previous)


_PLAIN_PATH = contextvars.ContextVar("port_run_plain_path", default=False)


@contextlib.contextmanager
def plain_path() -> Iterator[None]:
    """Inside the block every net runs the engine's plain path, also in eval mode without
    autograd where it would otherwise run prepared (:mod:`port.run.prepared`): what a named
    precision mode runs is that mode alone (:class:`Runner` enters this block)."""
    token = _PLAIN_PATH.set(True)
    try:
        yield
    finally:
        _PLAIN_PATH.reset(token)


def on_plain_path() -> bool:
    """Whether the caller is inside :func:`plain_path`."""
    return _PLAIN_PATH.get()


def autocast(mode: SpeedMode, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of ``mode`` on ``device`` (a no-op for the fp32 modes)."""
    if mode.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, mode.autocast))


class _Fp32Island:
    """Forward hooks that run one module in IEEE fp32: TF32 off for cuDNN and matmul and
    autocast off while it runs, its floating inputs cast to float32 (the flags are process-wide,
    so they are set on entry and restored on exit)."""

    def __init__(self):
        self.stack: list[tuple[dict[str, Any], contextlib.ExitStack]] = []

    def enter(self, module: nn.Module, args: tuple) -> tuple:
        flags = _flags()
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        exits = contextlib.ExitStack()
        for device_type in ("cuda", "cpu"):
            if torch.is_autocast_enabled(device_type):
                exits.enter_context(torch.autocast(device_type=device_type, enabled=False))
        self.stack.append((flags, exits))
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def leave(self, module: nn.Module, args: tuple, output: Any) -> None:
        flags, exits = self.stack.pop()
        exits.close()
        _restore(flags)


def keep_fp32(model: nn.Module, names: tuple[str, ...] | list[str]) -> nn.Module:
    """Make the named layers of ``model`` run in IEEE fp32 whatever the mode around them (see
    :class:`_Fp32Island`); returns ``model``. A name the model lacks raises, naming it."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"keep_fp32: {type(model).__name__} has no layer(s) {', '.join(missing)}")
    for name in names:
        island = _Fp32Island()
        modules[name].register_forward_pre_hook(island.enter)
        modules[name].register_forward_hook(island.leave)
    return model


# -- TF32 with the weights split in two parts ---------------------------------------------------
TF32_DROPPED_BITS = 13  # fp32 keeps 23 mantissa bits, TF32 10


def to_tf32(x: torch.Tensor) -> torch.Tensor:
    """A float32 tensor rounded to TF32's 10-bit mantissa (to nearest, ties to even), still
    float32: the operand a TF32 tensor core sees (NVIDIA's A100/H100 TF32 format)."""
    if x.dtype != torch.float32:
        raise TypeError(f"to_tf32: expected float32, got {x.dtype}")
    bits = x.contiguous().view(torch.int32)
    half, keep = 1 << (TF32_DROPPED_BITS - 1), ~((1 << TF32_DROPPED_BITS) - 1)
    return ((bits + (half - 1) + ((bits >> TF32_DROPPED_BITS) & 1)) & keep).view(torch.float32).view_as(x)


class SplitTf32Convolution(Convolution):
    """Caffe ``Convolution`` computed as ``conv(x, hi) + conv(x, lo)``, with ``hi`` the weight
    rounded to TF32 (:func:`to_tf32`) and ``lo = weight - hi`` (exact in fp32).

    Under TF32 both products keep their weights to within TF32's rounding of ``lo`` (~2^-22
    of the weight), so only the input is rounded: the weights enter at about fp32 precision for
    twice the layer's TF32 work. In FCN-8s's conv5 the weights' TF32 rounding flips the most
    argmaxes (``benchmarks/analyze_tf32.py``). In IEEE fp32 it equals ``ops.conv2d`` to fp32
    rounding. Parameters are the original ones (state-dict keys unchanged); the split is
    recomputed when the weight changes."""

    @classmethod
    def of(cls, conv: Convolution) -> "SplitTf32Convolution":
        return redress(cls, conv, _split=None)  # type: ignore[return-value]

    def parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hi, lo)`` of the current weight, in its memory format."""
        key = weight_key(self.weight)
        if self._split is None or self._split[0] != key:
            w = self.weight.detach()
            hi = to_tf32(w).contiguous(memory_format=_memory_format(w))
            self._split = (key, hi, (w - hi).contiguous(memory_format=_memory_format(w)))
        return self._split[1], self._split[2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        hi, lo = self.parts()
        y = ops.conv2d(x, hi, self._bias(), self.stride, self.pad, self.groups, self.dilation,
                       self.caffe_name)
        return (y + ops.conv2d(x, lo, None, self.stride, self.pad, self.groups, self.dilation,
                               self.caffe_name),)


def weight_key(weight: torch.Tensor) -> tuple:
    """What identifies a weight's current values: storage, device and in-place version (an
    inference-mode tensor has no version counter: its storage alone)."""
    try:
        version = weight._version
    except RuntimeError:
        version = None
    return weight.data_ptr(), weight.device, version


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else torch.contiguous_format


def _plain_convolutions(model: nn.Module) -> dict[str, Convolution]:
    """The net's Convolution layers (not Deconvolution, not already a run-mode variant)."""
    return {n: m for n, m in model.named_children() if type(m) is Convolution and not m.transposed}


def split_tf32(model: nn.Module, names: tuple[str, ...] | list[str]) -> nn.Module:
    """Replace the named convolutions of ``model`` (layers, by Caffe layer name) by
    :class:`SplitTf32Convolution` in place; returns ``model``. A missing name, or a layer that
    is not a plain convolution, raises, naming it."""
    children = _plain_convolutions(model)
    wrong = [n for n in names if n not in children]
    if wrong:
        raise ValueError(f"split_tf32: {type(model).__name__} has no plain Convolution layer(s) "
                         f"{', '.join(wrong)}")
    for name in names:
        setattr(model, name, SplitTf32Convolution.of(children[name]))
    return model


def to_input(x: torch.Tensor, mode: SpeedMode) -> torch.Tensor:
    """An input tensor in ``mode``'s memory format (NHWC for channels_last)."""
    if mode.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def set_threads(threads: int | None = None) -> int:
    """Intra-op threads: ``threads``, else the CPUs this process may run on (its affinity, which
    a container or ``taskset`` may make smaller than ``os.cpu_count()``). Returns the count.

    Public: torch's default is ``os.cpu_count()``, which in a container limited to fewer CPUs
    oversubscribes them and runs CPU inference slower; the benchmarks call it for that reason."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


# -- CPU: prepacked oneDNN convolutions --------------------------------------------------------
def mkldnn_ok() -> bool:
    """Whether this torch has oneDNN with the fused convolution the prepacked path calls."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _pair(value: int | tuple[int, ...]) -> list[int]:
    return [value, value] if isinstance(value, int) else list(value)


#: The smallest kernel (kh * kw) :class:`PackedConvolution` runs as a matrix product.
MATMUL_KERNEL_AREA = 49


class PackedConvolution(Convolution):
    """Caffe ``Convolution`` (and, with ``relu``, the in-place ``ReLU`` after it) through
    oneDNN with the weight reordered to oneDNN's blocked layout once instead of on every call.

    The arithmetic is the one :func:`port.net.ops.conv2d` gets from oneDNN (same kernels, same
    summation), so outputs are bit-identical to the unfused convolution + ReLU. Parameters are
    the original ones (state-dict keys unchanged); the packed copy is made at the first call
    (oneDNN's layout for that input) and again when the weight changes (the old one released
    first). Off the CPU, outside fp32, or with autograd on, it runs
    :func:`port.net.ops.conv2d`.
    """

    @classmethod
    def of(cls, conv: Convolution, relu: bool) -> "PackedConvolution":
        return redress(cls, conv, relu=relu, _packed=[None])  # type: ignore[return-value]

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        key, cell = weight_key(self.weight), self._packed
        if cell[0] is None or cell[0][0] != key:
            cell[0] = None
            cell[0] = (key, torch.ops.mkldnn._reorder_convolution_weight(
                self.weight.detach(), _pair(self.pad), _pair(self.stride), _pair(self.dilation),
                self.groups, list(x.shape)))
        return cell[0][1]

    def unpadded(self) -> "PackedConvolution":
        """The same convolution with ``pad: 0``, for the crops of :mod:`port.run.canvas`: same
        parameters and the same packed copy (oneDNN reorders a packed weight only where a
        primitive wants another layout, and the crops' primitives want this one)."""
        return redress(PackedConvolution, self, pad=0, _packed=self._packed)  # type: ignore[return-value]

    def _fast(self, x: torch.Tensor) -> bool:
        grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        return (x.device.type == "cpu" and x.dtype == torch.float32 == self.weight.dtype and not grad
                and x.dim() == 4 and x.shape[1] == self.weight.shape[1] * self.groups)

    def _as_matmul(self) -> bool:
        """Whether this convolution runs as one matrix product (:meth:`_matmul`): a large
        kernel (7x7 and up) read without padding, stride or groups (FCN's ``fc6``: 4096 x
        25088 weights over a few hundred positions), which oneDNN's direct convolution runs
        at about 70% of the speed of the matrix product (``benchmarks/RESULTS.md``)."""
        kh, kw = _pair(self.kernel)
        return (kh * kw >= MATMUL_KERNEL_AREA and self.groups == 1 and _pair(self.pad) == [0, 0]
                and _pair(self.stride) == [1, 1] and _pair(self.dilation) == [1, 1])

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution as im2col and one ``addmm`` with the weight as it is (no packed
        copy): each output is a sum over the C x kh x kw window of weight times input, plus
        the bias, as Caffe's ``im2col`` + ``gemm`` (conv_layer.cpp ``forward_cpu_gemm``); fp32
        throughout, only the summation order is the matrix library's."""
        n, kh, kw = int(x.shape[0]), *_pair(self.kernel)
        out_h, out_w = int(x.shape[2]) - kh + 1, int(x.shape[3]) - kw + 1
        columns = x.unfold(2, kh, 1).unfold(3, kw, 1).permute(0, 2, 3, 1, 4, 5).reshape(n * out_h * out_w, -1)
        weight = self.weight.detach().reshape(self.weight.shape[0], -1).t()
        bias = self._bias()
        y = columns @ weight if bias is None else torch.addmm(bias.detach(), columns, weight)
        if self.relu:
            y.relu_()
        return y.view(n, out_h, out_w, -1).permute(0, 3, 1, 2)  # NHWC memory, as oneDNN's

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if not self._fast(x):
            (y,) = super().forward(x)
            return (torch.relu(y) if self.relu else y,)
        if self._as_matmul() and x.shape[2] >= _pair(self.kernel)[0] and x.shape[3] >= _pair(self.kernel)[1]:
            return (self._matmul(x),)
        return (torch.ops.mkldnn._convolution_pointwise(
            x, self._packed_weight(x), self._bias(), _pair(self.pad), _pair(self.stride),
            _pair(self.dilation), self.groups, "relu" if self.relu else "none", [], ""),)


def fusable_relus(model: CaffeNet) -> dict[str, str]:
    """Convolution name -> the in-place ReLU (``negative_slope: 0``) that directly follows it
    in the net's layer order (:func:`port.net.layers.relu_in_place_after`), for the
    convolutions :class:`PackedConvolution` runs: a plain Convolution or an already packed one
    (not another run-mode variant, which packing would undo)."""
    steps, layers = model.steps, model.caffe_layers()
    pairs = {}
    for index, (conv, _, _) in enumerate(steps):
        relu = relu_in_place_after(steps, layers, index)
        if relu is not None and type(layers[conv]) in (Convolution, PackedConvolution):
            pairs[conv] = relu
    return pairs


def _check_net(model: nn.Module, what: str) -> None:
    if not isinstance(model, CaffeNet):
        raise TypeError(f"{what} needs a port.net.engine.CaffeNet (a builder's net or one read "
                        f"from a prototxt), got {type(model).__name__}")


def prepack_cpu(model: CaffeNet) -> CaffeNet:
    """A copy of a net (:func:`port.run.canvas.sharing_copy`: the same Parameter objects)
    whose convolutions are :class:`PackedConvolution` (each fusing the in-place ReLU that
    follows it; that ReLU becomes an identity). Same parameters, same outputs bit for bit,
    fewer passes over memory (MAX pooling's fast path lives in :func:`port.net.ops.pool2d`).
    Without oneDNN the copy is returned unchanged."""
    _check_net(model, "prepack_cpu")
    model = canvas.sharing_copy(model)
    if not mkldnn_ok():
        return model
    relus = fusable_relus(model)
    for name, module in _plain_convolutions(model).items():
        setattr(model, name, PackedConvolution.of(module, relu=name in relus))
    for relu in relus.values():
        setattr(model, relu, redress(Identity, model.caffe_layers()[relu]))
    return model


def cpu_fast_net(model: CaffeNet, *, skip_constant: bool = True) -> CaffeNet:
    """The CPU form of :data:`CPU_FAST` (and of the default path, :mod:`port.run.prepared`): a
    copy sharing the net's parameters (but for the convolutions a BatchNorm folds into:
    :func:`port.run.fold.fold_batchnorm`), prepacked (:func:`prepack_cpu`) and, with
    ``skip_constant``, its trunk on the constant canvas where :func:`port.run.canvas.pays_off`.
    Its inputs go in NHWC (:func:`to_input`)."""
    model = prepack_cpu(fold_batchnorm(model))  # BatchNorm + Scale folded into their convolution first
    if skip_constant and canvas.pays_off(model):
        model = canvas.constant_canvas(model, inplace=True)
    return model


# -- putting it together -----------------------------------------------------------------------
def prepare_model(model: nn.Module, mode: SpeedMode, device: str | torch.device = "cpu") -> nn.Module:
    """``model`` in eval mode on ``device`` (moved in place as ``Module.to`` does); on the CPU
    with ``mode.prepack``, its :func:`cpu_fast_net` (NHWC inputs; BatchNorm and Scale folded
    into their convolution, :func:`port.run.fold.fold_batchnorm`; prepacked; the canvas when
    ``mode.skip_constant``); otherwise in ``mode``'s memory format, its trunk on the constant
    canvas when ``mode.skip_constant`` and :func:`port.run.canvas.pays_off` (a
    :func:`port.run.canvas.sharing_copy` then),
    ``mode.fp32_layers`` kept in fp32 (:func:`keep_fp32`), ``mode.split_tf32_layers`` split
    (:func:`split_tf32`, in place). ``mode.compile`` is left to
    :func:`compile_model`, whose warm-up the caller times."""
    _check_net(model, "prepare_model")
    device = torch.device(device)
    model = model.eval().to(device)
    if mode.prepack and device.type == "cpu":
        model = cpu_fast_net(model, skip_constant=mode.skip_constant)
    else:
        if mode.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if mode.skip_constant and canvas.pays_off(model):
            model = canvas.constant_canvas(model)
    if mode.fp32_layers:
        model = keep_fp32(model, _present(model, mode, "fp32_layers", dict(model.named_modules())))
    if mode.split_tf32_layers:
        model = split_tf32(model, _present(model, mode, "split_tf32_layers", _plain_convolutions(model)))
    return model


def _present(model: nn.Module, mode: SpeedMode, field: str, layers: dict[str, nn.Module]) -> list[str]:
    """The layers of ``mode.<field>`` that ``model`` has; a warning names the others (the
    mixed modes were designed and measured on VGG16 nets; other nets run them without)."""
    names = getattr(mode, field)
    missing = [n for n in names if n not in layers]
    if missing:
        warnings.warn(f"{mode.name}: {type(model).__name__} has no layer(s) {', '.join(missing)}; "
                      f"they run as the rest of the mode does ({field})", stacklevel=3)
    return [n for n in names if n in layers]


@dataclass
class CompileResult:
    """What :func:`compile_model` did: the model to run (compiled, or the original when the
    compile failed or ran over its budget), whether it is compiled, the first-call seconds
    and the reason when it is not."""

    model: Callable[..., Any]
    compiled: bool
    warmup_s: float
    reason: str = ""


def compile_model(model: nn.Module, example: dict[str, torch.Tensor], *, budget_s: float = math.inf,
                  mode: str | None = None, freezing: bool = True) -> CompileResult:
    """``torch.compile(model)`` warmed up on ``example`` (the first call compiles). ``freezing``
    lets Inductor fold the weights as constants (on the CPU: prepacked oneDNN weights, fused
    ReLU). A compile error or a warm-up over ``budget_s`` gives the eager model back, with the
    reason; the budget is checked after the warm-up (a compile cannot be interrupted).
    ``Runner`` calls it for the modes that ask for a compile; a user serving many images of one
    size calls it to pay the compile once, within a budget."""
    start = time.perf_counter()
    try:
        options = {"freezing": True} if freezing else None
        compiled = torch.compile(model, mode=mode if options is None else None, options=options)
        with torch.inference_mode():
            compiled(**example)
    except Exception as err:  # Dynamo/Inductor raise many types; the eager model still works
        return CompileResult(model, False, time.perf_counter() - start,
                             f"compile failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    elapsed = time.perf_counter() - start
    if elapsed > budget_s:
        return CompileResult(model, False, elapsed, f"warm-up {elapsed:.0f} s over budget {budget_s:.0f} s")
    return CompileResult(compiled, True, elapsed)


def _layer_flops(module: Convolution, x: torch.Tensor, y: torch.Tensor) -> int:
    """Multiply-adds x 2 of one convolution or deconvolution call, from its shapes."""
    if not module.transposed:
        c_out, c_in_g, kh, kw = module.weight.shape
        return 2 * c_in_g * kh * kw * y.numel()
    c_in, c_out_g, kh, kw = module.weight.shape  # Deconvolution: every input value spreads
    return 2 * c_out_g * kh * kw * x.numel()


def count_flops(model: nn.Module, **inputs: torch.Tensor) -> tuple[int, dict[str, int]]:
    """(total, per layer) floating-point operations (2 per multiply-add) of the convolutions
    and deconvolutions of one forward on ``inputs``, counted from their shapes (run on the
    meta device when the model is there, so nothing is computed). Public: what a net costs at
    an input size, e.g. to turn a measured time into GFLOP/s (``benchmarks/bench_infer.py``)."""
    per_layer: dict[str, int] = {}

    def hook(module, args, output):
        name = module.caffe_name
        per_layer[name] = per_layer.get(name, 0) + _layer_flops(module, args[0], output[0])

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, Convolution)]
    try:
        with torch.inference_mode():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return sum(per_layer.values()), per_layer


# -- one object for a mode on a net ------------------------------------------------------------
class UnknownModeError(PortError):
    """A precision mode name that is not one of :data:`MODES`."""


def mode_named(mode: "SpeedMode | str") -> SpeedMode:
    """``mode`` itself, or the mode of :data:`MODES` called so (PortError listing them)."""
    if isinstance(mode, SpeedMode):
        return mode
    if mode not in MODES:
        raise UnknownModeError(f"unknown precision mode {mode!r}; modes: {', '.join(MODES)}")
    return MODES[mode]


class Runner:
    """A precision mode applied to a net on a device: the one object that puts the mode's
    pieces together, so no caller combines them by hand.

    At construction the net is prepared (:func:`prepare_model`: eval mode, device, memory
    format, CPU prepacking, the constant canvas, fp32 islands, split TF32 weights; a copy where
    a piece needs one). Each call moves the inputs to the device in the mode's layout
    (:func:`to_input`) and runs the net under the mode's backend flags (:func:`backend_flags`,
    restored after) and autocast, without autograd. :meth:`compile` puts the prepared net
    through ``torch.compile`` (:func:`compile_model`) for the modes that ask for it.

    >>> runner = Runner("cpu-fast", get_model("fcn8s", weights=...), "cpu")   # doctest: +SKIP
    >>> score = runner(data)                                                 # doctest: +SKIP
    """

    def __init__(self, mode: "SpeedMode | str", model: CaffeNet, device: str | torch.device = "cpu"):
        self.mode = mode_named(mode)
        self.device = torch.device(device)
        self.model: Callable[..., Any] = prepare_model(model, self.mode, self.device)
        self.compiled: CompileResult | None = None
        # The canvas's maps kept from one call to the next, as the default path keeps them
        # (canvas.ArenaLoan: no page faults on a fresh map in every forward).
        self.maps = canvas.ArenaLoan()

    def place(self, x: Any) -> Any:
        """An input tensor on the device in the mode's memory format (anything else as is)."""
        if isinstance(x, torch.Tensor):
            return to_input(x.to(self.device, non_blocking=True), self.mode)
        return x

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """The mode's backend flags and autocast, no autograd, and the mode alone (no default
        prepared path on top of it: :func:`plain_path`): for a caller that runs the prepared net
        itself (:attr:`model`) over many inputs."""
        with backend_flags(self.mode), autocast(self.mode, self.device), torch.inference_mode(), plain_path():
            yield

    def __call__(self, *args: Any, **inputs: Any) -> Any:
        # Not lent with every blob returned (a map would reach the caller), nor to a compiled
        # net (its graph was traced without the arena).
        lend = not inputs.get("return_blobs") and self.compiled is None
        with self.context(), self.maps.lent(lend):
            return self.model(*[self.place(a) for a in args], **{k: self.place(v) for k, v in inputs.items()})

    def compile(self, example: dict[str, torch.Tensor], *, budget_s: float = math.inf) -> CompileResult:
        """``torch.compile`` the prepared net, warmed up on ``example`` under the mode's flags
        (eager again when it fails or runs over ``budget_s``)."""
        with backend_flags(self.mode), autocast(self.mode, self.device), plain_path():
            self.compiled = compile_model(self.model, {k: self.place(v) for k, v in example.items()},
                                          budget_s=budget_s)
        self.model = self.compiled.model
        return self.compiled
