"""``python -m port selfcheck [--device D] [--precision MODE] [--model fcn8s] [--width-divisor N] [--size HxW]``.

Runs a released net with seeded random weights on seeded random inputs twice: once as the
reference (strict fp32 on the CPU) and once as asked (a precision mode of
``port.run.speed.MODES`` on a device, through ``speed.Runner``), and reports per output the max
relative error ``max|candidate - reference| / max|reference|`` and the fraction of pixels
whose argmax class agrees. It shows what TF32, bf16, cuDNN's algorithms, another memory layout
or the CPU fast path do to the numbers. ``--tf32`` is ``--precision fast-tf32``. On a CPU alone
it checks ``cpu-fast`` against strict fp32, so it runs anywhere.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Sequence

from port.cli import describe, fail, released_net_args
from port.errors import PortError

# torch and the run modes are imported where they are used, so that --help answers at once.

PROG = "python -m port selfcheck"
#: Spread of the random inputs: mean-subtracted 0-255 pixels (the goldens use N(0, 50)).
INPUT_STD = 50.0
#: Spread of random biases (the goldens' recipe; weights are He-scaled normals).
BIAS_STD = 0.01


@dataclass(frozen=True)
class OutputCheck:
    """One output's agreement: max relative error and argmax agreement (fraction)."""

    name: str
    max_rel_error: float
    argmax_agreement: float

    def line(self) -> str:
        return (f"{self.name}: max relative error {self.max_rel_error:.3e}, "
                f"argmax agreement {100 * self.argmax_agreement:.4f}%")


def randomize(model: "torch.nn.Module", seed: int) -> "torch.nn.Module":
    """He-scaled normal convolution weights and small normal biases, seeded; the frozen
    upsampling and scale layers keep their fixed (bilinear, constant) values as released."""
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    import torch
    from port.net.layers import Convolution
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Convolution) and not module.transposed:
                fan_in = math.prod(module.weight.shape[1:])
                module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
                if module.bias_term:
                    module.bias.normal_(0.0, BIAS_STD, generator=generator)
    return model


def random_inputs(model: torch.nn.Module, size: tuple[int, int], seed: int) -> dict[str, torch.Tensor]:
    """One seeded N(0, INPUT_STD) tensor per input blob of ``model``."""
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    import torch
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(1, model.input_shapes[name][1], *size, generator=generator) * INPUT_STD
            for name in model.input_names}


def _outputs(runner: speed.Runner, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    import torch
    result = runner(**inputs)
    return {runner.model.output_names[0]: result} if isinstance(result, torch.Tensor) else result


def compare(reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor]) -> list[OutputCheck]:
    """Max relative error and argmax (class axis 1) agreement of each output."""
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    import torch
    checks = []
    for name, ref in reference.items():
        got = candidate[name].detach().to("cpu", torch.float32)
        scale = ref.abs().max().clamp(min=torch.finfo(torch.float32).tiny)
        agree = (got.argmax(1) == ref.argmax(1)).to(torch.float64).mean()
        checks.append(OutputCheck(name, float((got - ref).abs().max() / scale), float(agree)))
    return checks


def default_precision(device: str) -> str:
    """The mode checked when none is named: ``cpu-fast`` on the CPU (so the check is not of a
    run with itself), strict fp32 elsewhere."""
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    import torch
    from port.run import speed
    return speed.CPU_FAST.name if torch.device(device).type == "cpu" else speed.STRICT.name


def selfcheck(model_name: str = "fcn8s", *, device: str = "cpu", precision: "str | speed.SpeedMode | None" = None,
              channels_last: bool | None = None, width_divisor: int = 1,
              size: tuple[int, int] = (224, 224), seed: int = 0) -> list[OutputCheck]:
    """Compare ``model_name`` run in ``precision`` (a mode of ``port.run.speed.MODES``; default
    :func:`default_precision`) on ``device`` against strict fp32 on the CPU; ``channels_last``
    overrides the mode's memory format."""
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    from port.models import get_model
    from port.run import speed
    mode = speed.mode_named(precision or default_precision(device))
    if channels_last is not None:
        mode = dataclasses.replace(mode, channels_last=channels_last)
    reference_model = randomize(get_model(model_name, width_divisor=width_divisor), seed).eval()
    inputs = random_inputs(reference_model, size, seed)
    candidate = speed.Runner(mode, copy.deepcopy(reference_model), device)
    reference = _outputs(speed.Runner(speed.STRICT, reference_model, "cpu"), inputs)
    return compare(reference, _outputs(candidate, inputs))


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must read HxW (e.g. 224x224), got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1x1 (e.g. 224x224), got {text!r}")
    return height, width


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of :func:`selfcheck`; exit status 1 when ``--max-error`` is exceeded or for
    bad input (an unknown model, a width the net refuses, a device that cannot run here: each
    one line through ``port.cli.fail``), 2 for a usage error (``port.errors``' rule)."""
    parser = argparse.ArgumentParser(prog=PROG, description=describe(__doc__))
    parser.add_argument("--model", default="fcn8s", help="family model name (default fcn8s)")
    parser.add_argument("--device", default="cpu", help="device to check against CPU fp32")
    parser.add_argument("--precision", metavar="MODE",
                        help="precision mode to check, one of port.run.speed.MODES (an unknown name "
                             "lists them; default: cpu-fast on the CPU, strict-fp32 elsewhere)")
    parser.add_argument("--tf32", dest="precision", action="store_const", const="fast-tf32",
                        help="the same as --precision fast-tf32")
    parser.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                        help="run the candidate channels-last (default: as the mode says)")
    parser.add_argument("--contiguous", dest="channels_last", action="store_false",
                        help="run the candidate in contiguous memory")
    parser.add_argument("--width-divisor", type=int, default=1, help="1: released widths; 16: goldens'")
    parser.add_argument("--size", type=_size, default=(224, 224), help="input HxW (default 224x224)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random weights and inputs (default 0)")
    parser.add_argument("--max-error", type=float, help="fail when a max relative error exceeds this")
    args = parser.parse_args(argv)
    # lazy: a command imports after parsing, so --help imports no torch (tests/test_cli_port.py)
    from port.run import speed
    from port.run.devices import check_device
    if args.precision is not None and args.precision not in speed.MODES:
        parser.error(f"argument --precision: invalid choice: {args.precision!r} (choose from "
                     f"{', '.join(speed.MODES)})")
    try:
        check_device(args.device)
        released_net_args(args.model, width_divisor=args.width_divisor)
        checks = selfcheck(args.model, device=args.device, precision=args.precision,
                           channels_last=args.channels_last, width_divisor=args.width_divisor,
                           size=args.size, seed=args.seed)
    except PortError as err:
        return fail(PROG, err)
    print(f"{args.model} (width / {args.width_divisor}, {args.size[0]}x{args.size[1]}) on {args.device}"
          f" in {args.precision or default_precision(args.device)} vs strict fp32 on the CPU:")
    for check in checks:
        print("  " + check.line())
    failed = args.max_error is not None and any(c.max_rel_error > args.max_error for c in checks)
    return 1 if failed else 0
