"""``python tools/bench.py rank``: one user against K candidates with the
late-interaction ranker of a trained ``dlrm_mm`` run.

Three serving shapes, from cheapest to dearest:
- ``cached items``: the candidates' item-side tokens were encoded once for
  the catalogue (``encode_items``); a request is ``score_candidates`` only;
- ``items per request``: ``encode_items`` runs for the K candidates on every
  request (the backbones' token matrices still come from the knowledge cache);
- ``backbones per request``: no knowledge cache at all; the text and image
  backbones read the K descriptions and photos on every request.
"""

import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]


def _times_ms(fn: Callable[[], object], repeats: int, warmup: int) -> List[float]:
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
    return out


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

    shapes = {
        "cached items": (lambda: model.score_candidates(user, cached), args.repeats),
        "items per request": (
            lambda: model.score_candidates(user, model.encode_items(candidates)), args.repeats),
    }
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
    for name, (fn, repeats) in shapes.items():
        times = _times_ms(fn, repeats, warmup=2)
        rows.append({"shape": name, "repeats": repeats,
                     "p50_ms": statistics.median(times), "p99_ms": _percentile(times, 0.99),
                     "times_ms": times})
    with torch.no_grad():
        agree = torch.allclose(model.score_candidates(user, cached),
                               model.score_candidates(user, model.encode_items(candidates)),
                               atol=1e-5)
    return {"benchmark": "rank", "results": rows, "scores_agree": bool(agree), "args": {
        "ranker": str(args.ranker), "user": args.user, "candidates": k,
        "repeats": args.repeats, "threads": torch.get_num_threads(),
        "modalities": list(model.modalities),
    }}


def rank_table(payload) -> str:
    a = payload["args"]
    lines = [
        f"dlrm_mm ({' + '.join(a['modalities']) or 'ids only'}), one user against "
        f"{a['candidates']} candidates, {a['threads']} threads; cached and per-request "
        f"scores agree: {payload['scores_agree']}",
        "",
        "| serving shape | p50 ms | p99 ms | repeats |",
        "|---|---:|---:|---:|",
    ]
    for r in payload["results"]:
        lines.append(f"| {r['shape']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['repeats']} |")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("--ranker", type=Path, default=REPO / "save" / "kbrec_dlrm_mm",
                   help="a dlrm_mm run dir (mmf_run config=projects/kbrec/dlrm_mm.yaml)")
    p.add_argument("--user", type=int, default=7)
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--backbone-repeats", type=int, default=5)
    p.add_argument("--no-backbones", dest="backbones", action="store_false",
                   help="skip the shape that runs the text / image backbones per request")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_rank.json")
