"""Issue 20's check that the renovation left CPU inference no slower: FCN-8s at full width,
375 x 500, fp32, through ``Runner("strict-fp32")`` and ``Runner("cpu-fast")``, best of 3 after a
warm-up, in one process. Run it alternately in two checkouts (each with PYTHONPATH set to its own
folder: a script's folder, not the working one, comes first on sys.path), e.g.
``PYTHONPATH=OLD python benchmarks/bench_renovation.py old`` then the same with NEW.
"""
import sys, time, torch
from port.models import get_model
torch.manual_seed(0)
m = get_model("fcn8s").eval()
x = torch.randn(1, 3, 375, 500)
from port.run.speed import Runner
r = Runner("strict-fp32", m, "cpu")
def best(f):
    f(); ts = []
    for _ in range(3):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)
print(sys.argv[1], "strict-fp32", round(best(lambda: r(data=x)), 3), flush=True)
r2 = Runner("cpu-fast", m, "cpu")
print(sys.argv[1], "cpu-fast", round(best(lambda: r2(data=x)), 3), flush=True)
