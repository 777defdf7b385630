"""mmf_rec: multimodal, knowledge-based recommenders as MMF plugins.

MMF itself (1.0.0rc10, the only release on PyPI) pins 2020 versions that do
not install on Python 3.11, so it is installed with ``--no-deps`` and is not
listed here; ``make install`` does all of it.
"""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PTH_NAME = "mmf_rec_compat.pth"


def read_compat_pth_line():
    """The .pth line lives in mmf_rec.compat.__main__; read it without
    importing the package (its dependencies may not be installed yet)."""
    namespace = {}
    with open(os.path.join(HERE, "mmf_rec", "compat", "__main__.py")) as f:
        source = f.read()
    start = source.index("PTH_LINE = (")
    end = source.index(")\n", start) + 2
    exec(source[start:end], namespace)
    return namespace["PTH_LINE"]


class BuildPyWithHook(build_py):
    """Ship mmf_rec_compat.pth at the root of site-packages, so MMF's own
    console scripts run with mmf_rec's compatibility patches."""

    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, PTH_NAME), "w") as f:
            f.write(read_compat_pth_line())

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [
            os.path.join(self.build_lib, PTH_NAME)
        ]


def requirements():
    with open(os.path.join(HERE, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith("-")]


setup(
    name="mmf_rec",
    version="0.1.0",
    description="Multimodal, knowledge-based recommenders as plugins for MMF",
    python_requires=">=3.10",
    packages=find_packages(include=["mmf_rec", "mmf_rec.*"]) + ["mmf_rec.configs"],
    package_dir={"mmf_rec.configs": "configs"},
    package_data={"mmf_rec.configs": ["*.yaml", "**/*.yaml"]},
    install_requires=requirements(),
    cmdclass={"build_py": BuildPyWithHook},
)
