"""``python tools/bench.py trajectory --reference-dlrm PATH``: does ``dlrm``
through ``mmf_run`` learn like the reference DLRM on the same data?

Speed means nothing if the model learns less. Both sides train one epoch on
the same rows, at the same configuration as ``bench.py train`` (dims, MLPs,
batch, SGD lr), and are scored on the same held-out rows at the same
updates: AUC and log loss on the held-out rows, and the training loss
averaged over each interval.

The data is Criteo-shaped and learnable: 13 count features and 26
categorical ones drawn from a known click model (a linear term in the log
counts, per-id effects in some tables, and a low-rank interaction between
two tables), with power-law id frequencies as in real logs. It is written
twice, once as the reference's own processed Kaggle files (``X_int``,
``X_cat``, ``y``, ``counts`` and the rows per "day") and once as a prepared
directory for ours. The reference splits seven days into six of training and
one held out, the first half of which it tests on; ours gets exactly those
rows as its train and val splits. The reference shuffles its training rows
(``--data-randomize=total``), ours shuffles with its seeded sampler, so the
two see the rows in different orders, and they initialise their weights
differently: agreement is expected within noise, not bit for bit.

The reference computes AUC only in its MLPerf mode (``--mlperf-logging``),
whose compliance logger (the ``mlperf_logging`` package) is not installed
here: the ``sitecustomize`` of ``bench.py train`` gains a no-op stand-in for
it, as it has one for tensorboard. Training itself is unchanged by that
mode at the default ``--mlperf-grad-accum-iter=1``.
"""

import math
import re
import statistics
import sys
from pathlib import Path
from typing import Dict

import numpy as np

from mmf_rec.bench import REPO
from mmf_rec.bench.reference_dlrm import SITECUSTOMIZE, timed
from mmf_rec.bench.shapes import CONFIGS

DAYS = 7  # the reference's Kaggle layout: six days of training, one held out


def make_rows(shape: Dict, rows_per_day: int, seed: int) -> Dict[str, np.ndarray]:
    """Criteo-like rows from a known click model (see the module doc)."""
    rng = np.random.default_rng(seed)
    n = DAYS * rows_per_day
    counts = np.asarray(shape["tables"], dtype=np.int64)
    log_scale = rng.normal(1.0, 0.8, shape["dense"])
    x_int = np.floor(np.exp(rng.normal(log_scale, 1.0, (n, shape["dense"])))).astype(np.int64)
    # power-law ids: a few very frequent values per table, a long tail
    x_cat = np.minimum((counts * rng.random((n, len(counts))) ** 3).astype(np.int64), counts - 1)
    dense = np.log1p(x_int.astype(np.float64))
    dense = (dense - dense.mean(0)) / dense.std(0)
    logit = -1.3 + dense @ rng.normal(0.0, 0.25, shape["dense"])
    for t in range(0, len(counts), max(1, len(counts) // 8)):  # per-id effects, 8 tables
        logit += rng.normal(0.0, 0.6, counts[t])[x_cat[:, t]]
    a, b = 1 % len(counts), 2 % len(counts)  # a rank-4 interaction between two tables
    u, v = rng.normal(0.0, 0.5, (counts[a], 4)), rng.normal(0.0, 0.5, (counts[b], 4))
    logit += (u[x_cat[:, a]] * v[x_cat[:, b]]).sum(1)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int32)
    return {"x_int": x_int, "x_cat": x_cat, "y": y, "counts": counts,
            "oracle_logit": logit}


def split_rows(rows_per_day: int):
    """The reference's split: train = days 0-5, test = first half of day 6."""
    train = np.arange(0, (DAYS - 1) * rows_per_day)
    held_out = np.arange((DAYS - 1) * rows_per_day, DAYS * rows_per_day)
    test, _val = np.array_split(held_out, 2)
    return train, test


def write_reference_files(root: Path, data: Dict, rows_per_day: int) -> Path:
    """The processed Kaggle files the reference reads instead of raw text."""
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "train_day_count.npz", total_per_file=np.full(DAYS, rows_per_day))
    processed = root / "kaggleAdDisplayChallenge_processed.npz"
    np.savez(processed, X_int=data["x_int"], X_cat=data["x_cat"].astype(np.int32),
             y=data["y"], counts=data["counts"].astype(np.int32))
    return processed


def write_prepared(root: Path, data: Dict, rows_per_day: int) -> Path:
    """The same rows as a prepared directory: train and val (the reference's
    test rows); dense features log(1 + count), as the reference's loader
    makes them."""
    import shutil

    from mmf_rec.data import prepared as fmt
    from mmf_rec.schema import DenseFeature, Schema, SparseFeature

    shutil.rmtree(root, ignore_errors=True)
    counts = data["counts"]
    schema = Schema(
        dense=tuple(DenseFeature(f"i{j}") for j in range(data["x_int"].shape[1])),
        sparse=tuple(SparseFeature(f"c{t}", int(n)) for t, n in enumerate(counts)),
        label=fmt.LABEL_COLUMN, source="bench_trajectory",
    )
    train, test = split_rows(rows_per_day)
    splits = {}
    for split, index in (("train", train), ("val", test), ("test", test)):
        columns = {fmt.DENSE_COLUMN: np.log1p(data["x_int"][index]).astype(np.float32)}
        for t in range(len(counts)):
            columns[f"c{t}"] = data["x_cat"][index, t:t + 1].astype(np.int64)
        columns[schema.label] = data["y"][index].astype(np.float32)
        columns[fmt.SAMPLED_COLUMN] = np.zeros(len(columns[schema.label]), dtype=bool)
        splits[split] = fmt.write_table(root / split, columns)
    fmt.write_manifest(root, {"format": fmt.FORMAT, "name": "bench_trajectory",
                              "schema": schema.to_dict(), "splits": splits})
    return root


def oracle(data: Dict, rows_per_day: int) -> Dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    _, test = split_rows(rows_per_day)
    p = 1.0 / (1.0 + np.exp(-data["oracle_logit"][test]))
    return {"auc": float(roc_auc_score(data["y"][test], p)),
            "log_loss": float(log_loss(data["y"][test], p))}


MLPERF_STANDIN = '''
try:
    import mlperf_logging  # noqa: F401
except ImportError:
    class _Names:
        def __getattr__(self, name):
            return name

    class _NoLogger:
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    _mllog = types.ModuleType("mlperf_logging.mllog")
    _mllog.constants = _Names()
    _mllog.get_mllogger = lambda: _NoLogger()
    _mllog.config = lambda *args, **kwargs: None
    _package = types.ModuleType("mlperf_logging")
    _package.mllog = _mllog
    sys.modules["mlperf_logging"] = _package
    sys.modules["mlperf_logging.mllog"] = _mllog
    sys.modules["mlperf_logging.mllog.constants"] = _mllog.constants
'''

_REF_TRAIN = re.compile(r"Finished training it (\d+)/\d+ of epoch \d+, -?[0-9.]+ ms/it, "
                        r"loss ([0-9.]+)")
_REF_TEST = re.compile(r"Testing at - (\d+)/\d+ of epoch \d+,\s*\n.*? auc ([0-9.]+),", re.S)
_OURS_TRAIN = re.compile(r"progress: (\d+)/\d+, train/total_loss: [0-9.]+, "
                         r"train/total_loss/avg: ([0-9.]+)")
_OURS_VAL = re.compile(r"progress: (\d+)/\d+, val/.*?val/kbrec_prepared/auc: ([0-9.]+), "
                       r"val/kbrec_prepared/log_loss: ([0-9.]+)")


def run_reference(args, shape: Dict, processed: Path, nbatches: int, env, log: Path) -> Dict:
    cmd = [
        sys.executable, str(args.reference_dlrm / "dlrm_s_pytorch.py"),
        f"--arch-sparse-feature-size={shape['dim']}",
        f"--arch-mlp-bot={shape['dense']}-" + "-".join(map(str, shape["bottom"])),
        "--arch-mlp-top=" + "-".join(map(str, [*shape["top"], 1])),
        "--data-generation=dataset", "--data-set=kaggle",
        f"--raw-data-file={processed.parent / 'train.txt'}",
        f"--processed-data-file={processed}", "--data-randomize=total",
        "--loss-function=bce", "--round-targets=True",
        f"--mini-batch-size={args.batch}", "--test-mini-batch-size=16384",
        f"--learning-rate={args.lr}", f"--print-freq={args.interval}",
        f"--test-freq={args.interval}", "--nepochs=1", "--mlperf-logging",
        "--mlperf-auc-threshold=1.0",  # never stop early
    ]
    timed(cmd, env, log, args.reference_dlrm)
    text = log.read_text()
    # its printed loss is the mean per sample over the interval
    losses = {int(it): float(x) for it, x in _REF_TRAIN.findall(text)}
    aucs = {int(it): float(x) for it, x in _REF_TEST.findall(text)}
    return {"train_loss": losses, "heldout_auc": aucs}


def interval_means(running: Dict[int, float]) -> Dict[int, float]:
    """MMF logs the training loss averaged since the start; the reference,
    averaged over the last interval. Back out the interval means (equal
    batches), good to about 1e-3 from MMF's four printed decimals."""
    out, previous_step, previous_avg = {}, 0, 0.0
    for step in sorted(running):
        out[step] = (running[step] * step - previous_avg * previous_step) / (step - previous_step)
        previous_step, previous_avg = step, running[step]
    return out


def run_ours(args, shape: Dict, data_dir: Path, nbatches: int, env, work: Path) -> Dict:
    import yaml

    body = {
        "includes": [str(REPO / "projects" / "kbrec" / "dlrm.yaml")],
        "datasets": "kbrec_prepared",
        "run_type": "train_val",
        "dataset_config": {"kbrec_prepared": {"data_dir": str(data_dir),
                                              "verify_checksums": False,
                                              "extra_eval_splits": []}},
        "model_config": {"dlrm": {
            "embedding_dim": shape["dim"],
            "dense_encoder": {"params": {"hidden_dims": shape["bottom"]}},
            "top_mlp": shape["top"],
        }},
        "optimizer": {"type": "SGD", "params": {"lr": args.lr}},
        "training": {"batch_size": args.batch, "max_updates": nbatches,
                     "log_interval": args.interval, "evaluation_interval": args.interval,
                     "checkpoint_interval": 10**9, "seed": args.seed},
        "env": {"save_dir": str(work / "ours")},
    }
    config = work / "ours.yaml"
    config.write_text(yaml.safe_dump(body, sort_keys=False))
    log = work / "ours.log"
    timed([str(Path(sys.executable).parent / "mmf_run"),
                        f"config={config}", "checkpoint.max_to_keep=1", *args.override],
                       env, log, REPO)
    text = log.read_text()
    return {
        "train_loss": interval_means({int(it): float(x) for it, x in _OURS_TRAIN.findall(text)}),
        "heldout_auc": {int(it): float(a) for it, a, _ in _OURS_VAL.findall(text)},
        "heldout_log_loss": {int(it): float(x) for it, _, x in _OURS_VAL.findall(text)},
    }


def bench_trajectory(args) -> Dict[str, object]:
    import os

    if not args.reference_dlrm:
        raise SystemExit("bench.py trajectory: --reference-dlrm PATH is required")
    shape = CONFIGS[args.config]
    work = args.work_dir.resolve()  # the reference runs in its own checkout
    work.mkdir(parents=True, exist_ok=True)
    site = work / "reference_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE + MLPERF_STANDIN)
    env = dict(os.environ)
    ref_env = {**env, "PYTHONPATH": os.pathsep.join(
        [str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    data = make_rows(shape, args.rows_per_day, args.seed)
    processed = write_reference_files(work / "reference_data", data, args.rows_per_day)
    prepared = write_prepared(work / "prepared", data, args.rows_per_day)
    nbatches = math.ceil((DAYS - 1) * args.rows_per_day / args.batch)
    reference = run_reference(args, shape, processed, nbatches, ref_env,
                              work / "reference.log")
    ours = run_ours(args, shape, prepared, nbatches, env, work)
    points = sorted(set(reference["heldout_auc"]) & set(ours["heldout_auc"]))
    gaps = [ours["heldout_auc"][i] - reference["heldout_auc"][i] for i in points]
    return {"benchmark": "trajectory", "args": {
        "config": args.config, "rows_per_day": args.rows_per_day, "batch": args.batch,
        "lr": args.lr, "interval": args.interval, "seed": args.seed,
        "reference_dlrm": str(args.reference_dlrm), "updates": nbatches,
        "override": list(args.override),
    }, "oracle": oracle(data, args.rows_per_day), "ours": ours, "reference": reference,
        "points": points, "auc_gap_ours_minus_reference": gaps,
        "auc_gap_median": statistics.median(gaps) if gaps else None}


def trajectory_table(payload) -> str:
    a = payload["args"]
    lines = [
        f"One epoch ({a['updates']} updates of {a['batch']}) on the same generated "
        f"Criteo-shaped rows, shape `{a['config']}`, SGD lr {a['lr']}; held-out AUC "
        f"on the same rows every {a['interval']} updates, training loss averaged over "
        f"each interval{'; ours with ' + ' '.join(a['override']) if a.get('override') else ''}."
        f" Oracle (the "
        f"true click model) on the held-out rows: AUC {payload['oracle']['auc']:.4f}, "
        f"log loss {payload['oracle']['log_loss']:.4f}.",
        "",
        "| updates | held-out AUC, ours | held-out AUC, reference | ours - reference "
        "| training loss, ours | training loss, reference |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    ours, ref = payload["ours"], payload["reference"]

    def cell(d, key, spec=".4f"):
        value = d.get(key)
        return format(value, spec) if value is not None else ""

    for i in payload["points"]:
        lines.append(f"| {i} | {cell(ours['heldout_auc'], i)} | {cell(ref['heldout_auc'], i)} "
                     f"| {ours['heldout_auc'][i] - ref['heldout_auc'][i]:+.4f} "
                     f"| {cell(ours['train_loss'], i)} | {cell(ref['train_loss'], i)} |")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("--reference-dlrm", type=Path, help="a checkout of facebookresearch/dlrm")
    p.add_argument("--config", default="criteo-kaggle-100k", choices=list(CONFIGS))
    p.add_argument("--rows-per-day", type=int, default=81_920,
                   help="rows per 'day' of seven; six train, half of one is held out")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--interval", type=int, default=20, help="updates between held-out scores")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="an mmf_run option for our side (repeatable), e.g. training.amp.enabled=true")
    p.add_argument("--work-dir", type=Path, default=REPO / "save" / "bench_trajectory")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_trajectory.json")
