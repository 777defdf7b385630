"""mmf_rec's configs through MMF's command line: plugins found without
``env.user_dir``, the default config, project configs naming model and
dataset, mappings set from the command line (mmf_rec.plugin.configuration)."""

import os

from omegaconf import OmegaConf

import mmf_rec.plugin

mmf_rec.plugin.apply()

from tiny_runs import run_python  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_plugins_are_found_without_user_dir():
    result = run_python(
        "from mmf.utils.env import setup_imports; setup_imports(); "
        "from mmf.common.registry import registry; "
        "print(registry.get_model_class('dlrm').__module__, "
        "registry.get_trainer_class('kbrec').__module__, "
        "registry.get_builder_class('kbrec_synthetic') is not None)"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["mmf_rec.models.dlrm", "mmf_rec.trainer", "True"]


def test_default_config_is_supplied():
    from mmf.utils.configuration import Configuration, get_default_config_path

    assert get_default_config_path().endswith(os.path.join("configs", "mmf_defaults.yaml"))
    config = Configuration().get_config()
    assert config.training.trainer == "kbrec"
    assert config.checkpoint.reset.optimizer is False


def test_project_config_names_model_and_dataset():
    import argparse

    from mmf.utils.configuration import Configuration

    args = argparse.Namespace(
        opts=[f"config={REPO}/projects/kbrec/dlrm.yaml"], config_override=None
    )
    config = Configuration(args).get_config()
    assert config.model == "dlrm"
    assert config.datasets == "kbrec_synthetic"
    assert config.model_config.dlrm.embedding_dim == 16
    assert "kbrec_synthetic" in config.dataset_config


def test_dict_values_from_the_command_line_are_set():
    import argparse

    from mmf.utils.configuration import Configuration

    tables = "{'user_id': {'kind': 'hash', 'num_buckets': 10}}"
    args = argparse.Namespace(
        opts=[f"config={REPO}/projects/kbrec/dlrm.yaml",
              f"model_config.dlrm.sparse_encoder.params.tables={tables}"],
        config_override=None,
    )
    config = Configuration(args).get_config()
    params = config.model_config.dlrm.sparse_encoder.params
    assert OmegaConf.to_container(params.tables) == {
        "user_id": {"kind": "hash", "num_buckets": 10}}
    assert params.fused is True  # siblings untouched
