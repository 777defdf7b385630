import shutil

import pytest

from mmf_rec.data import synthetic

TINY = {
    "seed": 7,
    "num_users": 200,
    "num_items": 100,
    "num_interactions": 5000,
    "history_len": 4,
    "image_size": 32,
}


@pytest.fixture(scope="session")
def tiny_config():
    return synthetic.GeneratorConfig.from_mapping(TINY)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_config):
    """One generated dataset shared by read-only tests."""
    root = tmp_path_factory.mktemp("kbrec") / "tiny"
    synthetic.generate(root, tiny_config, progress=False)
    return root


@pytest.fixture
def tiny_copy(tiny_dir, tmp_path):
    """A private copy for tests that damage files."""
    return shutil.copytree(tiny_dir, tmp_path / "copy")
