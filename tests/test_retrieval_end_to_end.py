"""From mmf_run to a recommendation: train a tiny two_tower and dlrm_mm, build
the index, recommend for one user and for a batch, evaluate the pipeline."""

import json
import os
import subprocess
import sys

import pytest

from mmf_rec.retrieval import build_index, evaluation_report, recommend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MMF_RUN = os.path.join(os.path.dirname(sys.executable), "mmf_run")

TINY = [
    "dataset_config.kbrec_synthetic.generator.num_users=300",
    "dataset_config.kbrec_synthetic.generator.num_items=150",
    "dataset_config.kbrec_synthetic.generator.num_interactions=20000",
    "training.batch_size=256",
    "training.max_updates=30",
    "training.log_interval=15",
    "training.evaluation_interval=15",
    "training.checkpoint_interval=15",
]
# The shipped pretrained image encoder at a small size (a loaded run must
# recompute exactly what it trained on, which a randomly initialised
# backbone, not saved in the checkpoint, would not); text off for speed
# (tests/models cover it). Both models share the cache entry.
TINY_CONFIG = """
includes:
- {repo}/projects/kbrec/{name}.yaml
model_config:
  {name}:
    modalities:
      text: false
      image: true
    image_encoder:
      params:
        image_size: 64
        grid: 2
"""


def mmf_run(name, tmp_path):
    config = tmp_path / f"{name}_tiny.yaml"
    config.write_text(TINY_CONFIG.format(repo=REPO, name=name))
    save_dir = tmp_path / name
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMF_")}
    env["MMF_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run(
        [MMF_RUN, f"config={config}", f"env.save_dir={save_dir}",
         f"env.data_dir={tmp_path / 'data'}", *TINY],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return save_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("retrieval_e2e")
    return mmf_run("two_tower", tmp_path), mmf_run("dlrm_mm", tmp_path), tmp_path


def test_two_tower_run_reports_full_catalogue_ranking_metrics(runs):
    retriever, _, _ = runs
    metrics = json.loads((retriever / "metrics.json").read_text())
    for split in ("val", "test", "cold"):
        for k in (10, 50, 100, 200):
            assert 0.0 <= metrics[split][f"recall@{k}"] <= 1.0
            assert 0.0 <= metrics[split][f"ndcg@{k}"] <= 1.0
        # 150 items, top 200 asked: every click's item is in the list
        assert metrics[split]["recall@200"] == pytest.approx(1.0)
        assert metrics[split]["recall@10"] <= metrics[split]["recall@50"]
    # better than a random order of 150 items (recall@10 = 0.067) on warm items
    assert metrics["val"]["recall@10"] > 0.15
    assert metrics["trained_updates"] == 30


def test_build_index_then_recommend_for_one_user(runs, capsys):
    retriever, ranker, _ = runs
    assert build_index.main(["--retriever", str(retriever)]) == 0
    meta = json.loads((retriever / "index" / "meta.json").read_text())
    assert meta["num_items"] == 150 and meta["index_type"] == "flat" and meta["metric"] == "ip"
    capsys.readouterr()
    assert recommend.main(["--retriever", str(retriever), "--ranker", str(ranker),
                           "--user", "7", "--k-retrieve", "50"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("user 7: top 10 of 50 retrieved, excluding items clicked before")
    rows = [line.split(None, 4) for line in lines[2:]]
    assert [int(r[0]) for r in rows] == list(range(1, 11))
    probabilities = [float(r[3]) for r in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(r[4] for r in rows)  # a description snippet


def test_new_items_are_marked_and_a_reserved_share_brings_them_in(runs, capsys):
    retriever, ranker, _ = runs
    if not (retriever / "index").is_dir():
        build_index.main(["--retriever", str(retriever)])
    capsys.readouterr()
    assert recommend.main(["--retriever", str(retriever), "--ranker", str(ranker),
                           "--user", "7", "--k-retrieve", "20", "--top", "20",
                           "--new-item-share", "0.5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[2:]
    new = [line for line in lines if " new  by content " in line]
    assert len(new) >= 10  # half of the 20 candidates, all shown (top 20)
    assert all(" retrieved " in line for line in lines if line not in new)
    with pytest.raises(SystemExit):
        recommend.main(["--retriever", str(retriever), "--user", "7",
                        "--new-item-share", "1.5"])


def test_batch_mode_writes_a_file_and_flags_unknown_users(runs, capsys):
    retriever, ranker, tmp_path = runs
    if not (retriever / "index").is_dir():
        build_index.main(["--retriever", str(retriever)])
    out = tmp_path / "recs.tsv"
    assert recommend.main(["--retriever", str(retriever), "--ranker", str(ranker),
                           "--users", "0-19,99999", "--out", str(out), "--top", "5",
                           "--k-retrieve", "100"]) == 0
    assert "(1 unknown users: features-only fallback)" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + 21 * 5
    assert lines[-1].split("\t")[:3] == ["99999", "1", "5"]


def test_items_added_later_become_retrievable(runs, tmp_path):
    retriever, _, _ = runs
    index = tmp_path / "partial"
    assert build_index.main(["--retriever", str(retriever), "--out", str(index),
                             "--items", "0-99"]) == 0
    assert build_index.main(["--retriever", str(retriever), "--out", str(index),
                             "--add", "100-149"]) == 0
    assert json.loads((index / "meta.json").read_text())["num_items"] == 150


def test_pipeline_evaluation_report(runs):
    retriever, ranker, tmp_path = runs
    if not (retriever / "index").is_dir():
        build_index.main(["--retriever", str(retriever)])
    out = tmp_path / "eval.json"
    assert evaluation_report.main([
        "--retriever", str(retriever), "--ranker", str(ranker), "--out", str(out),
        "--k-retrieve", "50", "--max-queries", "60", "--latency", "5", "--threads", "1"]) == 0
    report = json.loads(out.read_text())
    for split in ("test", "cold"):
        for kind in ("retrieval", "retrieve_then_rank", "popularity"):
            assert 0.0 <= report[split][kind]["recall@10"] <= 1.0, (split, kind)
        assert 0.0 <= report[split]["retrieve_then_rank_x_exposure"]["recall@10"] <= 1.0
        assert report["oracle"][split]["test_period_exposure"]["recall@10"] > 0.0
    # popularity knows no item that was held out of training
    assert report["cold"]["popularity"]["recall@10"] == 0.0
    assert report["cold"]["cold_catalogue"]["items"] == 15
    assert set(report["oracle"]["cold_catalogue"]) == {"exposure_x_click", "click_only"}
    assert report["latency"]["calls"] == 5 and report["latency"]["p99_ms"] > 0


def test_a_pipeline_bundle_from_the_zoo_recommends_as_its_runs(runs, tmp_path, capsys,
                                                                monkeypatch):
    retriever, ranker, _ = runs
    if not (retriever / "index").is_dir():
        build_index.main(["--retriever", str(retriever)])
    zoo_file = tmp_path / "zoo.yaml"
    monkeypatch.setenv("MMF_REC_MODEL_ZOO", str(zoo_file))
    monkeypatch.setenv("MMF_REC_ZOO_CACHE", str(tmp_path / "zoo_cache"))
    from mmf_rec import zoo

    zoo.export_bundle("kbrec.pipeline.tiny", retriever, retriever / "index", ranker,
                      out_dir=tmp_path / "archives", zoo_file=zoo_file)
    capsys.readouterr()
    common = ["--user", "7", "--k-retrieve", "50"]
    assert recommend.main(["--retriever", str(retriever), "--ranker", str(ranker),
                           *common]) == 0
    from_runs = capsys.readouterr().out
    assert recommend.main(["--zoo", "kbrec.pipeline.tiny", *common]) == 0
    assert capsys.readouterr().out == from_runs
    # the fetched parts are the checked copies in the zoo cache, not the runs
    parts = zoo.fetch_bundle("kbrec.pipeline.tiny")
    assert str(parts["index"]).startswith(str(tmp_path / "zoo_cache"))
    assert parts["ranker"].name == "dlrm_mm.pth"
    with pytest.raises(zoo.ZooKeyError, match="not a pipeline bundle"):
        zoo.fetch_bundle("kbrec.two_tower.tiny")
