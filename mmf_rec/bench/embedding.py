"""``bench.py embedding``: fused against per-table sparse lookups, and a whole
training step of the tables against FBGEMM's table-batched kernels."""

import statistics
import time
from functools import partial
from typing import Callable, Dict

import torch

from mmf_rec.bench.host import machine


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
