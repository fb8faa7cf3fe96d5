"""The default inference path: a net in eval mode without autograd, on the CPU, runs prepared.

Any :class:`port.net.engine.CaffeNet` (a builder's :class:`port.models.FCN`, a net
:mod:`port.load` builds) called in ``eval()`` mode under ``torch.no_grad()`` or
``torch.inference_mode()`` with float32 CPU inputs runs what ``Runner("cpu-fast", ...)`` runs
(:func:`port.run.speed.cpu_fast_net`: oneDNN weights reordered once with the in-place ReLU
fused, NHWC activations, the trunk's constant canvas where :func:`port.run.canvas.pays_off`),
with no flag and no wrapper. The arithmetic is IEEE fp32 throughout; only the summation order
of the canvas's tiles differs from the plain path (outputs within 1e-5, argmax unchanged:
``tests/test_default_path.py``). The blobs come back as computed, in NHWC memory (same shapes
and values; the plain path's ``score`` is a crop, no contiguous tensor either, and a copy
back to NCHW would cost 3-5% of FCN-AlexNet's forward).

Everywhere else the engine's plain path runs, exactly as before: in training mode, with
autograd on, on another device (the GPU default stays the strict fp32 the reproduction runs;
the canvas does not pay at batch 1 there and nothing else of the strict path comes without a
process-wide flag), in another dtype, under autocast, ``torch.compile`` or tracing, for a net a
run mode has already dressed (a layer that is not the engine's own class), for a net with a
forward hook on a layer (the prepared form would not call it), inside :func:`plain_path`
(which ``port.run.speed.Runner`` enters for the explicit precision modes), and without oneDNN.

The prepared form (:class:`PreparedForm`, kept as ``net.inference_cache``) shares the net's
Parameter objects (:func:`port.run.canvas.sharing_copy`); its extra memory is the reordered
weights, one copy (``fc6`` runs from the weight as it is: :class:`port.run.speed.PackedConvolution`),
and the canvas's maps kept from one forward to the next (:class:`port.run.canvas.Arena`: two of
a trunk's largest maps plus ``pool3``'s and ``pool4``'s, for the largest input so far; 201 MiB
for FCN-8s at 375x500), which spare the next forward a page fault on every 4 KiB of every new
map. FCN-8s's peak RSS is then below the plain path's (``benchmarks/RESULTS.md``).
The arena is lent to one call at a time (a concurrent call makes new maps) and never to a
call that returns every blob (``return_blobs=True``: a trunk map would reach the caller); a
net output is never written into it. It is made for the weights the net has: each call compares the identity,
storage and in-place version counter of every parameter and buffer, and the identity of every
layer, with the ones it was made for; after ``load_state_dict``, an optimizer step, an
in-place edit or a swapped layer it is dropped (before its successor packs anything, so two
packed copies never coexist) and made again. The engine drops it when the net goes to
training mode or is moved or cast (``Module._apply``).

Importing :mod:`port.run` (which :mod:`port.models` and :mod:`port.load` do) registers the
executor with the engine (:func:`port.net.engine.set_inference_executor`).
"""
from __future__ import annotations

from typing import Any

import torch

from port.net import engine
from port.net.engine import CaffeNet
from port.net.layers import LAYER_TYPES
from port.run import canvas, speed
from port.run.speed import plain_path

__all__ = ["PreparedForm", "plain_path", "form_of", "execute", "weights_key"]

#: The engine's own layer classes: a net made only of these has not been dressed by a run mode.
_ENGINE_LAYERS = frozenset(LAYER_TYPES.values())


class PreparedForm:
    """What the default path keeps for one net: ``net``, its cpu-fast form (sharing the
    original's parameters), ``key``, what identifies the weights and layers it was made for
    (:func:`weights_key`), ``calls``, how many forwards it ran, and ``arena``, the canvas's
    maps kept for the next forward (:class:`port.run.canvas.Arena`; lent to one call at a
    time). Never copied or pickled with the net (a copy makes its own)."""

    __slots__ = ("net", "key", "layers", "calls", "maps")

    def __init__(self, net: CaffeNet, key: tuple):
        self.key = key
        self.layers = tuple(net._modules.values())  # the layers the key names by id stay alive
        self.net = speed.cpu_fast_net(net)
        self.calls = 0
        self.maps = canvas.ArenaLoan()

    @property
    def arena(self) -> canvas.Arena | None:
        """The canvas's maps kept for the next forward (None while a call has them)."""
        return self.maps.arena

    def __deepcopy__(self, memo: dict) -> None:
        return None

    def __reduce__(self) -> tuple:
        return (type(None), ())


def form_of(net: CaffeNet) -> PreparedForm | None:
    """The prepared form ``net`` holds now (None: none, or dropped)."""
    form = getattr(net, "inference_cache", None)
    return form if isinstance(form, PreparedForm) else None


def weights_key(net: CaffeNet) -> tuple | None:
    """What the prepared form of ``net`` depends on: each layer's identity and each
    parameter's and buffer's identity, storage, device and in-place version; None where the
    net is not one the default path runs (a layer of a run mode's class, a layer with a
    forward hook, a parameter off the CPU or not float32)."""
    key: list = []
    for layer in net._modules.values():
        if type(layer) not in _ENGINE_LAYERS or layer._forward_hooks or layer._forward_pre_hooks:
            return None
        key.append(id(layer))
        for tensor in (*layer._parameters.values(), *layer._buffers.values()):
            if tensor is None:
                continue
            if tensor.device.type != "cpu" or (tensor.is_floating_point() and tensor.dtype != torch.float32):
                return None
            key.append((id(tensor), *speed.weight_key(tensor)))
    return tuple(key)


def _declines(blobs: dict[str, Any]) -> bool:
    """Whether the call itself asks for the plain path (see the module's docstring)."""
    if speed.on_plain_path() or not speed.mkldnn_ok() or torch.is_autocast_enabled("cpu"):
        return True
    if torch.jit.is_tracing() or torch.jit.is_scripting():  # (the engine leaves torch.compile out)
        return True
    return not all(isinstance(t, torch.Tensor) and t.device.type == "cpu"
                   and (t.dtype == torch.float32 or not t.is_floating_point()) for t in blobs.values())


def execute(net: CaffeNet, blobs: dict[str, torch.Tensor], return_blobs: bool) -> dict[str, Any] | None:
    """The engine's inference executor: ``net``'s outputs (every blob with ``return_blobs``)
    through its prepared form, made or made again as needed; None to leave the call to the
    plain path."""
    if _declines(blobs):
        return None
    key = weights_key(net)
    form = form_of(net)
    if key is None or form is None or form.key != key:
        net.inference_cache = form = None  # the stale packed weights go before new ones are made
    if key is None:
        return None
    if form is None:
        form = net.inference_cache = PreparedForm(net, key)
    form.calls += 1
    # With every blob returned, a map of the trunk reaches the caller: it must be its own.
    with form.maps.lent(lend=not return_blobs):
        out = form.net.run_steps({name: t.contiguous(memory_format=torch.channels_last)
                                  if t.dim() == 4 else t for name, t in blobs.items()}, return_blobs)
    # A layer may change its own state as it runs (a BatchNorm on its batch's statistics
    # updates its moving sums, which the form reads live, never folded): that is no change
    # of the weights the form was made for.
    form.key = weights_key(net)
    return out


engine.set_inference_executor(execute)
