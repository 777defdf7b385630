"""Runs never overwrite each other (mmf_rec/run_dir.py, env.save_dir defaults)."""

import argparse
import os

import pytest
from omegaconf import OmegaConf

import mmf_rec.plugin

mmf_rec.plugin.apply()

from mmf_rec.run_dir import SaveDirInUse, check_save_dir, config_fingerprint  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project_config(name, *opts):
    from mmf.utils.configuration import Configuration

    args = argparse.Namespace(opts=[f"config={REPO}/projects/kbrec/{name}.yaml", *opts],
                              config_override=None)
    return Configuration(args).get_config()


def test_project_configs_default_to_a_folder_per_dataset_and_model(monkeypatch):
    monkeypatch.delenv("MMF_SAVE_DIR", raising=False)
    names = ["dlrm", "dlrm_mm", "dlrm_mm_ids", "dlrm_mm_text", "dlrm_mm_image", "two_tower"]
    dirs = {name: os.path.normpath(project_config(name).env.save_dir) for name in names}
    assert dirs["dlrm"] == os.path.join("save", "kbrec_synthetic", "dlrm")
    assert dirs["dlrm_mm_text"] == os.path.join("save", "kbrec_synthetic", "dlrm_mm_text")
    assert len(set(dirs.values())) == len(names), dirs
    # another dataset, another folder (the README's MovieLens run no longer
    # lands in the synthetic dlrm's)
    other = project_config("dlrm", "datasets=kbrec_prepared").env.save_dir
    assert os.path.normpath(other) == os.path.join("save", "kbrec_prepared", "dlrm")


def test_mmf_save_dir_moves_the_root(monkeypatch, tmp_path):
    monkeypatch.setenv("MMF_SAVE_DIR", str(tmp_path))
    assert project_config("two_tower").env.save_dir == f"{tmp_path}/kbrec_synthetic/two_tower"


def _config(save_dir, **overrides):
    config = OmegaConf.create({
        "model": "dlrm", "datasets": "kbrec_synthetic",
        "training": {"max_updates": 100, "seed": 1},
        "env": {"save_dir": str(save_dir)},
        "checkpoint": {"resume": False, "resume_file": None, "resume_zoo": None,
                       "overwrite": False},
    })
    return OmegaConf.merge(config, OmegaConf.create(overrides))


def _finished_run(save_dir, config):
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / "config.yaml").write_text(OmegaConf.to_yaml(config, resolve=True))
    (save_dir / "metrics.json").write_text("{}")


def test_a_new_or_unused_folder_is_free(tmp_path):
    check_save_dir(_config(tmp_path / "new"))
    (tmp_path / "started" / "logs").mkdir(parents=True)  # a run that stopped at start-up
    (tmp_path / "started" / "config.yaml").write_text("model: two_tower\n")
    check_save_dir(_config(tmp_path / "started"))


def test_the_same_config_may_run_again(tmp_path):
    _finished_run(tmp_path, _config(tmp_path))
    check_save_dir(_config(tmp_path))
    # where a run happens is not what it computes
    check_save_dir(_config(tmp_path, env={"data_dir": "/elsewhere"}))


def test_another_configs_run_stops_the_run_with_one_line(tmp_path):
    _finished_run(tmp_path, _config(tmp_path))
    with pytest.raises(SaveDirInUse) as error:
        check_save_dir(_config(tmp_path, training={"max_updates": 200}))
    message = str(error.value)
    assert "\n" not in message
    assert f"{tmp_path} holds a run of another config (dlrm on kbrec_synthetic)" in message
    assert "checkpoint.resume=True" in message and "checkpoint.overwrite=True" in message


def test_a_checkpoint_without_config_counts_as_a_run(tmp_path):
    (tmp_path / "current.ckpt").write_bytes(b"")
    with pytest.raises(SaveDirInUse, match="a run with no config.yaml"):
        check_save_dir(_config(tmp_path))


@pytest.mark.parametrize("told", [{"resume": True}, {"overwrite": True},
                                  {"resume_file": "/x/best.ckpt"}, {"resume_zoo": "kbrec.dlrm.x"}])
def test_resume_or_overwrite_lets_the_run_in(tmp_path, told):
    _finished_run(tmp_path, _config(tmp_path))
    check_save_dir(_config(tmp_path, training={"max_updates": 200}, checkpoint=told))


def test_the_fingerprint_of_a_saved_config_matches_the_live_one(tmp_path):
    config = project_config("dlrm", f"env.save_dir={tmp_path}")
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(config, resolve=True))
    assert config_fingerprint(OmegaConf.load(tmp_path / "config.yaml")) == \
        config_fingerprint(config)
