import pytest


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
