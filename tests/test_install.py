"""An installed fcn-port writes nothing into its own install folder (issue 19.1).

The wheel is built from a copy of the sources (which gets no ``build/`` or ``*.egg-info``:
setup.py builds in temporary folders, so ``pip install .`` leaves the checkout as it was),
installed (not editable) into a target folder that is then made read-only,
and the main command and a short training run from another folder. Every default output
goes to the working directory (``./reports/<model>``) or the per-user cache; the package
folder is the same, file for file, afterwards. Nothing here reads the network.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from test_newcomer import SEG11VALID, write_small_fcn8s, write_voc_as_shipped
from train_trees import make_sbd_voc, random_init

REPO = Path(__file__).resolve().parents[1]
#: What a source distribution holds: the packages and the files setup.cfg reads.
SOURCES = ("port", "reproduce", "setup.cfg", "setup.py", "pyproject.toml", "README.md")
TIMEOUT_S = 600


def _copy_sources(dest: Path) -> Path:
    dest.mkdir()
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"pip {' '.join(args)}: {done.stderr}"


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder``: (size, mtime_ns), to compare before and after."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def _set_writable(folder: Path, writable: bool) -> None:
    bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~bits)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """fcn-port's wheel installed into a target folder (site-packages of its own)."""
    tmp = tmp_path_factory.mktemp("install")
    src = _copy_sources(tmp / "src")
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         str(tmp / "wheel"), str(src), cwd=tmp)
    [wheel] = (tmp / "wheel").glob("fcn_port-*.whl")
    # issue 19.13: the build leaves nothing in the source tree (setup.py builds in temp folders)
    assert sorted(p.name for p in src.iterdir()) == sorted(SOURCES)
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(tmp / "site"), str(wheel),
         cwd=tmp)
    return tmp / "site"


def _python(site: Path, work: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FCN_PORT_CACHE", "XDG_CACHE_HOME", "FCN_PORT_UPSTREAM", "PYTHONPATH")}
    # the installed copy first on the path (before the checkout's editable install); no .pyc
    # written beside it; the per-user cache under this test's own home
    env.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", HOME=str(home))
    return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)


def test_an_installed_package_writes_nothing_into_its_folder(installed, tmp_path):
    data = tmp_path / "data"
    write_voc_as_shipped(data / "voc", SEG11VALID[:3])
    make_sbd_voc(data / "train")
    weights = write_small_fcn8s(tmp_path / "fcn8s-w16.safetensors")
    init = random_init("fcn32s", tmp_path / "init.safetensors")
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    where = _python(installed, work, home, "-c", "import reproduce, port; "
                    "print(reproduce.__file__); print(port.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(installed) for line in where.stdout.split()), where.stdout
    assert (installed / "reproduce" / "data" / "pascal" / "seg11valid.txt").is_file()

    before = _tree(installed)
    _set_writable(installed, False)
    try:
        evaluated = _python(installed, work, home, "-m", "reproduce", "fcn8s", "--data",
                            str(data / "voc"), "--weights", str(weights), "--limit", "3",
                            "--device", "cpu", "--quiet", "--workers", "0")
        trained = _python(installed, work, home, "-m", "reproduce", "train", "fcn32s", "--data",
                          str(data / "train"), "--out", "runs/fcn32s", "--init", str(init),
                          "--width-divisor", "16", "--iters", "1", "--test-interval", "0",
                          "--snapshot", "0", "--device", "cpu", "--quiet")
    finally:
        _set_writable(installed, True)
    assert evaluated.returncode == 0, evaluated.stderr
    assert trained.returncode == 0, trained.stderr
    assert _tree(installed) == before                  # nothing written under the package
    assert (work / "reports" / "fcn8s" / "report.json").is_file()       # ./reports/<model>
    assert (work / "runs" / "fcn32s" / "final.safetensors").is_file()
    assert str(work / "reports" / "fcn8s" / "report.json") in evaluated.stdout


def test_the_console_scripts_are_installed(installed, tmp_path):
    """``fcn-port`` and ``fcn-reproduce`` (setup.cfg's console_scripts) are installed with the
    wheel and answer as ``python -m port`` and ``python -m reproduce`` do."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(installed), PYTHONDONTWRITEBYTECODE="1")
    for script, command in (("fcn-port", "convert"), ("fcn-reproduce", "train")):
        exe = installed / "bin" / script
        assert exe.is_file(), f"{script} not installed in {installed / 'bin'}"
        done = subprocess.run([str(exe), "--help"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage:") and command in done.stdout, done.stdout[:500]


def test_the_tensorboard_extra_is_declared(installed):
    """``pip install 'fcn-port[tensorboard]'`` (what ``reproduce train --tensorboard`` says
    without it) brings the package, and the ``test`` extra does too (the suite reads real event
    files back): the wheel's metadata declares both, as setup.cfg asks."""
    [metadata] = installed.glob("fcn_port-*.dist-info/METADATA")
    requires = [line.split(":", 1)[1].strip() for line in metadata.read_text().splitlines()
                if line.startswith("Requires-Dist:")]
    assert "tensorboard" in [line.split(":", 1)[1].strip() for line in
                             metadata.read_text().splitlines() if line.startswith("Provides-Extra:")]
    for extra in ("tensorboard", "test"):
        assert any(r.startswith("tensorboard") and f'extra == "{extra}"' in r for r in requires), \
            requires
