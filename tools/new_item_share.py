"""What reserving a share of each list for new items does, per seed, from a
benchmark's trained runs (no training).

    python tools/new_item_share.py results/ml100k-time --model two_tower \
        --shares 0,0.1,0.2 --out docs/results/new_item_share-ml100k-time.json

Reads ``<suite dir>/data/<suite>`` and every ``<suite dir>/runs/<model>/seed*``
that ``tools/benchmark.py`` wrote, scores the test period's queries against
the whole catalogue, and evaluates the rankings with each share of every
prefix given to new items (``catalogue.reserve_new_items``, the candidate
reservation of ``Recommender(new_item_share=...)``). Same evaluator and
seeds as the benchmark: share 0 reproduces its numbers.
"""

import argparse
import datetime
import json
import logging
import sys
from pathlib import Path


METRICS = ("recall@10", "ndcg@10", "recall@50")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/new_item_share.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("suite_dir", type=Path, help="a tools/benchmark.py --out directory")
    p.add_argument("--model", default="two_tower", help="the model whose runs to read")
    p.add_argument("--shares", default="0,0.1,0.2", help="comma-separated shares in [0, 1)")
    p.add_argument("--out", type=Path, required=True, help="results JSON to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        shares = [float(x) for x in args.shares.split(",")]
    except ValueError:
        p.error(f"--shares takes numbers, got {args.shares!r}")
    suite = args.suite_dir.name
    data_dir = args.suite_dir / "data" / suite
    runs = sorted((args.suite_dir / "runs" / args.model).glob("seed*"))
    if not data_dir.is_dir() or not runs:
        p.error(f"{args.suite_dir}: expected data/{suite}/ and runs/{args.model}/seed*/ "
                "(run tools/benchmark.py --out there first)")

    import numpy as np

    from mmf_rec import benchmark
    from mmf_rec.data import protocol
    from mmf_rec.data.prepared import load_prepared
    from mmf_rec.evaluation.catalogue import build_queries, evaluate_scores, reserve_new_items
    from mmf_rec.evaluation.models import CatalogueScorer

    data = load_prepared(data_dir, verify_checksums=False)
    queries = build_queries(data, "test")
    is_new = ~protocol.seen_in_training(data)
    per_seed = {}
    for run in runs:
        seed = int(run.name.removeprefix("seed"))
        scores = CatalogueScorer.from_run(run, data_dir).scores(queries.fields)
        per_seed[seed] = {}
        for share in shares:
            report = evaluate_scores(reserve_new_items(scores, queries, is_new, share, seed),
                                     queries, benchmark.KS, seed=seed)
            per_seed[seed][str(share)] = {group: {m: report[group][m] for m in METRICS}
                                          for group in ("warm", "cold")}
            logging.info("%s seed %d share %.2f: %s", args.model, seed, share,
                         per_seed[seed][str(share)])
    summary = {}
    for share in shares:
        summary[str(share)] = {}
        for group in ("warm", "cold"):
            values = {m: [per_seed[s][str(share)][group][m] for s in per_seed] for m in METRICS}
            summary[str(share)][group] = {
                m: {"mean": float(np.mean(v)), "std": float(np.std(v))}
                for m, v in values.items() if all(x is not None for x in v)}
    results = {
        "what": "full-catalogue test metrics with a share of every ranking prefix reserved "
                "for new items (catalogue.reserve_new_items)",
        "suite": suite, "model": args.model, "shares": shares, "seeds": sorted(per_seed),
        "command": ["tools/new_item_share.py", *(sys.argv[1:] if argv is None else argv)],
        "git": benchmark.git_state(), "machine": benchmark.machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "std": benchmark.STD_NOTE, "per_seed": per_seed, "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    for share in shares:
        cells = [f"{group} {m} {summary[str(share)][group][m]['mean']:.4f} ± "
                 f"{summary[str(share)][group][m]['std']:.4f}"
                 for group in ("warm", "cold") for m in METRICS
                 if m in summary[str(share)][group]]
        print(f"share {share}: " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
