"""Benchmark suites: every model and baseline on one dataset, several seeds,
one evaluator, one results file.

    python tools/benchmark.py --suite ml100k-time [--seeds 3] [--out DIR] [--models a,b]
    python tools/benchmark.py --table DIR/results.json

A suite names how its prepared data is made, which models run and the
training overrides they run with. Baselines (``mmf_rec.evaluation.baselines``)
are tuned on the val period and fitted per seed in this process; project
models are trained by ``mmf_run`` in a subprocess (logged to
``DIR/runs/<model>/seed<seed>/run.log``), then loaded back and scored against
the whole catalogue (``mmf_rec.evaluation.models``). Every number goes
through ``mmf_rec.evaluation.catalogue.evaluate_scores`` (see
docs/data.md, "Evaluation protocols"); AUC and log loss come from the run's
metrics.json; suites on leave-last-out data add the NCF 1+99 sampled metrics
as a secondary, labelled column.

``DIR/results.json`` records what is needed to trust or redo a number: the
command, commit (and whether the tree was dirty), date, CPU, data protocol,
overrides, per-seed values and their mean and population standard deviation.
The markdown table goes to stdout and ``DIR/results.md``. A failed model is
reported as failed (with its log) and the runner exits non-zero at the end.
"""

import argparse
import dataclasses
import datetime
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mmf_rec.files import atomic_write

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
KS = (10, 20, 50, 100)
SAMPLED_K = 10
SPLITS = ("val", "test_warm", "test_cold")
BASELINE_NAMES = ("popularity", "itemknn", "ease", "als", "content_knn")
# the generator's true click model: only generated data has one
ORACLE = "oracle"
# project model -> its experiment config (relative to the repo)
PROJECT_CONFIGS = {
    "dlrm": "projects/kbrec/dlrm.yaml",
    "two_tower": "projects/kbrec/two_tower.yaml",
    "dlrm_mm_text": "projects/kbrec/dlrm_mm_text.yaml",
    "dlrm_mm": "projects/kbrec/dlrm_mm.yaml",
}
# models that read item images: skipped on data without them
NEEDS_IMAGES = ("dlrm_mm",)
# models that read images where there are some: on data without them, the
# image modality is turned off (a modality that no item has is an error)
WITHOUT_IMAGES = {"two_tower": ("model_config.two_tower.modalities.image=false",)}
STD_NOTE = "population standard deviation over the seeds that ran (numpy std, ddof=0)"
SAMPLED_NOTE = ("sampled 1+99: the held-out item ranked against its 99 fixed sampled "
                "negatives (NCF protocol), ties counted against the model; secondary, "
                "since sampled metrics can reverse model order (Krichene and Rendle, 2020)")


class BenchmarkError(Exception):
    """Bad input for the runner: reported as one line, exit status 2."""


@dataclass(frozen=True)
class Suite:
    """How a suite gets its data and what it runs.

    ``prepare`` is the command (after the Python interpreter) that writes the
    prepared directory ``{out}``; ``source`` is the raw data it reads, which
    must exist (``how_to_get`` says how to obtain it). ``overrides`` are
    ``mmf_run`` overrides per project model (key ``"*"``: every model).
    """

    name: str
    dataset: str
    prepare: Tuple[str, ...]
    source: Optional[Path] = None
    how_to_get: str = ""
    models: Tuple[str, ...] = BASELINE_NAMES + tuple(PROJECT_CONFIGS)
    configs: Mapping[str, str] = field(default_factory=lambda: dict(PROJECT_CONFIGS))
    overrides: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)

    def known_models(self) -> List[str]:
        oracle = [ORACLE] if ORACLE in self.models else []
        return oracle + list(BASELINE_NAMES) + [m for m in self.configs
                                                if m not in BASELINE_NAMES]

    def model_overrides(self, model: str) -> List[str]:
        return [*self.overrides.get("*", ()), *self.overrides.get(model, ())]


def _yaml_source(config: str) -> Path:
    """The raw data a prepare yaml reads (its ``src``, relative to the yaml)."""
    from omegaconf import OmegaConf

    path = REPO / config
    return (path.parent / str(OmegaConf.load(str(path)).src)).resolve()


def _prepared_with(config: str) -> Tuple[str, ...]:
    return ("tools/prepare.py", "--config", config, "--out", "{out}")


SHARED_README = "see ../shared/data/README.md (the project ships no data)"
# Training shortened for the suites: validate every 200 updates and keep the
# best checkpoint; sizes per suite keep `--seeds 3` within about 15 minutes
# on 2 cores.
SHORT = ("training.max_updates=1000", "training.evaluation_interval=200",
         "training.checkpoint_interval=200", "training.log_interval=100")
SHORT_SMALL_DATA = ("training.max_updates=500", "training.evaluation_interval=50",
                    "training.checkpoint_interval=50", "training.log_interval=50")


def default_suites() -> Dict[str, Suite]:
    movielens = "MovieLens 100K (ml-100k)"
    get_ml = f"MovieLens 100K from GroupLens (files u.data, u.item, u.user); {SHARED_README}"
    return {
        "synthetic": Suite(
            name="synthetic", dataset="kbrec_synthetic (embedded generator, default size)",
            prepare=("-m", "mmf_rec.data.synthetic", "--out", "{out}"),
            models=(ORACLE, *BASELINE_NAMES, *PROJECT_CONFIGS),
            overrides={"*": SHORT}),
        "ml100k-loo": Suite(
            name="ml100k-loo", dataset=movielens,
            prepare=_prepared_with("configs/prepare/movielens_100k.yaml"),
            source=_yaml_source("configs/prepare/movielens_100k.yaml"), how_to_get=get_ml,
            overrides={"*": SHORT}),
        "ml100k-time": Suite(
            name="ml100k-time", dataset=movielens,
            prepare=_prepared_with("configs/prepare/movielens_100k_time.yaml"),
            source=_yaml_source("configs/prepare/movielens_100k_time.yaml"), how_to_get=get_ml,
            overrides={"*": SHORT}),
        "hm-sample": Suite(
            name="hm-sample", dataset="H&M Personalized Fashion sample (with photos)",
            prepare=_prepared_with("configs/prepare/hm_sample.yaml"),
            source=_yaml_source("configs/prepare/hm_sample.yaml"),
            how_to_get=f"the H&M sample (articles, customers, transactions parquet and "
                       f"images/); {SHARED_README}",
            # 18k training rows (36 updates an epoch): fewer updates, validated often
            overrides={"*": SHORT_SMALL_DATA}),
    }


# -- the record: where, when, on what --------------------------------------------------
def git_state() -> Dict[str, Any]:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        # dirty = tracked files changed; untracked ones (results being
        # collected, say) do not change the code that ran
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def machine() -> Dict[str, Any]:
    cpu, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and cpu is None:
                    cpu = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    amx = sorted(f for f in flags if f.startswith("amx"))
    return {"cpu": cpu, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx": bool(amx), "amx_flags": amx}


def shown(path: Path) -> str:
    """A path as results files record it: relative to the repo when inside it
    (committed results name no one's home directory), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


# -- statistics ----------------------------------------------------------------------
def summarize(per_seed: Sequence[Mapping[str, Mapping[str, Any]]]) -> Tuple[Dict, Dict]:
    """(mean, std) per split and metric over the seeds' ``splits`` dicts;
    a metric missing or None in any seed is left out."""
    mean: Dict[str, Dict[str, float]] = {}
    std: Dict[str, Dict[str, float]] = {}
    for split in SPLITS:
        names = sorted({k for s in per_seed for k in (s.get(split) or {})})
        for name in names:
            values = [(s.get(split) or {}).get(name) for s in per_seed]
            if not values or any(not isinstance(v, (int, float)) or isinstance(v, bool)
                                 for v in values):
                continue
            mean.setdefault(split, {})[name] = float(np.mean(values))
            std.setdefault(split, {})[name] = float(np.std(values))
    return mean, std


# -- the table -------------------------------------------------------------------------
def _cell(entry: Mapping[str, Any], split: str, metric: str) -> str:
    mean = ((entry.get("mean") or {}).get(split) or {}).get(metric)
    if mean is None:
        return "n/a"
    spread = ((entry.get("std") or {}).get(split) or {}).get(metric, 0.0)
    return f"{mean:.4f} ± {spread:.4f}"


def format_table(results: Mapping[str, Any]) -> str:
    """The markdown summary of a results dict: one row per model."""
    sampled = bool(results.get("sampled"))
    columns = [("Recall@10 warm", "test_warm", "recall@10"),
               ("NDCG@10 warm", "test_warm", "ndcg@10"),
               ("Recall@50 warm", "test_warm", "recall@50"),
               ("Recall@10 cold", "test_cold", "recall@10"),
               ("NDCG@10 cold", "test_cold", "ndcg@10"),
               ("Recall@50 cold", "test_cold", "recall@50"),
               ("AUC test", "test_warm", "auc"),
               ("AUC cold", "test_cold", "auc")]
    if sampled:
        columns += [(f"HR@{SAMPLED_K} sampled 1+99", "test_warm", f"sampled_hr@{SAMPLED_K}"),
                    (f"NDCG@{SAMPLED_K} sampled 1+99", "test_warm",
                     f"sampled_ndcg@{SAMPLED_K}")]
    git = results.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    cpu = results.get("machine") or {}
    seeds = results.get("seeds") or []
    lines = [
        f"### Suite `{results.get('suite')}`: {results.get('dataset')}",
        "",
        f"Protocol: {_protocol_words(results.get('protocol'))}; seeds {seeds}; "
        f"commit {commit}; {results.get('date')}; {cpu.get('cpu')}, {cpu.get('cores')} cores.",
        "",
        "| model | " + " | ".join(c[0] for c in columns) + " | notes |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for name, entry in (results.get("models") or {}).items():
        status = entry.get("status")
        if status == "skipped":
            lines.append(f"| {name} | " + " | ".join("–" for _ in columns)
                         + f" | skipped: {entry.get('note', '')} |")
            continue
        failed = {seed: run for seed, run in (entry.get("seeds") or {}).items()
                  if run.get("status") != "ok"}
        notes = []
        if failed:
            notes += [f"failed seed {seed} (log: {run.get('log')})" for seed, run in failed.items()]
        ok = len(entry.get("seeds") or {}) - len(failed)
        if failed and ok == 0:
            lines.append(f"| {name} | " + " | ".join("failed" for _ in columns)
                         + f" | {'; '.join(notes)} |")
            continue
        if failed:
            notes.insert(0, f"{ok} seeds ok")
        lines.append(f"| {name} | " + " | ".join(_cell(entry, s, m) for _, s, m in columns)
                     + f" | {'; '.join(notes)} |")
    lines += ["", f"Full-catalogue metrics on the test period (warm and cold items apart); "
              f"mean ± {STD_NOTE}."]
    if sampled:
        lines.append(SAMPLED_NOTE + ".")
    overrides = sorted({" ".join(e.get("overrides") or []) for e in
                        (results.get("models") or {}).values() if e.get("kind") == "model"})
    if overrides:
        lines.append("Project models trained with `mmf_run` overrides: "
                     + "; ".join(f"`{o}`" for o in overrides if o) + ".")
    return "\n".join(lines) + "\n"


def _protocol_words(protocol: Optional[Mapping[str, Any]]) -> str:
    if not protocol:
        return "unknown"
    split = protocol.get("split") or {}
    name = split.get("name") or (protocol.get("preparer") or {}).get("protocol") or "?"
    labels = split.get("labels")
    return f"{name}" + (f", {labels} labels" if labels else "")


# -- running one model ---------------------------------------------------------------
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


def without_images(suite: Suite) -> Suite:
    """The suite with the image modality turned off where models would read it."""
    overrides = dict(suite.overrides)
    for model, extra in WITHOUT_IMAGES.items():
        overrides[model] = (*overrides.get(model, ()), *extra)
    return dataclasses.replace(suite, overrides=overrides)


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


# -- command line ------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python tools/benchmark.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", help="the suite to run")
    p.add_argument("--seeds", type=int, default=3, help="seeds 1..N (default 3)")
    p.add_argument("--out", type=Path, help="output directory (default results/<suite>)")
    p.add_argument("--models", help="comma-separated subset of the suite's models")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="an mmf_run override added to every project model's run "
                        "(repeatable), e.g. model_config.dlrm_mm.id_dropout=0.5")
    p.add_argument("--table", type=Path, metavar="RESULTS_JSON",
                   help="print the table of an existing results file and exit")
    return p


def _select_models(suite: Suite, text: Optional[str]) -> List[str]:
    known = suite.known_models()
    if not text:
        return [m for m in suite.models if m in known]
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in known]
    if unknown or not chosen:
        raise BenchmarkError(f"unknown model(s) {unknown or [text]} for suite '{suite.name}'; "
                             f"known: {', '.join(known)}")
    return list(dict.fromkeys(chosen))


def main(argv: Optional[Sequence[str]] = None,
         suites: Optional[Mapping[str, Suite]] = None) -> int:
    """The CLI; ``suites`` replaces the built-in suites (tests register tiny ones)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    args = p.parse_args(args_list)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.table is not None:
            try:
                results = json.loads(Path(args.table).read_text())
            except (OSError, ValueError) as error:
                raise BenchmarkError(f"{args.table}: not a readable results file ({error})")
            sys.stdout.write(format_table(results))
            return 0
        suites = dict(suites if suites is not None else default_suites())
        if args.suite is None:
            raise BenchmarkError(f"give --suite NAME (known suites: {', '.join(suites)}) "
                                 "or --table RESULTS_JSON")
        if args.suite not in suites:
            raise BenchmarkError(f"unknown suite {args.suite!r}; known suites: "
                                 f"{', '.join(suites)}")
        suite = suites[args.suite]
        bad = [o for o in args.override if "=" not in o or o.startswith("=")]
        if bad:
            raise BenchmarkError(f"--override takes KEY=VALUE, got {bad}")
        if args.override:
            extra = {"*": (*suite.overrides.get("*", ()), *args.override)}
            suite = dataclasses.replace(suite, overrides={**suite.overrides, **extra})
        models = _select_models(suite, args.models)
        if args.seeds < 1:
            raise BenchmarkError(f"--seeds must be >= 1, got {args.seeds}")
        out = args.out if args.out is not None else REPO / "results" / suite.name
        command = [sys.argv[0] if argv is None else "tools/benchmark.py", *args_list]
        results = run_suite(suite, Path(out), list(range(1, args.seeds + 1)), models, command)
    except BenchmarkError as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    path, _ = write_results(results, Path(out))
    sys.stdout.write(format_table(results))
    failed = [name for name, entry in results["models"].items() if entry["status"] == "failed"]
    if failed:
        logger.error("failed: %s (see the logs in the table); results in %s",
                     ", ".join(failed), path)
        return 1
    logger.info("results in %s", path)
    return 0
