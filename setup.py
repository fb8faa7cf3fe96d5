"""Build hooks only (the metadata is setup.cfg's): every build folder is a temporary one, so
``pip install .`` leaves no ``build/`` or ``*.egg-info`` in the checkout (issue 19.13)."""
import atexit
import shutil
import tempfile

from setuptools import setup
from setuptools.command.build import build
from setuptools.command.egg_info import egg_info


def _temporary(prefix: str) -> str:
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, True)
    return folder


class TemporaryBuild(build):
    def initialize_options(self):
        super().initialize_options()
        self.build_base = _temporary("fcn-port-build-")


class TemporaryEggInfo(egg_info):
    def initialize_options(self):
        super().initialize_options()
        self.egg_base = _temporary("fcn-port-egg-info-")


setup(cmdclass={"build": TemporaryBuild, "egg_info": TemporaryEggInfo})
