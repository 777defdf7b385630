"""``python tools/bench.py shard``: embedding tables larger than one process
may hold, trained through ``mmf_run`` with TorchRec sharding.

The tables (``--tables`` x ``--rows`` x ``--dim``, fp32) hold T bytes; each
process may hold ``--budget-share`` x T (default: half, plus a quarter for
what is not tables) as ``distributed.memory_budget_mb``. Three runs of
``dlrm`` on random data of that shape:

- 1 process, the tables under the budget: refused before training (the
  plan cannot fit), with the line it prints;
- 1 process without the budget: it trains, and its peak memory shows what
  the budget would have been exceeded by;
- 2 processes, tables sharded table-wise, under the budget: they train.

Each training run reports its peak resident memory per process (up to the
end of training, before the final checkpoint gathers the tables on rank 0)
and samples/s of the whole run (each process's loop rate over its share of
the batch, times the processes).
"""

import json
import os
import re
import sys
from pathlib import Path
from typing import Dict, List

from mmf_rec.bench import REPO


SHARDED = ["model_config.dlrm.sparse_encoder.params.backend=torchrec",
           "distributed.embedding_sharding=table_wise"]


def _shape(args) -> Dict:
    return {"tables": [args.rows] * args.tables, "dim": args.dim,
            "bottom": [64, args.dim], "top": [128, 64], "dense": 13}


def _run(config: Path, save: Path, updates: int, overrides: List[str], env) -> Dict:
    import subprocess

    mmf_run = Path(sys.executable).parent / "mmf_run"
    cmd = [str(mmf_run), f"config={config}", f"training.max_updates={updates}",
           f"env.save_dir={save}", "checkpoint.max_to_keep=1", "checkpoint.overwrite=True",
           "run_type=train", *overrides]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    (save.parent / f"{save.name}.log").write_text(result.stdout + result.stderr)
    out = {"overrides": overrides, "returncode": result.returncode}
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        out["error"] = lines[-1] if lines else ""
        return out
    speed = json.loads((save / "metrics.json").read_text())["training_speed"]
    # the tables each rank holds, from the plan the run logs ("  c0: table_wise on ranks [1]")
    held: Dict[int, int] = {}
    for ranks in re.findall(r"^  c\d+: \w+ on ranks \[([\d, ]+)\]$", result.stdout, re.M):
        for r in ranks.split(","):
            held[int(r)] = held.get(int(r), 0) + 1
    out["tables_per_process"] = [held[r] for r in sorted(held)]
    for pattern in ("*.ckpt", "*.pth"):  # the tables: GBs, and only numbers are kept
        for path in save.rglob(pattern):
            path.unlink()
    out["peak_rss_mb_per_process"] = speed.get("peak_rss_mb_per_process") or [
        speed["peak_rss_mb"]]
    # the trainer times each process's share of the batch: the run's rate is
    # that times the processes
    processes = len(out["peak_rss_mb_per_process"])
    out["samples_per_s_per_process"] = speed["loop_samples_per_s"]
    out["samples_per_s"] = speed["loop_samples_per_s"] * processes
    out["step_ms_median"] = speed["step_ms_median"]
    return out


def bench_shard(args) -> Dict[str, object]:
    from mmf_rec.bench.shapes import ours_config, write_random_prepared

    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    shape = _shape(args)
    table_bytes = args.tables * args.rows * args.dim * 4
    budget_mb = table_bytes * args.budget_share / 2**20
    data = write_random_prepared(work / "data", shape, rows=args.batch * (args.updates + 5))
    config = ours_config(work, "shard", shape, data, args.batch, args.lr, sparse_grad=False)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    budget = [f"distributed.memory_budget_mb={budget_mb:.0f}"]
    quiet = ["training.evaluation_interval=1000000", "training.checkpoint_interval=1000000"]
    runs = {
        "1 process, sharded API, under the budget": _run(
            config, work / "one-budget", args.updates, [*SHARDED, *budget, *quiet], env),
        "1 process, no budget": _run(
            config, work / "one", args.updates, [*SHARDED, *quiet], env),
        "2 processes, table-wise, under the budget": _run(
            config, work / "two-budget", args.updates,
            [*SHARDED, *budget, *quiet, "distributed.world_size=2"], env),
    }
    return {
        "benchmark": "shard",
        "table_mb": table_bytes / 2**20,
        "budget_mb_per_process": budget_mb,
        "runs": runs,
        "args": {"tables": args.tables, "rows": args.rows, "dim": args.dim,
                 "batch": args.batch, "updates": args.updates, "lr": args.lr,
                 "budget_share": args.budget_share, "threads_per_process": args.threads},
    }


def shard_table(payload) -> str:
    a = payload["args"]
    lines = [
        f"dlrm with {a['tables']} tables x {a['rows']:,} rows x {a['dim']} (fp32, "
        f"{payload['table_mb']:,.0f} MiB in all), SGD, batch {a['batch']}, {a['updates']} "
        f"updates; budget {payload['budget_mb_per_process']:,.0f} MiB per process "
        f"(distributed.memory_budget_mb); {a['threads_per_process']} thread(s) per process.",
        "",
        "| run | result | tables per process | table MiB per process | peak memory per process (MiB) | samples/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    per_table = payload["table_mb"] / a["tables"]
    for name, run in payload["runs"].items():
        if run["returncode"] != 0:
            lines.append(f"| {name} | refused: `{run.get('error', '')}` | | | | |")
            continue
        peaks = ", ".join(f"{p:,.0f}" for p in run["peak_rss_mb_per_process"])
        counts = run.get("tables_per_process") or []
        held = ", ".join(f"{n * per_table:,.0f}" for n in counts)
        lines.append(f"| {name} | trains | {', '.join(map(str, counts))} | {held} | {peaks} "
                     f"| {run['samples_per_s']:,.0f} |")
    lines += ["", "Peak memory is the resident set up to the end of training; each process "
              "also holds torch, MMF and the data besides its tables."]
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("--tables", type=int, default=8)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--updates", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--budget-share", type=float, default=0.75,
                   help="each process's budget as a share of all tables' bytes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--work-dir", type=Path, default=REPO / "save" / "bench_shard")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_shard.json")
