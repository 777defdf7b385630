"""``checkpoint.resume=True`` continues a killed run bit for bit (mmf_rec/resume.py)."""

import json
import random
import re
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from tiny_runs import REPO, TRAIN, command, environment, run

SPLITS = ("val", "test", "cold")
RESUMED = re.compile(r"resume: continuing at update (\d+), epoch (\d+), after batch (\d+) of (\d+)")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every resumed one must reproduce."""
    tmp = tmp_path_factory.mktemp("resume")
    env = environment(tmp)
    run("mmf_run", tmp / "straight", tmp / "data", *TRAIN, env=env)
    return tmp, env


def load(path):
    # the default torch.load (weights_only) must read mmf_rec's checkpoints
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_run(expected_dir, actual_dir):
    with open(expected_dir / "metrics.json") as f:
        expected = json.load(f)
    with open(actual_dir / "metrics.json") as f:
        actual = json.load(f)
    for split in SPLITS:
        for metric in ("auc", "log_loss"):
            assert actual[split][metric] == expected[split][metric], (split, metric)
    for key in ("num_updates", "trained_updates", "config_fingerprint"):
        assert actual[key] == expected[key], key
    for name in ("best.ckpt", "current.ckpt"):
        a, b = load(expected_dir / name), load(actual_dir / name)
        assert a["num_updates"] == b["num_updates"] and a["best_update"] == b["best_update"]
        assert a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (name, key)
        for slot, state in a["optimizer"]["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(value),
                                   torch.as_tensor(b["optimizer"]["state"][slot][key])), key


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(straight):
    tmp, env = straight
    save = tmp / "killed"
    process = subprocess.Popen(command("mmf_run", save, tmp / "data", *TRAIN), cwd=REPO,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = save / "models" / "model_60.ckpt"
    deadline = time.time() + 300
    try:
        while not written.exists():
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (save / "metrics.json").exists()
    killed_at = load(save / "current.ckpt")["num_updates"]
    assert 40 <= killed_at < 160

    result = run("mmf_run", save, tmp / "data", *TRAIN, "checkpoint.resume=True", env=env)
    found = RESUMED.search(result.stdout + result.stderr)
    assert found, (result.stdout + result.stderr)[-3000:]
    update, epoch, batch, batches = map(int, found.groups())
    assert update == killed_at
    assert 0 < batch < batches == 63  # mid-epoch: the rest of that epoch comes next
    assert (epoch - 1) * 63 + batch == killed_at
    assert_same_run(tmp / "straight", save)


def test_a_finished_run_resumed_with_more_updates_matches_one_long_run(straight):
    """The deterministic variant: stop at update 80, then go on to 160."""
    tmp, env = straight
    save = tmp / "extended"
    run("mmf_run", save, tmp / "data", *TRAIN, "training.max_updates=80", env=env)
    assert load(save / "current.ckpt")["num_updates"] == 80
    result = run("mmf_run", save, tmp / "data", *TRAIN, "checkpoint.resume=True", env=env)
    found = RESUMED.search(result.stdout + result.stderr)
    assert found and found.group(1) == "80" and found.group(3) == "17"  # 80 = 63 + 17
    assert_same_run(tmp / "straight", save)


class _Trainer:
    """What the resumable loader and training_state read from a trainer."""

    run_type = "train"
    evaluation_interval = 6
    num_updates = 0

    def __init__(self):
        self.validations = []

    def _try_full_validation(self, force=False):
        self.validations.append(torch.rand(1).item())  # evaluation draws random numbers
        return False


def _step(batch):
    """A training step's randomness: dropout-like draws from every generator."""
    return batch.tolist(), torch.rand(2).tolist(), float(np.random.rand()), random.random()


def test_loader_replays_the_epoch_and_every_random_generator():
    """MMF's default shuffle draws from the global torch generator, and models
    draw dropout masks from it: both must continue as if never interrupted,
    including a validation that was due but had not run at the checkpoint."""
    from mmf_rec import resume

    loader = torch.utils.data.DataLoader(list(range(50)), batch_size=4, shuffle=True)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    trainer = _Trainer()
    wrapped = trainer.train_loader = resume.ResumableLoader(loader, trainer)
    steps, state, mark = [], None, None
    for epoch in range(3):
        for i, batch in enumerate(wrapped):
            steps.append(_step(batch))
            trainer.num_updates += 1
            if epoch == 1 and i == 4:  # update 18: a validation is due after the checkpoint
                state = resume.training_state(trainer, trainer.num_updates)
                mark = len(steps)
                trainer._try_full_validation()
    assert state["validation_pending"] and state["batches_in_epoch"] == 5
    expected_validation = trainer.validations[-1]

    # a fresh process: other random state, a new loader wrapper
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    resumed = _Trainer()
    resumed.num_updates = 18
    wrapped = resume.ResumableLoader(loader, resumed)
    wrapped.resume_from(state)
    replay = []
    for epoch in range(2):
        for batch in wrapped:
            replay.append(_step(batch))
    assert resumed.validations == [expected_validation]
    assert replay == steps[mark:]
