"""The project's benchmark entry point: ``python tools/bench.py <name> [options]``.

Each sub-benchmark prints a markdown table and writes its numbers as JSON
(under results/ by default), so README figures can be regenerated and
compared run to run. Timings are medians of repeats after warm-up, on the
threads torch uses on this machine (reported with the results, with any
allocator or threading settings from the environment).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import bench_data  # noqa: E402  (tools/, next to this file)
import bench_index  # noqa: E402
import bench_rank  # noqa: E402
import bench_shard  # noqa: E402
import bench_train  # noqa: E402
import bench_trajectory  # noqa: E402


def machine() -> Dict[str, object]:
    # Allocator and threading settings change CPU timings; record any in force.
    settings = ("MALLOC_", "THP_", "OMP_", "MKL_", "LD_PRELOAD")
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "environment": {k: v for k, v in os.environ.items() if k.startswith(settings)},
    }


def provenance(argv: List[str] = None) -> Dict[str, object]:
    """The command, the commit (and whether the tree had changes), the date
    and the host's CPU and its flags: what a results file needs."""
    from mmf_rec.benchmark import git_state
    from mmf_rec.serving import cpu

    command = ["python", "tools/bench.py", *(sys.argv[1:] if argv is None else argv)]
    return {"command": " ".join(command), "git": git_state(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "host": cpu.describe(),
            "load_average": os.getloadavg()}


def write_json(path: Path, payload: Dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


# -- embedding: fused vs per-table lookups ------------------------------------------
def embedding_scenarios():
    from mmf_rec.schema import SparseFeature

    return {
        # DLRM-like: a few large single-valued tables.
        "8 x 100k, one-hot": [SparseFeature(f"c{i}", 100_000) for i in range(8)],
        # Criteo's 26 categorical features, small tables.
        "26 x 1k, one-hot": [SparseFeature(f"c{i}", 1_000) for i in range(26)],
        # Bags of ids with padding, sum and mean pooling mixed.
        "8 x 10k, 4 multi-hot (len 20, sum+mean)": [
            SparseFeature(f"c{i}", 10_000) for i in range(4)
        ]
        + [
            SparseFeature(f"m{i}", 10_000, pooling="sum" if i % 2 else "mean", max_len=20)
            for i in range(4)
        ],
    }


def random_batch(features, batch: int, generator: torch.Generator) -> Dict[str, torch.Tensor]:
    from mmf_rec.schema import PAD_ID

    out = {}
    for f in features:
        ids = torch.randint(0, f.cardinality, (batch, f.max_len), generator=generator)
        if f.multi_hot:
            lengths = torch.randint(0, f.max_len + 1, (batch, 1), generator=generator)
            ids[torch.arange(f.max_len).expand(batch, -1) >= lengths] = PAD_ID
        out[f.name] = ids
    return out


EMBEDDING_VARIANTS = {
    # name: (config, the variant it is compared with)
    "unfused": ({"fused": False}, None),
    "fused": ({"fused": True}, "unfused"),
    "fused, one matrix": ({"fused": True, "fused_group_mb": 0}, "unfused"),
    "unfused, sparse grads": ({"fused": False, "sparse_grad": True}, None),
    "fused, sparse grads": ({"fused": True, "sparse_grad": True}, "unfused, sparse grads"),
}


def blocked_ms(steps: Dict[str, Callable[[], None]], repeats: int, warmup: int, rounds: int,
               cleanup: Callable[[], None] = lambda: None):
    """Median time of each step over ``rounds`` blocks of ``repeats`` runs.

    Each block runs one step alone after its warm-up, as a training loop would
    (an interleaved schedule changes how the allocator reuses memory); blocks
    of all steps alternate, so drift of the machine hits all of them alike.
    """
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            for _ in range(warmup):
                step()
            for _ in range(repeats):
                start = time.perf_counter()
                step()
                times[name].append((time.perf_counter() - start) * 1e3)
            cleanup()
    return {name: {"median_ms": statistics.median(t), "times_ms": t} for name, t in times.items()}


def bench_embedding(args) -> Dict[str, object]:
    from mmf_rec.encoders.sparse import SparseEncoder
    from mmf_rec.schema import Schema

    generator = torch.Generator().manual_seed(0)
    results = []
    for scenario, features in embedding_scenarios().items():
        schema = Schema(sparse=tuple(features))
        batch = random_batch(features, args.batch, generator)
        grad = torch.randn(args.batch, len(features), args.dim, generator=generator)
        encoders = {}
        for name, (config, _) in EMBEDDING_VARIANTS.items():
            config = {"embedding_dim": args.dim, "check_ids": args.check_ids, **config}
            encoders[name] = SparseEncoder(config, schema)
            encoders[name].load_state_dict(encoders["unfused"].state_dict())

        def forward(encoder):
            with torch.no_grad():
                encoder(batch)

        def forward_backward(encoder):
            encoder.zero_grad(set_to_none=True)
            encoder(batch).backward(grad)

        def free_grads():
            for encoder in encoders.values():
                encoder.zero_grad(set_to_none=True)

        step_times = bench_update_step(features, schema, batch, grad, encoders, args)
        times = {
            "forward": blocked_ms(
                {n: partial(forward, e) for n, e in encoders.items()},
                args.repeats, args.warmup, args.rounds,
            ),
            "forward_backward": blocked_ms(
                {n: partial(forward_backward, e) for n, e in encoders.items()},
                args.repeats, args.warmup, args.rounds, cleanup=free_grads,
            ),
        }
        for name, (config, baseline) in EMBEDDING_VARIANTS.items():
            results.append({
                "scenario": scenario,
                "variant": name,
                "config": config,
                "baseline": baseline,
                "tables": len(features),
                "rows": sum(f.cardinality for f in features),
                "batch": args.batch,
                "dim": args.dim,
                "forward": times["forward"][name],
                "forward_backward": times["forward_backward"][name],
            })
        for name, timing in step_times.items():
            results.append({
                "scenario": scenario, "variant": name, "config": UPDATE_VARIANTS[name],
                "baseline": None, "tables": len(features),
                "rows": sum(f.cardinality for f in features), "batch": args.batch,
                "dim": args.dim, "update_step": timing,
            })
    return {"benchmark": "embedding", "machine": machine(), "args": vars(args), "results": results}


UPDATE_VARIANTS = {
    "fused, sparse grads + SGD": {"fused": True, "sparse_grad": True},
    "torchrec: FBGEMM TBE, fused SGD": {"backend": "torchrec",
                                        "embedding_sharding": "table_wise"},
}


def bench_update_step(features, schema, batch, grad, encoders, args):
    """A whole training step of the tables (forward, backward, SGD update):
    the project's fused groups with sparse gradients and torch's SGD, against
    FBGEMM's table-batched kernels with the update fused into the backward
    (the torchrec backend, one process, table-wise)."""
    from omegaconf import OmegaConf
    from mmf_rec import sharding
    from mmf_rec.encoders.sparse import SparseEncoder

    native = encoders["fused, sparse grads"]
    native_sgd = torch.optim.SGD(native.parameters(), lr=0.01)
    tbe = SparseEncoder({"embedding_dim": args.dim, "check_ids": args.check_ids,
                         "backend": "torchrec", "device": "meta"}, schema)
    config = OmegaConf.create({
        "model": "m", "model_config": {"m": {"sparse_encoder": {"params": {
            "backend": "torchrec"}}}},
        "distributed": {"embedding_sharding": "table_wise", "memory_budget_mb": None},
        "optimizer": {"type": "SGD", "params": {"lr": 0.01}, "embeddings": {}},
    })
    tbe = sharding.shard(tbe, config, torch.device("cpu"))

    def native_step():
        native_sgd.zero_grad(set_to_none=True)
        native(batch).backward(grad)
        native_sgd.step()

    def tbe_step():
        tbe(batch).backward(grad)

    names = list(UPDATE_VARIANTS)
    times = blocked_ms({names[0]: native_step, names[1]: tbe_step},
                       args.repeats, args.warmup, args.rounds)
    return {name: times[name] for name in names}


def embedding_table(payload) -> str:
    args, host = payload["args"], payload["machine"]
    lines = [
        f"Sparse encoder, batch {args['batch']}, dim {args['dim']}: median ms of "
        f"{args['rounds']} x {args['repeats']} runs (warm-up excluded), "
        f"torch {host['torch']}, {host['threads']} threads",
        "",
        "| scenario | variant | forward | forward + backward | fwd+bwd speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    medians = {
        (r["scenario"], r["variant"]): r["forward_backward"]["median_ms"]
        for r in payload["results"] if "forward_backward" in r
    }
    updates = [r for r in payload["results"] if "update_step" in r]
    for r in payload["results"]:
        if "update_step" in r:
            continue
        both = r["forward_backward"]["median_ms"]
        base = r["baseline"]
        speedup = f"{medians[(r['scenario'], base)] / both:.2f}x vs {base}" if base else ""
        lines.append(
            f"| {r['scenario']} | {r['variant']} | {r['forward']['median_ms']:.2f} "
            f"| {both:.2f} | {speedup} |"
        )
    if updates:
        lines += ["", "A whole training step of the tables (forward, backward, SGD update):", "",
                  "| scenario | variant | step ms |", "|---|---|---:|"]
        lines += [f"| {r['scenario']} | {r['variant']} | {r['update_step']['median_ms']:.2f} |"
                  for r in updates]
    return "\n".join(lines)


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


BENCHMARKS = {
    "train": (
        bench_train.bench_train, bench_train.train_table,
        "dlrm training through mmf_run, side by side with the reference DLRM",
    ),
    "trajectory": (
        bench_trajectory.bench_trajectory, bench_trajectory.trajectory_table,
        "held-out AUC and training loss of dlrm against the reference DLRM on the same rows",
    ),
    "rank": (
        bench_rank.bench_rank, bench_rank.rank_table,
        "dlrm_mm scoring K candidates for one user, with and without cached item tokens",
    ),
    "data": (
        bench_data.bench_data, bench_data.data_table,
        "the training loader's batches per second from a prepared directory",
    ),
    "retrieve": (
        bench_index.bench_retrieve, bench_index.retrieve_table,
        "FAISS index types: build time, QPS and recall@k against exact search",
    ),
    "embedding": (bench_embedding, embedding_table, "fused vs per-table sparse lookups"),
    "shard": (
        bench_shard.bench_shard, bench_shard.shard_table,
        "tables over one process's memory budget: refused in 1 process, sharded over 2",
    ),
    "compression": (
        bench_compression, compression_table,
        "hash / qr / mixed_dim tables trained end to end, int8 / fp16 / int4 after training",
    ),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="benchmark", required=True)
    bench_train.add_arguments(sub.add_parser("train", help=BENCHMARKS["train"][2]))
    bench_trajectory.add_arguments(
        sub.add_parser("trajectory", help=BENCHMARKS["trajectory"][2]))
    bench_rank.add_arguments(sub.add_parser("rank", help=BENCHMARKS["rank"][2]))
    bench_shard.add_arguments(sub.add_parser("shard", help=BENCHMARKS["shard"][2]))
    bench_data.add_arguments(sub.add_parser("data", help=BENCHMARKS["data"][2]))
    bench_index.add_arguments(sub.add_parser("retrieve", help=BENCHMARKS["retrieve"][2]))
    emb = sub.add_parser("embedding", help=BENCHMARKS["embedding"][2])
    emb.add_argument("--batch", type=int, default=2048)
    emb.add_argument("--dim", type=int, default=16)
    emb.add_argument("--repeats", type=int, default=10, help="timed runs per block")
    emb.add_argument("--warmup", type=int, default=3, help="untimed runs before each block")
    emb.add_argument("--rounds", type=int, default=3, help="blocks per variant")
    emb.add_argument(
        "--no-check-ids", dest="check_ids", action="store_false",
        help="time lookups without the per-batch id range check",
    )
    emb.add_argument("--out", type=Path, default=REPO / "results" / "bench_embedding.json")

    names = list(compression_variants({f: 1000 for f in COMPRESSED_FEATURES}))
    cmp = sub.add_parser("compression", help=BENCHMARKS["compression"][2])
    cmp.add_argument("--models", nargs="+", default=list(MODEL_CONFIGS), choices=list(MODEL_CONFIGS))
    cmp.add_argument("--variants", nargs="+", default=names, help=f"dlrm variants, of {names}")
    cmp.add_argument("--mm-variants", nargs="+", default=["full", "hash4", "qr4", "md0.3"],
                     help="dlrm_mm_ids variants")
    cmp.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="dlrm seeds")
    cmp.add_argument("--mm-seeds", nargs="+", type=int, default=[1], help="dlrm_mm_ids seeds")
    cmp.add_argument("--max-updates", type=int, help="default: the project config's")
    cmp.add_argument("--threads", type=int, default=1,
                     help="torch threads per run (1: steady timings on a shared machine)")
    cmp.add_argument("--precisions", nargs="+", default=["int8", "fp16", "int4"])
    cmp.add_argument("--quantize-variants", nargs="+", default=["full", "qr4"],
                     help="variants whose trained tables are also quantized")
    cmp.add_argument("--train-steps", type=int, default=50,
                     help="training steps timed per run for samples/s")
    cmp.add_argument("--num-users", type=int,
                     help="a larger catalogue: kbrec_synthetic with this many users "
                          "(generated under --work-dir)")
    cmp.add_argument("--work-dir", type=Path, default=REPO / "save" / "bench_compression")
    cmp.add_argument("--reuse", action="store_true",
                     help="reuse runs already measured in --work-dir")
    cmp.add_argument("--remeasure", action="store_true",
                     help="keep the trained runs in --work-dir, measure them again")
    cmp.add_argument("--keep-checkpoints", action="store_true",
                     help="keep every periodic checkpoint (default: only best.ckpt)")
    cmp.add_argument("--out", type=Path, default=REPO / "results" / "bench_compression.json")
    return p


def main(argv: List[str] = None) -> int:
    args = parser().parse_args(argv)
    run, table, _ = BENCHMARKS[args.benchmark]
    out = args.out
    payload = run(args)
    payload["args"]["out"] = str(out)
    payload["provenance"] = provenance(argv)
    print(table(payload))
    write_json(out, payload)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
