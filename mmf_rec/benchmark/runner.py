"""Running a suite: its prepared data (made once), each model and seed (a
baseline fitted here, a project model trained by ``mmf_run`` and loaded
back), every number through one evaluator, and the results file."""

import dataclasses
import datetime
import json
import logging
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mmf_rec.benchmark.record import git_state, machine, shown
from mmf_rec.benchmark.suites import (
    BASELINE_NAMES, NEEDS_IMAGES, ORACLE, REPO, BenchmarkError, Suite, without_images,
)
from mmf_rec.benchmark.table import SAMPLED_K, SAMPLED_NOTE, STD_NOTE, format_table, summarize
from mmf_rec.files import atomic_write

logger = logging.getLogger(__name__)

KS = (10, 20, 50, 100)


@dataclass
class Context:
    suite: Suite
    out: Path
    data_dir: Path
    data: Any  # PreparedData
    queries: Dict[str, Any]  # "val", "test" -> Queries
    blocks: Optional[Tuple[np.ndarray, np.ndarray]]  # sampled candidate lists (users, items)


def _splits_from_groups(val: Mapping, test: Mapping) -> Dict[str, Dict[str, Any]]:
    return {"val": dict(val["warm"]), "test_warm": dict(test["warm"]),
            "test_cold": dict(test["cold"])}


def _add_sampled(splits: Dict[str, Dict[str, Any]], scores: np.ndarray) -> None:
    from mmf_rec.ranking_metrics import sampled_candidates_metrics

    metrics = sampled_candidates_metrics(scores, SAMPLED_K)
    for name, value in metrics.items():
        splits["test_warm"][f"sampled_{name}"] = value


def _block_fields(ctx: Context) -> Dict[str, Any]:
    """Model fields of the first row of each sampled candidate block of test."""
    from mmf_rec.evaluation.catalogue import user_fields

    users, items = ctx.blocks
    return user_fields(ctx.data, "test", np.arange(len(users)) * items.shape[1])


def run_baseline(ctx: Context, name: str, seed: int, run_dir: Path) -> Dict[str, Any]:
    from mmf_rec.evaluation.baselines import BASELINES
    from mmf_rec.evaluation.catalogue import evaluate_scores

    cls = BASELINES[name]
    params, tuned = cls.tune(ctx.data, seed)
    model = cls(**params).fit(ctx.data, seed)
    scores = {split: model.score(q) for split, q in ctx.queries.items()}
    metrics = {split: evaluate_scores(scores[split], ctx.queries[split], KS, seed=seed)
               for split in ctx.queries}
    splits = _splits_from_groups(metrics["val"], metrics["test"])
    if ctx.blocks is not None:
        users, items = ctx.blocks
        known = ctx.queries["test"].users
        rows = np.searchsorted(known, users)
        if np.any(rows >= len(known)) or np.any(known[np.minimum(rows, len(known) - 1)] != users):
            raise ValueError("a sampled candidate block's user has no test query")
        _add_sampled(splits, scores["test"][rows[:, None], items])
    return {"splits": splits, "params": _jsonable(params), "val_tuned_ndcg@10": tuned}


def _jsonable(params: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
            for k, v in params.items()}


def mmf_run_command(ctx: Context, model: str, seed: int, save_dir: Path) -> List[str]:
    mmf_run = Path(sys.executable).with_name("mmf_run")
    return [str(mmf_run), f"config={ctx.suite.configs[model]}", "datasets=kbrec_prepared",
            f"dataset_config.kbrec_prepared.data_dir={ctx.data_dir}",
            f"training.seed={seed}", f"env.save_dir={save_dir}",
            *ctx.suite.model_overrides(model)]


def run_project_model(ctx: Context, model: str, seed: int, run_dir: Path) -> Dict[str, Any]:
    from mmf_rec.evaluation.catalogue import evaluate_scores
    from mmf_rec.evaluation.models import CatalogueScorer

    command = mmf_run_command(ctx, model, seed, run_dir)
    with open(run_dir / "run.log", "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        started = time.perf_counter()
        code = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    train_s = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"mmf_run exited with status {code}")
    with open(run_dir / "metrics.json") as f:
        ctr = json.load(f)
    scorer = CatalogueScorer.from_run(run_dir)
    scores = {split: scorer.scores(q.fields) for split, q in ctx.queries.items()}
    metrics = {split: evaluate_scores(scores[split], ctx.queries[split], KS, seed=seed)
               for split in ctx.queries}
    splits = _splits_from_groups(metrics["val"], metrics["test"])
    for split, source in (("val", "val"), ("test_warm", "test"), ("test_cold", "cold")):
        for name in ("auc", "log_loss"):
            value = (ctr.get(source) or {}).get(name)
            if value is not None:
                splits[split][name] = float(value)
    if ctx.blocks is not None:
        _add_sampled(splits, scorer.scores(_block_fields(ctx), ctx.blocks[1]))
    return {"splits": splits, "train_s": round(train_s, 1),
            "trained_updates": ctr.get("trained_updates"),
            "best_update": ctr.get("num_updates")}


def _fitted_here(model: str) -> bool:
    """Baselines and the oracle are fitted in this process; models by mmf_run."""
    return model in BASELINE_NAMES or model == ORACLE


def run_one(ctx: Context, model: str, seed: int) -> Dict[str, Any]:
    """One model and seed; never raises: a failure is recorded with its log."""
    run_dir = ctx.out / "runs" / model / f"seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # this runner's own output: a fresh run, never a resume
    run_dir.mkdir(parents=True)
    log_path = run_dir / "run.log"
    started = time.perf_counter()
    try:
        if _fitted_here(model):
            result = run_baseline(ctx, model, seed, run_dir)
        else:
            result = run_project_model(ctx, model, seed, run_dir)
        result["status"] = "ok"
    except Exception as error:  # any failure of one model must not stop the others
        with open(log_path, "a") as log:
            log.write(traceback.format_exc())
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["log"] = shown(log_path)
    if result["status"] == "ok" and _fitted_here(model):
        with open(log_path, "a") as log:
            log.write(json.dumps(result, indent=1) + "\n")
    logger.info("%s seed %d: %s in %.1f s%s", model, seed, result["status"], result["wall_s"],
                "" if result["status"] == "ok" else f" ({result['error']}; log {log_path})")
    return result


# -- data -------------------------------------------------------------------------------
def check_source(suite: Suite) -> None:
    if suite.source is not None and not Path(suite.source).exists():
        raise BenchmarkError(f"suite '{suite.name}' needs its data at {suite.source}, which "
                             f"is missing; get {suite.how_to_get}")


def _outdated(manifest: Mapping[str, Any]) -> bool:
    """Generated data from another generator version than today's."""
    from mmf_rec.data import synthetic

    generator = manifest.get("generator") if manifest.get("name") == synthetic.NAME else None
    return generator is not None and generator.get("generator_version") != \
        synthetic.GENERATOR_VERSION


def prepare_data(suite: Suite, out: Path) -> Path:
    """The suite's prepared directory under ``out/data``, made once and reused."""
    from mmf_rec.data.prepared import PreparedDataError, read_manifest

    data_dir = out / "data" / suite.name
    try:
        if not _outdated(read_manifest(data_dir)):
            logger.info("reusing prepared data %s", data_dir)
            return data_dir
        logger.info("prepared data %s was made by an older generator: making it again",
                    data_dir)
    except PreparedDataError:
        pass
    check_source(suite)
    if data_dir.exists():
        shutil.rmtree(data_dir)  # incomplete or outdated: this runner made it
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *(a.replace("{out}", str(data_dir)) for a in suite.prepare)]
    log_path = out / "data" / f"{suite.name}.log"
    logger.info("preparing %s: %s", suite.name, " ".join(command))
    with open(log_path, "w") as log:
        code = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise BenchmarkError(f"preparing the data of suite '{suite.name}' failed (status "
                             f"{code}); see {log_path}")
    return data_dir


def _context(suite: Suite, out: Path, data_dir: Path) -> Context:
    from mmf_rec.data.interactions import split_blocks
    from mmf_rec.data.prepared import load_prepared
    from mmf_rec.evaluation.catalogue import build_queries

    data = load_prepared(data_dir, verify_checksums=False)
    queries = {split: build_queries(data, split) for split in ("val", "test")}
    blocks = None
    if (data.manifest.get("ranking") or {}).get("test"):
        blocks = split_blocks(data_dir, "test")
    return Context(suite, out, data_dir, data, queries, blocks)



def _has_images(data) -> bool:
    return any(f.kind == "image" for f in data.schema.knowledge) or any(
        (e or {}).get("kind") == "image" for e in (data.manifest.get("knowledge") or {}).values())


# -- the suite ---------------------------------------------------------------------------
def run_suite(suite: Suite, out: Path, seeds: Sequence[int], models: Sequence[str],
              command: Sequence[str]) -> Dict[str, Any]:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = prepare_data(suite, out)
    ctx = _context(suite, out, data_dir)
    manifest = ctx.data.manifest
    results: Dict[str, Any] = {
        "suite": suite.name, "dataset": suite.dataset, "data_dir": shown(data_dir),
        "protocol": {"split": manifest.get("protocol"), "preparer": manifest.get("preparer")},
        "git": git_state(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "command": list(command), "seeds": list(seeds),
        "ks": list(KS), "std": STD_NOTE,
        "sampled": SAMPLED_NOTE if ctx.blocks is not None else None,
        "queries": {split: {"users": len(q), "repeats_dropped": q.repeats_dropped}
                    for split, q in ctx.queries.items()},
        "models": {},
    }
    images = _has_images(ctx.data)
    if not images:
        suite = without_images(suite)
        ctx = dataclasses.replace(ctx, suite=suite)
    for model in models:
        kind = "oracle" if model == ORACLE else "baseline" if model in BASELINE_NAMES else "model"
        entry: Dict[str, Any] = {"kind": kind}
        if entry["kind"] == "model":
            entry["config"] = suite.configs[model]
            entry["overrides"] = suite.model_overrides(model)
        if model in NEEDS_IMAGES and not images:
            entry.update(status="skipped", note="the data has no item images")
            logger.info("%s: skipped (the data has no item images)", model)
            results["models"][model] = entry
            continue
        entry["seeds"] = {str(seed): run_one(ctx, model, seed) for seed in seeds}
        ok = [run["splits"] for run in entry["seeds"].values() if run["status"] == "ok"]
        entry["status"] = "ok" if len(ok) == len(seeds) else "failed"
        entry["mean"], entry["std"] = summarize(ok)
        results["models"][model] = entry
        results["wall_s"] = round(time.perf_counter() - started, 1)
        write_results(results, out)  # partial results survive an interrupted suite
    results["wall_s"] = round(time.perf_counter() - started, 1)
    return results


def write_results(results: Mapping[str, Any], out: Path) -> Tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    atomic_write(path, json.dumps(results, indent=1, sort_keys=False, default=str) + "\n")
    table = out / "results.md"
    atomic_write(table, format_table(results))
    return path, table

