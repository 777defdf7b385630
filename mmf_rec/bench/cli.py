"""The benchmark command line: ``python tools/bench.py <name> [options]``.

Each sub-benchmark prints a markdown table and writes its numbers as JSON
(under results/ by default), so README figures can be regenerated and
compared run to run. Timings are medians of repeats after warm-up, on the
threads torch uses on this machine (reported with the results, with any
allocator or threading settings from the environment).
"""

import argparse
import sys
from pathlib import Path
from typing import List

from mmf_rec.bench import REPO
from mmf_rec.bench import data as bench_data
from mmf_rec.bench import index as bench_index
from mmf_rec.bench import rank as bench_rank
from mmf_rec.bench import shard as bench_shard
from mmf_rec.bench import train as bench_train
from mmf_rec.bench import trajectory as bench_trajectory
from mmf_rec.bench.compression import (
    COMPRESSED_FEATURES,
    MODEL_CONFIGS,
    bench_compression,
    compression_table,
    compression_variants,
)
from mmf_rec.bench.embedding import bench_embedding, embedding_table
from mmf_rec.bench.host import provenance, write_json


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
