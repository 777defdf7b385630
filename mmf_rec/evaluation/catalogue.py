"""Full-catalogue ranking evaluation: one query per user of a period.

The headline protocol (docs/data.md, "Evaluation protocols"): every
user with an observed positive in the evaluation period is one query, ranked
against the whole catalogue minus the items that user already had as
observed positives before the period. The relevant items are the period's
observed positives, split into warm (seen in training) and cold items, which
are scored as two separate groups because models treat them differently.

Rules that the numbers rest on:

* Only *observed* rows count: a sampled negative (``sampled`` True) is never
  relevant and never excluded, whatever its label.
* A period positive the user already had before the period (a repeat) is
  dropped from the relevant set (it is excluded from the ranking, so it could
  never be found); ``Queries.repeats_dropped`` counts those (user, item) pairs.
* Ties are broken by a fixed, seeded random permutation of the items, never
  by item id: an id order would favour whatever the id assignment correlates
  with (e.g. popular items first). A random order is fair in expectation, and
  fixing it by ``seed`` makes the numbers reproducible.
* Recall, NDCG and HR come from ``mmf_rec.ranking_metrics`` on each user's top
  max(K) items; MRR uses the rank of the first relevant item over the whole
  catalogue (not cut at max(K)), counted from the scores directly.
"""

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from mmf_rec.data import prepared
from mmf_rec.data.prepared import DENSE_COLUMN, TIMESTAMP_COLUMN, PreparedData
from mmf_rec.ranking_metrics import PAD, ranking_report

logger = logging.getLogger(__name__)

SAMPLED_COLUMN = getattr(prepared, "SAMPLED_COLUMN", "sampled")
# observed positives before the period (excluded) and in it (relevant)
PAST_SPLITS = {"val": ("train",), "test": ("train", "val")}
PERIOD_SPLITS = {"val": ("val",), "test": ("test", "cold")}
GROUPS = ("warm", "cold")
# scores materialised at once while ranking: users per chunk x items
CHUNK_ELEMENTS = 1 << 22


@dataclass
class Queries:
    """One query per user of an evaluation period.

    ``profile`` is the (U, num_items) binary CSR matrix of the ``exclude``
    items: what a baseline knows of each user when it scores the period.
    """

    split: str
    users: np.ndarray
    fields: Dict[str, torch.Tensor]
    time: np.ndarray
    relevant_warm: List[np.ndarray]
    relevant_cold: List[np.ndarray]
    exclude: List[np.ndarray]
    profile: sp.csr_matrix
    num_items: int
    repeats_dropped: int

    def __len__(self) -> int:
        return len(self.users)

    def relevant(self, group: str) -> List[np.ndarray]:
        if group not in GROUPS:
            raise ValueError(f"group must be one of {list(GROUPS)}, got {group!r}")
        return self.relevant_warm if group == "warm" else self.relevant_cold


# -- building queries ------------------------------------------------------------
def user_feature(data: PreparedData) -> str:
    return data.manifest.get("user_feature", "user_id")


def item_feature(data: PreparedData) -> str:
    return data.item_feature or "item_id"


def num_items(data: PreparedData) -> int:
    if data.items is not None:
        return int(data.items.rows)
    return int(data.schema.sparse_feature(item_feature(data)).cardinality)


def cold_items(data: PreparedData) -> np.ndarray:
    """(num_items,) bool: items with no observed training interaction."""
    if data.items is not None and "is_cold" in data.items:
        return np.asarray(data.items["is_cold"], dtype=bool)
    from mmf_rec.data.protocol import seen_in_training

    return ~seen_in_training(data)


def _first_column(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.reshape(len(array), -1)[:, 0].astype(np.int64)


def observed_positives(data: PreparedData, split: str) -> Dict[str, np.ndarray]:
    """Rows, users, items and times of a split's observed positives
    (label > 0.5 and not sampled)."""
    table = data.split(split)
    label = np.asarray(table[data.schema.label]).reshape(-1)
    sampled = np.asarray(table[SAMPLED_COLUMN], dtype=bool).reshape(-1)
    rows = np.nonzero((label > 0.5) & ~sampled)[0]
    items = _first_column(table[item_feature(data)])[rows]
    n = num_items(data)
    if items.size and (items.min() < 0 or items.max() >= n):
        raise ValueError(
            f"split '{split}': item ids must lie in [0, {n}) on observed positives, "
            f"found {int(items.min())}..{int(items.max())}")
    times = (np.asarray(table[TIMESTAMP_COLUMN]).reshape(-1)[rows].astype(np.int64)
             if TIMESTAMP_COLUMN in table else np.zeros(len(rows), np.int64))
    return {"row": rows, "user": _first_column(table[user_feature(data)])[rows],
            "item": items, "time": times}


def _split_by_user(keys: np.ndarray, n_users: int, n_items: int) -> List[np.ndarray]:
    """Sorted unique keys user_index * n_items + item -> per-user item arrays."""
    owner = keys // n_items
    bounds = np.searchsorted(owner, np.arange(n_users + 1))
    items = keys % n_items
    return [items[bounds[u]:bounds[u + 1]] for u in range(n_users)]


def user_fields(data: PreparedData, split: str, rows: np.ndarray) -> Dict[str, torch.Tensor]:
    """The user-side model inputs of ``rows`` of a split: ``dense`` and
    ``sparse_<name>`` for every sparse feature that is not item-side."""
    table = data.split(split)
    fields = {}
    if data.schema.dense:
        fields[DENSE_COLUMN] = torch.from_numpy(np.asarray(table[DENSE_COLUMN])[rows])
    for f in data.schema.sparse:
        if f.side != "item":
            fields[f"sparse_{f.name}"] = torch.from_numpy(np.asarray(table[f.name])[rows])
    return fields


def _user_fields(data: PreparedData, splits: Sequence[str], first: Dict[str, np.ndarray],
                 n_users: int, positions: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    """Model inputs of the chosen row of each user, gathered across splits."""
    fields: Dict[str, torch.Tensor] = {}
    for split in splits:
        for key, values in user_fields(data, split, first[split]).items():
            if key not in fields:
                fields[key] = torch.zeros((n_users, *values.shape[1:]), dtype=values.dtype)
            fields[key][torch.from_numpy(positions[split])] = values
    return fields


def build_queries(data: PreparedData, split: str) -> Queries:
    """The queries of period ``split``: "val" (rows of split val) or "test"
    (rows of test and, when present, cold), excluding positives of the
    earlier splits (train for val; train and val for test)."""
    if split not in PERIOD_SPLITS:
        raise ValueError(f"split must be one of {list(PERIOD_SPLITS)}, got {split!r}")
    n = num_items(data)
    period = [s for s in PERIOD_SPLITS[split] if s in data.split_names or s == split]
    now = [observed_positives(data, s) for s in period]
    users = np.unique(np.concatenate([p["user"] for p in now]))
    n_users = len(users)

    # each user's earliest period positive (ties: split order, then row order)
    uidx = np.concatenate([np.searchsorted(users, p["user"]) for p in now])
    origin = np.concatenate([np.full(len(p["row"]), i) for i, p in enumerate(now)])
    rows = np.concatenate([p["row"] for p in now])
    times = np.concatenate([p["time"] for p in now])
    order = np.lexsort((rows, origin, times, uidx))
    head = order[np.r_[True, uidx[order][1:] != uidx[order][:-1]]] if order.size else order
    first = {s: rows[head][origin[head] == i] for i, s in enumerate(period)}
    positions = {s: uidx[head][origin[head] == i] for i, s in enumerate(period)}
    fields = _user_fields(data, period, first, n_users, positions)

    # excluded: observed positives before the period, of these users only
    past_keys = []
    for s in PAST_SPLITS[split]:
        past = observed_positives(data, s)
        known = np.isin(past["user"], users)
        past_keys.append(np.searchsorted(users, past["user"][known]) * n + past["item"][known])
    past_keys = np.unique(np.concatenate(past_keys))
    now_keys = np.unique(uidx * n + np.concatenate([p["item"] for p in now]))
    repeat = np.isin(now_keys, past_keys)
    relevant = now_keys[~repeat]
    cold = cold_items(data)
    if len(cold) != n:
        raise ValueError(f"items column 'is_cold' has {len(cold)} rows, expected {n}")
    is_cold = cold[relevant % n]
    exclude = _split_by_user(past_keys, n_users, n)
    profile = sp.csr_matrix(
        (np.ones(len(past_keys), np.float32), (past_keys // n, past_keys % n)),
        shape=(n_users, n))
    queries = Queries(
        split=split, users=users.astype(np.int64), fields=fields,
        time=times[head].astype(np.int64),
        relevant_warm=_split_by_user(relevant[~is_cold], n_users, n),
        relevant_cold=_split_by_user(relevant[is_cold], n_users, n),
        exclude=exclude, profile=profile, num_items=n,
        repeats_dropped=int(repeat.sum()))
    logger.info("%s queries: %d users, %d warm and %d cold relevant pairs, %d repeats "
                "dropped", split, n_users, int((~is_cold).sum()), int(is_cold.sum()),
                queries.repeats_dropped)
    return queries


# -- ranking -----------------------------------------------------------------------
def tie_break_order(num_items: int, seed: int) -> np.ndarray:
    """(num_items,) position of each item in a seeded random permutation: among
    equal scores, the item with the smaller position ranks first."""
    permutation = np.random.default_rng(seed).permutation(num_items)
    position = np.empty(num_items, dtype=np.int64)
    position[permutation] = np.arange(num_items)
    return position


def top_k(scores: np.ndarray, k: int, permutation: np.ndarray,
          excluded: np.ndarray) -> np.ndarray:
    """(rows, k) item ids of the k best scores per row, best first, ties by
    ``permutation`` order. ``scores`` and ``excluded`` have their columns
    already permuted (column j is item permutation[j]); excluded items must
    score -inf, and become PAD where they would fill the list."""
    rows, n = scores.shape
    k = min(k, n)
    if k == 0:
        return np.zeros((rows, 0), np.int64)
    threshold = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]
    above = scores > threshold
    level = scores == threshold
    need = k - above.sum(axis=1, keepdims=True)
    take = above | (level & (np.cumsum(level, axis=1) <= need))
    columns = np.nonzero(take)[1].reshape(rows, k)  # ascending permuted position
    picked = np.take_along_axis(scores, columns, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    columns = np.take_along_axis(columns, order, axis=1)
    ranked = permutation[columns]
    ranked[np.take_along_axis(excluded, columns, axis=1)] = PAD
    return ranked


def first_relevant_rank(scores: np.ndarray, relevant: Sequence[np.ndarray],
                        position: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """(rows,) 1-based full-catalogue rank of each row's best relevant item (0
    for a row without relevant items): the items scoring above it, or equal
    and earlier in the tie-break order, plus one. Excluded items never count,
    even against a relevant item scored -inf."""
    rows, _ = scores.shape
    best_score = np.full(rows, np.nan)
    best_position = np.zeros(rows, np.int64)
    for r, items in enumerate(relevant):
        if len(items):
            values = scores[r, items]
            winner = np.lexsort((position[items], -values))[0]
            best_score[r], best_position[r] = values[winner], position[items[winner]]
    has = ~np.isnan(best_score)
    above = scores > best_score[:, None]
    tied = (scores == best_score[:, None]) & (position[None, :] < best_position[:, None])
    rank = ((above | tied) & ~excluded).sum(axis=1) + 1
    return np.where(has, rank, 0)


def _check_scores(scores: np.ndarray, queries: Queries) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores)
    expected = (len(queries), queries.num_items)
    if scores.shape != expected:
        raise ValueError(f"scores must have shape (users, items) = {expected}, "
                         f"got {scores.shape}")
    return scores


def _group_report(ranked: np.ndarray, ranks: np.ndarray, relevant: List[np.ndarray],
                  ks: Sequence[int]) -> Dict[str, Optional[float]]:
    users = np.array([len(items) > 0 for items in relevant], dtype=bool)
    count = int(users.sum())
    keys = [f"{name}@{k}" for k in ks for name in ("recall", "ndcg", "hr")] + ["mrr"]
    if count == 0:
        return {**{key: None for key in keys}, "users": 0}
    report = ranking_report(ranked[users], [relevant[u] for u in np.nonzero(users)[0]], ks)
    report.pop("queries")
    report["mrr"] = float((1.0 / ranks[users]).mean())
    return {**{key: report[key] for key in keys}, "users": count}


def reserve_new_items(scores: np.ndarray, queries: Queries, is_new: np.ndarray,
                      share: float, seed: int = 0) -> np.ndarray:
    """Scores whose order interleaves two lists: known items by their score and
    new items (``is_new``) by theirs, so that about ``share`` of every prefix
    of each user's ranking is new items (the candidate reservation of
    ``Recommender(new_item_share=...)``, applied at every depth). A user's
    excluded items are taken out first; ties go by the seeded order of
    ``tie_break_order``. ``share`` 0 returns the scores unchanged."""
    scores = _check_scores(scores, queries)
    if not 0.0 <= float(share) < 1.0:
        raise ValueError(f"share must be in [0, 1), got {share}")
    is_new = np.asarray(is_new, dtype=bool)
    if is_new.shape != (queries.num_items,):
        raise ValueError(f"is_new must have shape ({queries.num_items},), got {is_new.shape}")
    if share == 0 or not is_new.any() or is_new.all():
        return scores
    position = tie_break_order(queries.num_items, seed)
    out = np.empty(scores.shape, dtype=np.float64)
    for mask, stride in ((is_new, share), (~is_new, 1.0 - share)):
        columns = np.flatnonzero(mask)
        columns = columns[np.argsort(position[columns])]  # ties: seeded order
        part = np.array(scores[:, columns], dtype=np.float64)
        for r in range(len(queries)):
            part[r, np.isin(columns, queries.exclude[r])] = -np.inf
        order = np.argsort(-part, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(len(columns))[None, :].repeat(len(part), 0), 1)
        out[:, columns] = -(rank + 0.5) / stride
    return out


def evaluate_scores(scores: np.ndarray, queries: Queries,
                    ks: Sequence[int] = (10, 20, 50, 100), seed: int = 0
                    ) -> Dict[str, Dict[str, Optional[float]]]:
    """Full-catalogue metrics of (U, num_items) scores (higher is better).

    Returns ``{"warm": {...}, "cold": {...}}``, each with recall@K, ndcg@K,
    hr@K for every K, mrr, and ``users``: the users with at least one relevant
    item of that group, over whom the metrics average (None when there are
    none). A user's ``exclude`` items are never ranked.
    """
    scores = _check_scores(scores, queries)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    n = queries.num_items
    position = tie_break_order(n, seed)
    permutation = np.argsort(position)
    depth = min(ks[-1], n)
    ranked = np.full((len(queries), depth), PAD, np.int64)
    ranks = {group: np.zeros(len(queries), np.int64) for group in GROUPS}
    step = max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, len(queries), step):
        stop = min(start + step, len(queries))
        chunk = np.array(scores[start:stop], dtype=np.float64)
        if np.isnan(chunk).any():
            row = start + int(np.nonzero(np.isnan(chunk).any(axis=1))[0][0])
            raise ValueError(f"scores of user {int(queries.users[row])} (row {row}) hold NaN")
        # -inf is reserved for excluded items: a model's own -inf ranks above them
        chunk[chunk == -np.inf] = np.finfo(np.float64).min
        excluded = np.zeros(chunk.shape, dtype=bool)
        for r in range(start, stop):
            excluded[r - start, queries.exclude[r]] = True
        chunk[excluded] = -np.inf
        ranked[start:stop] = top_k(chunk[:, permutation], depth, permutation,
                                   excluded[:, permutation])
        for group in GROUPS:
            ranks[group][start:stop] = first_relevant_rank(
                chunk, queries.relevant(group)[start:stop], position, excluded)
    return {group: _group_report(ranked, ranks[group], queries.relevant(group), ks)
            for group in GROUPS}
