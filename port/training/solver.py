"""Caffe's SGD solver, step for step (BVLC/caffe 9b89154 ``src/caffe/solver.cpp``,
``src/caffe/solvers/sgd_solver.cpp``, ``src/caffe/solvers/nesterov_solver.cpp``).

- :class:`SolverParameter`: the typed view of a ``solver.prototxt`` (``port.caffe``'s
  ``SolverParameter`` message), legacy ``solver_type`` upgraded as ``UpgradeSolverType``,
  relative net paths resolved against the solver file's folder.
- :func:`learning_rate`: ``SGDSolver::GetLearningRate`` for the seven ``lr_policy`` values,
  with ``multistep``'s ``current_step_`` counter (one step per call at most) and ``poly``'s
  ``max_iter``.
- :class:`CaffeSGD`: a ``torch.optim.Optimizer`` whose ``step()`` is ``SGDSolver::ApplyUpdate``
  on the gradients accumulated in ``.grad``: ``ClipGradients`` (global L2 norm of the
  accumulated diffs, before normalisation), then per parameter ``Normalize`` (``1/iter_size``),
  ``Regularize`` (L2 ``+ local_decay * w``, L1 ``+ local_decay * sign(w)``),
  ``ComputeUpdateValue`` (``history = momentum * history + local_rate * diff``, the rate folded
  into the history; Nesterov: ``update = (1 + momentum) * history - momentum * history_old``),
  ``Net::Update`` (``w -= update``), and ``++iter``. ``local_rate = rate * lr_mult``,
  ``local_decay = weight_decay * decay_mult``, all in float32 as Caffe's ``Dtype``.
  Parameters with ``lr_mult: 0`` are not in it (Caffe computes no diff for them and their
  update is ``0 * diff``: they never move).
- :class:`Solver`: ``Solver::Step``, the one step loop of the project (``python -m port solve``
  and ``python -m reproduce train`` both drive it): per iteration, clear the diffs, the
  callbacks' ``on_start``, ``iter_size`` forward / backward passes accumulating them (data from
  a callable; several processes may share them), the callbacks' ``on_gradients_ready`` (where
  Caffe's multi-GPU sync sums the diffs), the iteration's loss the mean of the passes' losses
  and the smoothed loss (``UpdateSmoothedLoss``, ``average_loss``), :meth:`CaffeSGD.step`,
  then the callbacks' ``on_iteration_end``, ``snapshot`` (every ``snapshot`` iterations or on
  request) and ``requested_action`` (``SolverAction``: a signal's stop) (:class:`SolverCallback`).
  The loss of a pass is ``Net::ForwardBackward``'s: the sum over loss tops of
  ``loss_weight * sum(top)`` (loss layers default to weight 1 on their first top,
  ``LossLayer::LayerSetUp``). Snapshots (weights, history, iteration, the multistep
  counter, passes made, the RNG state) are one safetensors file with its JSON metadata, written
  atomically; a restored run continues bit-identically on the CPU.

One Caffe backward quirk is reproduced because it changes the numbers under ``iter_size > 1``:
``ScaleLayer::Backward_cpu`` (and ``_gpu``) *writes* rather than adds its scale parameter's diff
when the bottom has one item along the axes before ``axis`` (``outer_dim_ == 1``, e.g. a batch
of one with the scale over channels) or has as many values as the scale (``is_eltwise``): its
``gemv`` runs with ``beta = 0`` into the diff. Each pass then replaces the scale's gradient, so
the iteration uses the last pass's only (:func:`scale_diff_overwritten`).

Caffe's parameter sharing (``param { name: ... }``) is refused: trained as separate copies a
shared parameter would give wrong numbers silently.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from port.caffe import load_net, read_prototxt
from port.caffe.net import NetState, netdef_from_message
from port.errors import PortError
from port.net.engine import CaffeNet
from port.weights import (NotSafetensorsError, WeightsError, check_fit, load_weights, read_metadata,
                          write_safetensors)

__all__ = ["SolverError", "SolverParameter", "LR_POLICIES", "SUPPORTED_TYPES", "learning_rate",
           "CaffeSGD", "Solver", "SolverCallback", "NONE", "STOP", "SNAPSHOT", "loss_weights",
           "scale_diff_overwritten", "refuse_shared_params", "param_key", "snapshot_counters", "snapshot_passes"]

#: GetLearningRate's policies.
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
#: Solver types reproduced here (Caffe's registry names).
SUPPORTED_TYPES = ("SGD", "Nesterov")
#: UpgradeSolverType (upgrade_proto.cpp): the legacy enum -> the registry name.
_LEGACY_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
                 "ADADELTA": "AdaDelta", "ADAM": "Adam"}
STATE_FORMAT = "port.training.solver/1"

f32 = np.float32


class SolverError(PortError):
    """A solver setting or net the solver cannot train, named by file and field or layer."""


# ---------------------------------------------------------------------------------------------
# solver.prototxt


@dataclass(frozen=True)
class SolverParameter:
    """The fields of Caffe's ``SolverParameter`` the solver uses (caffe.proto defaults when
    unset); ``type`` is the effective solver type (``solver_type`` upgraded). Net paths
    (``net``, ``train_net``, ``test_net``) are resolved against the solver file's folder."""

    path: str | None = None
    net: str | None = None
    train_net: str | None = None
    test_net: tuple[str, ...] = ()
    net_param: Any = None  # an inline NetParameter message (net_param / train_net_param)
    train_state: Any = None  # the NetState message of ``train_state``, None when unset
    base_lr: float = 0.0
    lr_policy: str = ""
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = 0
    stepvalue: tuple[int, ...] = ()
    max_iter: int = 0
    momentum: float = 0.0
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    iter_size: int = 1
    clip_gradients: float = -1.0
    type: str = "SGD"
    average_loss: int = 1
    display: int = 0
    snapshot: int = 0
    snapshot_prefix: str = ""
    random_seed: int = -1
    test_iter: tuple[int, ...] = ()
    test_interval: int = 0
    test_initialization: bool = True
    msg: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "SolverParameter":
        """Parse a ``solver.prototxt`` (errors name ``path:line:col``)."""
        return cls.from_message(read_prototxt(path, "SolverParameter"), path)

    @classmethod
    def from_message(cls, msg: Any, path: str | os.PathLike | None = None) -> "SolverParameter":
        where = str(path) if path is not None else "solver"
        folder = Path(path).resolve().parent if path is not None else None

        def resolve(name: str) -> str:
            p = Path(name)
            return str(p if p.is_absolute() or folder is None else folder / p)

        if msg.has("solver_type") and msg.has("type"):
            raise SolverError(f"{where}: solver_type (legacy enum) and type cannot both be given")
        kind = _LEGACY_TYPES[str(msg.solver_type)] if msg.has("solver_type") else str(msg.type)
        nets = [n for n in ("net", "net_param", "train_net", "train_net_param") if msg.has(n)]
        if len(nets) > 1:
            raise SolverError(f"{where}: give one train net, found {', '.join(nets)}")
        inline = msg.net_param if msg.has("net_param") else (
            msg.train_net_param if msg.has("train_net_param") else None)
        return cls(
            path=None if path is None else str(path),
            net=resolve(msg.net) if msg.has("net") else None,
            train_net=resolve(msg.train_net) if msg.has("train_net") else None,
            test_net=tuple(resolve(n) for n in msg.test_net),
            net_param=inline,
            train_state=msg.train_state if msg.has("train_state") else None,
            base_lr=float(msg.base_lr), lr_policy=str(msg.lr_policy), gamma=float(msg.gamma),
            power=float(msg.power), stepsize=int(msg.stepsize),
            stepvalue=tuple(int(v) for v in msg.stepvalue), max_iter=int(msg.max_iter),
            momentum=float(msg.momentum), weight_decay=float(msg.weight_decay),
            regularization_type=str(msg.regularization_type), iter_size=int(msg.iter_size),
            clip_gradients=float(msg.clip_gradients), type=kind,
            average_loss=int(msg.average_loss), display=int(msg.display),
            snapshot=int(msg.snapshot), snapshot_prefix=str(msg.snapshot_prefix),
            random_seed=int(msg.random_seed), test_iter=tuple(int(v) for v in msg.test_iter),
            test_interval=int(msg.test_interval),
            test_initialization=bool(msg.test_initialization), msg=msg)

    @property
    def where(self) -> str:
        return self.path or "solver"

    @property
    def train_net_path(self) -> str | None:
        """The train net's file (``net`` or ``train_net``), None when given inline."""
        return self.net or self.train_net

    def load_train_netdef(self) -> Any:
        """The train net's ``NetDef`` (from its file or the inline ``net_param``)."""
        if self.net_param is not None:
            return netdef_from_message(self.net_param, self.path)
        if self.train_net_path is None:
            raise SolverError(f"{self.where}: no train net (net, net_param, train_net or train_net_param)")
        if not Path(self.train_net_path).is_file():
            raise SolverError(f"{self.where}: train net {self.train_net_path} not found")
        return load_net(self.train_net_path)

    def train_net_state(self, netdef: Any) -> Any:
        """The ``port.caffe.NetState`` ``Solver::InitTrainNet`` builds the train net for:
        phase ``TRAIN``, merged with the net prototxt's own ``state`` and then with the
        solver's ``train_state`` (highest precedence; ``MergeFrom``: set fields replace,
        stages add up)."""
        return NetState("TRAIN").merge(netdef.own_state).merge(self.train_state)

    def build_train_net(self, netdef: Any, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Any:
        """The train net of ``netdef`` as ``Solver::InitTrainNet`` builds it: a ``CaffeNet``
        for :meth:`train_net_state`."""
        state = self.train_net_state(netdef)
        return CaffeNet(netdef, state.phase, input_shapes=input_shapes, level=state.level,
                        stages=state.stages)

    def check(self) -> None:
        """Refuse what :class:`CaffeSGD` does not reproduce (another solver type, an unknown
        lr_policy or regularization) and the settings Caffe's ``CHECK``s refuse."""
        if self.type not in SUPPORTED_TYPES:
            raise SolverError(f"{self.where}: solver type {self.type!r} is not supported; "
                              f"supported: {', '.join(SUPPORTED_TYPES)}")
        _check_hyper(self.where, self.lr_policy, self.gamma, self.stepsize, self.regularization_type,
                     self.iter_size)


def _check_hyper(where: str, lr_policy: str, gamma: float, stepsize: int, regularization: str,
                 iter_size: int) -> None:
    if lr_policy not in LR_POLICIES:
        raise SolverError(f"{where}: unknown lr_policy {lr_policy!r}; Caffe's are {', '.join(LR_POLICIES)}")
    if lr_policy in ("step", "sigmoid") and stepsize <= 0:
        raise SolverError(f"{where}: lr_policy {lr_policy!r} needs stepsize > 0, got {stepsize}")
    if lr_policy not in ("fixed", "poly") and gamma < 0:
        raise SolverError(f"{where}: lr_policy {lr_policy!r} needs gamma >= 0, got {gamma}")
    if regularization not in ("L1", "L2"):
        raise SolverError(f"{where}: unknown regularization_type {regularization!r} (L1, L2)")
    if iter_size < 1:
        raise SolverError(f"{where}: iter_size must be >= 1, got {iter_size}")


# ---------------------------------------------------------------------------------------------
# GetLearningRate


def learning_rate(policy: str, iteration: int, base_lr: float, gamma: float = 0.0, power: float = 0.0,
                  stepsize: int = 0, stepvalue: Sequence[int] = (), max_iter: int = 0,
                  current_step: int = 0) -> tuple[float, int]:
    """``SGDSolver::GetLearningRate`` at ``iteration``: ``(rate, current_step)``, the rate a
    float32 value as Caffe's ``Dtype``, ``current_step`` the solver's counter after the call
    (``step`` sets it to ``iter / stepsize``; ``multistep`` advances it by one when
    ``iter >= stepvalue[current_step]``). Where Caffe computes in double (``pow(float, int)``,
    ``exp``), so does this; float fields enter as float32."""
    it = int(iteration)
    base, g, pw = f32(base_lr), f32(gamma), f32(power)
    if policy == "fixed":
        rate = base
    elif policy == "step":
        current_step = it // int(stepsize)
        rate = f32(float(base) * math.pow(float(g), current_step))
    elif policy == "exp":
        rate = f32(float(base) * math.pow(float(g), it))
    elif policy == "inv":
        rate = f32(float(base) * math.pow(float(f32(1) + g * f32(it)), -float(pw)))
    elif policy == "multistep":
        if current_step < len(stepvalue) and it >= int(stepvalue[current_step]):
            current_step += 1
        rate = f32(float(base) * math.pow(float(g), current_step))
    elif policy == "poly":
        rate = f32(float(base) * math.pow(float(f32(1) - f32(it) / f32(max_iter)), float(pw)))
    elif policy == "sigmoid":
        rate = f32(float(base) * float(f32(1) / (f32(1) + f32(math.exp(float(-g * (f32(it) - f32(stepsize))))))))
    else:
        raise SolverError(f"unknown lr_policy {policy!r}; Caffe's are {', '.join(LR_POLICIES)}")
    return float(rate), int(current_step)


# ---------------------------------------------------------------------------------------------
# The optimizer


def param_key(layer: str, index: int) -> str:
    """A parameter's name as Caffe's blob index: ``<layer>.<index>`` (the goldens' keys)."""
    return f"{layer}.{index}"


def refuse_shared_params(net: Any) -> None:
    """Raise for any ``param { name: ... }`` (Caffe shares the blob between layers; here each
    layer holds its own copy, which would train apart)."""
    for name, module in net.caffe_layers().items():
        shared = [spec.name for spec in module.layer.params if spec.name]
        if shared:
            raise SolverError(f"layer {name!r}: shared parameters (param {{ name: {shared[0]!r} }}) "
                              f"are not supported in training; each layer would train its own copy")


class CaffeSGD(torch.optim.Optimizer):
    """Caffe's ``SGDSolver`` / ``NesterovSolver`` update as a ``torch.optim.Optimizer``.

    ``params``: tensors, or dicts ``{"params": [...], "lr_mult": m, "decay_mult": d, "name": s}``
    (defaults 1, 1, ""); groups with ``lr_mult == 0`` never move and take no part in clipping.
    Call ``zero_grad()``, run the ``iter_size`` backward passes (gradients accumulate in
    ``.grad`` as Caffe's diffs do), then ``step()``. After ``step()`` each ``.grad`` holds the
    clipped, normalised, regularised diff (Caffe goes on to copy the update into it; nothing
    reads it before the next ``ClearParamDiffs``, so the copy is skipped). :attr:`iter` counts the updates (Caffe's ``iter_``);
    :attr:`current_step` is Caffe's ``current_step_``; both are in :meth:`state_dict`.
    """

    def __init__(self, params: Iterable[Any], base_lr: float, *, lr_policy: str = "fixed",
                 gamma: float = 0.0, power: float = 0.0, stepsize: int = 0,
                 stepvalue: Sequence[int] = (), max_iter: int = 0, momentum: float = 0.0,
                 weight_decay: float = 0.0, regularization_type: str = "L2",
                 clip_gradients: float = -1.0, iter_size: int = 1, nesterov: bool = False):
        _check_hyper("CaffeSGD", lr_policy, gamma, stepsize, regularization_type, iter_size)
        defaults = dict(lr_mult=1.0, decay_mult=1.0, name="")
        super().__init__(params, defaults)
        self.hyper = dict(base_lr=float(base_lr), lr_policy=lr_policy, gamma=float(gamma),
                          power=float(power), stepsize=int(stepsize),
                          stepvalue=tuple(int(v) for v in stepvalue), max_iter=int(max_iter),
                          momentum=float(momentum), weight_decay=float(weight_decay),
                          regularization_type=regularization_type,
                          clip_gradients=float(clip_gradients), iter_size=int(iter_size),
                          nesterov=bool(nesterov))
        self.iter = 0
        self.current_step = 0
        self.last_rate: float | None = None

    @classmethod
    def from_net(cls, net: Any, param: SolverParameter) -> "CaffeSGD":
        """The optimizer of a ``CaffeNet`` under a :class:`SolverParameter`: one group per
        learnable parameter, in Caffe's ``learnable_params`` order (net order, blob order),
        ``lr_mult``/``decay_mult`` from the layer's ``param {}`` (1 where a blob has no spec,
        as ``Net::AppendParam``). ``lr_mult: 0`` parameters are left out."""
        param.check()
        refuse_shared_params(net)
        groups = []
        for layer, params in net.caffe_params().items():
            specs = net.caffe_layers()[layer].layer.params
            for index, p in enumerate(params):
                lr_mult = float(specs[index].lr_mult) if index < len(specs) else 1.0
                decay_mult = float(specs[index].decay_mult) if index < len(specs) else 1.0
                if lr_mult == 0:
                    continue
                groups.append({"params": [p], "lr_mult": lr_mult, "decay_mult": decay_mult,
                               "name": param_key(layer, index)})
        return cls(groups, param.base_lr, lr_policy=param.lr_policy, gamma=param.gamma,
                   power=param.power, stepsize=param.stepsize, stepvalue=param.stepvalue,
                   max_iter=param.max_iter, momentum=param.momentum,
                   weight_decay=param.weight_decay, regularization_type=param.regularization_type,
                   clip_gradients=param.clip_gradients, iter_size=param.iter_size,
                   nesterov=param.type == "Nesterov")

    def get_learning_rate(self) -> float:
        """``GetLearningRate`` at the current iteration (advances :attr:`current_step` as Caffe)."""
        h = self.hyper
        rate, self.current_step = learning_rate(
            h["lr_policy"], self.iter, h["base_lr"], h["gamma"], h["power"], h["stepsize"],
            h["stepvalue"], h["max_iter"], self.current_step)
        return rate

    def _learnable(self) -> list[tuple[dict, torch.Tensor]]:
        return [(g, p) for g in self.param_groups if float(g["lr_mult"]) != 0 for p in g["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """``SGDSolver::ApplyUpdate`` on the accumulated ``.grad`` (a missing grad is Caffe's
        zero diff)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        h = self.hyper
        rate = f32(self.get_learning_rate())
        self.last_rate = float(rate)
        learnable = self._learnable()
        for _, p in learnable:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        # ClipGradients: the L2 norm of every accumulated diff, before normalisation.
        clip = f32(h["clip_gradients"])
        if clip >= 0 and learnable:
            sumsq = sum(float(torch.sum(p.grad.double() * p.grad.double())) for _, p in learnable)
            l2norm = f32(math.sqrt(sumsq))
            if l2norm > clip:
                scale = float(clip / l2norm)
                for _, p in learnable:
                    p.grad.mul_(scale)
        momentum, decay = f32(h["momentum"]), f32(h["weight_decay"])
        norm = float(f32(1) / f32(h["iter_size"]))
        for group, p in learnable:
            diff = p.grad
            if h["iter_size"] != 1:  # Normalize
                diff.mul_(norm)
            local_decay = float(decay * f32(group["decay_mult"]))  # Regularize
            if local_decay:
                if h["regularization_type"] == "L2":
                    diff.add_(p, alpha=local_decay)
                else:
                    diff.add_(torch.sign(p), alpha=local_decay)
            local_rate = float(rate * f32(group["lr_mult"]))  # ComputeUpdateValue
            state = self.state[p]
            if "history" not in state:
                state["history"] = torch.zeros_like(p)
            history = state["history"]
            if h["nesterov"]:  # update_ = history_ saved; history_ updated; (1+m) h - m update_
                update = history.clone()
                history.mul_(float(momentum)).add_(diff, alpha=local_rate)
                update.mul_(-float(momentum)).add_(history, alpha=float(f32(1) + momentum))
            else:  # caffe_cpu_axpby(local_rate, diff, momentum, history); the update is history
                history.mul_(float(momentum)).add_(diff, alpha=local_rate)
                update = history
            p.sub_(update)  # Net::Update: data -= diff (Caffe copies the update into the diff first)
        self.iter += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["caffe"] = {"iter": self.iter, "current_step": self.current_step}
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        caffe = state_dict.pop("caffe", {"iter": 0, "current_step": 0})
        super().load_state_dict(state_dict)
        self.iter, self.current_step = int(caffe["iter"]), int(caffe["current_step"])


# ---------------------------------------------------------------------------------------------
# The driver


def loss_weights(net: Any) -> list[tuple[str, float]]:
    """``(top, loss_weight)`` for every top with a non-zero weight, in net order: the layer's
    ``loss_weight`` values top by top, or, for a ``*Loss`` layer without any, 1 on its first
    top (``LossLayer::LayerSetUp``; ``Layer::SetLossWeights``)."""
    out = []
    for _, module in net.caffe_layers().items():
        layer = module.layer
        weights = [float(w) for w in layer.loss_weight]
        if not weights and module.caffe_type.endswith("Loss"):
            weights = [1.0]
        for top, weight in zip(layer.top, weights):
            if weight:
                out.append((top, weight))
    return out


def scale_diff_overwritten(bottom_shape: Sequence[int], axis: int, scale_shape: Sequence[int]) -> bool:
    """Whether Caffe's ``ScaleLayer::Backward_cpu`` overwrites (instead of accumulating) the
    diff of a learned scale of ``scale_shape`` applied from ``axis`` to a bottom of
    ``bottom_shape``: ``is_eltwise`` (``caffe_mul`` straight into the diff), or
    ``inner_dim_ != 1``, ``outer_dim_ * scale_dim_ != 1`` and ``outer_dim_ == 1`` (the ``gemv``
    with ``beta = 0`` whose result is the diff itself). Elsewhere it adds (``+=``, or ``gemv``
    with ``beta = 1``)."""
    shape = tuple(int(s) for s in bottom_shape)
    start = axis + len(shape) if axis < 0 else axis
    outer = math.prod(shape[:start])
    scale_dim = math.prod(int(s) for s in scale_shape)
    inner = math.prod(shape[start + len(tuple(scale_shape)):])
    if math.prod(shape) == scale_dim:
        return True
    return inner != 1 and outer * scale_dim != 1 and outer == 1


def _scale_layers(net: Any) -> list[Any]:
    """The Scale layers with a learned (trainable) scale parameter."""
    return [m for m in net.caffe_layers().values()
            if m.caffe_type == "Scale" and not m.two_bottoms and m.weight.requires_grad]


Feed = Callable[[int], Mapping[str, Any]]

#: ``SolverAction::Enum`` (solver.hpp): what a request function asks of ``Solver::Step``.
NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"


class SolverCallback:
    """The points of ``Solver::Step`` a harness plugs into, as Caffe's ``Solver::Callback``
    (``on_start``, ``on_gradients_ready``: its multi-GPU ``P2PSync`` / ``NCCL`` reduce the diffs
    there) and the rest of ``Step``'s iteration (``Snapshot()``, ``GetRequestedAction()``) as
    methods. Every method does nothing by default; :meth:`Solver.add_callback` registers one."""

    def on_start(self, solver: "Solver") -> None:
        """After ``ClearParamDiffs``, before the iteration's forward/backward passes."""

    def on_gradients_ready(self, solver: "Solver", losses: list[float]) -> list[float] | None:
        """After this process's passes (their losses given), before ``ApplyUpdate``: the place
        to sum the diffs over processes. May return the losses of every pass of the iteration
        (all processes', in pass order), of which the iteration's loss is the mean."""

    def on_iteration_end(self, solver: "Solver", losses: list[float]) -> None:
        """After ``ApplyUpdate`` and ``++iter_`` (``solver.iter`` is the iteration just made,
        ``solver.smoothed_loss`` Caffe's ``smoothed_loss_``): logging, a validation between
        steps (upstream ``solve.py`` runs ``score.seg_tests`` after ``solver.step``)."""

    def requested_action(self, solver: "Solver") -> str:
        """``GetRequestedAction``: :data:`NONE`, :data:`SNAPSHOT` or :data:`STOP` (a signal)."""
        return NONE

    def snapshot(self, solver: "Solver") -> None:
        """``Solver::Snapshot``: called every ``param.snapshot`` iterations and on a
        :data:`SNAPSHOT` request (a :data:`STOP` request snapshots too: ``Solve``'s
        ``snapshot_after_train``). A solver without callbacks writes nothing."""


class Solver:
    """Caffe's ``Solver::Step`` over a TRAIN-phase ``CaffeNet`` with :class:`CaffeSGD`.

    ``feed(k)`` returns the net's inputs (``net.input_names``) for the k-th forward pass of the
    run (k counts from 0 over the whole run, across :meth:`step` calls and a restore). ``net``
    is built from the solver's train net when not given
    (:meth:`SolverParameter.build_train_net`: phase TRAIN, the net's own ``state``, the
    solver's ``train_state``), at ``input_shapes`` (or, for Python data layers, at the shapes
    of ``feed(0)``); a given net must have been built for that state.

    ``world_size`` processes may share an iteration's ``iter_size`` passes (each process a
    solver of its own; the diffs summed by a :class:`SolverCallback`'s ``on_gradients_ready``):
    process ``rank`` runs passes ``rank * m ... rank * m + m - 1`` of each iteration's
    ``iter_size`` (``m = iter_size / world_size``), numbered over the whole run, and
    ``Normalize`` divides by the whole ``iter_size``.
    """

    def __init__(self, param: SolverParameter, feed: Feed | None = None, net: Any = None,
                 netdef: Any = None, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 device: str | torch.device = "cpu", *, rank: int = 0, world_size: int = 1,
                 callbacks: Sequence[SolverCallback] = ()):
        param.check()
        if world_size < 1 or param.iter_size % world_size or not 0 <= rank < world_size:
            raise SolverError(f"{param.where}: iter_size {param.iter_size} cannot be shared by "
                              f"rank {rank} of {world_size} processes (a multiple of the count)")
        self.param, self.feed = param, feed
        self.rank, self.world_size = int(rank), int(world_size)
        self.callbacks: list[SolverCallback] = list(callbacks)
        if param.random_seed >= 0:  # Solver::Init: Caffe::set_random_seed (Dropout's masks)
            torch.manual_seed(param.random_seed)
        if net is None:
            netdef = netdef if netdef is not None else param.load_train_netdef()
            if input_shapes is None and feed is not None:
                input_shapes = {k: tuple(np.shape(v)) for k, v in feed(0).items()}
                declared = netdef.for_state(param.train_net_state(netdef)).inputs
                input_shapes = {k: v for k, v in input_shapes.items() if k not in declared}
            net = param.build_train_net(netdef, input_shapes)
        expected = param.train_net_state(net.netdef)
        if not expected.same(net.state):
            raise SolverError(f"{param.where}: the solver trains the net of state {expected} "
                              f"(TRAIN, the net's own state, train_state), got a net built for {net.state}")
        refuse_shared_params(net)
        self.net = net.to(device)
        self.net.train()
        self.device = torch.device(device)
        self.optimizer = CaffeSGD.from_net(self.net, param)
        self.losses = loss_weights(self.net)
        if not self.losses:
            raise SolverError(f"net {self.net.net_name!r}: no loss (no *Loss layer and no loss_weight)")
        self.passes = 0  # forward passes of the run (every process's), the feed's k
        self.smoothed_loss = 0.0  # Caffe's smoothed_loss_ over average_loss iterations of a step()
        self._losses_window: list[float] = []  # Caffe's losses_
        self.requested_early_exit = False
        self._scales = _scale_layers(self.net)
        self._scale_bottoms: dict[str, tuple[int, ...]] = {}
        for module in self._scales:
            module.register_forward_pre_hook(self._record_scale_bottom)

    def _record_scale_bottom(self, module: Any, args: tuple) -> None:
        self._scale_bottoms[module.caffe_name] = tuple(args[0].shape)

    def add_callback(self, callback: SolverCallback) -> None:
        """``Solver::add_callback``."""
        self.callbacks.append(callback)

    @property
    def iter(self) -> int:
        """Caffe's ``iter_``: the number of updates made."""
        return self.optimizer.iter

    def learnable_params(self) -> list[torch.Tensor]:
        """Caffe's ``learnable_params()`` (``lr_mult != 0``), in net order: the diffs a
        multi-process callback sums."""
        return [p for _, p in self.optimizer._learnable()]

    def forward_backward(self, inputs: Mapping[str, Any]) -> float:
        """``Net::ForwardBackward``: the loss (float32 value) and the gradients accumulated."""
        blobs = self.net(return_blobs=True, **inputs)
        loss = None
        for top, weight in self.losses:
            term = blobs[top].sum() * weight if weight != 1 else blobs[top].sum()
            loss = term if loss is None else loss + term
        for module in self._scales:  # ScaleLayer::Backward_cpu writes its diff here
            shape = self._scale_bottoms.get(module.caffe_name)
            if shape is not None and scale_diff_overwritten(shape, module.axis, tuple(module.weight.shape)):
                module.weight.grad = None
        loss.backward()
        return float(loss.detach().cpu().to(torch.float32))

    def own_passes(self) -> range:
        """The run's pass numbers this process makes in the coming iteration."""
        share = self.param.iter_size // self.world_size
        first = self.passes + self.rank * share
        return range(first, first + share)

    def update_smoothed_loss(self, loss: float, start_iter: int, average_loss: int) -> None:
        """``Solver::UpdateSmoothedLoss``: the mean of the last ``average_loss`` iteration
        losses of this :meth:`step` call, updated in place as Caffe does."""
        window = self._losses_window
        if len(window) < average_loss:
            window.append(loss)
            self.smoothed_loss = (self.smoothed_loss * (len(window) - 1) + loss) / len(window)
        else:
            index = (self.iter - start_iter) % average_loss
            self.smoothed_loss += (loss - window[index]) / average_loss
            window[index] = loss

    def step(self, iters: int, feed: Feed | None = None) -> list[list[float]]:
        """``Solver::Step(iters)``: returns, per iteration, the loss of each of its
        ``iter_size`` passes (every process's; the iteration's loss, Caffe's, is their float32
        mean: :meth:`iteration_loss`). Stops early when a callback requests :data:`STOP`
        (:attr:`requested_early_exit`)."""
        feed = feed or self.feed
        if feed is None:
            raise SolverError("Solver.step needs a feed: a callable giving the inputs of pass k")
        out: list[list[float]] = []
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        average = max(1, self.param.average_loss)
        self._losses_window, self.smoothed_loss = [], 0.0
        self.requested_early_exit = False
        while self.iter < stop_iter:
            self.optimizer.zero_grad(set_to_none=True)  # Net::ClearParamDiffs
            for callback in self.callbacks:
                callback.on_start(self)
            passes = [self.forward_backward(feed(k)) for k in self.own_passes()]
            for callback in self.callbacks:
                passes = callback.on_gradients_ready(self, passes) or passes
            self.update_smoothed_loss(self.iteration_loss(passes), start_iter, average)
            self.optimizer.step()  # ApplyUpdate; ++iter_
            self.passes += self.param.iter_size
            out.append(passes)
            for callback in self.callbacks:
                callback.on_iteration_end(self, passes)
            request = NONE
            for callback in self.callbacks:
                asked = callback.requested_action(self)
                request = asked if request == NONE else request
            if (self.param.snapshot and self.iter % self.param.snapshot == 0) or request != NONE:
                for callback in self.callbacks:
                    callback.snapshot(self)
            if request == STOP:
                self.requested_early_exit = True
                break
        return out

    @staticmethod
    def iteration_loss(passes: Sequence[float]) -> float:
        """Caffe's ``loss /= iter_size`` after summing the passes in float32."""
        total = f32(0)
        for value in passes:
            total = f32(total + f32(value))
        return float(total / f32(len(passes)))

    # -- snapshots ---------------------------------------------------------------------------

    def blobs(self) -> dict[str, np.ndarray]:
        """Every parameter as ``<layer>.<index>`` -> float32 array in Caffe's blob shape."""
        return {param_key(layer, i): p.detach().cpu().numpy().astype(np.float32, copy=True)
                for layer, params in self.net.caffe_params().items() for i, p in enumerate(params)}

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        for layer, params in self.net.caffe_params().items():
            for i, p in enumerate(params):
                tensors[f"param/{param_key(layer, i)}"] = p.detach().cpu().contiguous()
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                history = self.optimizer.state.get(p, {}).get("history")
                if history is not None:
                    tensors[f"history/{group['name']}"] = history.detach().cpu().contiguous()
        tensors["rng/cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {"format": STATE_FORMAT, "iter": self.optimizer.iter,
                "current_step": self.optimizer.current_step, "passes": self.passes,
                "net": self.net.net_name, "type": self.param.type}
        return tensors, meta

    def snapshot(self, path: str | os.PathLike, extra: Mapping[str, str] | None = None) -> Path:
        """Write weights, history, counters and RNG state to ``path`` (safetensors; the
        counters as JSON in its ``solver`` metadata, ``extra`` beside them) atomically
        (``port.weights.write_safetensors``)."""
        tensors, meta = self.state_tensors()
        return write_safetensors(path, tensors, {"solver": json.dumps(meta), **(extra or {})})

    def restore(self, path: str | os.PathLike) -> None:
        """Load a :meth:`snapshot` (weights, history, counters, RNG state) into this solver."""
        where = str(path)
        meta = snapshot_counters(path)
        tensors, _ = load_weights(path)
        if meta.get("format") != STATE_FORMAT:
            raise SolverError(f"{where}: format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
        params = {f"param/{param_key(layer, i)}": p for layer, ps in self.net.caffe_params().items()
                  for i, p in enumerate(ps)}
        try:
            check_fit({k: p.shape for k, p in params.items()},
                      {k: t.shape for k, t in tensors.items() if k.startswith("param/")},
                      where, f"net {self.net.net_name!r}")
        except WeightsError as err:
            raise SolverError(f"{err}: a snapshot of another net") from None
        with torch.no_grad():
            for key, p in params.items():
                p.copy_(tensors[key].to(p.device))
            self.optimizer.state.clear()
            for group in self.optimizer.param_groups:
                key = f"history/{group['name']}"
                if key in tensors:
                    for p in group["params"]:
                        self.optimizer.state[p]["history"] = tensors[key].to(p.device).clone()
        self.optimizer.iter = int(meta["iter"])
        self.optimizer.current_step = int(meta["current_step"])
        self.passes = int(meta["passes"])
        torch.set_rng_state(tensors["rng/cpu"])
        if "rng/cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)


def snapshot_counters(path: str | os.PathLike) -> dict[str, Any]:
    """The counters a :meth:`Solver.snapshot` file records (its ``solver`` metadata: iteration,
    passes, ...), read without its tensors; a file that is none is a :class:`SolverError`."""
    if not Path(path).is_file():
        raise SolverError(f"{path}: solver snapshot not found")
    try:
        counters = json.loads(read_metadata(path)["solver"])
    except NotSafetensorsError as err:
        raise SolverError(f"{path}: not a solver snapshot ({err.reason})") from None
    except (KeyError, ValueError):
        raise SolverError(f"{path}: not a solver snapshot (no solver counters in its metadata)") from None
    if not isinstance(counters, dict):
        raise SolverError(f"{path}: not a solver snapshot (its solver counters are not a JSON object)")
    return counters


def snapshot_passes(path: str | os.PathLike) -> int:
    """The forward passes made before a :meth:`Solver.snapshot` (where its run continues)."""
    try:
        return int(snapshot_counters(path)["passes"])
    except (KeyError, TypeError, ValueError):
        raise SolverError(f"{path}: not a solver snapshot (no passes counter)") from None
