"""The default module against Runner("cpu-fast") in one process, alternating call by call
(FCN-8s, full width, random weights, 1x3x375x500, the threads torch takes by default): both
run the same prepared form, so what separates them in bench_infer's tables is the order of its
rounds. Prints best and median of each over 8 alternating rounds, after 2 warm-up calls.

    python benchmarks/ab_default_runner.py
"""
import time

import torch

from port.cli.selfcheck import randomize
from port.models import fcn8s
from port.run import speed


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    model = randomize(fcn8s(), 0).eval()
    runner = speed.Runner("cpu-fast", model, "cpu")
    x = torch.randn(1, 3, 375, 500) * 50
    with torch.no_grad():
        for _ in range(2):
            model(data=x)
            runner(data=x)
        a, b = [], []
        for _ in range(8):
            a.append(timed(lambda: model(data=x)))
            b.append(timed(lambda: runner(data=x)))
    print("default best %.3f med %.3f | runner best %.3f med %.3f"
          % (min(a), sorted(a)[4], min(b), sorted(b)[4]))


if __name__ == "__main__":
    main()
