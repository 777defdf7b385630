"""tools/rank_eval.py on a tiny leave-last-out run: one JSON line, the run's own name."""

import json
import os
import subprocess
import sys

import numpy as np

from tiny_runs import BIN, REPO, environment

from mmf_rec.data import movielens


def write_ratings(root, users=40, items=60, rated=20):
    """A MovieLens 100K layout: user u rates items 1..rated in order."""
    root.mkdir(parents=True)
    genres = "|".join(["0"] * 18 + ["1"])
    (root / "u.item").write_text("".join(f"{i}|Movie {i} (1990)|01-Jan-1990||http://x|{genres}\n"
                                         for i in range(1, items + 1)))
    (root / "u.user").write_text("".join(f"{u}|{20 + u % 40}|{'MF'[u % 2]}|writer|1000{u}\n"
                                         for u in range(1, users + 1)))
    rng = np.random.default_rng(0)
    lines = [f"{u}\t{i}\t{int(rng.integers(1, 6))}\t{880000000 + 100 * u + i}"
             for u in range(1, users + 1) for i in range(1, rated + 1)]
    (root / "u.data").write_text("\n".join(lines) + "\n")


def test_a_dlrm_mm_text_style_run_is_labelled_by_its_config(tmp_path):
    write_ratings(tmp_path / "src")
    movielens.prepare_movielens(tmp_path / "src", tmp_path / "ml", {"eval_negatives": 20})
    env = environment(tmp_path)
    save = tmp_path / "run"
    trained = subprocess.run(
        [os.path.join(BIN, "mmf_run"), "config=projects/kbrec/dlrm_mm_ids.yaml",
         "datasets=kbrec_prepared", f"dataset_config.kbrec_prepared.data_dir={tmp_path / 'ml'}",
         f"env.save_dir={save}", "training.max_updates=10", "training.batch_size=64",
         "training.evaluation_interval=10", "training.checkpoint_interval=10"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "rank_eval.py"),
                             "--run", str(save)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)  # stdout is the JSON line alone
    assert metrics["model"] == "dlrm_mm_ids"  # not its model class, dlrm_mm
    assert metrics["users"] == 40 and 0 < metrics["mrr"] <= 1
    assert "mmf.quantize" not in result.stdout + result.stderr
