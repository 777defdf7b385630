"""What the HTTP service computes, as plain blocking functions: one batched
retrieve-then-rank call for many requests, item and user records, and the
optional explanation of one (user, item) pair.

Built on the stages of :class:`mmf_rec.retrieval.pipeline.Recommender`
(``users``, ``retrieve``, ``rank``, ``final_scores``), so a known user's top
k is exactly ``Recommender.recommend``'s (tested). On top of it each answer
carries every candidate's retrieval rank, so the page can show which items
retrieval brought near the top but ranking pushed out ("demoted"). A new
user, with no id, is scored from the features and history the request gives
(the features-only fallback fills in the rest), through the same towers.

Ranking runs on the fused path (``mmf_rec.serving.fused``): the same logits
as the ranker's own ``score`` within 1e-5 in fp32, in a few batched ops.
Every item carries ``new``: it has no observed training interaction
(``Recommender.is_new``, from ``mmf_rec.data.protocol.seen_in_training``),
so its id says nothing and its content and attributes carry it. A batch that fails is run again one
request at a time, so a request that breaks it fails alone.
"""

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from mmf_rec.data.prepared import DENSE_COLUMN
from mmf_rec.schema import PAD_ID

SNIPPET = 80
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
logger = logging.getLogger("mmf_rec.serving")


class RequestError(ValueError):
    """A request the service refuses: ``status`` is the HTTP status (4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class RecRequest:
    """One recommendation request: a known user id, or a new user's fields
    (from :meth:`Engine.new_user_fields`)."""

    user: Optional[int] = None
    fields: Optional[Dict[str, torch.Tensor]] = None
    history: Sequence[int] = ()
    k: int = 10
    exclude_seen: bool = True
    meta: Dict[str, Any] = field(default_factory=dict)


class Engine:
    def __init__(self, recommender, k_retrieve: int = 200, max_k: int = 100,
                 image_route: str = "/images/", precision: str = "fp32"):
        self.recommender = recommender
        self.data = recommender.data
        if self.data is None:
            raise ValueError("the service needs the prepared data (Recommender(data=...))")
        self.users = recommender.users
        self.k_retrieve = min(int(k_retrieve), len(recommender.index))
        self.max_k = min(int(max_k), self.k_retrieve)
        self.image_route = image_route
        schema = self.data.schema
        self.num_items = int(self.data.items.rows)
        self.descriptions = list(recommender.descriptions or self.data.descriptions())
        self.item_columns = {name: values for name, values in self.data.items.columns.items()
                             if name not in ("item_id", "has_image")}
        if "has_image" in self.data.items:
            self.has_image = np.asarray(self.data.items["has_image"], dtype=bool).copy()
        else:
            self.has_image = np.array([self.data.image_path(i).is_file()
                                       for i in range(self.num_items)])
        self.dense_names = list(schema.dense_names)
        hist = self.users.history_feature
        self.categorical = {f.name: f.cardinality for f in self.users.sparse_features
                            if f.name not in (self.users.user_feature, hist)}
        self.history_len = self.users.history_len if hist is not None else 0
        self.dense_bounds = _dense_bounds(self.users.dense[self.users.known]
                                          if self.users.known.any() else self.users.dense)
        self.external_ids = _external_user_ids(self.data.root)
        self.new_items = recommender.is_new
        # the model is used from one thread at a time (batches and explanations)
        self.lock = threading.Lock()
        self.final_score = getattr(recommender, "final_score", "ctr")
        self.precision = precision
        self.fused = None
        if recommender.ranker is not None:
            self.fused = _fused_ranker(recommender.ranker, precision)

    @classmethod
    def from_runs(cls, retriever, index, ranker=None, data_dir=None, final_score="ctr",
                  **kwargs) -> "Engine":
        """Loads the runs; ``kwargs`` are the engine's (k_retrieve, max_k, precision)."""
        from mmf_rec.retrieval.pipeline import Recommender

        return cls(Recommender.from_runs(retriever, index, ranker, data_dir=data_dir,
                                         final_score=final_score), **kwargs)

    # -- users ----------------------------------------------------------------------------
    @property
    def num_users(self) -> int:
        return int(self.users.num_users)

    def check_user(self, user: int) -> None:
        if not self.users.is_known(user):
            raise RequestError(
                f"unknown user {user}: known users have ids in [0, {self.num_users}) and at "
                "least one interaction; POST /recommend with features for a new user", 404)

    def history(self, user: int) -> List[int]:
        """The user's last clicked items, most recent first."""
        if self.history_len == 0 or not self.users.is_known(user):
            return []
        row = self.users.sparse[self.users.history_feature][user]
        return [int(i) for i in row if i != PAD_ID]

    def user(self, user: int) -> Dict[str, Any]:
        self.check_user(user)
        out = {
            "user": user,
            "external_id": (None if self.external_ids is None else self.external_ids[user]),
            "features": {**{name: float(v) for name, v in
                            zip(self.dense_names, self.users.dense[user])},
                         **{name: int(self.users.sparse[name][user][0])
                            for name in self.categorical}},
            "history": [self.item(i, full=False) for i in self.history(user)],
            "clicked": int(len(self.users.seen(user))),
        }
        return out

    def example_users(self, count: int = 50) -> List[Dict[str, Any]]:
        """Known users to pick from, those with the most pictured history first."""
        known = np.flatnonzero(self.users.known)
        if self.history_len:
            history = self.users.sparse[self.users.history_feature][known]
            pictured = np.where(history >= 0, self.has_image[np.clip(history, 0, None)], False)
            length = (history >= 0).sum(1)
            order = np.lexsort((known, -length, -pictured.sum(1)))
            known = known[order]
        return [{"user": int(u), "history": len(self.history(int(u)))} for u in known[:count]]

    def schema(self) -> Dict[str, Any]:
        """What a new user's POST may give."""
        return {
            "dense": {name: float(v) for name, v in zip(self.dense_names, self.users.mean_dense)},
            "categorical": dict(self.categorical),
            "history_len": self.history_len,
            "num_items": self.num_items,
            "max_k": self.max_k,
            "k_retrieve": self.k_retrieve,
        }

    def new_user_fields(self, features: Mapping[str, Any],
                        history: Sequence[Any] = ()) -> Dict[str, torch.Tensor]:
        """One row of user-side fields for a user with no id: the given dense
        values (others: the mean), categorical ids (others: unknown) and
        history (item ids, most recent first)."""
        if not isinstance(features, Mapping):
            raise RequestError("'features' must be an object of feature name -> value")
        unknown = sorted(set(features) - set(self.dense_names) - set(self.categorical))
        if unknown:
            raise RequestError(f"unknown features {unknown}; a new user may give "
                               f"{self.dense_names + sorted(self.categorical)}")
        fields = {}
        if self.users.has_dense:
            dense = self.users.mean_dense.astype(np.float32).copy()
            for j, name in enumerate(self.dense_names):
                if name in features and features[name] not in (None, ""):
                    value = _number(features[name], name)
                    low, high = self.dense_bounds[j]
                    if not low <= value <= high:
                        raise RequestError(
                            f"feature '{name}' must be in [{low:.4g}, {high:.4g}] (the known "
                            f"users' range, widened by its width on each side), got {value:.6g}")
                    dense[j] = value
            fields[DENSE_COLUMN] = torch.from_numpy(dense[None])
        for name, values in self.users.sparse.items():
            fields[f"sparse_{name}"] = torch.full((1, values.shape[1]), PAD_ID, dtype=torch.long)
        for name, cardinality in self.categorical.items():
            if name in features and features[name] not in (None, ""):
                value = _integer(features[name], name)
                if not 0 <= value < cardinality:
                    raise RequestError(f"feature '{name}' must be in [0, {cardinality}), "
                                       f"got {value}")
                fields[f"sparse_{name}"][0, 0] = value
        items = self.check_items(history, "history")
        if items and self.history_len == 0:
            raise RequestError("this retriever reads no history")
        if len(items) > self.history_len:
            raise RequestError(f"history holds at most {self.history_len} items, got {len(items)}")
        if items:
            fields[f"sparse_{self.users.history_feature}"][0, :len(items)] = torch.tensor(items)
        return fields

    def check_items(self, items: Any, what: str = "items") -> List[int]:
        if items is None:
            return []
        if isinstance(items, str):
            items = [x for x in items.replace(" ", ",").split(",") if x]
        if not isinstance(items, (list, tuple)):
            raise RequestError(f"'{what}' must be a list of item ids")
        out = [_integer(i, what) for i in items]
        bad = [i for i in out if not 0 <= i < self.num_items]
        if bad:
            raise RequestError(f"{what}: item ids {bad[:5]} are outside [0, {self.num_items})")
        return out

    def check_k(self, k: Any) -> int:
        k = _integer(k, "k")
        if not 1 <= k <= self.max_k:
            raise RequestError(f"k must be in [1, {self.max_k}], got {k}")
        return k

    # -- items ----------------------------------------------------------------------------
    def check_item(self, item: int) -> None:
        if not 0 <= item < self.num_items:
            raise RequestError(f"unknown item {item}: items have ids in [0, {self.num_items})",
                               404)

    def item(self, item: int, full: bool = True) -> Dict[str, Any]:
        self.check_item(item)
        text = str(self.descriptions[item]) if item < len(self.descriptions) else ""
        out = {"item_id": item,
               "description": text if full or len(text) <= SNIPPET else text[:SNIPPET - 3] + "...",
               "image_url": f"{self.image_route}{item}" if self.has_image[item] else None,
               "new": bool(self.new_items[item])}
        if full:
            out["attributes"] = {name: _plain(values[item]) for name, values
                                 in self.item_columns.items()}
        return out

    def image(self, item: int):
        """(path, content type) of the item's image, or a 404."""
        self.check_item(item)
        path = self.data.image_path(item)
        if not path.is_file():
            raise RequestError(f"item {item} has no image", 404)
        suffix = path.suffix.lower()
        kind = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".webp": "image/webp", ".gif": "image/gif"}.get(suffix, "application/octet-stream")
        return path, kind

    # -- recommendations ------------------------------------------------------------------
    def recommend_batch(self, requests: Sequence[RecRequest]) -> List[Any]:
        """One retrieve and one rank call for all requests; per request a dict,
        or the exception that request alone raises."""
        with self.lock:
            try:
                return self._recommend_batch(requests)
            except Exception as error:  # noqa: BLE001 - each request is tried alone below
                if len(requests) == 1:
                    return [error]
                logger.warning("a batch of %d requests failed (%s: %s); running them one by one",
                               len(requests), type(error).__name__, error)
            out: List[Any] = []
            for request in requests:
                try:
                    out.extend(self._recommend_batch([request]))
                except Exception as error:  # noqa: BLE001 - this request's own failure
                    out.append(error)
            return out

    def rank(self, fields: Dict[str, torch.Tensor], candidates: np.ndarray) -> np.ndarray:
        """The ranker's logits (B, K) of each user's candidates, -inf at -1 pads
        (as ``Recommender.rank``), on the fused path."""
        candidates = torch.as_tensor(candidates, dtype=torch.long)
        valid = candidates >= 0
        logits = self.fused.score_fields(fields, candidates.clamp(min=0))
        return torch.where(valid, logits, torch.tensor(float("-inf"))).numpy()

    @torch.no_grad()
    def _recommend_batch(self, requests: Sequence[RecRequest]) -> List[Any]:
        rec = self.recommender
        known = [r.user for r in requests if r.fields is None]
        known_fields = rec.users.batch(known).fields if known else None
        rows, j = [], 0
        for r in requests:
            if r.fields is None:
                rows.append({k: v[j:j + 1] for k, v in known_fields.items()})
                j += 1
            else:
                rows.append(r.fields)
        fields = {k: torch.cat([row[k] for row in rows]) for k in rows[0]}
        exclude = []
        for r in requests:
            if not r.exclude_seen:
                exclude.append(np.zeros(0, dtype=np.int64))
            elif r.fields is None:
                exclude.append(rec.users.seen(r.user))
            else:
                exclude.append(np.unique(np.asarray(r.history, dtype=np.int64)))
        retrieval, candidates = rec.retrieve(fields, self.k_retrieve, exclude)
        ranked = rec.ranker is not None
        if ranked:
            logits = self.rank(fields, candidates)
            key = rec.final_scores(logits, candidates)
            probability = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        else:
            key = retrieval
        order = np.argsort(-key, axis=1, kind="stable")
        out = []
        for b, r in enumerate(requests):
            valid = int((candidates[b] >= 0).sum())
            final_rank = np.empty(len(order[b]), dtype=np.int64)
            final_rank[order[b]] = np.arange(1, len(order[b]) + 1)

            def entry(position, rank):
                item = int(candidates[b, position])
                e = self.item(item, full=False)
                e.update(rank=int(rank), source="retrieved", retrieval_rank=int(position) + 1,
                         retrieval_score=float(retrieval[b, position]),
                         ranking_score=float(probability[b, position]) if ranked else None)
                return e

            items = [entry(p, i + 1) for i, p in enumerate(order[b][:min(r.k, valid)])]
            demoted = [entry(p, final_rank[p]) for p in range(min(r.k, valid))
                       if final_rank[p] > r.k]
            out.append({
                "user": r.user,
                "new_user": r.fields is not None,
                "k": r.k, "k_retrieve": self.k_retrieve, "candidates": valid,
                "ranked": ranked, "final_score": self.final_score if ranked else "retrieval",
                "exclude_seen": r.exclude_seen,
                "items": items, "demoted": demoted, **r.meta,
            })
        return out

    # -- explanations ---------------------------------------------------------------------
    def explain(self, user: int, item: int, top_words: int = 8) -> Dict[str, Any]:
        """Integrated Gradients of the ranker's logit for a known user and an item."""
        self.check_user(user)
        self.check_item(item)
        ranker = self.recommender.ranker
        if ranker is None:
            raise RequestError("no ranker loaded: nothing to explain", 404)
        from mmf_rec.explain import explain, user_sample

        with self.lock:
            try:
                sample = user_sample(self.data, user)
            except KeyError as error:
                raise RequestError(str(error), 404) from None
            (e,) = explain(ranker, sample, [item], data=self.data)
        return {"user": user, "item_id": item, "score": e.score,
                "baseline_score": e.baseline_score, "delta": e.delta,
                "groups": dict(sorted(e.groups.items(), key=lambda kv: -abs(kv[1]))),
                "top_words": [{"word": w, "attribution": a} for w, a in e.top_words(top_words)],
                "history": [{"item_id": i, "attribution": a} for i, a in e.history]}


def _fused_ranker(ranker, precision: str):
    from mmf_rec.serving import cpu
    from mmf_rec.serving.fused import FusedRanker

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got '{precision}'")
    if precision == "bf16":
        native, why = cpu.native_bf16()
        if not native:
            raise ValueError(f"bf16 ranking is off on this CPU: {why}")
    return FusedRanker(ranker, dtype=PRECISIONS[precision])


def _dense_bounds(dense: np.ndarray) -> List[tuple]:
    """Per dense feature, the values a new user may give: the range of the
    known users' values, widened by its width on each side (a model says
    nothing about values far outside what it was trained on, and an
    overflowing one would turn the scores into NaN)."""
    if dense.size == 0:
        return [(-1.0, 1.0)] * dense.shape[1]
    low, high = dense.min(0).astype(np.float64), dense.max(0).astype(np.float64)
    width = np.where(high > low, high - low, 1.0)
    return [(float(lo - w), float(hi + w)) for lo, hi, w in zip(low, high, width)]


def _external_user_ids(root) -> Optional[List[str]]:
    path = root / "users" / "customer_id.npy"
    if not path.is_file():
        return None
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]


def _plain(value):
    value = np.asarray(value).reshape(-1)
    value = value[0] if value.size == 1 else value
    return value.item() if hasattr(value, "item") else value.tolist()


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise RequestError(f"'{name}' must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise RequestError(f"'{name}' must be an integer, got {value!r}")


def _number(value: Any, name: str) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"'{name}' must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise RequestError(f"'{name}' must be finite, got {value!r}")
    return number
