"""``mmf_predict`` writes one score per (user, item) row (mmf_rec/predict.py)."""

import csv
import json
import math

import numpy as np
import pytest

from tiny_runs import TRAIN, environment, run

ROWS = {"val": 2000, "test": 1839, "cold": 161}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    env = environment(tmp)
    run("mmf_run", tmp / "run", tmp / "data", *TRAIN, "training.max_updates=80", env=env)
    return tmp, env


def predict(trained, *args):
    tmp, env = trained
    result = run("mmf_predict", tmp / "run", tmp / "data", "training.batch_size=256",
                 "checkpoint.resume=True", "checkpoint.resume_best=True", *args, env=env)
    return result.stdout + result.stderr


def labels(tmp, split):
    return np.load(tmp / "data" / "kbrec_synthetic" / split / "label.npy").reshape(-1)


def test_mmf_predict_writes_csv_scores_of_the_best_checkpoint(trained):
    tmp, _ = trained
    log = predict(trained, "run_type=test", "evaluation.predict_file_format=csv")
    from mmf_rec.metrics import roc_auc
    from mmf_rec.predict import COLUMNS, read_predictions

    metrics = json.loads((tmp / "run" / "metrics.json").read_text())
    for split in ("test", "cold"):  # the test split, then the extra evaluation splits
        path = tmp / "run" / "predictions" / f"kbrec_synthetic_{split}.csv"
        assert f"Wrote {ROWS[split]} predictions (kbrec_synthetic/{split}" in log
        assert f"to {path}" in log
        with open(path) as f:
            assert tuple(next(csv.reader(f))) == COLUMNS
        rows = read_predictions(path)
        assert [r["row"] for r in rows] == list(range(ROWS[split]))
        assert all(0 <= r["user_id"] < 300 and 0 <= r["item_id"] < 150 for r in rows)
        assert [r["label"] for r in rows] == labels(tmp, split).tolist()
        for r in rows[:50]:
            assert r["probability"] == pytest.approx(1 / (1 + math.exp(-r["score"])), abs=1e-12)
        auc = roc_auc([r["score"] for r in rows], [r["label"] for r in rows])
        assert auc == pytest.approx(metrics[split]["auc"], abs=1e-6)
    assert not (tmp / "run" / "predictions" / "kbrec_synthetic_val.csv").exists()


def test_mmf_predict_writes_json_lines_for_the_run_types_splits(trained):
    tmp, _ = trained
    log = predict(trained, "run_type=val", "evaluation.predict_file_format=json")
    from mmf_rec.predict import read_predictions

    path = tmp / "run" / "predictions" / "kbrec_synthetic_val.jsonl"
    assert f"to {path}" in log
    lines = path.read_text().splitlines()
    assert len(lines) == ROWS["val"]
    first = json.loads(lines[0])
    assert set(first) == {"row", "user_id", "item_id", "label", "score", "probability"}
    rows = read_predictions(path)
    assert [r["label"] for r in rows] == labels(tmp, "val").tolist()
    assert len({r["user_id"] for r in rows}) > 50  # real ids, not a constant
    assert np.std([r["score"] for r in rows]) > 0.01
