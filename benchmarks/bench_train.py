"""Benchmark: one training iteration (forward + backward + Caffe's SGD update) of FCN-32s and
FCN-8s on a 500 x 375 input, CPU, strict fp32.

The port's step (``port.training.solver.Solver`` over the upstream ``train.prototxt`` built by
``port.net.engine.CaffeNet``, TRAIN phase, Caffe's update) is measured in the same run against
the same step written the straightforward way: an ``nn.Conv2d`` stack with in-place ReLUs,
``nn.MaxPool2d(ceil_mode=True)``, ``nn.ConvTranspose2d``, crops by slicing,
``F.cross_entropy(reduction="sum", ignore_index=255)`` and ``torch.optim.SGD`` (momentum 0.99,
weight decay per parameter group, the frozen upsampling excluded), loaded with the same
weights. The two run interleaved (one iteration of each per round) so a busy machine slows
them alike; the best round counts. The first iteration's losses of the two are compared (they
compute the same function). Peak memory (``ru_maxrss``) is measured per variant in a child
process (``--child``), since a process's peak cannot be reset.

Not a test: ``python benchmarks/bench_train.py [--repeat 3] [--json FILE] [--nets fcn32s,fcn8s]``;
``--quick`` runs the widths / 16 at 64 x 80 in a few seconds (the test suite runs it).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from port.caffe import load_net, parse_text  # noqa: E402
from port.caffe.synth import divide_width  # noqa: E402
from port.net.engine import CaffeNet  # noqa: E402
from port.net.fillers import fill  # noqa: E402
from port.training.solver import Solver, SolverParameter  # noqa: E402
from port.training.surgery import interp  # noqa: E402

SHARED = Path(os.environ.get("FCN_PORT_SHARED", REPO.parent / "shared"))
SIZE = (375, 500)
QUICK_SIZE = (64, 80)
#: upstream voc-fcn32s / voc-fcn8s solver.prototxt: base_lr (unnormalized loss), momentum, decay
SOLVERS = {"fcn32s": 1e-10, "fcn8s": 1e-14}
MOMENTUM, WEIGHT_DECAY = 0.99, 0.0005
INPUT_STD = 50.0


def train_netdef(name: str, divisor: int) -> Any:
    """The upstream ``voc-<name>/train.prototxt`` (its Python data layer's tops fed directly)."""
    net = load_net(SHARED / "upstream" / f"voc-{name}" / "train.prototxt")
    return divide_width(net, divisor) if divisor > 1 else net


def port_net(name: str, divisor: int, size: tuple[int, int]) -> CaffeNet:
    """The TRAIN-phase net with seeded He-scaled weights and bilinear frozen upsampling."""
    netdef = train_netdef(name, divisor)
    net = CaffeNet(netdef, "TRAIN", input_shapes={"data": (1, 3, *size), "label": (1, 1, *size)})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer, params in net.caffe_params().items():
            for index, p in enumerate(params):
                spec = {"type": "msra"} if index == 0 and p.dim() > 1 else {"type": "constant", "value": 0.01}
                p.copy_(fill(tuple(p.shape), spec, gen) * (0.5 if index == 0 else 1.0))
    interp(net)
    return net


class Straightforward(nn.Module):
    """FCN-32s / FCN-8s as PyTorch ports usually write them, with the Caffe layer names (so the
    port's state dict loads) and the crop offsets typed in (19; 5, 9, 31)."""

    def __init__(self, name: str, widths: dict[str, int], n: int = 21):
        super().__init__()
        self.name, self.plan = name, []
        stages = ((2, "1"), (2, "2"), (3, "3"), (3, "4"), (3, "5"))
        c_in = 3
        for convs, stage in stages:
            for i in range(1, convs + 1):
                layer = f"conv{stage}_{i}"
                c_out = widths[layer]
                setattr(self, layer, nn.Conv2d(c_in, c_out, 3, padding=100 if layer == "conv1_1" else 1))
                self.plan.append(layer)
                c_in = c_out
            self.plan.append(f"pool{stage}")
        self.fc6 = nn.Conv2d(c_in, widths["fc6"], 7)
        self.fc7 = nn.Conv2d(widths["fc6"], widths["fc7"], 1)
        self.score_fr = nn.Conv2d(widths["fc7"], n, 1)
        if name == "fcn32s":
            self.upscore = nn.ConvTranspose2d(n, n, 64, stride=32, bias=False)
        else:
            self.score_pool4 = nn.Conv2d(widths["conv4_3"], n, 1)
            self.score_pool3 = nn.Conv2d(widths["conv3_3"], n, 1)
            self.upscore2 = nn.ConvTranspose2d(n, n, 4, stride=2, bias=False)
            self.upscore_pool4 = nn.ConvTranspose2d(n, n, 4, stride=2, bias=False)
            self.upscore8 = nn.ConvTranspose2d(n, n, 16, stride=8, bias=False)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        h, pools = data, {}
        for step in self.plan:
            if step.startswith("pool"):
                h = pools[step] = self.pool(h)
            else:
                h = F.relu(getattr(self, step)(h), inplace=True)
        h = F.relu(self.fc7(F.relu(self.fc6(h), inplace=True)), inplace=True)  # dropout 0.5 omitted: see below
        h = self.score_fr(h)
        H, W = data.shape[2:]
        if self.name == "fcn32s":
            return self.upscore(h)[:, :, 19:19 + H, 19:19 + W]
        up2 = self.upscore2(h)
        p4 = self.score_pool4(pools["pool4"])[:, :, 5:5 + up2.size(2), 5:5 + up2.size(3)]
        up4 = self.upscore_pool4(up2 + p4)
        p3 = self.score_pool3(pools["pool3"])[:, :, 9:9 + up4.size(2), 9:9 + up4.size(3)]
        return self.upscore8(up4 + p3)[:, :, 31:31 + H, 31:31 + W]


def without_dropout(netdef: Any) -> Any:
    """The net with its Dropout ratios 0, so the port and the straightforward step compute the
    same function (both would draw masks; their streams differ). Dropout's cost is one mask
    multiply per fc layer either way."""
    from port.caffe.net import netdef_from_message
    from port.caffe.writer import net_message
    msg = net_message(netdef)
    for lm in msg.layer:
        if lm.type == "Dropout":
            lm.dropout_param.dropout_ratio = 0.0
    return netdef_from_message(msg, netdef.path)


def _batch(size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    data = torch.randn(1, 3, *size, generator=gen) * INPUT_STD
    label = torch.randint(0, 21, (1, 1, *size), generator=gen).float()
    label[..., : size[0] // 10, :] = 255
    return data, label


def make_port(name: str, divisor: int, size: tuple[int, int], state: dict | None = None):
    """The port's step: ``Solver`` over the TRAIN net (weights from ``state`` when given)."""
    netdef = without_dropout(train_netdef(name, divisor))
    net = CaffeNet(netdef, "TRAIN", input_shapes={"data": (1, 3, *size), "label": (1, 1, *size)})
    if state is not None:
        net.load_state_dict(state)
    data, label = _batch(size)
    param = SolverParameter.from_message(parse_text(
        f'base_lr: {SOLVERS[name]} lr_policy: "fixed" momentum: {MOMENTUM} weight_decay: {WEIGHT_DECAY}',
        "SolverParameter"))
    solver = Solver(param, lambda k: {"data": data, "label": label}, net=net)
    return lambda: solver.step(1)[0][0]


def make_plain(name: str, divisor: int, size: tuple[int, int], state: dict | None = None):
    """The straightforward step, lr_mult/decay_mult as parameter groups of torch.optim.SGD
    (read from the prototxt once, on the meta device: nothing allocated)."""
    netdef = without_dropout(train_netdef(name, divisor))
    with torch.device("meta"):
        meta = CaffeNet(netdef, "TRAIN", input_shapes={"data": (1, 3, *size), "label": (1, 1, *size)})
    widths = {k: int(v[0].shape[0]) for k, v in meta.caffe_params().items()}
    plain = Straightforward(name, widths)
    if state is not None:
        plain.load_state_dict(state)
    groups = []
    for module_name, module in meta.caffe_layers().items():
        specs = module.layer.params
        for index, _ in enumerate(module.caffe_params()):
            lr_mult = float(specs[index].lr_mult) if index < len(specs) else 1.0
            decay = float(specs[index].decay_mult) if index < len(specs) else 1.0
            target = getattr(plain, module_name).weight if index == 0 else getattr(plain, module_name).bias
            if lr_mult == 0:
                target.requires_grad_(False)
                continue
            groups.append({"params": [target], "lr": SOLVERS[name] * lr_mult, "weight_decay": WEIGHT_DECAY * decay})
    sgd = torch.optim.SGD(groups, lr=SOLVERS[name], momentum=MOMENTUM)
    data, label = _batch(size)
    target = label[:, 0].long()

    def plain_step() -> float:
        sgd.zero_grad(set_to_none=True)
        loss = F.cross_entropy(plain(data), target, ignore_index=255, reduction="sum")
        loss.backward()
        sgd.step()
        return float(loss.detach())

    return plain_step


def make_pair(name: str, divisor: int, size: tuple[int, int]):
    """(port step, straightforward step) from the same weights."""
    state = port_net(name, divisor, size).state_dict()
    return make_port(name, divisor, size, state), make_plain(name, divisor, size, state)


def peak_rss_mib() -> float:
    """This process's peak resident set (``VmHWM``: reset by ``exec``, unlike ``ru_maxrss``,
    which a child started by fork + exec inherits from its parent on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(name: str, which: str, divisor: int, size: tuple[int, int]) -> dict:
    """Peak RSS of one variant alone (its own default weights: memory does not depend on
    the values): after building, and after two iterations."""
    torch.manual_seed(0)
    step = (make_port if which == "port" else make_plain)(name, divisor, size)
    built = peak_rss_mib()
    step()
    step()
    peak = peak_rss_mib()
    return {"built_mib": built, "peak_mib": peak}


def measure_memory(name: str, divisor: int, size: tuple[int, int]) -> dict[str, dict]:
    out = {}
    for which in ("port", "plain"):
        cmd = [sys.executable, __file__, "--child", f"{name},{which},{divisor},{size[0]},{size[1]}"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[which] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def section(name: str, divisor: int, size: tuple[int, int], repeat: int, memory: bool) -> dict:
    torch.manual_seed(0)
    port_step, plain_step = make_pair(name, divisor, size)
    fns: dict[str, Callable[[], float]] = {"port": port_step, "plain": plain_step}
    first = {k: fn() for k, fn in fns.items()}  # warm-up; the same weights: the same loss
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - start_cpu)
    out = {"net": name, "divisor": divisor, "size": list(size), "times": times, "cpu_times": cpu,
           "first_loss": first,
           "loss_rel_diff": abs(first["port"] - first["plain"]) / abs(first["plain"])}
    if memory:
        out["memory"] = measure_memory(name, divisor, size)
    return out


def report(sections: list[dict]) -> str:
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU fp32",
             "", "| net | input | variant | best s | median s | port / plain (best) | CPU s best | CPU s median "
             "| port / plain (CPU median) | first-iteration loss | peak RSS MiB (built -> peak) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sections:
        best = {k: min(v) for k, v in s["times"].items()}
        cpu_med = {k: statistics.median(v) for k, v in s["cpu_times"].items()}
        for k in ("port", "plain"):
            mem = s.get("memory", {}).get(k, {})
            label = ("port Solver (CaffeNet + CaffeSGD)" if k == "port"
                     else "straightforward nn.Conv2d + torch.optim.SGD")
            width = "full width" if s["divisor"] == 1 else f"width / {s['divisor']}"
            lines.append(f"| {s['net']} ({width}) | {s['size'][1]}x{s['size'][0]} | {label} | {best[k]:.3f} | "
                         f"{statistics.median(s['times'][k]):.3f} | {best['port'] / best[k]:.2f} | "
                         f"{min(s['cpu_times'][k]):.3f} | {cpu_med[k]:.3f} | {cpu_med['port'] / cpu_med[k]:.2f} | "
                         f"{s['first_loss'][k]:.6g} | {mem.get('built_mib', float('nan')):.0f} -> "
                         f"{mem.get('peak_mib', float('nan')):.0f} |")
        lines.append(f"| | | losses agree to | {s['loss_rel_diff']:.1e} relative | | | | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--nets", default="fcn32s,fcn8s")
    parser.add_argument("--quick", action="store_true", help="widths / 16 at 64 x 80, one round, no memory")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, which, divisor, h, w = args.child.split(",")
        print(json.dumps(child(name, which, int(divisor), (int(h), int(w)))))
        return 0
    divisor, size = (16, QUICK_SIZE) if args.quick else (1, SIZE)
    repeat = 1 if args.quick else args.repeat
    sections = [section(n, divisor, size, repeat, not (args.quick or args.no_memory))
                for n in args.nets.split(",")]
    text = report(sections)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(sections, indent=1) + "\n")
    for s in sections:
        if s["loss_rel_diff"] > 1e-4:
            raise SystemExit(f"{s['net']}: the port's and the straightforward loss differ by "
                             f"{s['loss_rel_diff']:.2e} relative")
    return 0


if __name__ == "__main__":
    sys.exit(main())
