"""The table a run ends with (mmf_rec/summary.py), from a metrics.json payload."""

import torch

from mmf_rec import summary

PAYLOAD = {
    "cold": {"auc": 0.61, "log_loss": 0.64, "oracle_auc": 0.79, "total_loss": 0.64},
    "val": {"auc": 0.7012, "log_loss": 0.6268, "oracle_auc": 0.8077, "total_loss": 0.63},
    "test": {"auc": 0.6960, "log_loss": 0.6288, "oracle_auc": 0.8017, "total_loss": 0.63},
    "num_updates": 400,
    "trained_updates": 1000,
    "config_fingerprint": "0123456789abcdef",
    "training_speed": {"loop_samples_per_s": 12345.6, "model_samples_per_s": 23456.7},
}
PATHS = {"metrics": "/s/metrics.json", "checkpoint": "/s/best.ckpt", "log": "/s/logs/t.log"}


def test_splits_come_val_test_then_the_extra_ones():
    assert summary.splits_of(PAYLOAD) == ["val", "test", "cold"]
    assert summary.splits_of({"test": {}, "num_updates": 3}) == ["test"]


def test_the_table_has_a_column_per_split_and_the_oracle_under_auc():
    lines = summary.metrics_table(PAYLOAD, ["auc", "log_loss"])
    assert lines[0].split() == ["val", "test", "cold"]
    assert lines[1].split() == ["auc", "0.7012", "0.6960", "0.6100"]
    assert lines[2].split() == ["oracle", "0.8077", "0.8017", "0.7900"]
    assert lines[3].split() == ["log_loss", "0.6268", "0.6288", "0.6400"]
    assert len(lines) == 4  # losses the config did not ask for stay in metrics.json


def test_a_metric_missing_from_a_split_shows_a_dash():
    payload = {"val": {"recall@10": 0.5}, "test": {}}
    lines = summary.metrics_table(payload, ["recall@10"])
    assert lines[1].split() == ["recall@10", "0.5000", "-"]


def test_a_training_run_names_its_best_update_speed_and_files():
    text = summary.format_summary(PAYLOAD, ["auc", "log_loss"], title="Summary: dlrm on x",
                                  best_by="auc", wall_s=125.2, paths=PATHS)
    lines = text.splitlines()
    assert lines[0] == "Summary: dlrm on x"
    assert "  best update 400 of 1000, by val auc" in lines
    assert "time 2 min 05 s" in text and "12,346 samples/s" in text and "23,457" in text
    for label, path in PATHS.items():
        assert any(line.split() == [label, path] for line in lines), label


def test_an_evaluation_run_says_it_did_not_train():
    payload = {"test": {"auc": 0.7}, "num_updates": 80, "trained_updates": None}
    text = summary.format_summary(payload, ["auc"], title="t", best_by=None, wall_s=3,
                                  paths={"metrics": "m"})
    assert "evaluated the checkpoint of update 80 (no training)" in text
    assert "samples/s" not in text and "time 3 s" in text


def test_the_parameter_summary_is_one_line_with_the_parts():
    from mmf_rec.trainer import parameter_summary

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    model[2].weight.requires_grad_(False)
    assert parameter_summary(model) == (
        "model Sequential: 21 parameters (17 trained): 0 16, 2 5")
