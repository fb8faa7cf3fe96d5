"""Upstream's sample order: Python 2.7's randint on MT19937, seed 1337."""
from __future__ import annotations

import ast
import os
import random
import shutil
import subprocess

import pytest

from reproduce.training.sampling import SampleOrder, py27_randint

#: Printed by the real CPython 2.7.18 on this machine:
#: random.seed(1337); [random.randint(0, 8497) for _ in range(8)]   (SBD train: 8498 ids)
PY27_SBD = [5249, 4531, 3108, 4978, 1408, 7005, 3260, 6710]
#: random.seed(1337); [random.randint(0, 2487) for _ in range(5)]   (SIFT Flow trainval)
PY27_SIFT = [1536, 1326, 910, 1457, 412]
#: random.seed(7); [random.randint(0, 12) for _ in range(6)]
PY27_SMALL = [4, 1, 8, 0, 6, 4]


def test_formula_gives_python27s_draws():
    for seed, n, want in ((1337, 8498, PY27_SBD), (1337, 2488, PY27_SIFT), (7, 13, PY27_SMALL)):
        rng = random.Random(seed)
        assert [py27_randint(rng, 0, n - 1) for _ in want] == want
        order = SampleOrder([f"i{j}" for j in range(n)], seed)
        assert [order.index(k) for k in range(len(want))] == want


def test_python3_randint_differs_so_the_formula_matters():
    rng = random.Random(1337)
    assert [rng.randint(0, 8497) for _ in PY27_SBD] != PY27_SBD


def test_order_is_a_pure_function_of_seed_split_and_pass():
    ids = [f"img{j}" for j in range(50)]
    a, b = SampleOrder(ids, 1337), SampleOrder(ids, 1337)
    late = b.ids(30, 5)            # asked out of order first
    assert a.ids(0, 35)[30:] == late
    assert SampleOrder(ids, 1338).ids(0, 10) != a.ids(0, 10)
    with pytest.raises(ValueError):
        SampleOrder([], 1)


@pytest.mark.skipif(shutil.which("python2.7") is None, reason="no python2.7 on PATH")
def test_against_a_live_python27():
    env = {**os.environ, "PYENV_VERSION": os.environ.get("PYENV_VERSION", "2.7.18")}
    proc = subprocess.run(["python2.7", "-c", "import random; random.seed(1337); "
                           "print([random.randint(0, 96) for _ in range(20)])"],
                          capture_output=True, text=True, env=env, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"python2.7 did not run: {proc.stderr.strip()[:200]}")
    assert SampleOrder([str(i) for i in range(97)], 1337).ids(0, 20) == \
        [str(i) for i in ast.literal_eval(proc.stdout.strip())]
