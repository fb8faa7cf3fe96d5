"""The default module is the fast exact one (issue 22): a net in eval mode without autograd on
the CPU runs its prepared form (port.run.prepared: cpu-fast's prepacked, fused, NHWC, canvas
form) by itself; in training mode, with autograd, or after its weights change it runs the plain
path (or a form made again for the new weights), with the gradients of the plain path. Outputs
within 1e-5 of strict fp32 and of Caffe's goldens. Behaviour only: the form's use is read from
its counter, never from a time."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from port.load import load_net_and_weights
from port.net import engine
from port.net.layers import Convolution
from port.run import canvas, prepared, speed

from conftest import GOLDEN_NETS
from helpers import SIZE, data, rel_err, tiny

TOLERANCE = 1e-5


def plain(model: nn.Module, *args, **kw):
    with torch.no_grad(), speed.plain_path():
        return model(*args, **kw)


def default(model: nn.Module, *args, **kw):
    with torch.no_grad():
        return model(*args, **kw)


def calls(model: nn.Module) -> int:
    form = prepared.form_of(model)
    return 0 if form is None else form.calls


# -- used where it should be -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fcn8s", "fcn32s", "fcn_alexnet"])
def test_eval_without_autograd_runs_the_prepared_form_within_fp32_rounding(name):
    model, x = tiny(name), data(1)
    reference = plain(model, x)
    assert prepared.form_of(model) is None  # the plain path made nothing
    got = default(model, x)
    form = prepared.form_of(model)
    assert form is not None and form.calls == 1
    assert any(isinstance(m, speed.PackedConvolution) for m in form.net.modules())
    assert any(isinstance(m, canvas.CanvasConvolution) for m in form.net.modules()) == canvas.pays_off(model)
    assert got.shape == reference.shape
    assert rel_err(got, reference) <= TOLERANCE
    assert torch.equal(got.argmax(1), reference.argmax(1))
    with torch.inference_mode():
        again = model(x)
    assert prepared.form_of(model) is form and form.calls == 2 and torch.equal(again, got)


def test_the_default_and_cpu_fast_are_one_form():
    """Runner("cpu-fast") and the default path run the same layers (speed.cpu_fast_net), the
    same arithmetic; the Runner runs its mode alone, never the default path on top."""
    model, x = tiny(), data(2)
    got = default(model, x)
    form = prepared.form_of(model)
    runner = speed.Runner("cpu-fast", model)
    assert {n: type(m) for n, m in runner.model.named_children()} == \
        {n: type(m) for n, m in form.net.named_children()}
    assert torch.equal(runner(x), got) and form.calls == 1
    strict = speed.Runner("strict-fp32", model)
    assert torch.equal(strict(x), plain(model, x)) and form.calls == 1


def test_the_form_shares_the_parameters_and_packs_each_weight_once():
    model = tiny()
    default(model, data())
    form = prepared.form_of(model)
    ours = dict(model.named_parameters())
    theirs = dict(form.net.named_parameters())
    assert theirs.keys() == ours.keys() and all(theirs[k] is ours[k] for k in ours)
    assert list(form.net.state_dict()) == list(model.state_dict())
    assert not any(isinstance(m, (speed.PackedConvolution, canvas.CanvasConvolution)) for m in model.modules())
    for module in form.net.modules():  # the canvas's pad-0 twin uses its convolution's packed copy
        if isinstance(module, canvas.CanvasConvolution):
            padded, unpadded = module._impl
            assert padded._packed is unpadded._packed and padded._packed[0] is not None


# -- not used where it should not be ------------------------------------------------------------
def test_autograd_or_training_mode_runs_the_plain_path_with_its_gradients():
    """With autograd on (eval or training mode) no prepared form runs, and the gradients of a
    net that has run prepared equal, bit for bit, those of one that never did."""
    model, fresh, x = tiny(), tiny(), data(3)
    default(model, x)
    form = prepared.form_of(model)
    out = model(x)  # eval mode, autograd on
    assert out.requires_grad and form.calls == 1
    for net in (model, fresh):
        net.train()
        net.zero_grad()
        with speed.plain_path() if net is fresh else torch.enable_grad():
            net(x).square().mean().backward()
    assert prepared.form_of(model) is None  # train() dropped it
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(torch.equal(g, dict(fresh.named_parameters())[n].grad) for n, g in grads.items())


@pytest.mark.parametrize("change", ["load_state_dict", "load_state_dict_assign", "optimizer_step",
                                    "in_place_edit", "swapped_layer"])
def test_a_weight_change_drops_the_form_and_the_next_one_follows_it(change):
    model, x = tiny(), data(4)
    default(model, x)
    old = prepared.form_of(model)
    if change.startswith("load_state_dict"):
        model.load_state_dict(tiny(seed=9).state_dict(), assign=change.endswith("assign"))
    elif change == "optimizer_step":
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        model(x).mean().backward()
        optimizer.step()
        model.eval()
    elif change == "in_place_edit":
        with torch.no_grad():
            model.conv3_1.weight.mul_(-1)
    else:
        replacement = tiny(seed=9).score_fr
        model.score_fr = replacement
    got = default(model, x)
    form = prepared.form_of(model)
    assert form is not None and form is not old and form.calls == 1
    reference = plain(model, x)
    assert rel_err(got, reference) <= TOLERANCE and torch.equal(got.argmax(1), reference.argmax(1))


def test_the_form_goes_with_train_and_with_a_move_or_cast():
    model, x = tiny(), data()
    default(model, x)
    model.train()
    assert prepared.form_of(model) is None
    model.eval()
    default(model, x)
    model.float()  # Module._apply: a move or cast
    assert prepared.form_of(model) is None
    model.double()
    default(model, x.double())  # not float32: the plain path, nothing made
    assert prepared.form_of(model) is None


def test_other_calls_run_plainly():
    """Under plain_path or autocast, with a forward hook on a layer (which the form would not
    call), for a net a run mode has dressed: the plain path."""
    model, x = tiny(), data(5)
    with speed.plain_path():
        default(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        default(model, x)
    assert prepared.form_of(model) is None
    seen = []
    handle = model.conv5_1.register_forward_hook(lambda m, a, out: seen.append(out[0].shape))
    default(model, x)
    assert seen and prepared.form_of(model) is None
    handle.remove()
    default(model, x)
    assert calls(model) == 1
    dressed = speed.prepare_model(tiny(), speed.STRICT_CANVAS)
    default(dressed, x)
    assert prepared.form_of(dressed) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_on_a_gpu_the_module_runs_the_plain_path():
    model, x = tiny(), data(6)
    default(model, x)
    model.cuda()
    assert prepared.form_of(model) is None
    got = default(model, x.cuda())
    assert prepared.form_of(model) is None
    with speed.backend_flags(speed.STRICT):
        assert torch.equal(default(model, x.cuda()), plain(model, x.cuda()))
    assert got.shape == (1, 21, *SIZE)


def test_copies_and_pickles_do_not_carry_the_form(tmp_path):
    model, x = tiny(), data()
    default(model, x)
    assert prepared.form_of(copy.deepcopy(model)) is None
    torch.save(model, tmp_path / "model.pt")  # the user's own pickle: the form is left out
    assert list(model.state_dict()) == list(tiny().state_dict())


def test_a_net_port_load_builds_runs_prepared(goldens_dir):
    folder = goldens_dir / "voc-fcn8s"
    net, _ = load_net_and_weights(folder / "net.prototxt", folder / "weights.caffemodel")
    net.eval()
    arrays = np.load(folder / "blobs-48x64.npz")
    inputs = {n: torch.from_numpy(arrays[n]) for n in net.input_names}
    reference, got = plain(net, **inputs), default(net, **inputs)
    assert calls(net) == 1 and set(got) == set(reference)
    for name in got:
        assert got[name].shape == reference[name].shape
        assert rel_err(got[name], reference[name]) <= TOLERANCE, name


def test_a_batchnorm_net_runs_folded_within_caffes_blobs(goldens_dir):
    """ResNet-50 (1/8 width): the default path folds each BatchNorm + Scale (as cpu-fast does)
    and keeps every blob Caffe computed within 1e-5."""
    from port.run.fold import Folded
    folder = goldens_dir / "resnet50-div8"
    net, _ = load_net_and_weights(folder / "net.prototxt", folder / "weights.caffemodel")
    net.eval()
    arrays = np.load(folder / "blobs-224x224.npz")
    got = default(net, return_blobs=True, **{n: torch.from_numpy(arrays[n]) for n in net.input_names})
    assert calls(net) == 1 and any(isinstance(m, Folded) for m in prepared.form_of(net).net.modules())
    for name in arrays.files:
        assert rel_err(got[name], torch.from_numpy(arrays[name])) <= TOLERANCE, name


def test_a_layer_that_updates_its_own_state_is_no_weight_change(goldens_dir):
    """A BatchNorm on its batch's statistics updates its moving sums as it runs: the form reads
    them live, is not made again for that, and the net ends as the plain path leaves it."""
    folder = goldens_dir / "batchnorm-zoo"
    net, _ = load_net_and_weights(folder / "net.prototxt", folder / "weights.caffemodel")
    net.eval()
    twin = copy.deepcopy(net)
    arrays = np.load(folder / "blobs-23x31.npz")
    inputs = {n: torch.from_numpy(arrays[n]) for n in net.input_names}
    for _ in range(2):
        got, reference = default(net, return_blobs=True, **inputs), plain(twin, return_blobs=True, **inputs)
        assert all(rel_err(got[n], reference[n]) <= TOLERANCE for n in reference)
    assert calls(net) == 2
    ours, theirs = net.state_dict(), twin.state_dict()
    assert all(rel_err(ours[k], theirs[k]) <= TOLERANCE for k in theirs if theirs[k].abs().max() > 0)


# -- Caffe's own blobs -------------------------------------------------------------------------
@pytest.mark.parametrize("folder", GOLDEN_NETS)
def test_goldens_through_the_default_path(folder, goldens_dir, tmp_path):
    """Every blob Caffe computed, through the default module: within 1e-5 of Caffe's and of
    the plain path's, the score's argmax Caffe's at every pixel."""
    from test_models_goldens import load_builder
    model = load_builder(goldens_dir, folder, tmp_path)
    arrays = np.load(goldens_dir / folder / "blobs-48x64.npz")
    inputs = {n: torch.from_numpy(arrays[n]) for n in model.input_names}
    reference, got = plain(model, **inputs, return_blobs=True), default(model, **inputs, return_blobs=True)
    assert calls(model) == 1
    common = set(got) & set(arrays.files)
    assert set(model.meta.outputs) <= common
    for name in common:
        assert rel_err(got[name], arrays[name]) <= TOLERANCE, name
        assert rel_err(got[name], reference[name]) <= TOLERANCE, name
    for name in model.meta.outputs:
        assert np.array_equal(got[name].argmax(1).numpy(), arrays[name].argmax(1)), name


# -- the layering -------------------------------------------------------------------------------
def test_the_engine_registers_the_default_path_without_importing_it():
    """The engine consults the one executor port.run.prepared registers (the import rules
    themselves, port.run between port.net and port.models: tests/test_layering.py)."""
    assert engine._inference_executor is prepared.execute


# -- the canvas's maps kept between forwards (canvas.Arena) ---------------------------------
def arena_of(model: nn.Module) -> canvas.Arena:
    form = prepared.form_of(model)
    assert form is not None and form.arena is not None
    return form.arena


def fresh_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The prepared form's score with every canvas map a new tensor (no arena)."""
    form = prepared.form_of(model)
    with torch.no_grad(), canvas.reusing(None):
        out = form.net(data=x.contiguous(memory_format=torch.channels_last))
    return out["score"] if isinstance(out, dict) else out


def test_a_second_forward_of_the_same_size_makes_no_new_map():
    model, x, y = tiny("fcn8s"), data(1), data(2)
    first = default(model, x)
    kept = first.clone()
    arena = arena_of(model)
    made = arena.allocations
    assert made > 0 and arena.nbytes() > 0
    second = default(model, y)
    assert arena_of(model) is arena and arena.allocations == made  # the same storage again
    assert torch.equal(first, kept)  # what the caller holds is its own
    assert torch.equal(second, fresh_maps(model, y))  # bit for bit the maps made anew
    assert rel_err(second, plain(model, y)) <= TOLERANCE
    smaller = data(3, (SIZE[0] - 6, SIZE[1] - 9))
    got = default(model, smaller)  # fits in the slots already there
    assert arena.allocations == made and torch.equal(got, fresh_maps(model, smaller))


def test_maps_read_after_the_trunk_moved_on_get_their_own_slot():
    model = tiny("fcn8s")
    (chain,) = canvas.trunk_chains(model)
    names = [name for name, _ in chain]
    slots = dict(zip(names, canvas.map_slots(model, names)))
    assert slots["pool3"] not in (0, 1) and slots["pool4"] not in (0, 1)  # read by score_pool3/4
    assert len({slots["pool3"], slots["pool4"]}) == 2
    assert {slots["conv1_1"], slots["conv1_2"]} == {0, 1}
    model.output_names = (*model.output_names, "pool2")  # a trunk map that goes to the caller
    assert canvas.map_slots(model, names)[names.index("pool2")] is None


def test_blobs_returned_to_the_caller_are_never_reused():
    model, x = tiny("fcn8s"), data(1)
    with torch.no_grad():
        blobs = model(x, return_blobs=True)
    kept = {name: t.clone() for name, t in blobs.items()}
    default(model, data(2))
    default(model, data(4))
    assert all(torch.equal(blobs[name], t) for name, t in kept.items())


def test_concurrent_forwards_of_different_sizes_each_get_their_own_maps():
    import threading
    model = tiny("fcn8s")
    inputs = [data(i, (SIZE[0] + 8 * i, SIZE[1] - 4 * i)) for i in range(3)]
    default(model, inputs[0])
    expected = [fresh_maps(model, x) for x in inputs]
    wrong: list[int] = []

    def work(i: int) -> None:
        for _ in range(4):
            if not torch.equal(default(model, inputs[i]), expected[i]):
                wrong.append(i)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [] and calls(model) == 1 + 3 * 4


def test_a_cpu_fast_runner_keeps_its_maps_too_but_never_lends_them_with_every_blob():
    """``Runner("cpu-fast")`` (the harness's way) keeps the canvas's maps between calls as the
    default path does (``canvas.ArenaLoan``), and gives a call that returns every blob maps of
    its own."""
    model, x, y = tiny("fcn8s"), data(1), data(2)
    runner = speed.Runner("cpu-fast", model, "cpu")
    first = runner(data=x)
    first = (first["score"] if isinstance(first, dict) else first).clone()
    arena = runner.maps.arena
    made = arena.allocations
    assert made > 0
    second = runner(data=y)
    second = second["score"] if isinstance(second, dict) else second
    assert runner.maps.arena is arena and arena.allocations == made
    assert rel_err(second, plain(model, y)) <= TOLERANCE and rel_err(first, plain(model, x)) <= TOLERANCE
    blobs = runner(data=x, return_blobs=True)
    kept = {name: t.clone() for name, t in blobs.items()}
    runner(data=y)
    assert all(torch.equal(blobs[name], t) for name, t in kept.items())
    assert arena.allocations == made  # the call with every blob took no slot
