"""MMF's own ``mmf_run`` trains and evaluates mmf_rec's DLRM on tiny data."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MMF_RUN = os.path.join(os.path.dirname(sys.executable), "mmf_run")

TINY = [
    "dataset_config.kbrec_synthetic.generator.num_users=300",
    "dataset_config.kbrec_synthetic.generator.num_items=150",
    "dataset_config.kbrec_synthetic.generator.num_interactions=20000",
    "training.batch_size=256",
    "training.max_updates=160",
    "training.log_interval=40",
    "training.evaluation_interval=80",
    "training.checkpoint_interval=80",
]


def mmf_run(args, cwd, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMF_")}
    env["MMF_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run(
        [MMF_RUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("e2e")
    save_dir = tmp_path / "save"
    result = mmf_run(
        [
            "config=projects/kbrec/dlrm.yaml",
            f"env.save_dir={save_dir}",
            f"env.data_dir={tmp_path / 'data'}",
            *TINY,
        ],
        cwd=REPO,
        tmp_path=tmp_path,
    )
    with open(save_dir / "metrics.json") as f:
        return json.load(f), result, tmp_path


def test_metrics_json_has_every_split(trained):
    metrics, _, _ = trained
    for split in ("val", "test", "cold"):
        assert {"auc", "log_loss", "oracle_auc"} <= set(metrics[split]), metrics[split]
    assert metrics["trained_updates"] == 160
    assert 0 < metrics["num_updates"] <= 160
    assert len(metrics["config_fingerprint"]) == 16


def test_dlrm_learns_on_warm_items(trained):
    metrics, _, _ = trained
    for split in ("val", "test"):
        auc = metrics[split]["auc"]
        assert 0.6 < auc <= metrics[split]["oracle_auc"] + 0.02, (split, metrics[split])
        # BCE of a model better than chance is below that of a constant guess
        assert metrics[split]["log_loss"] < 0.69


def test_run_logs_validation_auc_and_log_loss(trained):
    _, result, _ = trained
    log = result.stdout + result.stderr
    assert "val/kbrec_synthetic/auc" in log
    assert "val/kbrec_synthetic/log_loss" in log


def test_runs_from_another_directory_without_user_dir(trained, tmp_path):
    """Registrations come from the installed package, not from the cwd."""
    _, _, first = trained
    save_dir = tmp_path / "save"
    mmf_run(
        [
            f"config={REPO}/projects/kbrec/dlrm.yaml",
            f"env.save_dir={save_dir}",
            f"env.data_dir={first / 'data'}",
            *TINY,
            "training.max_updates=20",
            "run_type=train_val",
        ],
        cwd=str(tmp_path),
        tmp_path=tmp_path,
    )
    with open(save_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert set(metrics) >= {"val", "num_updates"} and "test" not in metrics


def test_unknown_feature_in_config_fails_with_one_clear_error(trained, tmp_path):
    _, _, first = trained
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMF_")}
    result = subprocess.run(
        [
            MMF_RUN,
            "config=projects/kbrec/dlrm.yaml",
            f"env.save_dir={tmp_path / 'save'}",
            f"env.data_dir={first / 'data'}",
            *TINY,
            "model_config.dlrm.sparse_encoder.params.features=['user_id','colour']",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "SchemaError" in last_line and "'colour'" in last_line, last_line
    assert "user_id" in last_line  # the known features are listed
