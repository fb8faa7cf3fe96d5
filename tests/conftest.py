"""Shared fixtures: where the ground truth in ../shared/ lives, skipping cleanly without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FCN_PORT_SHARED", REPO.parent / "shared"))

GOLDEN_NETS = (
    "voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet",
    "siftflow-fcn8s", "nyud-fcn32s-color-hha", "nyud-fcn32s-color-d",
)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"ground truth not found at {path} (set FCN_PORT_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared/ folder beside the checkout; tests that need it skip where it is absent."""
    return _require(SHARED)


@pytest.fixture(scope="session")
def goldens_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "caffe-goldens")


@pytest.fixture(scope="session")
def upstream_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "upstream")
