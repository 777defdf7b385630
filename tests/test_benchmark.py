"""The benchmark runner: its one-line errors, its table, and a suite on tiny
data where one model fails and the others' results are still written."""

import json

import pytest

from mmf_rec import benchmark
from mmf_rec.benchmark import Suite

TINY_DATA = ("-m", "mmf_rec.data.synthetic", "--out", "{out}", "--num-users", "300",
             "--num-items", "150", "--num-interactions", "20000", "--image-size", "16")
TINY_TRAINING = ("training.max_updates=20", "training.evaluation_interval=20",
                 "training.checkpoint_interval=20", "training.log_interval=10",
                 "training.batch_size=256")


def tiny_suite(**changes):
    settings = dict(
        name="tiny", dataset="tiny synthetic", prepare=TINY_DATA,
        models=("popularity", "dlrm"),
        configs={"dlrm": "projects/kbrec/dlrm.yaml",
                 "broken": "projects/kbrec/no_such_config.yaml"},
        overrides={"*": TINY_TRAINING})
    settings.update(changes)
    return Suite(**settings)


def one_line_error(capsys, argv, suites=None):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv, suites=suites)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_suite_lists_the_known_ones(capsys):
    err = one_line_error(capsys, ["--suite", "nope"])
    assert "unknown suite 'nope'" in err
    for name in ("synthetic", "ml100k-loo", "ml100k-time", "hm-sample"):
        assert name in err


def test_unknown_model_lists_the_known_ones(capsys, tmp_path):
    err = one_line_error(capsys, ["--suite", "ml100k-time", "--models", "ease,bert4rec",
                                  "--out", str(tmp_path)])
    assert "bert4rec" in err
    for name in ("popularity", "itemknn", "ease", "als", "content_knn", "dlrm", "two_tower",
                 "dlrm_mm_text", "dlrm_mm"):
        assert name in err
    assert not (tmp_path / "results.json").exists()


def test_missing_data_names_the_expected_path(capsys, tmp_path):
    missing = tmp_path / "shared" / "data" / "ml-100k"
    suite = tiny_suite(source=missing, how_to_get="MovieLens 100K from GroupLens")
    err = one_line_error(capsys, ["--suite", "tiny", "--out", str(tmp_path / "out")],
                         suites={"tiny": suite})
    assert str(missing) in err and "GroupLens" in err


def test_the_built_in_suites_read_the_shared_data_dir():
    suites = benchmark.default_suites()
    shared = benchmark.REPO.parent / "shared" / "data"
    assert suites["ml100k-time"].source == shared / "ml-100k"
    assert suites["ml100k-loo"].source == shared / "ml-100k"
    assert suites["hm-sample"].source == shared / "hm_sample"
    assert suites["synthetic"].source is None


def test_mean_and_population_std_over_seeds():
    mean, std = benchmark.summarize([
        {"test_warm": {"recall@10": 0.1, "auc": 0.7}, "test_cold": {"recall@10": None}},
        {"test_warm": {"recall@10": 0.3, "auc": 0.8}, "test_cold": {"recall@10": None}}])
    assert mean["test_warm"]["recall@10"] == pytest.approx(0.2)
    assert std["test_warm"]["recall@10"] == pytest.approx(0.1)  # ddof=0, not 0.1414
    assert std["test_warm"]["auc"] == pytest.approx(0.05)
    assert "test_cold" not in mean  # no value: no mean, never a 0


def hand_made_results(sampled):
    ok = {"status": "ok", "splits": {}, "log": "r/runs/x/seed1/run.log"}
    return {
        "suite": "demo", "dataset": "demo data", "seeds": [1, 2],
        "protocol": {"split": {"name": "cold_start", "labels": "implicit"}},
        "git": {"commit": "0123456789abcdef", "dirty": True}, "date": "2026-01-01T00:00:00+00:00",
        "machine": {"cpu": "Some CPU", "cores": 2}, "sampled": "1+99" if sampled else None,
        "models": {
            "ease": {"kind": "baseline", "status": "ok", "seeds": {"1": ok, "2": ok},
                     "mean": {"test_warm": {"recall@10": 0.25, "ndcg@10": 0.3,
                                            "sampled_hr@10": 0.6},
                              "test_cold": {"recall@10": 0.0, "ndcg@10": 0.0}},
                     "std": {"test_warm": {"recall@10": 0.01, "ndcg@10": 0.0,
                                           "sampled_hr@10": 0.02},
                             "test_cold": {"recall@10": 0.0, "ndcg@10": 0.0}}},
            "dlrm": {"kind": "model", "status": "failed", "overrides": ["training.max_updates=5"],
                     "seeds": {"1": {"status": "failed", "log": "r/runs/dlrm/seed1/run.log"},
                               "2": {"status": "failed", "log": "r/runs/dlrm/seed2/run.log"}}},
            "dlrm_mm": {"kind": "model", "status": "skipped",
                        "note": "the data has no item images"},
        }}


def rows_of(table):
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and "---" not in line}


def test_table_shows_mean_plus_minus_std_and_failed_and_skipped_rows():
    table = benchmark.format_table(hand_made_results(sampled=False))
    rows = rows_of(table)
    header = rows.pop("model")
    shown = ["Recall@10 warm", "NDCG@10 warm", "Recall@10 cold", "NDCG@10 cold"]
    assert header[:6] == shown[:2] + ["Recall@50 warm"] + shown[2:] + ["Recall@50 cold"]
    assert not any("sampled" in h for h in header)
    assert [rows["ease"][header.index(h)] for h in shown] == [
        "0.2500 ± 0.0100", "0.3000 ± 0.0000", "0.0000 ± 0.0000", "0.0000 ± 0.0000"]
    assert rows["ease"][header.index("AUC test")] == "n/a"  # a baseline has no AUC
    assert "failed" in rows["dlrm"][0]
    assert "r/runs/dlrm/seed1/run.log" in rows["dlrm"][-1]
    assert "skipped" in rows["dlrm_mm"][-1] and "no item images" in rows["dlrm_mm"][-1]
    assert "0123456789ab (dirty)" in table and "ddof=0" in table
    assert "`training.max_updates=5`" in table


def test_table_has_the_labelled_sampled_columns_when_the_suite_has_them():
    rows = rows_of(benchmark.format_table(hand_made_results(sampled=True)))
    header = rows.pop("model")
    assert "HR@10 sampled 1+99" in header and "NDCG@10 sampled 1+99" in header
    assert rows["ease"][header.index("HR@10 sampled 1+99")] == "0.6000 ± 0.0200"


@pytest.fixture(scope="module")
def failing_suite(tmp_path_factory):
    """popularity, a tiny dlrm and a model whose config does not exist."""
    import os

    tmp = tmp_path_factory.mktemp("bench")
    previous = os.environ.get("MMF_CACHE_DIR")
    os.environ["MMF_CACHE_DIR"] = str(tmp / "cache")
    try:
        code = benchmark.main(["--suite", "tiny", "--seeds", "1", "--out", str(tmp / "out"),
                               "--models", "popularity,dlrm,broken"],
                              suites={"tiny": tiny_suite()})
    finally:
        if previous is None:
            os.environ.pop("MMF_CACHE_DIR", None)
        else:
            os.environ["MMF_CACHE_DIR"] = previous
    return code, tmp / "out"


def test_a_failed_model_is_reported_and_the_others_written(failing_suite):
    code, out = failing_suite
    assert code != 0
    results = json.loads((out / "results.json").read_text())
    broken = results["models"]["broken"]
    assert broken["status"] == "failed"
    log = broken["seeds"]["1"]["log"]
    assert log == str(out / "runs" / "broken" / "seed1" / "run.log")
    assert "no_such_config.yaml" in open(log).read()
    popularity = results["models"]["popularity"]["seeds"]["1"]
    assert popularity["status"] == "ok"
    assert popularity["splits"]["test_warm"]["users"] > 0
    assert 0 <= popularity["splits"]["test_warm"]["recall@10"] <= 1
    assert results["models"]["popularity"]["mean"]["test_warm"]["ndcg@10"] == \
        popularity["splits"]["test_warm"]["ndcg@10"]
    table = (out / "results.md").read_text()
    assert log in rows_of(table)["broken"][-1]


def test_a_trained_model_has_catalogue_and_ctr_metrics(failing_suite):
    _, out = failing_suite
    results = json.loads((out / "results.json").read_text())
    dlrm = results["models"]["dlrm"]
    assert dlrm["status"] == "ok", open(dlrm["seeds"]["1"]["log"]).read()[-2000:]
    assert dlrm["overrides"] == list(TINY_TRAINING)
    run = dlrm["seeds"]["1"]
    assert run["trained_updates"] == 20 and run["wall_s"] > 0
    for split in ("val", "test_warm", "test_cold"):
        assert 0 < run["splits"][split]["auc"] < 1
        assert run["splits"][split]["users"] > 0
        assert 0 <= run["splits"][split]["ndcg@10"] <= 1
    assert (out / "runs" / "dlrm" / "seed1" / "metrics.json").is_file()


def test_results_record_where_and_how_they_were_made(failing_suite):
    _, out = failing_suite
    results = json.loads((out / "results.json").read_text())
    assert results["suite"] == "tiny" and results["seeds"] == [1]
    assert results["command"][-2:] == ["--models", "popularity,dlrm,broken"]
    assert len(results["git"]["commit"]) == 40 and isinstance(results["git"]["dirty"], bool)
    assert results["machine"]["cores"] >= 1 and "avx512_bf16" in results["machine"]
    assert results["date"].endswith("+00:00")
    assert results["protocol"]["split"] is not None


def test_table_reprints_from_a_results_file(failing_suite, capsys):
    _, out = failing_suite
    capsys.readouterr()
    assert benchmark.main(["--table", str(out / "results.json")]) == 0
    assert capsys.readouterr().out == (out / "results.md").read_text()


def test_warm_cold_plot_rows_are_the_models_that_ran(tmp_path):
    from mmf_rec.benchmark import plot as plot_results

    results = hand_made_results(sampled=False)
    rows = plot_results.warm_cold_rows(results)
    assert [r[0] for r in rows] == [n for n, e in results["models"].items()
                                    if e["status"] == "ok"]
    ease = next(r for r in rows if r[0] == "ease")
    assert ease[1:3] == (0.3, 0.0)  # warm NDCG@10 mean, std
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    out = plot_results.plot([path, path], tmp_path / "plot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generated_data_of_an_older_generator_is_made_again():
    from mmf_rec.benchmark.runner import _outdated
    from mmf_rec.data import synthetic

    today = {"name": synthetic.NAME,
             "generator": {"generator_version": synthetic.GENERATOR_VERSION}}
    older = {"name": synthetic.NAME,
             "generator": {"generator_version": synthetic.GENERATOR_VERSION - 1}}
    assert not _outdated(today)
    assert _outdated(older)
    assert not _outdated({"name": "movielens_100k"})  # prepared, not generated


def test_on_data_without_images_two_tower_runs_with_the_image_modality_off():
    suite = benchmark.default_suites()["ml100k-time"]
    plain = benchmark.without_images(suite)
    assert "model_config.two_tower.modalities.image=false" in plain.model_overrides("two_tower")
    assert plain.model_overrides("dlrm") == suite.model_overrides("dlrm")
    assert "training.max_updates=1000" in plain.model_overrides("two_tower")  # kept
