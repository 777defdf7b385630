"""``bench.py compression``: hash / qr / mixed_dim tables trained end to end,
and int8 / fp16 / int4 after training."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from mmf_rec.bench import REPO
from mmf_rec.bench.host import machine, write_json


# -- compression: table kinds trained end to end -------------------------------------
# The features whose tables dominate the models' memory on kbrec_synthetic.
COMPRESSED_FEATURES = ("user_id", "item_id", "history")
MODEL_CONFIGS = {"dlrm": "projects/kbrec/dlrm.yaml", "dlrm_mm_ids": "projects/kbrec/dlrm_mm_ids.yaml"}
MODEL_NAMES = {"dlrm": "dlrm", "dlrm_mm_ids": "dlrm_mm"}


def compression_variants(cardinality: Dict[str, int]) -> Dict[str, Dict[str, object]]:
    """name -> (description, per-feature tables for the large features)."""

    def each(options):
        return {f: options(n) for f, n in cardinality.items() if f in COMPRESSED_FEATURES}

    return {
        "full": ("one row per id", {}),
        "hash4": ("hash, n/4 buckets", each(lambda n: {"kind": "hash", "num_buckets": -(-n // 4)})),
        "qr4": ("qr, 4 collisions, multiply", each(lambda n: {"kind": "qr", "collisions": 4})),
        "qr4-add": ("qr, 4 collisions, add",
                    each(lambda n: {"kind": "qr", "collisions": 4, "combine": "add"})),
        "qr4-concat": ("qr, 4 collisions, concat",
                       each(lambda n: {"kind": "qr", "collisions": 4, "combine": "concat"})),
        "md0.3": ("mixed_dim, temperature 0.3",
                  each(lambda n: {"kind": "mixed_dim", "temperature": 0.3})),
        "md0.6": ("mixed_dim, temperature 0.6",
                  each(lambda n: {"kind": "mixed_dim", "temperature": 0.6})),
        "hash16": ("hash, n/16 buckets",
                   each(lambda n: {"kind": "hash", "num_buckets": -(-n // 16)})),
        "qr16": ("qr, 16 collisions, multiply", each(lambda n: {"kind": "qr", "collisions": 16})),
    }


def synthetic_cardinality(num_users: int = None) -> Dict[str, int]:
    from omegaconf import OmegaConf

    from mmf_rec.data.synthetic import build_schema

    config = OmegaConf.load(REPO / "configs" / "datasets" / "kbrec_synthetic.yaml")
    generator = OmegaConf.to_container(config.dataset_config.kbrec_synthetic.generator)
    if num_users:
        generator["num_users"] = num_users
    return {f.name: f.cardinality for f in build_schema(generator).sparse}


def run_child(cmd: List[str], log: Path, threads: int) -> Dict[str, float]:
    """Run a command with ``threads`` threads; its wall time and its own peak RSS.

    ``os.wait4`` gives the resource use of that child alone (RUSAGE_CHILDREN
    would be the maximum over every child so far).
    """
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}:\n{tail}")
    return {"wall_s": time.perf_counter() - start, "peak_rss_mb": usage.ru_maxrss / 1024}


def variant_config(work: Path, model: str, name: str, tables) -> Path:
    """A project yaml for one variant: the model's config plus its tables."""
    import yaml

    path = work / "configs" / f"{model}-{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "includes": [str(REPO / MODEL_CONFIGS[model])],
        "model_config": {MODEL_NAMES[model]: {"sparse_encoder": {"params": {"tables": tables}}}},
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def bench_compression(args) -> Dict[str, object]:
    mmf_run = Path(sys.executable).parent / "mmf_run"
    variants = compression_variants(synthetic_cardinality(args.num_users))
    # A larger catalogue is generated under the work dir, never over the default data.
    scenario = f"-users{args.num_users}" if args.num_users else ""
    data = []
    if args.num_users:
        data = [f"env.data_dir={args.work_dir / ('data' + scenario)}",
                f"dataset_config.kbrec_synthetic.generator.num_users={args.num_users}"]
    unknown = sorted(set(args.variants + args.mm_variants) - set(variants))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(variants)}")
    runs = []
    plan = [("dlrm", args.variants, args.seeds), ("dlrm_mm_ids", args.mm_variants, args.mm_seeds)]
    for model, names, seeds in plan:
        if model not in args.models:
            continue
        for name in names:
            description, tables = variants[name]
            config = variant_config(args.work_dir, model, name + scenario, tables)
            for seed in seeds:
                save = args.work_dir / (model + scenario) / name / f"seed{seed}"
                measured = save / "measured.json"
                record = {"model": model + scenario, "variant": name, "description": description,
                          "tables": tables, "seed": seed, "save_dir": str(save)}
                previous = json.loads(measured.read_text()) if measured.is_file() else None
                if args.reuse and previous:
                    runs.append({**record, **previous})
                    continue
                if args.remeasure and previous:
                    train = previous["train"]
                else:
                    overrides = [f"env.save_dir={save}", f"training.seed={seed}", *data]
                    if args.max_updates:
                        overrides.append(f"training.max_updates={args.max_updates}")
                    print(f"training {model} {name} seed {seed}", flush=True)
                    train = run_child([str(mmf_run), f"config={config}", *overrides],
                                      save / "mmf_run.log", args.threads)
                    if not args.keep_checkpoints:
                        # MMF 1.0.0rc10 keeps every periodic checkpoint (with Adam
                        # state); the measurements need only best.ckpt.
                        shutil.rmtree(save / "models", ignore_errors=True)
                        (save / "current.ckpt").unlink(missing_ok=True)
                precisions = args.precisions if name in args.quantize_variants else []
                quantized = save / "quantize.json"
                run_child([sys.executable, str(REPO / "tools" / "quantize.py"), "--run", str(save),
                           "--precision", *precisions, "--json", str(quantized),
                           "--time-training", str(args.train_steps),
                           "--latency-batches", "10", "--latency-rounds", "3"],
                          save / "quantize.log", args.threads)
                result = {
                    "train": train,
                    "metrics": json.loads((save / "metrics.json").read_text()),
                    "measured": json.loads(quantized.read_text()),
                }
                write_json(measured, result)
                runs.append({**record, **result})
    return {
        "benchmark": "compression",
        "machine": {**machine(), "threads": args.threads},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "skipped": ["MovieLens (../shared/data/ml-100k): there is no MovieLens reader yet"],
        "runs": runs,
    }


def _share(part: int, whole) -> str:
    """``part`` as a percentage of the full tables' bytes ("" without a full run)."""
    return f"{part / whole:.0%}" if whole else ""


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def compression_table(payload) -> str:
    runs, host = payload["runs"], payload["machine"]
    users = payload["args"].get("num_users")
    data = f"kbrec_synthetic with {users:,} users" if users else "kbrec_synthetic"
    lines = [
        f"Table kinds trained by mmf_run on {data}; medians over seeds; "
        f"{host['threads']} thread(s) per run; torch {host['torch']}. Table training "
        f"bytes: weights, gradients and optimizer state of the tables after a step; "
        f"peak RSS: the whole mmf_run process",
        "",
        "| model | variant | tables | table bytes | vs full | table training bytes "
        "| peak RSS MB | test AUC | test log loss | cold AUC | best update "
        "| train samples/s | seeds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: Dict[tuple, List[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["variant"]), []).append(r)
    full_bytes = {}
    for (model, variant), rs in groups.items():
        fp32 = [r["measured"]["variants"]["fp32"] for r in rs]
        table_bytes = fp32[0]["table_bytes"]
        if variant == "full":
            full_bytes[model] = table_bytes
        share = _share(table_bytes, full_bytes.get(model))
        lines.append(
            f"| {model} | {variant} | {rs[0]['description']} | {table_bytes:,} | {share} "
            f"| {rs[0]['measured']['training_table_bytes']:,} "
            f"| {_median(r['train']['peak_rss_mb'] for r in rs):.0f} "
            f"| {_median(v['metrics']['test']['auc'] for v in fp32):.4f} "
            f"| {_median(v['metrics']['test']['log_loss'] for v in fp32):.4f} "
            f"| {_median(v['metrics'].get('cold', {}).get('auc') for v in fp32):.4f} "
            f"| {_median(r['metrics']['num_updates'] for r in rs):.0f} "
            f"| {_median(r['measured']['training_samples_per_s'] for r in rs):,.0f} | {len(rs)} |"
        )
    lines += [
        "",
        "Post-training quantization of the trained tables (same checkpoints; AUC change "
        "against fp32 on the same checkpoint; latency: median ms per test batch, model forward)",
        "",
        "| model | variant | tables | table bytes | vs full fp32 | test AUC | AUC change "
        "| test log loss | cold AUC change | latency ms | fp32 latency ms (fused / unfused) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (model, variant), rs in groups.items():
        precisions = [p for p in rs[0]["measured"]["variants"] if p not in ("fp32", "fp32 unfused")]
        for p in precisions:
            def change(split, r, p=p):
                v = r["measured"]["variants"]
                if split not in v[p]["metrics"]:
                    return None
                return v[p]["metrics"][split]["auc"] - v["fp32"]["metrics"][split]["auc"]

            q = [r["measured"]["variants"][p] for r in rs]
            fp32 = [r["measured"]["variants"]["fp32"] for r in rs]
            unfused = [r["measured"]["variants"]["fp32 unfused"] for r in rs]
            share = _share(q[0]["table_bytes"], full_bytes.get(model))
            lines.append(
                f"| {model} | {variant} | {p} | {q[0]['table_bytes']:,} | {share} "
                f"| {_median(v['metrics']['test']['auc'] for v in q):.4f} "
                f"| {_median(change('test', r) for r in rs):+.4f} "
                f"| {_median(v['metrics']['test']['log_loss'] for v in q):.4f} "
                f"| {_median(change('cold', r) for r in rs):+.4f} "
                f"| {_median(v['latency_ms'] for v in q):.2f} "
                f"| {_median(v['latency_ms'] for v in fp32):.2f} / "
                f"{_median(v['latency_ms'] for v in unfused):.2f} |"
            )
    lines += ["", *(f"Skipped: {s}" for s in payload.get("skipped", []))]
    return "\n".join(lines)
