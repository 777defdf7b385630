"""``python tools/bench.py rank``: one user against K candidates with the
late-interaction ranker of a trained ``dlrm_mm`` run.

Serving shapes, from cheapest to dearest:
- ``fused``: the serving path (``mmf_rec.serving.fused``): the catalogue's
  item side in one buffer, a request is the model's ``encode_users`` and a
  few batched ops; fp32, and bf16 where the CPU has native bf16 (otherwise
  the row says why it is off). Its scores are compared with the model's;
- ``cached items``: the candidates' item-side tokens were encoded once for
  the catalogue (``encode_items``); a request is ``score_candidates`` only;
- ``items per request``: ``encode_items`` runs for the K candidates on every
  request (the backbones' token matrices still come from the knowledge cache);
- ``backbones per request``: no knowledge cache at all; the text and image
  backbones read the K descriptions and photos on every request.
"""

import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

from mmf_rec.bench import REPO



def _times_ms(fn: Callable[[], object], repeats: int, warmup: int,
              clock: Callable[[], float] = time.perf_counter) -> List[float]:
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(repeats):
            start = clock()
            fn()
            out.append((clock() - start) * 1e3)
    return out


def _both_ms(fn: Callable[[], object], repeats: int, warmup: int):
    """Wall-clock and this thread's CPU times, alternating blocks of 10: on a
    shared machine the CPU time leaves out the time other processes held
    the core (it still counts what they cost through shared caches and
    memory bandwidth)."""
    wall, cpu = [], []
    _times_ms(fn, 1, warmup)
    for start in range(0, repeats, 10):
        n = min(10, repeats - start)
        wall += _times_ms(fn, n, 0)
        cpu += _times_ms(fn, n, 0, time.thread_time)
    return wall, cpu


def _percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_rank(args) -> Dict[str, object]:
    from omegaconf import open_dict

    from mmf_rec.explain import user_sample
    from mmf_rec.runs import load_run
    from mmf_rec.zoo import build_model

    run = load_run(args.ranker, expect_model="dlrm_mm")
    from mmf_rec.data.prepared import load_prepared

    data = load_prepared(run.data_root, verify_checksums=False, check_id_ranges=False)
    model = run.model
    user = user_sample(data, args.user)
    k = min(args.candidates, data.items.rows)
    generator = torch.Generator().manual_seed(0)
    candidates = torch.randperm(data.items.rows, generator=generator)[:k]
    with torch.no_grad():
        catalogue = model.encode_items(torch.arange(data.items.rows))
    cached = type(catalogue)(catalogue.tokens[candidates], catalogue.mask[candidates],
                             catalogue.pooled[candidates], catalogue.group_sizes)

    from mmf_rec.serving import cpu
    from mmf_rec.serving.fused import FusedRanker

    if args.threads:
        torch.set_num_threads(args.threads)
    fused = FusedRanker(model)
    batch = candidates.unsqueeze(0)
    shapes = {"fused, fp32": (lambda: fused.score_fields(user, batch), args.repeats)}
    bf16, bf16_why = cpu.native_bf16()
    half = None
    if bf16:
        half = FusedRanker(model, dtype=torch.bfloat16)
        shapes["fused, bf16"] = (lambda: half.score_fields(user, batch), args.repeats)
    shapes.update({
        "cached items": (lambda: model.score_candidates(user, cached), args.repeats),
        "items per request": (
            lambda: model.score_candidates(user, model.encode_items(candidates)), args.repeats),
    })
    if args.backbones:
        config = run.config.copy()
        with open_dict(config):
            config.model_config.dlrm_mm.knowledge_cache.enabled = False
        uncached = build_model("dlrm_mm", config)
        uncached.load_state_dict(model.state_dict(), strict=False)
        uncached.eval()
        shapes["backbones per request"] = (
            lambda: uncached.score_candidates(user, uncached.encode_items(candidates)),
            args.backbone_repeats)

    rows = []
    load_before = os.getloadavg()
    for name, (fn, repeats) in shapes.items():
        times, cpu_times = _both_ms(fn, repeats, warmup=2)
        rows.append({"shape": name, "repeats": repeats,
                     "p50_ms": statistics.median(times), "p99_ms": _percentile(times, 0.99),
                     "cpu_p50_ms": statistics.median(cpu_times),
                     "cpu_p99_ms": _percentile(cpu_times, 0.99),
                     "times_ms": times, "cpu_times_ms": cpu_times})
    with torch.no_grad():
        reference = model.score_candidates(user, cached)
        agree = torch.allclose(reference,
                               model.score_candidates(user, model.encode_items(candidates)),
                               atol=1e-5)
        fused_error = (fused.score_fields(user, batch)[0] - reference).abs().max().item()
        bf16_error = (None if half is None else
                      (half.score_fields(user, batch)[0] - reference).abs().max().item())
    breakdown = fused_breakdown(fused, user, batch, args.repeats)
    return {"benchmark": "rank", "results": rows, "scores_agree": bool(agree),
            "fused_max_abs_error": fused_error, "bf16_max_abs_error": bf16_error,
            "bf16": {"on": bf16, "why": bf16_why}, "fused_breakdown": breakdown,
            "host": cpu.describe(), "load_average": [load_before, os.getloadavg()],
            "logit_range": [reference.min().item(),
                                                    reference.max().item()],
            "args": {
                "ranker": str(args.ranker), "user": args.user, "candidates": k,
                "repeats": args.repeats, "threads": torch.get_num_threads(),
                "modalities": list(model.modalities),
            }}


def fused_breakdown(fused, user, batch, repeats: int) -> Dict[str, float]:
    """p50 ms of the fused path's two parts: the model's user side, and the
    scoring of the candidates against it."""
    side = fused.encode_users(user)
    users = _times_ms(lambda: fused.encode_users(user), repeats, warmup=2)
    scoring = _times_ms(lambda: fused.score(side, batch), repeats, warmup=2)
    return {"encode_users_p50_ms": statistics.median(users),
            "score_p50_ms": statistics.median(scoring),
            "score_p99_ms": _percentile(scoring, 0.99)}


def rank_table(payload) -> str:
    a = payload["args"]
    host = payload.get("host", {})
    lines = [
        f"dlrm_mm ({' + '.join(a['modalities']) or 'ids only'}), one user against "
        f"{a['candidates']} candidates, {a['threads']} threads; cached and per-request "
        f"scores agree: {payload['scores_agree']}",
        f"host: {host.get('cpu_model')}, {host.get('cpus')} CPUs, flags "
        f"{' '.join(host.get('flags', []))}",
        f"fused fp32 max |score - score_candidates|: {payload['fused_max_abs_error']:.2e}"
        f" (logits in [{payload['logit_range'][0]:.2f}, {payload['logit_range'][1]:.2f}])",
        ("fused bf16 max |score - score_candidates|: "
         f"{payload['bf16_max_abs_error']:.2e}" if payload["bf16"]["on"]
         else f"bf16 path off: {payload['bf16']['why']}"),
        "fused fp32 parts, p50 ms: encode_users {encode_users_p50_ms:.3f}, scoring "
        "{score_p50_ms:.3f} (p99 {score_p99_ms:.3f})".format(**payload["fused_breakdown"]),
        "",
        f"load average (1 min) before / after: {payload['load_average'][0][0]:.2f} / "
        f"{payload['load_average'][1][0]:.2f}",
        "",
        "| serving shape | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms | repeats |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in payload["results"]:
        lines.append(f"| {r['shape']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['cpu_p50_ms']:.2f} | {r['cpu_p99_ms']:.2f} | {r['repeats']} |")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("--ranker", type=Path, default=REPO / "save" / "kbrec_dlrm_mm",
                   help="a dlrm_mm run dir (mmf_run config=projects/kbrec/dlrm_mm.yaml)")
    p.add_argument("--user", type=int, default=7)
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the serving target is per thread; "
                        "0 keeps torch's default)")
    p.add_argument("--backbone-repeats", type=int, default=5)
    p.add_argument("--no-backbones", dest="backbones", action="store_false",
                   help="skip the shape that runs the text / image backbones per request")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_rank.json")
