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
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


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
    return {"benchmark": "embedding", "machine": machine(), "args": vars(args), "results": results}


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
        for r in payload["results"]
    }
    for r in payload["results"]:
        both = r["forward_backward"]["median_ms"]
        base = r["baseline"]
        speedup = f"{medians[(r['scenario'], base)] / both:.2f}x vs {base}" if base else ""
        lines.append(
            f"| {r['scenario']} | {r['variant']} | {r['forward']['median_ms']:.2f} "
            f"| {both:.2f} | {speedup} |"
        )
    return "\n".join(lines)


BENCHMARKS = {
    "embedding": (bench_embedding, embedding_table, "fused vs per-table sparse lookups"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="benchmark", required=True)
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
    return p


def main(argv: List[str] = None) -> int:
    args = parser().parse_args(argv)
    run, table, _ = BENCHMARKS[args.benchmark]
    out = args.out
    payload = run(args)
    payload["args"]["out"] = str(out)
    print(table(payload))
    write_json(out, payload)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
