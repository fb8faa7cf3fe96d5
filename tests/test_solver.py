"""Caffe's solver on a tiny net against a hand-written transcription of sgd_solver.cpp /
nesterov_solver.cpp / solver.cpp: every lr_policy, SGD and Nesterov updates with clipping,
iter_size, L1/L2 and lr/decay multipliers; frozen parameters; loss weights; the TRAIN-phase
layers; snapshots that resume bit-identically; and the errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from port.caffe import parse_text
from port.caffe.net import netdef_from_message
from port.net.engine import CaffeNet
from port.net.fillers import fill_net
from port.training.solver import (NONE, STOP, CaffeSGD, Solver, SolverCallback, SolverError,
                                  SolverParameter, learning_rate, loss_weights,
                                  scale_diff_overwritten)

TINY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 1 dim: 2 dim: 6 dim: 5 } shape { dim: 1 dim: 1 dim: 6 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "frozen" type: "Convolution" bottom: "conv" top: "frozen" param { lr_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 1 bias_term: false weight_filler { type: "gaussian" std: 0.7 } } }
layer { name: "score" type: "Convolution" bottom: "frozen" top: "score"
  param { lr_mult: 3 decay_mult: 2 } param { lr_mult: 1 decay_mult: 0 }
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 normalize: false } }
"""


def tiny_net(text=TINY, seed=0):
    net = CaffeNet(netdef_from_message(parse_text(text)), "TRAIN")
    fill_net(net, seed)
    return net


def feed_of(seed=0):
    def feed(k):
        rng = np.random.default_rng(seed * 1000 + k)
        label = rng.integers(0, 3, (1, 1, 6, 5)).astype(np.float32)
        label[0, 0, 0, :2] = 255
        return {"data": rng.standard_normal((1, 2, 6, 5)).astype(np.float32), "label": label}
    return feed


def solver_param(**kw):
    text = "\n".join(f"{k}: {v!r}" if isinstance(v, str) else
                     "\n".join(f"{k}: {x}" for x in v) if isinstance(v, (list, tuple)) else f"{k}: {v}"
                     for k, v in kw.items()).replace("'", '"')
    return SolverParameter.from_message(parse_text(text, "SolverParameter"))


# ---------------------------------------------------------------------------------------------
# GetLearningRate, transcribed


def caffe_rate(policy, it, p, state):
    base = p["base_lr"]
    if policy == "fixed":
        return base
    if policy == "step":
        state["step"] = it // p["stepsize"]
        return base * p["gamma"] ** state["step"]
    if policy == "exp":
        return base * p["gamma"] ** it
    if policy == "inv":
        return base * (1 + p["gamma"] * it) ** (-p["power"])
    if policy == "multistep":
        if state["step"] < len(p["stepvalue"]) and it >= p["stepvalue"][state["step"]]:
            state["step"] += 1
        return base * p["gamma"] ** state["step"]
    if policy == "poly":
        return base * (1 - it / p["max_iter"]) ** p["power"]
    if policy == "sigmoid":
        return base * (1 / (1 + math.exp(-p["gamma"] * (it - p["stepsize"]))))
    raise AssertionError(policy)


@pytest.mark.parametrize("policy", ["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"])
def test_every_lr_policy_follows_get_learning_rate(policy):
    p = dict(base_lr=0.01, gamma=0.7, power=0.75, stepsize=3, stepvalue=(2, 5, 6, 11), max_iter=20)
    state, step = {"step": 0}, 0
    for it in range(20):
        ours, step = learning_rate(policy, it, p["base_lr"], p["gamma"], p["power"], p["stepsize"],
                                   p["stepvalue"], p["max_iter"], step)
        want = caffe_rate(policy, it, p, state)
        assert ours == pytest.approx(want, rel=2e-6, abs=1e-12), (policy, it)
        assert np.float32(ours) == ours  # a float32 value, as Caffe's Dtype
        if policy in ("step", "multistep"):
            assert step == state["step"]


def test_multistep_advances_one_step_per_call():
    """Caffe's `if` (not `while`): starting past two step values climbs one per iteration."""
    steps = []
    current = 0
    for it in (10, 11, 12):
        _, current = learning_rate("multistep", it, 1.0, 0.5, stepvalue=(2, 4, 6), current_step=current)
        steps.append(current)
    assert steps == [1, 2, 3]


def test_lr_policy_errors():
    with pytest.raises(SolverError, match="unknown lr_policy 'cosine'"):
        learning_rate("cosine", 0, 1.0)
    with pytest.raises(SolverError, match="stepsize > 0"):
        solver_param(base_lr=0.1, lr_policy="step", gamma=0.1).check()
    with pytest.raises(SolverError, match="solver type 'Adam' is not supported; supported: SGD, Nesterov"):
        solver_param(base_lr=0.1, lr_policy="fixed", type="Adam").check()
    with pytest.raises(SolverError, match="'AdaGrad' is not supported"):
        SolverParameter.from_message(parse_text('lr_policy: "fixed" solver_type: ADAGRAD', "SolverParameter")).check()
    assert SolverParameter.from_message(parse_text("solver_type: NESTEROV", "SolverParameter")).type == "Nesterov"


# ---------------------------------------------------------------------------------------------
# The update, transcribed


def reference_run(net, feed, hp, iters, nesterov=False):
    """Caffe's Step/ApplyUpdate written out in numpy float32 on gradients from autograd."""
    specs = {"conv": [(1, 1), (2, 0)], "score": [(3, 2), (1, 0)]}
    params = {(l, i): p for l, ps in net.caffe_params().items() for i, p in enumerate(ps) if l in specs}
    history = {k: np.zeros(tuple(p.shape), np.float32) for k, p in params.items()}
    state, k, losses = {"step": 0}, 0, []
    net.train()
    f = np.float32
    for it in range(iters):
        diffs = {key: np.zeros(tuple(p.shape), np.float32) for key, p in params.items()}
        passes = []
        for _ in range(hp["iter_size"]):
            for p in net.parameters():
                p.grad = None
            loss = net(**feed(k))["loss"]
            loss.backward()
            k += 1
            passes.append(float(loss.detach()))
            for key, p in params.items():
                diffs[key] += p.grad.numpy()
        losses.append(passes)
        rate = f(caffe_rate(hp["lr_policy"], it, hp, state))
        if hp["clip_gradients"] >= 0:
            norm = f(math.sqrt(sum(float((d.astype(np.float64) ** 2).sum()) for d in diffs.values())))
            if norm > hp["clip_gradients"]:
                for d in diffs.values():
                    d *= f(hp["clip_gradients"]) / norm
        for key, p in params.items():
            lr_mult, decay_mult = specs[key[0]][key[1]]
            w = p.detach().numpy()
            d = diffs[key] * f(1.0 / hp["iter_size"])
            decay = f(hp["weight_decay"]) * f(decay_mult)
            if decay:
                d = d + decay * (w if hp["regularization_type"] == "L2" else np.sign(w))
            old = history[key].copy()
            history[key] = f(rate * lr_mult) * d + f(hp["momentum"]) * history[key]
            update = (1 + f(hp["momentum"])) * history[key] - f(hp["momentum"]) * old if nesterov else history[key]
            with torch.no_grad():
                p.copy_(torch.from_numpy((w - update).astype(np.float32)))
    return losses


@pytest.mark.parametrize("kind,extra", [
    ("SGD", dict(lr_policy="step", gamma=0.5, stepsize=2, regularization_type="L2", iter_size=1, clip_gradients=-1.0)),
    ("SGD", dict(lr_policy="multistep", gamma=0.3, stepvalue=(1, 3), regularization_type="L1", iter_size=2,
                 clip_gradients=0.05)),
    ("Nesterov", dict(lr_policy="inv", gamma=0.1, power=0.75, regularization_type="L2", iter_size=2,
                      clip_gradients=-1.0)),
    ("Nesterov", dict(lr_policy="poly", power=2.0, max_iter=10, regularization_type="L1", iter_size=1,
                      clip_gradients=0.05)),
])
def test_updates_equal_the_transcribed_caffe_formulas(kind, extra):
    hp = dict(base_lr=0.01, momentum=0.9, weight_decay=0.01, stepsize=0, stepvalue=(), power=0.0,
              gamma=0.0, max_iter=0)
    hp.update(extra)
    text = {k: v for k, v in hp.items() if k not in ("stepvalue",) and v != ()}
    param = solver_param(type=kind, **text, **({"stepvalue": hp["stepvalue"]} if hp["stepvalue"] else {}))
    assert param.type == kind and param.iter_size == hp["iter_size"]
    ours = Solver(param, feed_of(), net=tiny_net())
    ref_net = tiny_net()
    frozen_before = ours.net.frozen.weight.detach().clone()
    ours_losses = ours.step(4)
    ref_losses = reference_run(ref_net, feed_of(), hp, 4, nesterov=kind == "Nesterov")
    for a, b in zip(ours_losses, ref_losses):
        assert a == pytest.approx(b, rel=1e-5)
    for (name, mine), (_, ref) in zip(ours.net.named_parameters(), ref_net.named_parameters()):
        mine, ref = mine.detach(), ref.detach()
        assert (mine - ref).abs().max() <= 1e-6 * max(1.0, float(ref.abs().max())), name
    assert torch.equal(ours.net.frozen.weight, frozen_before)
    assert ours.iter == 4 and ours.passes == 4 * hp["iter_size"]


def test_frozen_params_never_move_yet_pass_gradients_down():
    net = tiny_net()
    assert not net.frozen.weight.requires_grad
    solver = Solver(solver_param(base_lr=0.1, lr_policy="fixed", momentum=0.9, weight_decay=0.1), feed_of(), net=net)
    names = [g["name"] for g in solver.optimizer.param_groups]
    assert names == ["conv.0", "conv.1", "score.0", "score.1"]
    before = net.frozen.weight.detach().clone()
    conv_before = net.conv.weight.detach().clone()
    solver.step(2)
    assert torch.equal(net.frozen.weight, before) and net.frozen.weight.grad is None
    assert not torch.equal(net.conv.weight, conv_before)  # the layer below the frozen one learns


def test_loss_is_sum_of_weighted_loss_tops_and_normalize_false_sums_pixels():
    net = tiny_net()
    assert loss_weights(net) == [("loss", 1.0)]
    inputs = feed_of()(0)
    loss = float(net(**inputs)["loss"].detach())
    scores = net(return_blobs=True, **inputs)["score"].detach()
    label = torch.from_numpy(inputs["label"]).long()[:, 0]
    valid = label != 255
    nll = -torch.log_softmax(scores, 1).gather(1, label.clamp(max=2)[:, None])[:, 0]
    assert loss == pytest.approx(float(nll[valid].sum()), rel=1e-5)  # BATCH_SIZE: / N = 1
    weighted = tiny_net(TINY.replace('top: "loss"\n', 'top: "loss" loss_weight: 2.5\n'))
    assert loss_weights(weighted) == [("loss", 2.5)]
    s1 = Solver(solver_param(base_lr=0.0, lr_policy="fixed"), feed_of(), net=tiny_net())
    s2 = Solver(solver_param(base_lr=0.0, lr_policy="fixed"), feed_of(), net=weighted)
    l1, l2 = s1.forward_backward(inputs), s2.forward_backward(inputs)
    assert l2 == pytest.approx(2.5 * l1, rel=1e-6)
    assert torch.allclose(s2.net.conv.weight.grad, 2.5 * s1.net.conv.weight.grad, rtol=1e-5, atol=1e-8)


def test_dropout_in_train_scales_by_one_over_keep():
    text = 'layer { name: "d" type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.25 } }'
    netdef = netdef_from_message(parse_text('input: "x" input_shape { dim: 1 dim: 1 dim: 100 dim: 100 }\n' + text))
    train, test = CaffeNet(netdef, "TRAIN").train(), CaffeNet(netdef, "TEST")
    x = torch.ones(1, 1, 100, 100)
    y = train(x=x)["y"]
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert torch.equal(test(x=x)["y"], x)


def test_scale_diff_overwrite_rule():
    assert scale_diff_overwritten((1, 5, 7, 8), 1, (5,))       # batch of one: gemv beta 0
    assert not scale_diff_overwritten((2, 5, 7, 8), 1, (5,))   # outer 2: accumulates
    assert not scale_diff_overwritten((1, 1, 7, 8), 1, (1,))   # one scale value: +=
    assert scale_diff_overwritten((2, 3), 0, (2, 3))           # eltwise: caffe_mul into the diff
    assert not scale_diff_overwritten((4, 3), 1, (3,))         # inner 1, outer 4: accumulates


def test_snapshot_restore_continues_bit_identically(tmp_path):
    text = TINY.replace('layer { name: "frozen"', 'layer { name: "drop" type: "Dropout" bottom: "conv" '
                        'top: "conv" dropout_param { dropout_ratio: 0.3 } }\nlayer { name: "frozen"')
    param = solver_param(base_lr=0.05, lr_policy="multistep", gamma=0.5, stepvalue=(1, 2), momentum=0.9,
                         weight_decay=0.01, iter_size=2)
    torch.manual_seed(5)
    straight = Solver(param, feed_of(), net=tiny_net(text))
    full = straight.step(4)
    torch.manual_seed(5)
    first = Solver(param, feed_of(), net=tiny_net(text))
    part = first.step(2)
    first.snapshot(tmp_path / "state.safetensors")
    torch.manual_seed(123)  # a different RNG state that the restore must replace
    resumed = Solver(param, feed_of(), net=tiny_net(text, seed=9))
    resumed.restore(tmp_path / "state.safetensors")
    assert resumed.iter == 2 and resumed.passes == 4 and resumed.optimizer.current_step == 1
    rest = resumed.step(2)
    assert part + rest == full
    for a, b in zip(straight.net.parameters(), resumed.net.parameters()):
        assert torch.equal(a, b)
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
    with pytest.raises(SolverError, match="bad.safetensors: not a solver snapshot"):
        resumed.restore(tmp_path / "bad.safetensors")


def test_optimizer_state_dict_round_trip():
    net = tiny_net()
    param = solver_param(base_lr=0.1, lr_policy="multistep", gamma=0.5, stepvalue=(1,), momentum=0.9)
    solver = Solver(param, feed_of(), net=net)
    solver.step(2)
    state = solver.optimizer.state_dict()
    other = CaffeSGD.from_net(tiny_net(), param)
    other.load_state_dict(state)
    assert other.iter == 2 and other.current_step == 1
    assert torch.equal(other.state[other.param_groups[0]["params"][0]]["history"],
                       solver.optimizer.state[solver.optimizer.param_groups[0]["params"][0]]["history"])


def test_shared_params_are_refused():
    shared = TINY.replace("param { lr_mult: 3 decay_mult: 2 }", 'param { name: "w" lr_mult: 3 decay_mult: 2 }')
    with pytest.warns(UserWarning, match="not shared"):
        net = tiny_net(shared)
    with pytest.raises(SolverError, match="layer 'score': shared parameters"):
        Solver(solver_param(base_lr=0.1, lr_policy="fixed"), feed_of(), net=net)


def test_solver_file_paths_resolve_against_its_folder(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "train.prototxt").write_text(TINY)
    (folder / "solver.prototxt").write_text('train_net: "train.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                                            'test_net: "val.prototxt"\nmomentum: 0.9\niter_size: 3\n')
    param = SolverParameter.read(folder / "solver.prototxt")
    assert param.train_net_path == str((folder / "train.prototxt").resolve())
    assert param.test_net == (str((folder / "val.prototxt").resolve()),)
    assert (param.base_lr, param.momentum, param.iter_size, param.clip_gradients) == (pytest.approx(0.01), pytest.approx(0.9), 3, -1)
    assert param.load_train_netdef().name == "tiny"
    (folder / "two.prototxt").write_text('net: "a.prototxt"\ntrain_net: "b.prototxt"\n')
    with pytest.raises(SolverError, match="one train net"):
        SolverParameter.read(folder / "two.prototxt")
    (folder / "missing.prototxt").write_text('net: "nope.prototxt"\nlr_policy: "fixed"\n')
    with pytest.raises(SolverError, match="nope.prototxt not found"):
        SolverParameter.read(folder / "missing.prototxt").load_train_netdef()


def test_a_net_without_loss_is_refused():
    text = TINY.split('layer { name: "loss"')[0]
    net = CaffeNet(netdef_from_message(parse_text(text)), "TRAIN")
    with pytest.raises(SolverError, match="no loss"):
        Solver(solver_param(base_lr=0.1, lr_policy="fixed"), feed_of(), net=net)


def test_smoothed_loss_is_caffes_running_mean_and_random_seed_seeds_dropout():
    param = solver_param(base_lr=0.0, lr_policy="fixed", average_loss=3, random_seed=4)
    solver = Solver(param, feed_of(), net=tiny_net())
    losses = [Solver.iteration_loss(p) for p in solver.step(5)]
    assert solver.smoothed_loss == pytest.approx(np.mean(losses[-3:]), rel=1e-6)
    text = TINY.replace('layer { name: "frozen"', 'layer { name: "drop" type: "Dropout" bottom: "conv" '
                        'top: "conv" dropout_param { dropout_ratio: 0.5 } }\nlayer { name: "frozen"')
    seeded = solver_param(base_lr=0.01, lr_policy="fixed", random_seed=4)
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # replaced by the solver's random_seed
        runs.append(Solver(seeded, feed_of(), net=tiny_net(text)).step(2))
    assert runs[0] == runs[1]


def test_the_solver_trains_the_train_phase_of_the_net():
    """include/exclude by phase (Net::FilterNet): a TEST-only layer is absent from training,
    a TRAIN-only one present."""
    text = TINY + ('layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc" '
                   'include { phase: TEST } }\n'
                   'layer { name: "extra" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" '
                   'top: "extra" loss_weight: 0.5 include { phase: TRAIN } }\n')
    netdef = netdef_from_message(parse_text(text))
    solver = Solver(solver_param(base_lr=0.01, lr_policy="fixed"), feed_of(), netdef=netdef)
    names = [name for name, _, _ in solver.net.steps]
    assert "acc" not in names and "extra" in names
    assert loss_weights(solver.net) == [("loss", 1.0), ("extra", 0.5)]
    assert solver.net.netdef.for_phase("TRAIN").layers[-1].name == "extra"


STAGED = """
name: "staged"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "train_x" type: "Convolution" bottom: "data" top: "train_x"
  include { phase: TRAIN stage: "x" } convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "level2" type: "Convolution" bottom: "data" top: "level2"
  include { min_level: 2 } convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "upto1" type: "Convolution" bottom: "data" top: "upto1"
  include { max_level: 1 } convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "not_x" type: "Convolution" bottom: "data" top: "not_x"
  exclude { stage: "x" } convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "test_only" type: "Convolution" bottom: "data" top: "test_only"
  include { phase: TEST } convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "own_and_x" type: "Convolution" bottom: "data" top: "own_and_x"
  include { stage: "own" stage: "x" } convolution_param { num_output: 1 kernel_size: 1 } }
"""
#: What Net::FilterNet keeps (StateMeetsRule, written out by hand from net.cpp) for each state.
KEPT = {
    ("TRAIN", 0, ()): ["score", "loss", "upto1", "not_x"],
    ("TRAIN", 2, ("x",)): ["score", "loss", "train_x", "level2"],
    ("TRAIN", 2, ("own", "x")): ["score", "loss", "train_x", "level2", "own_and_x"],
    ("TEST", 3, ("own", "x")): ["score", "loss", "level2", "test_only", "own_and_x"],
}


def _staged(state: str = "", solver: str = ""):
    text = STAGED.replace('name: "staged"', f'name: "staged"\n{state}')
    param = SolverParameter.from_message(parse_text(f'base_lr: 0.1\nlr_policy: "fixed"\n{solver}\n'
                                                    f'net_param {{ {text} }}', "SolverParameter"))
    return param, param.load_train_netdef()


@pytest.mark.parametrize("state, solver, expected", [
    ("", "", ("TRAIN", 0, ())),  # Caffe's default: phase TRAIN, level 0, no stage
    ("", 'train_state { level: 2 stage: "x" }', ("TRAIN", 2, ("x",))),
    ('state { level: 2 stage: "own" }', 'train_state { stage: "x" }', ("TRAIN", 2, ("own", "x"))),
    # InitTrainNet merges: the net's own state over TRAIN (its phase too), train_state over both
    ('state { phase: TEST level: 1 stage: "own" }', 'train_state { level: 3 stage: "x" }', ("TEST", 3, ("own", "x"))),
    ('state { phase: TEST level: 2 stage: "own" }', 'train_state { phase: TRAIN stage: "x" }', ("TRAIN", 2, ("own", "x"))),
])
def test_the_solver_builds_the_train_net_for_caffes_merged_state(state, solver, expected):
    """Solver::InitTrainNet: NetState phase TRAIN, MergeFrom the net's own state, then
    MergeFrom train_state (set fields replace, stages add up); Net::FilterNet keeps the layers
    whose include/exclude rules that state meets."""
    param, netdef = _staged(state, solver)
    got = param.train_net_state(netdef)
    assert (got.phase, got.level, got.stages) == expected
    solver_ = Solver(param, feed_of(), netdef=netdef, input_shapes={})
    assert [name for name, _, _ in solver_.net.steps] == KEPT[expected]
    assert solver_.net.state.same(got)


def test_a_given_net_must_be_built_for_the_solvers_train_state():
    param, netdef = _staged("", 'train_state { level: 2 stage: "x" }')
    with pytest.raises(SolverError, match=r"level: 2 stage: 'x'.*level: 0"):
        Solver(param, feed_of(), net=CaffeNet(netdef, "TRAIN"))
    net = CaffeNet(netdef, "TRAIN", level=2, stages=["x"])
    assert Solver(param, feed_of(), net=net).net is net
    with pytest.raises(SolverError, match="phase: TRAIN.*phase: TEST"):
        Solver(solver_param(base_lr=0.1, lr_policy="fixed"), feed_of(), net=CaffeNet(
            netdef_from_message(parse_text(TINY)), "TEST"))


# ---------------------------------------------------------------------------------------------
# Solver::Step's callbacks


class _Recorder(SolverCallback):
    def __init__(self, stop_at=None):
        self.calls, self.stop_at = [], stop_at

    def on_start(self, solver):
        self.calls.append(("start", solver.iter))

    def on_gradients_ready(self, solver, losses):
        self.calls.append(("gradients", solver.iter, len(losses)))

    def on_iteration_end(self, solver, losses):
        self.calls.append(("end", solver.iter))

    def requested_action(self, solver):
        return STOP if solver.iter == self.stop_at else NONE

    def snapshot(self, solver):
        self.calls.append(("snapshot", solver.iter))


def test_step_calls_its_callbacks_where_caffe_does_and_stops_on_request():
    param = solver_param(base_lr=0.01, lr_policy="fixed", iter_size=2, snapshot=2)
    recorder = _Recorder(stop_at=3)
    solver = Solver(param, feed_of(), net=tiny_net(), callbacks=[recorder])
    out = solver.step(5)
    assert len(out) == 3 and solver.iter == 3 and solver.requested_early_exit
    assert solver.passes == 3 * param.iter_size
    expected = []
    for it in range(3):
        expected += [("start", it), ("gradients", it, 2), ("end", it + 1)]
        if (it + 1) % 2 == 0 or it + 1 == 3:  # every `snapshot` iterations, and on the stop
            expected.append(("snapshot", it + 1))
    assert recorder.calls == expected
    solver.step(1)  # a later step() starts afresh
    assert solver.iter == 4 and not solver.requested_early_exit


def test_processes_sharing_the_passes_equal_one_process_with_the_whole_iter_size():
    """Two solvers (threads standing for processes) of world_size 2, each running its pass of
    iter_size 2 and summing the diffs in on_gradients_ready, make the updates and losses of one
    solver with iter_size 2, bit for bit (one pass each: the one fp32 addition either way)."""
    import threading
    param = solver_param(base_lr=0.1, lr_policy="fixed", momentum=0.9, weight_decay=0.01, iter_size=2)
    single = Solver(param, feed_of(), net=tiny_net())
    single_losses = single.step(3)
    barrier, grads, losses = threading.Barrier(2), [None, None], [None, None]

    class SumOverRanks(SolverCallback):
        def on_gradients_ready(self, solver, mine):
            grads[solver.rank] = [p.grad.clone() for p in solver.learnable_params()]
            losses[solver.rank] = mine
            barrier.wait()
            for p, a, b in zip(solver.learnable_params(), grads[0], grads[1]):
                p.grad.copy_(a + b)
            everyone = losses[0] + losses[1]
            barrier.wait()
            return everyone

    seen = [[], []]

    def feed_for(rank):
        base = feed_of()
        return lambda k: (seen[rank].append(k), base(k))[1]

    solvers = [Solver(param, feed_for(r), net=tiny_net(), rank=r, world_size=2,
                      callbacks=[SumOverRanks()]) for r in range(2)]
    results = [None, None]
    threads = [threading.Thread(target=lambda r=r: results.__setitem__(r, solvers[r].step(3)))
               for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [[0, 2, 4], [1, 3, 5]]
    assert results[0] == results[1] == single_losses
    for solver in solvers:
        for key, value in single.blobs().items():
            assert np.array_equal(solver.blobs()[key], value), key
    with pytest.raises(SolverError, match="cannot be shared"):
        Solver(solver_param(base_lr=0.1, lr_policy="fixed", iter_size=3), feed_of(), net=tiny_net(),
               world_size=2)
