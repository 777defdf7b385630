"""Offline evaluation of retrieval, retrieve-then-rank, and a popularity baseline.

The protocol is the one of the registered ranking metrics
(``mmf_rec.ranking_metrics``), so the numbers line up with a run's
metrics.json: every click (positive row) of a split is one query, made of the
user's state at that moment (features and the history before it), ranked
against the whole catalogue; the clicked item is the relevant one. Recall,
NDCG and MRR average over clicks, HR over users. Items a user clicked before
stay candidates here (repeat clicks are part of the data), unlike the
``exclude_seen`` default of serving.

Splits: ``test`` holds the warm items of the last period, ``cold`` the items
never seen in training.
"""

import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mmf_rec.data.prepared import PreparedData
from mmf_rec.evaluation.catalogue import user_fields
from mmf_rec.ranking_metrics import ranking_report


def click_queries(data: PreparedData, split: str, max_queries: Optional[int] = None,
                  seed: int = 1):
    """The user-side fields, clicked item and user of every click of a split
    (a seeded sample of ``max_queries`` of them when given)."""
    table = data.split(split)
    rows = np.nonzero(np.asarray(table[data.schema.label]) > 0.5)[0]
    if max_queries is not None and len(rows) > max_queries:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_queries, replace=False))
    fields = user_fields(data, split, rows)
    items = np.asarray(table[data.item_feature][:, 0])[rows]
    user_feature = next((f.name for f in data.schema.sparse if f.side == "user"), None)
    users = np.asarray(table[user_feature][:, 0])[rows] if user_feature else rows
    return fields, items.astype(np.int64), users.astype(np.int64)


def popularity_ranking(data: PreparedData, depth: int) -> np.ndarray:
    """The ``depth`` items with most training clicks, most first (ties by id)."""
    train = data.split("train")
    clicked = np.asarray(train[data.schema.label]) > 0.5
    counts = np.bincount(np.asarray(train[data.item_feature][:, 0])[clicked],
                         minlength=data.items.rows)
    return np.argsort(-counts, kind="stable")[:depth].astype(np.int64)


def _slice(fields: Dict[str, torch.Tensor], start: int, stop: int) -> Dict[str, torch.Tensor]:
    return {key: value[start:stop] for key, value in fields.items()}


def evaluate(recommender, data: PreparedData, splits: Sequence[str] = ("test", "cold"),
             k_retrieve: int = 200, k_final: int = 10, ks: Sequence[int] = (10, 50, 100, 200),
             max_queries: Optional[int] = None, batch_size: int = 256) -> Dict:
    """Per split: retrieval alone (index top ``k_retrieve``), retrieval then
    ranking (top ``k_final`` of the candidates by the ranker's click
    probability, and by it times the exposure prior) and popularity."""
    report = {"protocol": "one query per click; full catalogue; seen items kept",
              "k_retrieve": k_retrieve, "k_final": k_final,
              "index": recommender.index.meta.index_type}
    popular = popularity_ranking(data, max(k_retrieve, max(ks)))
    for split in splits:
        fields, targets, users = click_queries(data, split, max_queries)
        retrieved: List[np.ndarray] = []
        final: Dict[str, List[np.ndarray]] = {"ctr": [], "ctr_x_exposure": []}
        started = time.perf_counter()
        for start in tqdm(range(0, len(targets), batch_size), desc=f"evaluating {split}",
                          unit="batch"):
            chunk = _slice(fields, start, start + batch_size)
            scores, candidates = recommender.retrieve(chunk, k_retrieve)
            retrieved.append(candidates)
            if recommender.ranker is not None:
                logits = recommender.rank(chunk, candidates)
                for kind, lists in final.items():
                    key = recommender.final_scores(logits, candidates, kind)
                    order = np.argsort(-key, axis=1, kind="stable")[:, :k_final]
                    lists.append(np.take_along_axis(candidates, order, 1))
        seconds = time.perf_counter() - started
        retrieved = np.concatenate(retrieved)
        entry = {
            "queries": int(len(targets)),
            "users": int(len(np.unique(users))),
            "retrieval": ranking_report(retrieved, targets, [k for k in ks if k <= k_retrieve],
                                        groups=users),
            "popularity": ranking_report(np.broadcast_to(popular, (len(targets), len(popular))),
                                         targets, ks, groups=users),
            "seconds": round(seconds, 2),
        }
        if recommender.ranker is not None:
            # ordered by the ranker's click probability, and by it times exposure
            entry["retrieve_then_rank"] = ranking_report(np.concatenate(final["ctr"]), targets,
                                                         [k_final], groups=users)
            entry["retrieve_then_rank_x_exposure"] = ranking_report(
                np.concatenate(final["ctr_x_exposure"]), targets, [k_final], groups=users)
        report[split] = entry
    return report


def latency(recommender, users: Sequence[int], k_retrieve: int = 200, k_final: int = 10,
            warmup: int = 5) -> Dict:
    """Milliseconds of one ``recommend`` call per user (retrieve, rank, top
    k_final, exclude seen): p50, p90, p99, mean."""
    users = list(users)
    for user in users[:warmup]:
        recommender.recommend([user], k_retrieve, k_final)
    times = []
    for user in users:
        start = time.perf_counter()
        recommender.recommend([user], k_retrieve, k_final)
        times.append((time.perf_counter() - start) * 1000.0)
    times = np.asarray(times)
    return {"calls": len(times), "p50_ms": round(float(np.percentile(times, 50)), 2),
            "p90_ms": round(float(np.percentile(times, 90)), 2),
            "p99_ms": round(float(np.percentile(times, 99)), 2),
            "mean_ms": round(float(times.mean()), 2),
            "torch_threads": torch.get_num_threads()}
