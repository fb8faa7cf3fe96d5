"""``python -m port solve SOLVER.prototxt --weights INIT.caffemodel|.safetensors --inputs SEQ.npz
--iters K --out DIR [--net TRAIN.prototxt] [--device D]``: replay Caffe's solver (the
``forward`` of training) for a user to check the port against their own Caffe.

Runs K iterations of :class:`port.training.solver.Solver` (Caffe's ``Solver::Step`` with
``SGDSolver``/``NesterovSolver``) on the solver's train net (or ``--net``), TRAIN phase, from
INIT, feeding the net's data-layer tops (``Python`` or ``Input`` layers) from SEQ.npz in order:
the k-th forward pass of the run takes the arrays ``<top><k>`` (``data0``, ``label0``,
``data1``, ...). Writes ``DIR/params-iter<i>.npz`` after each iteration i (keys
``<layer>.<blob index>``, float32, Caffe's blob shapes) and ``DIR/losses.json``
(``{"passes": [[...], ...]}``: per iteration, the loss of each of its ``iter_size`` passes,
``Net::ForwardBackward``'s value), the layout of the caffe-goldens training folders.
``--snapshot FILE`` saves the solver state after the last iteration, ``--restore FILE`` starts
from one (weights, history, iteration, RNG: the run continues bit-identically on the CPU).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from port.cli import describe, fail, read_npz, write_npz
from port.errors import PortError
from port.fileio import write_text_atomic

if TYPE_CHECKING:  # numpy is imported where arrays are written: --help needs none
    import numpy as np

PROG = "python -m port solve"


class SolveError(PortError):
    """Inputs, weights or options of ``port solve`` that do not fit (named in the message)."""



def make_feed(arrays: Mapping[str, np.ndarray], tops: Sequence[str], passes: int, source: str):
    """``feed(k) -> {top: arrays[f"{top}{k}"]}``, every pass of the run checked up front."""
    missing = [f"{t}{k}" for k in range(passes) for t in tops if f"{t}{k}" not in arrays]
    if missing:
        raise SolveError(f"{source}: the run makes {passes} forward passes over inputs {list(tops)}; "
                         f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    return lambda k: {t: arrays[f"{t}{k}"] for t in tops}


def data_tops(netdef: Any, state: Any) -> list[str]:
    """The train net's forward inputs (its layers for ``state``, the solver's
    ``train_net_state``): net-level inputs, then Input/Python layers' tops."""
    net = netdef.for_state(state)
    tops = [t for layer in net.layers if layer.type in ("Input", "Python") for t in layer.top]
    return list(dict.fromkeys(list(net.inputs) + tops))


def run(solver_path: str, weights: str, inputs: str, iters: int, out: str, net_path: str | None = None,
        device: str = "cpu", snapshot: str | None = None, restore: str | None = None,
        log=print) -> list[list[float]]:
    """The command's work; returns the per-pass losses of the run."""
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    from port.caffe import load_net
    from port.training.solver import Solver, SolverParameter, snapshot_passes
    from port.weights import load_into
    if iters < 1:
        raise SolveError(f"--iters {iters}: give at least 1 iteration")
    if not Path(solver_path).is_file():
        raise SolveError(f"{solver_path}: solver file not found")
    param = SolverParameter.read(solver_path)
    param.check()
    if net_path is not None and not Path(net_path).is_file():
        raise SolveError(f"{net_path}: net file not found")
    netdef = load_net(net_path) if net_path else param.load_train_netdef()
    arrays = read_npz(inputs, "input arrays")
    state = param.train_net_state(netdef)
    tops = data_tops(netdef, state)
    first = 0
    if restore:
        first = snapshot_passes(restore)
    feed = make_feed(arrays, tops, first + iters * param.iter_size, inputs)
    declared = netdef.for_state(state).inputs
    shapes = {t: tuple(arrays[f"{t}{first}"].shape) for t in tops if t not in declared}
    net = param.build_train_net(netdef, shapes)
    load_into(net, weights)
    solver = Solver(param, feed, net=net, device=device)
    if restore:
        solver.restore(restore)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    writer = goldens_layout(folder, log)
    solver.add_callback(writer)
    solver.step(iters)
    if snapshot:
        solver.snapshot(snapshot)
    return writer.losses


def goldens_layout(folder: Path, log) -> Any:
    """A ``SolverCallback`` that, after each iteration of ``Solver::Step``, writes
    ``params-iter<i>.npz``, ``losses.json`` and the console line (the caffe-goldens training
    folders' layout); ``.losses`` the passes' losses so far."""
    # lazy, so the class is made here: the solver imports torch, and --help must not
    from port.training.solver import Solver, SolverCallback

    class GoldensLayout(SolverCallback):
        def __init__(self):
            self.losses: list[list[float]] = []

        def on_iteration_end(self, solver: Solver, losses: list[float]) -> None:
            self.losses.append(list(losses))
            write_npz(folder / f"params-iter{solver.iter}.npz", solver.blobs())
            write_text_atomic(folder / "losses.json",
                              json.dumps({"passes": self.losses}, indent=1) + "\n")
            log(f"iteration {solver.iter}: lr = {solver.optimizer.last_rate:.6g}, "
                f"loss = {Solver.iteration_loss(losses):.6g} "
                f"(passes: {', '.join(f'{p:.6g}' for p in losses)})")

    return GoldensLayout()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("solver", help="SOLVER.prototxt (relative paths in it resolve in its folder)")
    parser.add_argument("--weights", required=True, help="INIT.caffemodel (or .h5) or .safetensors")
    parser.add_argument("--inputs", required=True, help="SEQ.npz: <top><k> for the k-th forward pass")
    parser.add_argument("--iters", required=True, type=int, help="iterations to run")
    parser.add_argument("--out", required=True, help="folder for params-iter<i>.npz and losses.json")
    parser.add_argument("--net", help="TRAIN.prototxt instead of the solver's train net")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--snapshot", help="write the solver state here after the last iteration")
    parser.add_argument("--restore", help="start from this solver state (written by --snapshot)")
    args = parser.parse_args(argv)
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    from port.run.devices import check_device
    try:
        check_device(args.device)
        run(args.solver, args.weights, args.inputs, args.iters, args.out, args.net, args.device,
            args.snapshot, args.restore)
    except (PortError, OSError) as err:
        return fail(PROG, err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
