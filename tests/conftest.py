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


def pytest_configure(config):
    """Under pytest-xdist, each worker's torch takes its share of the cores, not all of them:
    with every worker's OpenMP team as wide as the machine, each small operator waits for
    threads the other workers hold (the 736-image evaluation took 98 s in the suite against
    6 s alone). What a test computes does not depend on the thread count."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


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


@pytest.fixture(scope="module")
def golden_nets(goldens_dir: Path):
    """``golden_nets(name)``: each caffe-goldens net built and loaded once per test module (they
    are tiny; module scope, as tests may change one)."""
    from helpers import golden_net
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = golden_net(goldens_dir, name)
        return cache[name]
    return get


@pytest.fixture(scope="session")
def upstream_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "upstream")


# --------------------------------------------------------------------------------------------
# The synthetic evaluation the harness tests share, made once per pytest worker (session scope):
# a PASCAL VOC tree of 13 images (prime: not a multiple of 2 or 3 processes) of different odd
# sizes with palette labels and void borders, a 1/16-width caffemodel of random weights written
# by the project's own writer (port.caffe.synth) for the goldens' val-style FCN-16s net (its
# `label` input feeds a SoftmaxWithLoss, so the run has score.py's loss too), and one `--net`
# evaluation of the whole split with its predictions saved.
SYNTH_IMAGES = 13
SYNTH_NET = "voc-fcn16s"
#: The list file of the synthetic split, beside VOCdevkit/ (the split is named "synthetic").
SYNTH_SPLIT = "synthetic.txt"


def _write_voc_image(voc: Path, image_id: str, index: int, rng, n_classes: int) -> None:
    """One JPEG of an odd size and its palette label: class blocks, a void row and column."""
    import numpy as np
    from PIL import Image
    from reproduce.palette import VOID_LABEL, voc_palette
    h, w = 15 + 2 * (index % 5), 19 + 2 * (index % 7)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
    label = np.zeros((h, w), dtype=np.uint8)
    label[2:h - 2, 3:w - 3] = rng.integers(1, n_classes)
    label[h // 2:, : w // 2] = rng.integers(0, n_classes)
    label[1, :] = VOID_LABEL
    label[:, 2] = VOID_LABEL
    png = Image.fromarray(label, mode="P")
    png.putpalette(voc_palette().ravel().tolist())
    png.save(voc / "SegmentationClass" / f"{image_id}.png")


def _make_voc_tree(root: Path, n: int = SYNTH_IMAGES, seed: int = 0) -> list[str]:
    """VOCdevkit/VOC2012 as VOC ships it (JPEGImages, SegmentationClass, ImageSets/Segmentation
    with VOC's own val/trainval lists and no list of FCN's: no seg11valid.txt), and the split
    the tests evaluate as a list file beside it, ``root/SYNTH_SPLIT`` (``--split FILE``, as a
    user passes a list of their own); the ids."""
    import numpy as np
    from port.models.classes import VOC_CLASSES
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"2011_{i:06d}" for i in range(n)]
    for i, image_id in enumerate(ids):
        _write_voc_image(voc, image_id, i, rng, len(VOC_CLASSES))
    for name in ("val.txt", "trainval.txt"):
        (voc / "ImageSets" / "Segmentation" / name).write_text("\n".join(ids) + "\n")
    (root / SYNTH_SPLIT).write_text("\n".join(ids) + "\n")
    return ids


@pytest.fixture(scope="session")
def synthetic_prototxt(goldens_dir: Path) -> Path:
    """The goldens' 1/16-width val-style net the synthetic evaluation runs (`--net`)."""
    return _require(goldens_dir / SYNTH_NET / "net.prototxt")


@pytest.fixture(scope="session")
def make_caffemodel(goldens_dir: Path):
    """``make_caffemodel(path, seed=1, net=SYNTH_NET)``: random weights for a goldens net,
    written by the project's writer."""
    def make(path: Path, seed: int = 1, net: str = SYNTH_NET) -> Path:
        from port.caffe import load_net
        from port.caffe.synth import make_caffemodel as write
        write(load_net(_require(goldens_dir / net / "net.prototxt")), path, seed=seed)
        return path
    return make


@pytest.fixture(scope="session")
def net_argv(synthetic_prototxt: Path):
    """``net_argv(weights, data, out, *extra)``: the `python -m reproduce --net` command line
    of the synthetic evaluation, on the CPU, quiet, loading in-process; the split is the list
    file ``data/SYNTH_SPLIT``."""
    def argv(weights: Path, data: Path, out: Path, *extra: str) -> list[str]:
        return ["--net", str(synthetic_prototxt), "--weights", str(weights), "--data", str(data),
                "--split", str(Path(data) / SYNTH_SPLIT),
                "--out", str(out), "--device", "cpu", "--quiet", "--workers", "0", *extra]
    return argv


@pytest.fixture(scope="session")
def voc_tree(tmp_path_factory) -> tuple[Path, list[str]]:
    """(root holding VOCdevkit/, the split's ids) of the synthetic VOC tree."""
    root = tmp_path_factory.mktemp("voc")
    return root, _make_voc_tree(root)


@pytest.fixture(scope="session")
def synthetic_split(voc_tree) -> Path:
    """The list file of the synthetic split (``--split FILE``)."""
    return voc_tree[0] / SYNTH_SPLIT


@pytest.fixture(scope="session")
def caffemodel(make_caffemodel, tmp_path_factory) -> Path:
    return make_caffemodel(tmp_path_factory.mktemp("w") / "fcn16s-w16.caffemodel")


@pytest.fixture(scope="session")
def net_run(net_argv, voc_tree, caffemodel, tmp_path_factory) -> Path:
    """One --net evaluation of the whole synthetic split: ``report/`` and ``pred/`` inside."""
    from reproduce.__main__ import main
    out = tmp_path_factory.mktemp("run")
    code = main(net_argv(caffemodel, voc_tree[0], out / "report",
                         "--save-predictions", str(out / "pred"), "--overlays", "2"))
    assert code == 0
    return out


@pytest.fixture
def package_data_patterns():
    """``package_data_patterns("reproduce")``: setup.cfg's ``[options.package_data]`` globs of
    a package (what ``pip install .`` ships beside its modules)."""
    import configparser

    def patterns(package: str) -> list[str]:
        cfg = configparser.ConfigParser()
        cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
        return cfg["options.package_data"][package].split()
    return patterns
