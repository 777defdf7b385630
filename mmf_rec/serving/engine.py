"""What the HTTP service computes, as plain blocking functions: one batched
retrieve-then-rank call for many requests, and the optional explanation of
one (user, item) pair; on top of the user and item records of
``mmf_rec.serving.records``.

Built on the stages of :class:`mmf_rec.retrieval.pipeline.Recommender`
(``users``, ``retrieve``, ``rank``, ``final_scores``), so a known user's top
k is exactly ``Recommender.recommend``'s (tested). On top of it each answer
carries every candidate's retrieval rank, so the page can show which items
retrieval brought near the top but ranking pushed out ("demoted"). A new
user, with no id, is scored from the features and history the request gives
(the features-only fallback fills in the rest), through the same towers.

Ranking runs on the fused path (``mmf_rec.serving.fused``): the same logits
as the ranker's own ``score`` within 1e-5 in fp32, in a few batched ops.
A batch that fails is run again one request at a time, so a request that
breaks it fails alone.
"""

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from mmf_rec.serving.records import Records, RequestError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
logger = logging.getLogger("mmf_rec.serving")

__all__ = ["Engine", "PRECISIONS", "RecRequest", "RequestError"]


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


class Engine(Records):
    """The service's model work over its :class:`Records`: batched
    recommendations and explanations, one thread at a time."""

    def __init__(self, recommender, k_retrieve: int = 200, max_k: int = 100,
                 image_route: str = "/images/", precision: str = "fp32"):
        super().__init__(recommender, k_retrieve, max_k, image_route)
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

