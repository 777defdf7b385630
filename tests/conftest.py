import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def mmf_cache_dir(tmp_path_factory):
    """MMF's cache root (where models put their knowledge caches) in this
    session's temporary folder, not the user's ~/.cache."""
    previous = os.environ.get("MMF_CACHE_DIR")
    os.environ["MMF_CACHE_DIR"] = str(tmp_path_factory.mktemp("mmf_cache"))
    yield
    if previous is None:
        os.environ.pop("MMF_CACHE_DIR", None)
    else:
        os.environ["MMF_CACHE_DIR"] = previous


@pytest.fixture(scope="module")
def publish_synthetic(tmp_path_factory):
    """``publish(name, generator)``: a small kbrec_synthetic directory,
    generated and published to MMF's registry under dataset ``name``, as a
    run's builder would publish it, so models build in-process. The
    registry's previous config comes back after the module."""
    from mmf.common.registry import registry
    from omegaconf import OmegaConf

    from mmf_rec.data import synthetic
    from mmf_rec.data.prepared import load_prepared

    previous = registry.get("config", no_warning=True)

    def publish(name, generator):
        root = tmp_path_factory.mktemp(name) / "data"
        synthetic.generate(root, synthetic.GeneratorConfig.from_mapping(generator),
                           progress=False)
        data = load_prepared(root)
        registry.register("config", OmegaConf.create(
            {"datasets": name, "evaluation": {"predict": False}}))
        registry.register(f"{name}_schema", data.schema)
        registry.register(f"{name}_root", str(root))
        return data

    yield publish
    registry.register("config", previous)


@pytest.fixture(scope="session")
def serving_runs(tmp_path_factory):
    """A tiny trained pipeline (two_tower, its index, an ids-only dlrm_mm),
    trained once per session for every service test."""
    from tiny_runs import train_pipeline

    return train_pipeline(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="session")
def service(serving_runs):
    """The real service on ``serving_runs``, in a background thread of this
    process (its engine and metrics stay inspectable); shared by
    test_serving.py and test_browser.py."""
    from mmf_rec.serving.batcher import BatchConfig
    from mmf_rec.serving.engine import Engine
    from mmf_rec.serving.service import ServiceThread

    engine = Engine.from_runs(serving_runs / "two_tower", serving_runs / "two_tower" / "index",
                              serving_runs / "dlrm_mm", k_retrieve=50, max_k=20)
    thread = ServiceThread(engine, BatchConfig(max_batch_size=8, max_wait_ms=30),
                           max_body=4096)
    yield thread
    thread.close()
