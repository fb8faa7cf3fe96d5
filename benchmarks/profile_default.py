"""Where the default module's FCN-8s forward goes on the CPU (full width, random weights,
1x3x375x500, the threads torch takes by default): torch.profiler over 3 warm forwards, the
operators by self CPU time, then the copies (``aten::copy_``) of one forward by shape.

    python benchmarks/profile_default.py
"""
import torch

from port.cli.selfcheck import randomize
from port.models import fcn8s


def main() -> None:
    model = randomize(fcn8s(), 0).eval()
    x = torch.randn(1, 3, 375, 500) * 50
    with torch.no_grad():
        for _ in range(2):
            model(data=x)
        with torch.profiler.profile() as prof:
            for _ in range(3):
                model(data=x)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        with torch.profiler.profile(record_shapes=True) as prof:
            model(data=x)
    rows = [e for e in prof.key_averages(group_by_input_shape=True) if e.key == "aten::copy_"]
    rows.sort(key=lambda e: -e.self_cpu_time_total)
    print(f"copies in one forward: {sum(e.self_cpu_time_total for e in rows) / 1e3:.1f} ms")
    for e in rows[:15]:
        print(f"{e.self_cpu_time_total / 1e3:8.1f} ms  n={e.count:3d}  {str(e.input_shapes)[:100]}")


if __name__ == "__main__":
    main()
