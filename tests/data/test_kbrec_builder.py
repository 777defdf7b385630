import dataclasses
import multiprocessing
import os

import pytest
from omegaconf import OmegaConf

import mmf_rec.plugin

mmf_rec.plugin.apply()

from mmf.common.registry import registry  # noqa: E402
from mmf.utils.build import build_dataset  # noqa: E402

from mmf_rec.data import builder, prepared, synthetic  # noqa: E402
from mmf_rec.data.synthetic_config import GeneratorConfigError  # noqa: E402
from mmf_rec.data.dataset import KBRecDataset  # noqa: E402


def _config(data_dir, tiny_config, **overrides):
    """dataset_config.kbrec_synthetic from the shipped yaml, as MMF selects it."""
    default = OmegaConf.load(builder.KBRecSyntheticBuilder.config_path())
    full = OmegaConf.merge(
        default,
        {"env": {"data_dir": str(data_dir)}},
        {"dataset_config": {"kbrec_synthetic": {
            "generator": dataclasses.asdict(tiny_config), **overrides}}},
    )
    return OmegaConf.select(full, "dataset_config.kbrec_synthetic")


def test_shipped_yaml_has_a_valid_generator_section():
    default = OmegaConf.load(builder.KBRecSyntheticBuilder.config_path())
    section = OmegaConf.to_container(default.dataset_config.kbrec_synthetic.generator)
    assert synthetic.GeneratorConfig.from_mapping(section) == synthetic.GeneratorConfig()


def test_mmf_builds_generates_once_and_registers_the_schema(tmp_path, tiny_config):
    config = _config(tmp_path, tiny_config)
    train = build_dataset("kbrec_synthetic", config, "train")
    assert isinstance(train, KBRecDataset) and train.split == "train"
    manifest = tmp_path / "kbrec_synthetic" / prepared.MANIFEST
    first = os.stat(manifest)
    schema = registry.get("kbrec_synthetic_schema")
    assert schema.sparse_feature("user_id").cardinality == tiny_config.num_users
    assert registry.get("kbrec_synthetic_manifest")["generator"] == tiny_config.to_dict()
    assert registry.get("kbrec_synthetic_root") == str(manifest.parent)

    test = build_dataset("kbrec_synthetic", config, "test")
    assert test.split == "test" and test.extra_eval_splits == ("cold",)
    again = os.stat(manifest)
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)

    changed = dataclasses.replace(tiny_config, seed=tiny_config.seed + 1)
    build_dataset("kbrec_synthetic", _config(tmp_path, changed), "val")
    assert registry.get("kbrec_synthetic_manifest")["seed"] == changed.seed
    assert not list(tmp_path.glob(".kbrec_synthetic.*"))  # no temporary leftovers


def test_test_split_option_picks_the_cold_split(tmp_path, tiny_config):
    dataset = build_dataset("kbrec_synthetic", _config(tmp_path, tiny_config,
                                                       test_split="cold"), "test")
    assert dataset.split == "cold" and dataset.extra_eval_splits == ()
    assert len(dataset) == dataset.prepared.split("cold").rows


def test_unknown_split_is_one_clear_error(tmp_path, tiny_config):
    config = _config(tmp_path, tiny_config, test_split="future")
    with pytest.raises(builder.KBRecConfigError, match=r"test_split: unknown split 'future'"):
        build_dataset("kbrec_synthetic", config, "test")


def test_unknown_feature_is_one_clear_error(tmp_path, tiny_config):
    config = _config(tmp_path, tiny_config, sparse_features=["item_id", "colour"])
    with pytest.raises(builder.KBRecConfigError, match=r"sparse_features: .*'colour'"):
        build_dataset("kbrec_synthetic", config, "train")


def test_feature_subset_reaches_the_registered_schema(tmp_path, tiny_config):
    config = _config(tmp_path, tiny_config, sparse_features=["user_id", "item_id"])
    dataset = build_dataset("kbrec_synthetic", config, "train")
    assert registry.get("kbrec_synthetic_schema").sparse_names == ["user_id", "item_id"]
    assert {k for k in dataset.__getitems__([0]) if k.startswith("sparse_")} == {
        "sparse_user_id", "sparse_item_id"}


def test_missing_data_without_generation_is_one_clear_error(tmp_path, tiny_config):
    config = _config(tmp_path, tiny_config, generate=False)
    with pytest.raises(prepared.PreparedDataError,
                       match=r"kbrec_synthetic: prepared data directory does not exist.*generate is false"):
        build_dataset("kbrec_synthetic", config, "train")


def test_unknown_generator_key_is_one_clear_error(tmp_path, tiny_config):
    config = _config(tmp_path, tiny_config)
    config.generator.num_usres = 3
    with pytest.raises(GeneratorConfigError, match="generator: unknown keys.*num_usres"):
        build_dataset("kbrec_synthetic", config, "train")


def test_a_foreign_directory_is_never_overwritten(tmp_path, tiny_config):
    target = tmp_path / "kbrec_synthetic"
    target.mkdir()
    (target / "mine.csv").write_text("a,b\n")
    with pytest.raises(prepared.PreparedDataError, match="left alone"):
        build_dataset("kbrec_synthetic", _config(tmp_path, tiny_config), "train")
    assert (target / "mine.csv").read_text() == "a,b\n"


def _build_in_child(root, config_dict):
    builder.ensure_generated(root, synthetic.GeneratorConfig.from_mapping(config_dict))


def test_concurrent_builds_leave_one_complete_directory(tmp_path, tiny_config):
    root = tmp_path / "shared"
    small = dataclasses.asdict(dataclasses.replace(tiny_config, num_interactions=2000))
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_build_in_child, args=(root, small)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    data = prepared.load_prepared(root)
    assert sum(t.rows for t in data.splits.values()) == 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared", "shared.lock"]
