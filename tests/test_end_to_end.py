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


def test_metrics_json_has_the_training_speed(trained):
    metrics, _, _ = trained
    speed = metrics["training_speed"]
    assert speed["updates_timed"] == 160 - 5  # all but the warm-up updates
    assert speed["step_ms_median"] > 0 and speed["fetch_ms_median"] >= 0
    assert speed["loop_samples_per_s"] > 0 and speed["model_samples_per_s"] > 0


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


MM_TINY_ENCODERS = """
includes:
- {repo}/projects/kbrec/dlrm_mm.yaml
model_config:
  dlrm_mm:
    text_encoder:
      params:
        random_init: {{hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2,
                      intermediate_size: 32}}
        max_length: 16
    image_encoder:
      params:
        image_size: 64
        grid: 2
"""


def test_mmf_run_trains_dlrm_mm_with_cached_knowledge(trained, tmp_path):
    """Both modalities, frozen encoders cached once per item, every split."""
    _, _, first = trained
    config = tmp_path / "dlrm_mm_tiny.yaml"
    config.write_text(MM_TINY_ENCODERS.format(repo=REPO))
    save_dir = tmp_path / "save"
    args = [
        f"config={config}",
        f"env.save_dir={save_dir}",
        f"env.data_dir={first / 'data'}",
        *TINY,
        "training.max_updates=80",
    ]
    result = mmf_run(args, cwd=REPO, tmp_path=tmp_path)
    with open(save_dir / "metrics.json") as f:
        metrics = json.load(f)
    for split in ("val", "test", "cold"):
        assert {"auc", "log_loss", "oracle_auc"} <= set(metrics[split])
    assert metrics["val"]["auc"] > 0.55
    cache_root = tmp_path / "cache" / "knowledge_cache"  # MMF_CACHE_DIR, not the data
    entries = sorted(p.name.split("-")[0] for p in cache_root.iterdir())
    assert entries == ["image", "text"], entries
    log = result.stdout + result.stderr
    assert "knowledge cache: built" in log
    # a second run reads the cache instead of re-encoding the catalogue
    again = mmf_run(args[:1] + [f"env.save_dir={tmp_path / 'again'}"] + args[2:],
                    cwd=REPO, tmp_path=tmp_path)
    assert "knowledge cache: hit" in again.stdout + again.stderr


HM_SAMPLE = os.path.join(os.path.dirname(REPO), "shared", "data", "hm_sample")


@pytest.mark.skipif(not os.path.isdir(HM_SAMPLE), reason=f"{HM_SAMPLE} is absent")
def test_real_hm_sample_prepare_cache_and_train(tmp_path):
    """Real articles, real photos (900 of 1,000 missing), pretrained encoders."""
    from mmf_rec.data.hm import prepare_hm

    data_dir = tmp_path / "hm"
    prepare_hm(HM_SAMPLE, data_dir)
    save_dir = tmp_path / "save"
    result = mmf_run(
        [
            "config=projects/kbrec/dlrm_mm.yaml",
            "datasets=kbrec_prepared",
            f"dataset_config.kbrec_prepared.data_dir={data_dir}",
            f"env.save_dir={save_dir}",
            "training.batch_size=256",
            "training.max_updates=60",
            "training.evaluation_interval=30",
            "training.checkpoint_interval=30",
            "training.log_interval=30",
        ],
        cwd=REPO,
        tmp_path=tmp_path,
    )
    log = result.stdout + result.stderr
    assert "loaded BertModel" in log and "ImageNet weights" in log
    assert "(900 missing, 0 unreadable)" in log, log[-3000:]
    with open(save_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["val"]["auc"] > 0.6 and "oracle_auc" not in metrics["val"]
