"""The kbrec trainer's checkpoints (mmf_rec.checkpoint): loaded safely,
config.yaml written once with to_yaml; saving, resume and zoo keys are
proven end to end in test_resume, test_zoo and test_sharding."""

import types
import warnings

import pytest
import torch
from omegaconf import OmegaConf

import mmf_rec.plugin

mmf_rec.plugin.apply()

from mmf_rec.checkpoint import KBRecCheckpoint  # noqa: E402


def test_checkpoints_needing_a_full_unpickle_load_only_when_allowed(tmp_path):
    from mmf_rec.safe_load import CheckpointError

    path = tmp_path / "current.ckpt"
    model = torch.nn.Linear(2, 1)
    torch.save({"config": OmegaConf.create({"a": 1}), "model": model.state_dict()}, path)

    def owner(**checkpoint):
        return types.SimpleNamespace(device=torch.device("cpu"),
                                     config=OmegaConf.create({"checkpoint": checkpoint}),
                                     trainer=types.SimpleNamespace(model=model))

    with pytest.raises(CheckpointError, match="checkpoint.allow_pickle=True"):
        KBRecCheckpoint._torch_load(owner(), str(path))
    loaded = KBRecCheckpoint._torch_load(owner(allow_pickle=True), str(path))
    assert loaded["config"].a == 1


def test_config_yaml_is_written_with_to_yaml_without_warning(tmp_path):
    """rc10's cfg.pretty() warns on this omegaconf; KBRecCheckpoint writes the same file."""

    config = OmegaConf.create({"a": 1, "b": {"c": "${a}"}})
    with pytest.warns(UserWarning, match="pretty"):
        config.pretty(resolve=True)
    owner = type("Owner", (), {"ckpt_foldername": str(tmp_path), "config": config})()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KBRecCheckpoint.save_config(owner)
    assert OmegaConf.load(tmp_path / "config.yaml") == OmegaConf.create({"a": 1, "b": {"c": 1}})
