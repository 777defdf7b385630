"""Tiny real ``mmf_run`` / ``mmf_predict`` runs shared by the checkpoint,
resume, zoo and predict tests (not a test module itself)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)

DATA = [
    "dataset_config.kbrec_synthetic.generator.num_users=300",
    "dataset_config.kbrec_synthetic.generator.num_items=150",
    "dataset_config.kbrec_synthetic.generator.num_interactions=20000",
]
# 16,000 training rows: 63 batches of 256 per epoch (the last one partial), so
# checkpoints every 20 updates fall mid-epoch.
TRAIN = [
    "training.batch_size=256",
    "training.max_updates=160",
    "training.log_interval=20",
    "training.evaluation_interval=40",
    "training.checkpoint_interval=20",
]


def environment(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMF_", "MMF_REC_"))}
    env["MMF_CACHE_DIR"] = str(tmp_path / "cache")
    env["OMP_NUM_THREADS"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def command(tool, save_dir, data_dir, *args, config="projects/kbrec/dlrm.yaml"):
    return [os.path.join(BIN, tool), f"config={config}", f"env.save_dir={save_dir}",
            f"env.data_dir={data_dir}", *DATA, *args]


def run(tool, save_dir, data_dir, *args, env, check=True, config="projects/kbrec/dlrm.yaml"):
    result = subprocess.run(
        command(tool, save_dir, data_dir, *args, config=config),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    if check:
        assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]
