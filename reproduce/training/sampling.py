"""Upstream's training sample order, as its data layers draw it under Python 2.7.

Every upstream training data layer (``voc_layers.SBDDSegDataLayer``, ``siftflow_layers``,
``nyud_layers``, ``pascalcontext_layers``; fcn.berkeleyvision.org 1305c73) does, in ``setup``,
``random.seed(self.seed)`` then ``self.idx = random.randint(0, len(self.indices)-1)``, and in
``forward``, after handing out ``indices[idx]``, one more ``random.randint(0, N-1)``: sampling
with replacement, draw k feeding forward pass k (``reshape`` loads ``indices[idx]`` before each
``forward``). Upstream ran under Python 2.7, whose ``randint(a, b)`` is ``randrange(a, b + 1)``
= ``a + int(random() * (b - a + 1))`` (Lib/random.py 2.7, for widths below 2**53). Python 3's
``randint`` draws through ``_randbelow`` (``getrandbits``) instead, so the same seed gives other
indices there. ``random()`` itself is the same in both: MT19937 ``genrand_res53``, and an int
seed initialises the generator the same way (``init_by_array`` over the 32-bit words of
``abs(seed)``, ``random_seed`` in Modules/_randommodule.c of both). So Python 3's
``random.Random(seed).random()`` through 2.7's formula gives 2.7's draws; the tests check the
values against ones the real Python 2.7.18 printed.

The order is a pure function of (seed, split size, pass index): a resumed run or several
processes draw the same samples.
"""
from __future__ import annotations

import random
from typing import Sequence

__all__ = ["py27_randint", "SampleOrder"]


def py27_randint(rng: random.Random, a: int, b: int) -> int:
    """Python 2.7's ``rng.randint(a, b)`` (``randrange(a, b + 1)``, width < 2**53)."""
    width = b - a + 1
    if width <= 0:
        raise ValueError(f"empty range for randint({a}, {b})")
    return a + int(rng.random() * width)


class SampleOrder:
    """The split index of every forward pass of a run: ``index(k)`` for pass k (0-based over
    the whole run), ``ids(start, count)`` the image ids of passes start..start+count-1."""

    def __init__(self, ids: Sequence[str], seed: int):
        if not ids:
            raise ValueError("the training split lists no images")
        self.split = list(ids)
        self.seed = int(seed)
        self._rng = random.Random(self.seed)   # random.seed(self.seed) in setup
        self._drawn: list[int] = []

    def _extend(self, upto: int) -> None:
        n = len(self.split)
        while len(self._drawn) <= upto:
            self._drawn.append(py27_randint(self._rng, 0, n - 1))

    def index(self, k: int) -> int:
        """The split index forward pass ``k`` reads (draw k: setup's, then one per forward)."""
        if k < 0:
            raise ValueError(f"pass index must be >= 0, got {k}")
        self._extend(k)
        return self._drawn[k]

    def id(self, k: int) -> str:
        return self.split[self.index(k)]

    def ids(self, start: int, count: int) -> list[str]:
        return [self.id(k) for k in range(start, start + count)]
