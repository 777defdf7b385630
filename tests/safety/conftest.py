import pytest

from safety_files import QUICK
from tiny_runs import environment, run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(tmp, env): a 20-update dlrm run in ``tmp/run`` on the data in ``tmp/data``."""
    tmp = tmp_path_factory.mktemp("safety")
    env = environment(tmp)
    run("mmf_run", tmp / "run", tmp / "data", *QUICK, env=env)
    return tmp, env
