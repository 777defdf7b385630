"""What ``mmf_run`` prints: nothing a user cannot act on, and a summary at the end."""

import json
import os
import subprocess

import pytest
import torch
from omegaconf import OmegaConf

from tiny_runs import REPO, command, environment, run

import mmf_rec.plugin

mmf_rec.plugin.apply()

TRAIN = ["training.batch_size=256", "training.max_updates=40", "training.log_interval=20",
         "training.evaluation_interval=20", "training.checkpoint_interval=20"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    env = environment(tmp)
    result = run("mmf_run", tmp / "save", tmp / "data", *TRAIN, env=env)
    return tmp, env, result.stdout + result.stderr


def test_no_warning_and_no_model_printout(tiny_run):
    _, _, out = tiny_run
    assert "Warning" not in out and "warn" not in out.lower(), out
    assert "cuda is not present" not in out
    assert "pretty() is deprecated" not in out
    assert "Namespace(" not in out
    assert "Sequential(" not in out and "ModuleDict(" not in out  # the model's repr
    assert "mixed precision: off" not in out
    assert "model DLRM: " in out and " parameters: " in out


def test_the_device_defaults_to_what_exists(tiny_run):
    tmp, _, _ = tiny_run
    config = OmegaConf.load(tmp / "save" / "config.yaml")
    assert config.training.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_extra_splits_are_logged_by_their_name(tiny_run):
    _, _, out = tiny_run
    assert "Starting inference on cold set" in out
    assert "cold/kbrec_synthetic/auc" in out
    assert "split: cold" not in out


def test_the_run_ends_with_a_summary_of_every_split(tiny_run):
    tmp, _, out = tiny_run
    save = tmp / "save"
    metrics = json.loads((save / "metrics.json").read_text())
    block = out[out.index("Summary: dlrm on kbrec_synthetic"):].splitlines()
    assert block[1].split() == ["val", "test", "cold"]
    assert block[2].split() == ["auc"] + [f"{metrics[s]['auc']:.4f}" for s in
                                          ("val", "test", "cold")]
    assert block[3].split() == ["oracle"] + [f"{metrics[s]['oracle_auc']:.4f}" for s in
                                             ("val", "test", "cold")]
    assert block[4].split()[0] == "log_loss"
    assert block[5].strip().startswith(f"best update {metrics['num_updates']} of 40, by val auc")
    assert "samples/s" in block[6]
    paths = dict(line.split() for line in block[7:10])
    assert paths["metrics"] == str(save / "metrics.json")
    assert paths["checkpoint"] == str(save / "best.ckpt")
    assert os.path.isfile(paths["log"]) and paths["log"].startswith(str(save / "logs"))
    assert metrics["wall_s"] > 0


def test_another_config_does_not_train_into_the_runs_folder(tiny_run):
    tmp, env, _ = tiny_run
    before = (tmp / "save" / "metrics.json").read_bytes()
    result = subprocess.run(
        command("mmf_run", tmp / "save", tmp / "data", *TRAIN, "training.max_updates=20"),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mmf_run: error: env.save_dir {tmp / 'save'} holds a run of "
                           "another config (dlrm on kbrec_synthetic)")
    assert "Traceback" not in result.stderr
    assert (tmp / "save" / "metrics.json").read_bytes() == before
