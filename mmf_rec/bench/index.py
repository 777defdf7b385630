"""Benchmark the item index types on random unit vectors: build time, QPS, recall@k vs exact.

    python tools/bench.py retrieve --sizes 100000 1000000 --dim 64 --threads 2
    python tools/bench.py retrieve ...   # the same, standalone

For each catalogue size: the exact (flat) index gives the ground truth; HNSW
and IVF-PQ are built once and swept over their search-time knobs
(ef_search; nprobe), each setting measured for recall@k against exact
search, queries per second one query at a time and in one batch. The
summary picks, per index type, the fastest (batched) setting with
recall@k >= --target. Random vectors have no cluster structure, so they are
a hard case for approximate search; real item vectors are easier.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from mmf_rec.bench import REPO



def unit(n, dim, seed):
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: 1M x 64 float64 would double memory
        block = rng.standard_normal((min(100_000, n - start), dim)).astype(np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def measure(index, queries, k, truth, singles):
    start = time.perf_counter()
    _, found = index.search(queries, k)
    batched = len(queries) / (time.perf_counter() - start)
    start = time.perf_counter()
    for q in queries[:singles]:
        index.search(q[None, :], k)
    single = singles / (time.perf_counter() - start)
    recall = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(found, truth)]))
    return {"recall": round(recall, 4), "qps_batched": round(batched, 1),
            "qps_single": round(single, 1)}


def add_arguments(p) -> None:
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=64, help="the two-tower's output_dim")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--singles", type=int, default=200, help="queries timed one at a time")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hnsw", default="M=32,ef_construction=200")
    p.add_argument("--ef-search", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--ivfpq", default="m=16,nbits=8,refine=8",
                   help="nlist defaults to 4 sqrt(N)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--types", nargs="+", default=["flat", "hnsw", "ivfpq"])
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_index.json")


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


def params(text):
    out = {}
    for pair in filter(None, text.split(",")):
        name, value = pair.split("=")
        out[name] = float(value) if "." in value else int(value)
    return out


def bench_retrieve(args):
    """Per catalogue size and index type: build seconds and, per search
    setting, recall@k against exact search and QPS (single and batched)."""
    import faiss

    from mmf_rec.retrieval.index import ItemIndex

    faiss.omp_set_num_threads(args.threads)
    results = {"machine": {"threads": args.threads, "cpus": os.cpu_count(),
                           "python": platform.python_version(), "faiss": faiss.__version__,
                           "processor": platform.processor() or platform.machine()},
               "dim": args.dim, "k": args.k, "queries": args.queries, "sizes": {}}
    for n in args.sizes:
        items, queries = unit(n, args.dim, seed=n), unit(args.queries, args.dim, seed=1)
        ids = np.arange(n)
        entry = {}
        flat = ItemIndex.build(items, ids, index_type="flat", progress=False)
        _, truth = flat.search(queries, args.k)
        if "flat" in args.types:
            entry["flat"] = {"build_s": flat.meta.build_seconds,
                             "settings": [{"params": {}, **measure(flat, queries, args.k, truth,
                                                                   args.singles)}]}
            print(n, "flat", entry["flat"], flush=True)
        del flat
        sweeps = {"hnsw": (params(args.hnsw), "ef_search", args.ef_search),
                  "ivfpq": (params(args.ivfpq), "nprobe", args.nprobe)}
        for kind in ("hnsw", "ivfpq"):
            if kind not in args.types:
                continue
            build_params, knob, values = sweeps[kind]
            index = ItemIndex.build(items, ids, index_type=kind, params=build_params,
                                    progress=False)
            settings = []
            for value in values:
                index.set_search_params(**{knob: value})
                settings.append({"params": {knob: value},
                                 **measure(index, queries, args.k, truth, args.singles)})
                print(n, kind, index.meta.params, settings[-1], flush=True)
            entry[kind] = {"build_s": index.meta.build_seconds, "build_params": index.meta.params,
                           "settings": settings}
            del index
        for kind, result in entry.items():
            good = [s for s in result["settings"] if s["recall"] >= args.target]
            result["best"] = max(good, key=lambda s: s["qps_batched"]) if good else None
        results["sizes"][str(n)] = entry
    results["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    return results


def retrieve_table(payload) -> str:
    lines = [
        f"FAISS on random unit vectors, dim {payload['dim']}, recall@{payload['k']} against "
        f"exact search over {payload['queries']} queries, {payload['machine']['threads']} "
        "threads; per index type its fastest setting that reaches the target recall.",
        "",
        "| items | index | build s | setting | recall | QPS one at a time | QPS batched |",
        "|---:|---|---:|---|---:|---:|---:|",
    ]
    for n, entry in payload["sizes"].items():
        for kind, result in entry.items():
            best = result.get("best")
            if best is None:
                lines.append(f"| {int(n):,} | {kind} | {result['build_s']:.1f} "
                             "| none reached the target | | | |")
                continue
            setting = ", ".join(f"{k}={v}" for k, v in best["params"].items()) or "exact"
            lines.append(f"| {int(n):,} | {kind} | {result['build_s']:.1f} | {setting} "
                         f"| {best['recall']:.3f} | {best['qps_single']:,.0f} "
                         f"| {best['qps_batched']:,.0f} |")
    return "\n".join(lines)


def main(argv=None):
    args = parser().parse_args(argv)
    results = bench_retrieve(args)
    print(retrieve_table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
