"""Constant-canvas evaluation of an FCN trunk: the work on the zero padding done once per channel.

FCN's first convolution pads its input by ``pad: 100`` zeros (``conv1_1`` of voc-fcn*/val.prototxt,
``conv1`` of voc-fcn-alexnet), so most of every trunk map is computed from that padding alone.
Far from the image, ``conv1_1``'s output is its bias (then ReLU), the next layer's is again one
value per channel, and so on. Per axis, each trunk map has three kinds of positions:

- *inner*: the receptive field reaches the image (an interval: the image plus a halo);
- *rim*: the field reaches a canvas edge, where a later convolution's own zero ``pad`` or a
  pooling's ceil-rounded last window (Caffe ``PoolingLayer::Reshape``) sees something other than
  the canvas constant (a run of leading and one of trailing positions);
- *generic*: neither.

A value whose row or column is not inner never sees the image, so it is the value the same net
computes on an all-zero image ("empty canvas"); that one is translation invariant along an axis
away from the rims. Hence each map is: a per-channel constant, plus a row profile on the rim rows
(the same for every non-rim column) and a column profile on the rim columns, plus the four rim
corners, plus the inner block. :func:`constant_canvas` evaluates each trunk layer that way,
computing the profiles, the corners and the inner block with the layer's own weights and
:mod:`port.net.ops` on crops of its input (the zero ``pad`` put back explicitly where a crop meets a
canvas edge), and writes them into the full map, which it returns (so ``pool3``/``pool4`` feed the
skips unchanged). Every value is computed by the same arithmetic as the plain layer, so outputs
agree to fp32 summation order. Geometry comes from each layer's kernel, stride and pad, through
:func:`port.net.ops.conv_output_size` / :func:`port.net.ops.pool_output_size`; a layer where no generic
position is left (a tiny canvas, where the halo covers everything) runs the plain layer.

Within :func:`reusing` (the default inference path, :mod:`port.run.prepared`), the full maps
are written into an :class:`Arena` kept from one forward to the next instead of new tensors.

>>> fast = constant_canvas(get_model("fcn8s", weights=...))   # doctest: +SKIP
>>> fast(data)                       # the same score as the plain model, less work
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import math
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from port.net import ops
from port.net.engine import CaffeNet
from port.net.layers import LRN, Convolution, Identity, Pooling, ReLU, redress, relu_in_place_after

__all__ = ["Stencil", "AxisPlan", "CanvasError", "plan_axis", "plan_chain", "trunk_chains",
           "constant_canvas", "CanvasChain", "CanvasConvolution", "CanvasPooling", "CanvasLRN",
           "canvas_flops", "sharing_copy", "pays_off", "Arena", "reusing", "ArenaLoan"]

Interval = tuple[int, int]


class CanvasError(RuntimeError):
    """A layer geometry the constant-canvas evaluation does not reproduce exactly."""


@dataclass(frozen=True)
class Stencil:
    """One axis of a layer: ``kind`` is ``"Convolution"`` (zero ``pad``, floor rounding) or
    ``"Pooling"`` (MAX, no pad, ceil rounding: the last window clipped to the input)."""

    kind: str
    kernel: int
    stride: int
    pad: int

    def out_size(self, size: int, layer: str = "") -> int:
        if self.kind == "Pooling":
            return ops.pool_output_size(size, self.kernel, self.stride, self.pad, layer)
        return ops.conv_output_size(size, self.kernel, self.stride, self.pad, layer=layer)

    def window(self, first: int, end: int) -> Interval:
        """Input positions read by outputs ``[first, end)``, before clipping to the input."""
        return first * self.stride - self.pad, (end - 1) * self.stride - self.pad + self.kernel

    def reading(self, start: int, end: int, size_out: int) -> Interval:
        """Outputs whose window meets input positions ``[start, end)``, as an interval."""
        k, s, p = self.kernel, self.stride, self.pad
        first = max(0, (start + p - k) // s + 1)       # o*s - p + k > start
        last = min(size_out, -(-(end + p) // s))       # o*s - p < end
        return first, max(first, last)


#: A pointwise layer (LRN, a standalone ReLU): every output reads its own position.
POINTWISE = Stencil("Convolution", 1, 1, 0)


@dataclass(frozen=True)
class AxisPlan:
    """One axis of one layer's output: its ``size``, the ``inner`` interval (outputs that see
    the image), the ``rims`` (leading, trailing counts of outputs that see a canvas edge) and
    one ``generic`` output that sees neither (None when there is none)."""

    size: int
    inner: Interval
    rims: tuple[int, int]
    generic: int | None

    def rim_ranges(self) -> list[Interval]:
        lead, trail = self.rims
        return [r for r in ((0, lead), (self.size - trail, self.size)) if r[0] < r[1]]


def plan_axis(stencil: Stencil, size: int, inner: Interval, rims: tuple[int, int],
              background_pad: bool = False, layer: str = "") -> AxisPlan:
    """The output axis of a layer reading an axis of ``size`` with that ``inner`` interval and
    those ``rims``. A convolution's zero ``pad`` makes rims unless ``background_pad`` (the first
    layer, whose padding *is* the zero canvas); MAX pooling's clipped windows never read padding."""
    n = stencil.out_size(size, layer)
    k, s, p = stencil.kernel, stencil.stride, stencil.pad
    pad_rim = stencil.kind == "Convolution" and p > 0 and not background_pad
    lead_edge, trail_edge = rims
    lead = min(n, max(0, -(-(lead_edge + p) // s))) if lead_edge or pad_rim else 0   # o*s - p < lead_edge
    first_trailing = (size - trail_edge + p - k) // s + 1                          # o*s - p + k > size - trail
    trail = min(n, max(0, n - max(0, first_trailing))) if trail_edge or pad_rim else 0
    new_inner = stencil.reading(*inner, n)
    free = [o for o in (lead, new_inner[1]) if lead <= o < n - trail and not new_inner[0] <= o < new_inner[1]]
    return AxisPlan(n, new_inner, (lead, trail), free[0] if free else None)


def plan_chain(stencils: Sequence[tuple[Stencil, Stencil]], size: tuple[int, int],
               names: Sequence[str] = ()) -> list[tuple[AxisPlan, AxisPlan]]:
    """Each layer's (rows, columns) plan for a chain read from an input of ``size`` (H, W):
    the whole input is inner and the first layer's padding is the zero canvas."""
    axes = [AxisPlan(n, (0, n), (0, 0), None) for n in size]
    plans = []
    for i, pair in enumerate(stencils):
        name = names[i] if i < len(names) else ""
        axes = [plan_axis(st, a.size, a.inner, a.rims, background_pad=i == 0, layer=name)
                for st, a in zip(pair, axes)]
        plans.append(tuple(axes))
    return plans


# -- the trunk of a net ------------------------------------------------------------------------
def _two(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _stencils(module: nn.Module) -> tuple[Stencil, Stencil] | None:
    """The (rows, columns) stencils of a layer the canvas can run exactly, else None."""
    if isinstance(module, Convolution) and not module.transposed and _two(module.dilation) == (1, 1):
        return tuple(Stencil("Convolution", k, s, p) for k, s, p in
                     zip(_two(module.kernel), _two(module.stride), _two(module.pad)))  # type: ignore[return-value]
    if (isinstance(module, Pooling) and module.mode == "MAX" and not module.global_pooling
            and _two(module.pad) == (0, 0) and all(k >= s for k, s in zip(_two(module.kernel), _two(module.stride)))):
        # windows that leave no input unread
        return tuple(Stencil("Pooling", k, s, 0) for k, s in
                     zip(_two(module.kernel), _two(module.stride)))  # type: ignore[return-value]
    if isinstance(module, LRN) and module.region == "ACROSS_CHANNELS":
        return POINTWISE, POINTWISE
    return None


def _fused_relu(model: CaffeNet, i: int) -> str | None:
    """The in-place ReLU right after convolution ``model.steps[i]`` (name), if there is one
    (:func:`port.net.layers.relu_in_place_after`), also when a run mode already fused it
    (an Identity there: :func:`port.run.speed.prepack_cpu` runs before the canvas)."""
    return relu_in_place_after(model.steps, model.caffe_layers(), i, fused=True)


def _chain_from(model: CaffeNet, i: int) -> list[tuple[str, str | None]]:
    """(layer, fused ReLU) of the chain starting at convolution ``model.steps[i]``, cut after
    its last pooling (the trunk; fc6 and later read all of it)."""
    steps, layers = model.steps, model.caffe_layers()
    chain, blob = [], steps[i][1]
    while i < len(steps):
        name, bottoms, tops = steps[i]
        if bottoms != blob or len(tops) != 1 or _stencils(layers[name]) is None:
            break
        relu = _fused_relu(model, i)
        chain.append((name, relu))
        blob, i = tops, i + (2 if relu else 1)
    pools = [j for j, (name, _) in enumerate(chain) if isinstance(layers[name], Pooling)]
    return chain[:pools[-1] + 1] if pools else []


def trunk_chains(model: CaffeNet) -> list[list[tuple[str, str | None]]]:
    """The trunks of a net: from each convolution reading an input blob (or a Concat of
    inputs), the run of Convolution (+ in-place ReLU), MAX Pooling and LRN layers up to the last
    pooling, as (layer, fused ReLU or None)."""
    if not isinstance(model, CaffeNet):
        raise TypeError(f"constant_canvas needs a port.net.engine.CaffeNet (a builder's net or one "
                        f"read from a prototxt), got {type(model).__name__}")
    layers = model.caffe_layers()
    sources = set(model.input_names) | {t for name, _, tops in model.steps
                                        if layers[name].caffe_type == "Concat" for t in tops}
    return [c for i, (name, bottoms, _) in enumerate(model.steps)
            if isinstance(layers[name], Convolution) and bottoms and bottoms[0] in sources
            and (c := _chain_from(model, i))]


# -- the runtime -------------------------------------------------------------------------------
class CanvasChain:
    """What the layers of one trunk share: the plans per input size (cached) and the tensor the
    last layer produced. A layer runs on the canvas only when its input *is* that tensor (so a
    layer called on anything else runs plainly); the plans travel with it, so concurrent
    forwards of different sizes cannot mix."""

    def __init__(self, names: Sequence[str], stencils: Sequence[tuple[Stencil, Stencil]],
                 slots: Sequence[int | None] | None = None):
        self.names, self.stencils = tuple(names), tuple(stencils)
        #: per layer, the :class:`Arena` slot its map may live in (None: always a new tensor)
        self.slots = tuple(slots) if slots is not None else (None,) * len(self.names)
        self._plans: dict[tuple[int, int], list] = {}
        self._last: tuple[int, torch.Tensor, list] | None = None

    def plans_for(self, index: int, x: torch.Tensor) -> list | None:
        if index == 0:
            size = (int(x.shape[-2]), int(x.shape[-1]))
            if size not in self._plans:
                self._plans[size] = plan_chain(self.stencils, size, self.names)
            return self._plans[size]
        last = self._last
        return last[2] if last is not None and last[0] == index - 1 and last[1] is x else None

    def produced(self, index: int, out: torch.Tensor, plans: list | None) -> None:
        """Record ``out`` for the next layer (nothing kept after the last one)."""
        last = index == len(self.names) - 1 or plans is None
        self._last = None if last else (index, out, plans)


# -- reused maps -------------------------------------------------------------------------------
class Arena:
    """Storage for the full maps of the canvas layers, kept from one forward to the next so
    that a map is written into memory already mapped: a new map of a conv1-sized layer
    (64 x 573 x 698 floats at 375x500) is a fresh ``mmap`` from the allocator, and writing it
    takes one page fault per 4 KiB (measured: about 10% of FCN-8s's forward on a 2-core Xeon,
    ``benchmarks/RESULTS.md``).

    A chain's layers share two alternating slots (a layer reads its predecessor's map and
    writes the other slot); a map read again later in the forward (``pool3``/``pool4``, read by
    the skips after the trunk has gone on) gets a slot of its own, and a net output none
    (:func:`map_slots`). Each slot holds the largest map asked of it so far, so what an arena
    keeps is at most two of a chain's largest maps plus the late-read ones, for the largest
    input it has seen. An arena serves one forward at a time and only where no map outlives
    the forward (the caller gets no intermediate blob): :mod:`port.run.prepared` lends it."""

    def __init__(self) -> None:
        self._slots: dict[tuple[int, int], torch.Tensor] = {}
        self.allocations = 0  # how many slot storages it has made (a test's counter)

    def take(self, chain: "CanvasChain", index: int, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device, fmt: torch.memory_format) -> torch.Tensor:
        """An uninitialised map of ``shape`` in ``fmt`` backed by the slot of layer ``index``."""
        slot = chain.slots[index]
        if slot is None:
            return torch.empty(shape, dtype=dtype, device=device, memory_format=fmt)
        numel, key = math.prod(shape), (id(chain), slot)
        flat = self._slots.get(key)
        if flat is None or flat.numel() < numel or flat.dtype != dtype or flat.device != device:
            self._slots[key] = None  # the old storage goes before the new one is made
            flat = self._slots[key] = torch.empty(numel, dtype=dtype, device=device)
            self.allocations += 1
        n, c, h, w = shape
        if fmt == torch.channels_last:
            return flat[:numel].view(n, h, w, c).permute(0, 3, 1, 2)
        return flat[:numel].view(shape)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._slots.values() if t is not None)


_ARENA: contextvars.ContextVar[Arena | None] = contextvars.ContextVar("port_canvas_arena", default=None)


@contextlib.contextmanager
def reusing(arena: Arena | None):
    """Canvas layers called inside write their maps into ``arena`` (None: new tensors). The
    setting is the calling thread's (a context variable): concurrent forwards never share it."""
    token = _ARENA.set(arena)
    try:
        yield arena
    finally:
        _ARENA.reset(token)


class ArenaLoan:
    """One :class:`Arena` kept by an owner (the default path's prepared form, a
    :class:`port.run.speed.Runner`) and lent to one call at a time: :meth:`lent` runs the
    call's canvas layers in it (:func:`reusing`) and takes it back afterwards. A call that
    finds it out (another thread's call has it), or that may hand a map to its caller
    (``lend=False``: every blob returned), makes new maps."""

    def __init__(self) -> None:
        self.arena: Arena | None = Arena()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lent(self, lend: bool = True):
        arena = None
        if lend:
            with self._lock:
                arena, self.arena = self.arena, None
        try:
            with reusing(arena):
                yield arena
        finally:
            if arena is not None:
                with self._lock:
                    self.arena = arena


def _new_map(chain: "CanvasChain", index: int, shape: tuple[int, ...], like: torch.Tensor,
             fmt: torch.memory_format) -> torch.Tensor:
    arena = _ARENA.get()
    if arena is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)
    return arena.take(chain, index, shape, like.dtype, like.device, fmt)


def map_slots(model: CaffeNet, chain: Sequence[str]) -> list[int | None]:
    """The :class:`Arena` slot of each layer of a chain (layer names, in order) of ``model``:
    0 and 1 alternately where every reader of the layer's map runs before the chain layer two
    further on writes (the next layer, or anything after the chain's last layer), a slot of its
    own (2 + index) where a reader comes later (``pool3``, read by ``score_pool3``), None for a
    net output (it goes to the caller)."""
    steps = model.steps
    position = {name: i for i, (name, _, _) in enumerate(steps)}
    slots: list[int | None] = []
    for index, name in enumerate(chain):
        (top,) = steps[position[name]][2]
        if top in model.output_names:
            slots.append(None)
            continue
        # the step where this layer's slot is written again: a reader after it is too late
        limit = position[chain[index + 2]] if index + 2 < len(chain) else len(steps)
        late = any(top in bottoms for i, (_, bottoms, _) in enumerate(steps) if i > limit)
        slots.append(2 + index if late else index % 2)
    return slots


def _crop(x: torch.Tensor, rows: Interval, cols: Interval) -> torch.Tensor:
    """``x[..., rows, cols]`` where positions outside ``x`` are the convolution's zero pad."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if rows[0] >= 0 and cols[0] >= 0 and rows[1] <= h and cols[1] <= w:
        return x[..., rows[0]:rows[1], cols[0]:cols[1]]
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 \
        else torch.contiguous_format
    out = torch.empty((x.shape[0], x.shape[1], rows[1] - rows[0], cols[1] - cols[0]), dtype=x.dtype,
                      device=x.device, memory_format=fmt).zero_()
    r0, r1, c0, c1 = max(rows[0], 0), min(rows[1], h), max(cols[0], 0), min(cols[1], w)
    if r0 < r1 and c0 < c1:
        out[..., r0 - rows[0]:r1 - rows[0], c0 - cols[0]:c1 - cols[0]] = x[..., r0:r1, c0:c1]
    return out


def _outside(h: int, w: int, rows: Interval, cols: Interval) -> list[tuple[Interval, Interval]]:
    """The bands of an ``h x w`` map around the block ``rows x cols`` (all of it when empty)."""
    (r0, r1), (c0, c1) = rows, cols
    if not (r0 < r1 and c0 < c1):
        return [((0, h), (0, w))]
    bands = [((0, r0), (0, w)), ((r1, h), (0, w)), ((r0, r1), (0, c0)), ((r0, r1), (c1, w))]
    return [(rs, cs) for rs, cs in bands if rs[0] < rs[1] and cs[0] < cs[1]]


def assemble(plan: tuple[AxisPlan, AxisPlan], x: torch.Tensor,
             tile: Callable[[torch.Tensor, Interval, Interval], torch.Tensor],
             new_map: Callable[..., torch.Tensor] | None = None) -> torch.Tensor | None:
    """The layer's output from ``tile(input, rows, cols)`` (outputs ``rows x cols``): the
    column profile through a generic column fills every row (a rim row's value, or the
    constant), the row profile the rim columns, then the rim corners and the inner block are
    computed in full. None where the plan has no generic position (run the plain layer).
    ``new_map(shape, like, memory_format)`` makes the uninitialised map (default: a new tensor)."""
    ay, ax = plan
    if ay.generic is None or ax.generic is None:
        return None
    probe = x[:1]  # the profiles never see the image: the same for every item of a batch
    column = tile(probe, (0, ay.size), (ax.generic, ax.generic + 1))
    row = tile(probe, (ay.generic, ay.generic + 1), (0, ax.size))
    n, c = int(x.shape[0]), int(column.shape[1])
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 \
        else torch.contiguous_format
    shape = (n, c, ay.size, ax.size)
    out = (new_map(shape, column, fmt) if new_map is not None else
           torch.empty(shape, dtype=column.dtype, device=column.device, memory_format=fmt))
    (r0, r1), (c0, c1) = ay.inner, ax.inner
    # the column profile everywhere the inner block (written last) does not cover
    for rows, cols in _outside(ay.size, ax.size, (r0, r1), (c0, c1)):
        out[..., rows[0]:rows[1], cols[0]:cols[1]] = column[..., rows[0]:rows[1], :].expand(
            n, c, rows[1] - rows[0], cols[1] - cols[0])
    for cs, ce in ax.rim_ranges():
        out[..., cs:ce] = row[..., cs:ce]
    for rows in ay.rim_ranges():
        for cols in ax.rim_ranges():
            out[..., rows[0]:rows[1], cols[0]:cols[1]] = tile(x, rows, cols)
    if r0 < r1 and c0 < c1:
        out[..., r0:r1, c0:c1] = tile(x, (r0, r1), (c0, c1))
    return out


def _check_tile(y: torch.Tensor, rows: Interval, cols: Interval, layer: str) -> torch.Tensor:
    if tuple(y.shape[-2:]) != (rows[1] - rows[0], cols[1] - cols[0]):
        raise CanvasError(f"layer {layer!r}: tile of outputs {rows} x {cols} came out "
                          f"{tuple(y.shape[-2:])}")
    return y


def _unpadded(conv: Convolution) -> Convolution:
    """The convolution with ``pad: 0``, sharing its parameters (a prepacked one says how)."""
    if hasattr(conv, "unpadded"):
        return conv.unpadded()
    return redress(Convolution, conv, pad=0)  # type: ignore[return-value]


class CanvasConvolution(Convolution):
    """A trunk Convolution (with the in-place ReLU after it when ``relu``) evaluated on the
    constant canvas. Its parameters are the original layer's (same state-dict keys); the
    original (``pad`` as declared) and a ``pad: 0`` twin for crops are kept unregistered."""

    @classmethod
    def of(cls, conv: Convolution, relu: bool, chain: "CanvasChain", index: int) -> "CanvasConvolution":
        # a tuple: not submodules, no duplicate state-dict keys
        return redress(cls, conv, _impl=(conv, _unpadded(conv)), relu=relu, chain=chain,  # type: ignore[return-value]
                       index=index)

    def _new_map(self, shape: tuple[int, ...], like: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
        return _new_map(self.chain, self.index, shape, like, fmt)

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        (y,) = module(x)
        return torch.relu(y) if self.relu else y

    def _tile(self, x: torch.Tensor, rows: Interval, cols: Interval) -> torch.Tensor:
        sy, sx = self.chain.stencils[self.index]
        crop = _crop(x, sy.window(*rows), sx.window(*cols))
        return _check_tile(self._run(self._impl[1], crop), rows, cols, self.caffe_name)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        plans = self.chain.plans_for(self.index, x)
        out = assemble(plans[self.index], x, self._tile, self._new_map) if plans is not None else None
        if out is None:
            out = self._run(self._impl[0], x)
        self.chain.produced(self.index, out, plans)
        return (out,)


class CanvasPooling(Pooling):
    """A trunk MAX Pooling (no pad) evaluated on the constant canvas; a crop that reaches the
    canvas end keeps Caffe's ceil-rounded last window (:func:`port.net.ops.pool2d` on it)."""

    @classmethod
    def of(cls, pool: Pooling, chain: "CanvasChain", index: int) -> "CanvasPooling":
        return redress(cls, pool, chain=chain, index=index)  # type: ignore[return-value]

    _new_map = CanvasConvolution._new_map

    def _tile(self, x: torch.Tensor, rows: Interval, cols: Interval) -> torch.Tensor:
        sy, sx = self.chain.stencils[self.index]
        (r0, r1), (c0, c1) = sy.window(*rows), sx.window(*cols)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if 2 * (min(c1, w) - c0) >= w:
            # A wide tile pools the whole rows: a band of rows is contiguous in NHWC, a crop
            # is not (the pooling would copy it first), and each output column's window is
            # the one the plain layer pools (the last one clipped as Caffe's).
            return _check_tile(super().forward(x[..., r0:min(r1, h), :])[0][..., cols[0]:cols[1]],
                               rows, cols, self.caffe_name)
        crop = x[..., r0:min(r1, h), c0:min(c1, w)]
        return _check_tile(super().forward(crop)[0], rows, cols, self.caffe_name)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        plans = self.chain.plans_for(self.index, x)
        out = assemble(plans[self.index], x, self._tile, self._new_map) if plans is not None else None
        if out is None:
            (out,) = super().forward(x)
        self.chain.produced(self.index, out, plans)
        return (out,)


class CanvasLRN(LRN):
    """A trunk LRN: per position across channels, so it keeps the canvas structure; it runs on
    the whole map and passes the map on to the next canvas layer."""

    @classmethod
    def of(cls, lrn: LRN, chain: "CanvasChain", index: int) -> "CanvasLRN":
        return redress(cls, lrn, chain=chain, index=index)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        plans = self.chain.plans_for(self.index, x)
        (out,) = super().forward(x)
        self.chain.produced(self.index, out, plans)
        return (out,)


def _wrap(model: CaffeNet, chain: list[tuple[str, str | None]]) -> None:
    layers = model.caffe_layers()
    names = [name for name, _ in chain]
    state = CanvasChain(names, [_stencils(layers[n]) for n in names], map_slots(model, names))
    for index, (name, relu) in enumerate(chain):
        module = layers[name]
        if isinstance(module, Convolution):
            fuse = relu is not None and type(layers[relu]) is ReLU
            setattr(model, name, CanvasConvolution.of(module, fuse, state, index))
            if fuse:
                setattr(model, relu, redress(Identity, layers[relu]))
        elif isinstance(module, Pooling):
            setattr(model, name, CanvasPooling.of(module, state, index))
        else:
            setattr(model, name, CanvasLRN.of(module, state, index))


def sharing_copy(model: CaffeNet) -> CaffeNet:
    """A copy of a net that shares its layers and their Parameter objects but has its own
    table of layers, so a run mode can put variants of some layers in it without touching the
    original or copying a weight (a change to the original's weights is the copy's too). The
    copy keeps no inference cache of the original (``CaffeNet.inference_cache``)."""
    if not isinstance(model, CaffeNet):
        raise TypeError(f"sharing_copy needs a port.net.engine.CaffeNet, got {type(model).__name__}")
    clone = copy.copy(model)
    clone._modules = type(model._modules)(model._modules)
    clone.inference_cache = None
    return clone


def constant_canvas(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` (a :mod:`port.models` family net; unless ``inplace``, a :func:`sharing_copy`:
    the same Parameter objects, its own layer table) with each trunk
    (:func:`trunk_chains`) evaluated on the constant canvas: same parameters and state-dict
    keys, same outputs to fp32 summation order, the work on the padding done once per channel.
    A prepacked model (:func:`port.run.speed.prepack_cpu`) keeps its oneDNN convolutions."""
    chains = trunk_chains(model)
    if not inplace:
        model = sharing_copy(model)
    for chain in chains:
        _wrap(model, chain)
    return model


def pays_off(model: nn.Module) -> bool:
    """Whether the canvas is worth its overhead: every trunk starts with a stride-1
    convolution, so the padding is convolved at full resolution (VGG16's conv1_1). AlexNet's
    conv1 (stride 4) already shrinks the padded border 16-fold, and the canvas's extra small
    convolutions then cost more than they save (benchmarks/RESULTS.md: FCN-AlexNet cpu-fast
    0.176 s plain vs 0.255 s on the canvas at 375x500)."""
    chains = trunk_chains(model)
    layers = model.caffe_layers()
    return bool(chains) and all(_two(layers[chain[0][0]].stride) == (1, 1) for chain in chains)


def canvas_flops(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """(plain, canvas) FLOPs (2 per multiply-add) of the trunk convolutions at input ``size``:
    the canvas count covers the inner blocks, rim corners and the two profiles of each layer."""
    plain = canvas = 0
    layers = model.caffe_layers()
    for chain in trunk_chains(model):
        names = [n for n, _ in chain]
        plans = plan_chain([_stencils(layers[n]) for n in names], size, names)
        for name, (ay, ax) in zip(names, plans):
            module = layers[name]
            if not isinstance(module, Convolution):
                continue
            per_output = 2 * module.weight[0].numel() * module.weight.shape[0]
            plain += per_output * ay.size * ax.size
            if ay.generic is None or ax.generic is None:
                canvas += per_output * ay.size * ax.size
                continue
            outputs = ay.size + ax.size + (ay.inner[1] - ay.inner[0]) * (ax.inner[1] - ax.inner[0])
            outputs += sum((r1 - r0) * (c1 - c0) for r0, r1 in ay.rim_ranges() for c0, c1 in ax.rim_ranges())
            canvas += per_output * outputs
    return plain, canvas
