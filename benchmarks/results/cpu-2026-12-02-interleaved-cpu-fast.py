import torch, time
from port.models import get_model
from port.run import speed
from port.cli.selfcheck import randomize
m = randomize(get_model('fcn8s'), 0).eval()
x = torch.randn(1,3,375,500)*50
p = speed.prepare_model(m, speed.CPU_FAST); xi = speed.to_input(x, speed.CPU_FAST)
with torch.inference_mode():
    p(xi); ts=[]
    for _ in range(5):
        t=time.perf_counter(); p(xi); ts.append(time.perf_counter()-t)
print(f"{min(ts):.3f}")
