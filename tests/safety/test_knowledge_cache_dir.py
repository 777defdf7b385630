"""dlrm_mm's knowledge cache goes under the run's cache root, never into the
prepared data directory (which may be read-only or shared)."""

import mmf_rec.plugin

mmf_rec.plugin.apply()

import mmf_rec  # noqa: E402
from mmf.common.registry import registry  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from tiny_models import TINY_DATA, TINY_ENCODERS, build_tiny  # noqa: E402

mmf_rec.setup_imports()


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_the_cache_goes_to_env_cache_dir_not_the_data(publish_synthetic, tmp_path):
    data = publish_synthetic("_safety_cache", TINY_DATA)
    before = files(data.root)
    cache = tmp_path / "cache"
    registry.register("config", OmegaConf.create({
        "datasets": "_safety_cache", "evaluation": {"predict": False},
        "env": {"cache_dir": str(cache)}}))
    model = build_tiny("dlrm_mm", TINY_ENCODERS)
    assert files(data.root) == before
    entries = sorted(p.name.split("-")[0] for p in (cache / "knowledge_cache").iterdir())
    assert entries == ["image", "text"]
    assert str(model.knowledge["text"].cache_key) in " ".join(
        p.name for p in (cache / "knowledge_cache").iterdir())
