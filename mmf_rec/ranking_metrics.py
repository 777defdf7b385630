"""Top-K ranking metrics: pure functions, and their MMF wrappers.

The pure functions score ranked lists against relevant sets, one query per
row, so the retriever (full catalogue), the retrieve-then-rank pipeline and
the popularity baseline are all measured by the same code.

- ``ranked``: (Q, L) item ids, best first; ``-1`` pads a list shorter than L.
  An id may appear once per list (a repeated id would be counted twice).
- ``relevant``: one relevant item per query, (Q,) ints, or a sequence of Q
  collections of relevant ids (each non-empty: recall of a query with
  nothing to find is undefined).

Definitions (binary relevance, ranks from 1, positions beyond L count as
not retrieved):
    recall@k  = |top k  and  R| / |R|
    hr@k      = 1 if any of R is in the top k (a hit)
    ndcg@k    = DCG@k / IDCG@k, DCG@k = sum over relevant ranks r <= k of
                1 / log2(r + 1), IDCG@k = the DCG of a perfect list,
                sum_{r=1}^{min(|R|, k)} 1 / log2(r + 1)
    mrr       = 1 / (rank of the first relevant item), 0 if none in the list
                (so it is MRR at depth L).

``hit_rate_at_k`` can also pool queries by a group key (e.g. the user): a
group hits when any of its queries does.

The MMF wrappers (``recall@10``, ``ndcg@100``, ``hr@10``, ``mrr``, ...) read
what a retrieval model returns in evaluation: ``retrieval_topk`` (P, L),
``retrieval_target`` (P,) and ``retrieval_user`` (P,) for the P clicked rows
of the evaluated split. Every click is one query (the user's state at that
moment, against the whole catalogue; its clicked item is the relevant one).
Recall, NDCG and MRR are averaged over clicks and HR over users (a user
counts as hit when any of their clicks is). MMF 1.0.0rc10 drops metric
params from the config, so each K is its own registered name.
"""

from typing import Collection, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmf.common.registry import registry
from mmf.modules.metrics import BaseMetric

PAD = -1
# the K of each registered @K metric
REGISTERED_KS = (1, 5, 10, 20, 50, 100, 200, 500)

Relevant = Union[np.ndarray, Sequence[Collection[int]], torch.Tensor]


def _as_ranked(ranked) -> np.ndarray:
    if isinstance(ranked, torch.Tensor):
        ranked = ranked.detach().cpu().numpy()
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(
            f"ranked lists must be a 2-d (queries, list length) array, got shape {ranked.shape}"
        )
    if ranked.size and not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"ranked lists must hold integer item ids, got dtype {ranked.dtype}")
    return ranked.astype(np.int64, copy=False)


def _check_unique(ranked: np.ndarray) -> None:
    if ranked.shape[1] < 2:
        return
    ordered = np.sort(ranked, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PAD)
    if repeated.any():
        row = int(np.nonzero(repeated.any(axis=1))[0][0])
        item = int(ordered[row, 1:][repeated[row]][0])
        raise ValueError(f"ranked list {row} holds item {item} more than once")


def relevance(ranked, relevant: Relevant) -> Tuple[np.ndarray, np.ndarray]:
    """(Q, L) bool: is the item at each position relevant; and (Q,) |R|."""
    ranked = _as_ranked(ranked)
    _check_unique(ranked)
    queries = ranked.shape[0]
    if isinstance(relevant, torch.Tensor):
        relevant = relevant.detach().cpu().numpy()
    if isinstance(relevant, (list, tuple)) and all(
        isinstance(x, (int, np.integer)) for x in relevant
    ):
        relevant = np.asarray(relevant, dtype=np.int64)
    if isinstance(relevant, np.ndarray) and relevant.ndim == 1 and (
        relevant.size == 0 or np.issubdtype(relevant.dtype, np.integer)
    ):
        if len(relevant) != queries:
            raise ValueError(f"{queries} ranked lists but {len(relevant)} relevant items")
        if (relevant < 0).any():
            raise ValueError("relevant item ids must be >= 0 (-1 is the padding id)")
        hits = ranked == relevant.astype(np.int64)[:, None]
        return hits, np.ones(queries, dtype=np.int64)
    if len(relevant) != queries:
        raise ValueError(f"{queries} ranked lists but {len(relevant)} relevant sets")
    hits = np.zeros(ranked.shape, dtype=bool)
    sizes = np.zeros(queries, dtype=np.int64)
    for q, items in enumerate(relevant):
        items = np.unique(np.asarray(list(items), dtype=np.int64))
        if items.size == 0:
            raise ValueError(
                f"query {q} has no relevant item: recall and NDCG are undefined; "
                "leave such queries out"
            )
        if (items < 0).any():
            raise ValueError(f"query {q}: relevant item ids must be >= 0")
        hits[q] = np.isin(ranked[q], items)
        sizes[q] = items.size
    return hits, sizes


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _discounts(length: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, length + 2, dtype=np.float64))


def recall_at_k_per_query(ranked, relevant: Relevant, k: int) -> np.ndarray:
    k = _check_k(k)
    hits, sizes = relevance(ranked, relevant)
    return hits[:, :k].sum(axis=1) / sizes


def hit_at_k_per_query(ranked, relevant: Relevant, k: int) -> np.ndarray:
    k = _check_k(k)
    hits, _ = relevance(ranked, relevant)
    return hits[:, :k].any(axis=1).astype(np.float64)


def ndcg_at_k_per_query(ranked, relevant: Relevant, k: int) -> np.ndarray:
    k = _check_k(k)
    hits, sizes = relevance(ranked, relevant)
    top = hits[:, :k]
    discount = _discounts(k)
    dcg = (top * discount[: top.shape[1]]).sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(sizes, k) - 1]
    return dcg / ideal


def reciprocal_rank_per_query(ranked, relevant: Relevant) -> np.ndarray:
    hits, _ = relevance(ranked, relevant)
    found = hits.any(axis=1)
    first = hits.argmax(axis=1)
    return np.where(found, 1.0 / (first + 1.0), 0.0)


def _mean(values: np.ndarray) -> float:
    if values.size == 0:
        raise ValueError("no queries to average over")
    return float(values.mean())


def recall_at_k(ranked, relevant: Relevant, k: int) -> float:
    """Mean over queries of the share of relevant items in the top k."""
    return _mean(recall_at_k_per_query(ranked, relevant, k))


def ndcg_at_k(ranked, relevant: Relevant, k: int) -> float:
    """Mean over queries of binary-gain NDCG@k (1.0: every relevant item on top)."""
    return _mean(ndcg_at_k_per_query(ranked, relevant, k))


def mrr(ranked, relevant: Relevant) -> float:
    """Mean reciprocal rank of the first relevant item (0 when none is listed)."""
    return _mean(reciprocal_rank_per_query(ranked, relevant))


def hit_rate_at_k(ranked, relevant: Relevant, k: int, groups: Optional[Sequence] = None) -> float:
    """Share of queries (or of groups of queries, e.g. users) with a hit in the top k."""
    hit = hit_at_k_per_query(ranked, relevant, k)
    if groups is None:
        return _mean(hit)
    if isinstance(groups, torch.Tensor):
        groups = groups.detach().cpu().numpy()
    groups = np.asarray(groups)
    if groups.shape != hit.shape:
        raise ValueError(f"{len(hit)} queries but groups of shape {groups.shape}")
    _, group = np.unique(groups, return_inverse=True)
    any_hit = np.zeros(group.max() + 1 if group.size else 0)
    np.maximum.at(any_hit, group, hit)
    return _mean(any_hit)


def ranking_report(ranked, relevant: Relevant, ks: Sequence[int] = (10,),
                   groups: Optional[Sequence] = None) -> dict:
    """recall@k, ndcg@k and hr@k for each k, and mrr, as one dict."""
    out = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranked, relevant, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, relevant, k)
        out[f"hr@{k}"] = hit_rate_at_k(ranked, relevant, k, groups)
    out["mrr"] = mrr(ranked, relevant)
    out["queries"] = int(_as_ranked(ranked).shape[0])
    return out


# -- MMF metrics ------------------------------------------------------------------
TOPK_KEY = "retrieval_topk"
TARGET_KEY = "retrieval_target"
USER_KEY = "retrieval_user"


class _RetrievalMetric(BaseMetric):
    k: Optional[int] = None

    def __init__(self):
        super().__init__(self.metric_name)
        self.required_params = [TOPK_KEY, TARGET_KEY, USER_KEY]

    def _inputs(self, model_output):
        missing = [key for key in self.required_params if key not in model_output]
        if missing:
            raise KeyError(
                f"metric {self.name}: the model output lacks {missing}; ranking metrics "
                "need a retrieval model (e.g. two_tower) in evaluation mode"
            )
        ranked = model_output[TOPK_KEY]
        if self.k is not None and ranked.shape[1] < self.k:
            raise ValueError(
                f"metric {self.name}: the model returned only the top {ranked.shape[1]} "
                f"items per query; raise its eval_top_k to at least {self.k}"
            )
        return ranked, model_output[TARGET_KEY], model_output[USER_KEY]

    def calculate(self, sample_list, model_output, *args, **kwargs):
        ranked, target, user = self._inputs(model_output)
        if ranked.shape[0] == 0:  # no click in this split: undefined
            return torch.tensor(float("nan"))
        return torch.tensor(self.compute(ranked, target, user), dtype=torch.float)


def _register(name: str, compute, k: Optional[int] = None):
    cls = type(
        f"RetrievalMetric_{name}",
        (_RetrievalMetric,),
        {"metric_name": name, "k": k, "compute": staticmethod(compute),
         "__doc__": f"{name} of the top-K lists a retrieval model returns (one query per click)."},
    )
    registry.register_metric(name)(cls)
    return cls


for _k in REGISTERED_KS:
    _register(f"recall@{_k}", lambda r, t, u, k=_k: recall_at_k(r, t, k), _k)
    _register(f"ndcg@{_k}", lambda r, t, u, k=_k: ndcg_at_k(r, t, k), _k)
    _register(f"hr@{_k}", lambda r, t, u, k=_k: hit_rate_at_k(r, t, k, groups=u), _k)
_register("mrr", lambda r, t, u: mrr(r, t))


def sampled_candidates_metrics(scores: np.ndarray, k: int = 10) -> Dict[str, float]:
    """HR@k, NDCG@k, MRR of the sampled-negatives protocol (NCF): (users,
    candidates) scores with the held-out item in column 0.

    Rank = number of negatives scoring >= the held-out item (ties count
    against the model), as in ``../shared/data/ml-100k-loo``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    rank = (scores[:, 1:] >= scores[:, :1]).sum(axis=1)
    hit = rank < k
    return {f"hr@{k}": float(hit.mean()),
            f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(rank + 2), 0.0).mean()),
            "mrr": float((1.0 / (rank + 1)).mean()), "users": int(len(rank))}
