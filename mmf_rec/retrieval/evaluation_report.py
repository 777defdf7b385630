"""Evaluate retrieval, retrieve-then-rank and popularity on held-out clicks; write a JSON report.

    python tools/evaluate_retrieval.py --retriever save/kbrec_synthetic/two_tower \\
        --ranker save/kbrec_synthetic/dlrm_mm --out results/retrieval_eval.json

For the ``test`` split (warm items) and the ``cold`` split (items never seen
in training), every click is one query: the user's state at that moment
against the whole catalogue, the clicked item the relevant one (the protocol
of the registered ``recall@K`` metrics; see mmf_rec/ranking_metrics.py).
Reported: (a) the index's top ``--k-retrieve``, (b) those candidates ranked
by dlrm_mm's click probability, top ``--top`` (and by it times the item's
training exposure share), (c) the most-clicked training items. On the cold
split, (a) and (b) are also measured against the cold items alone
(``cold_catalogue``), which isolates what content does for new items from
the popularity they cannot have yet. On the embedded synthetic data the
report adds the oracle: items ranked by their true exposure weight times
the true click probability. ``--latency N`` times N single-user
``recommend`` calls (retrieve, rank, exclude seen, top N).

The command line behind ``python tools/evaluate_retrieval.py``, with the two
parts of its report that ``evaluate`` does not hold: the cold catalogue alone
and the synthetic oracle.
"""

import argparse
import json
import platform
import time
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--retriever", type=Path, required=True, help="two_tower run dir or checkpoint")
    p.add_argument("--index", type=Path, help="index directory; default <retriever>/index")
    p.add_argument("--ranker", type=Path, help="dlrm_mm run dir or checkpoint (optional)")
    p.add_argument("--out", type=Path, default=Path("results/retrieval_eval.json"))
    p.add_argument("--splits", nargs="+", default=["test", "cold"])
    p.add_argument("--k-retrieve", type=int, default=200)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--max-queries", type=int, help="a seeded sample of clicks per split")
    p.add_argument("--latency", type=int, default=200, metavar="N",
                   help="single-user recommend calls to time (0: skip)")
    p.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    p.add_argument("--no-oracle", action="store_true")
    p.add_argument("--data-dir", type=Path, help="replaces the runs' env.data_dir")
    return p


def cold_catalogue(recommender, data, split, k_final, max_queries):
    """Retrieval and ranking among the cold items only."""
    import numpy as np
    import torch

    from mmf_rec.ranking_metrics import ranking_report
    from mmf_rec.retrieval.evaluate import click_queries

    cold = np.nonzero(np.asarray(data.items["is_cold"], dtype=bool))[0]
    fields, targets, users = click_queries(data, split, max_queries)
    with torch.no_grad():
        queries = recommender.retriever.encode_users(fields)
        vectors = recommender.retriever.encode_catalogue(torch.from_numpy(cold))
    order = torch.argsort(queries @ vectors.t(), dim=1, descending=True).numpy()
    candidates = cold[order]
    out = {"items": int(len(cold)),
           "retrieval": ranking_report(candidates, targets, (10, 50), groups=users)}
    if recommender.ranker is not None:
        ranking = recommender.rank(fields, candidates)
        top = np.take_along_axis(candidates, np.argsort(-ranking, 1, kind="stable"), 1)
        out["ranker_alone"] = ranking_report(top, targets, (k_final, 50), groups=users)
    out["random"] = {"recall@10": round(10 / len(cold), 4)}
    return out


def oracle(data, splits, depth, max_queries):
    """The synthetic data's best rankings, from its true click model: items by
    exposure weight x true click probability, with the exposure of the test
    period (new items promoted: what happened) and of the training period
    (new items unseen: what could be known); and among the cold items alone,
    with and without their exposure."""
    import numpy as np

    from mmf_rec.data import synthetic as syn
    from mmf_rec.ranking_metrics import ranking_report
    from mmf_rec.retrieval.evaluate import click_queries

    generator = {k: v for k, v in data.manifest["generator"].items() if k != "generator_version"}
    config = syn.GeneratorConfig.from_mapping(generator)
    items, users = syn.make_items(config), syn.make_users(config)
    exposures = {  # make_interactions' weights
        "test_period_exposure": np.where(items.is_cold, items.popularity * config.cold_item_boost,
                                         items.popularity),
        "train_period_exposure": np.where(items.is_cold, 0.0, items.popularity),
    }
    everything = np.arange(len(items))
    cold = np.nonzero(items.is_cold)[0]
    out = {}
    for split in splits:
        _, targets, who = click_queries(data, split, max_queries)
        click = np.stack([syn.sigmoid(syn.click_logit(users, items, np.full(len(items), u),
                                                      everything)) for u in who])
        out[split] = {}
        for name, exposure in exposures.items():
            ranked = np.argsort(-exposure * click, axis=1, kind="stable")[:, :depth]
            out[split][name] = ranking_report(ranked, targets, (10, 100, depth), groups=who)
        if split == "cold":
            among = {"exposure_x_click": exposures["test_period_exposure"][cold] * click[:, cold],
                     "click_only": click[:, cold]}
            out["cold_catalogue"] = {
                name: ranking_report(cold[np.argsort(-score, axis=1, kind="stable")], targets,
                                     (10, 50), groups=who)
                for name, score in among.items()}
    return out


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    import faiss
    import numpy as np
    import torch

    from mmf_rec.retrieval import evaluate
    from mmf_rec.retrieval.pipeline import Recommender

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    index = args.index or (args.retriever if args.retriever.is_dir()
                           else args.retriever.parent) / "index"
    start = time.perf_counter()
    recommender = Recommender.from_runs(args.retriever, index, args.ranker,
                                        data_dir=args.data_dir)
    load_seconds = time.perf_counter() - start
    data = recommender.data
    report = evaluate.evaluate(recommender, data, args.splits, args.k_retrieve, args.top,
                               max_queries=args.max_queries)
    if "cold" in args.splits and data.items is not None and "is_cold" in data.items:
        report["cold"]["cold_catalogue"] = cold_catalogue(recommender, data, "cold", args.top,
                                                          args.max_queries)
    if not args.no_oracle and data.manifest.get("name") == "kbrec_synthetic":
        report["oracle"] = oracle(data, args.splits, args.k_retrieve, args.max_queries)
    if args.latency:
        users = np.random.default_rng(0).choice(recommender.users.num_users, args.latency)
        report["latency"] = evaluate.latency(recommender, users.tolist(), args.k_retrieve,
                                             args.top)
    report["setup"] = {
        "retriever": str(args.retriever), "ranker": str(args.ranker) if args.ranker else None,
        "index": str(index), "load_seconds": round(load_seconds, 2), "threads": args.threads,
        "python": platform.python_version(), "torch": torch.__version__,
        "faiss": faiss.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {split: {kind: {k: round(v, 4) for k, v in report[split][kind].items()
                              if k in ("recall@10", "ndcg@10")}
                       for kind in ("retrieval", "retrieve_then_rank",
                                    "retrieve_then_rank_x_exposure", "popularity")
                       if kind in report[split]}
               for split in args.splits}
    print(json.dumps(summary, indent=1))
    if "latency" in report:
        print("latency:", report["latency"])
    print(f"wrote {args.out}")
    return 0
