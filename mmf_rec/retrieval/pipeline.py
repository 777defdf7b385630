"""Retrieve, then rank: the two-tower retriever and its FAISS index pick
``k_retrieve`` candidates from the whole catalogue, the ``dlrm_mm`` ranker
scores only those, and the best ``k_final`` are returned.

The ranker's item side depends on the item id alone, so the catalogue's item
tokens are encoded once (from the knowledge cache) and each request only
gathers its candidates' rows and runs the interaction; users are scored in
batches, every user against their own candidates.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

from mmf_rec.files import atomic_path
from mmf_rec.retrieval.index import ItemIndex
from mmf_rec.runs import load_run
from mmf_rec.retrieval.users import UserStates

PathLike = Union[str, os.PathLike]
SNIPPET = 60


@dataclass
class Recommendation:
    rank: int
    item_id: int
    retrieval_score: float
    # the ranker's click probability; None without a ranker
    ranking_score: Optional[float]
    description: str = ""
    # no observed training interaction: found from its content and attributes
    new: bool = False


@dataclass
class Recommendations:
    user: int
    # True: unknown user, features-only fallback
    cold_user: bool
    items: List[Recommendation] = field(default_factory=list)


FINAL_SCORES = ("ctr", "ctr_x_exposure")


def exposure_log_prior(data) -> np.ndarray:
    """log of each item's share of the training rows (its exposure), per item
    id. Items never shown in training get the mean share of those that were:
    a new item is assumed to be shown as often as an average one."""
    train = data.split("train")
    counts = np.bincount(np.asarray(train[data.item_feature][:, 0]),
                         minlength=data.items.rows).astype(np.float64)
    shown = counts > 0
    if not shown.any():
        raise ValueError("no training rows: the exposure prior is undefined")
    counts[~shown] = counts[shown].mean()
    return np.log(counts / counts.sum())


class Recommender:
    """Top-N items for users, from a retriever, its index and an optional ranker.

    ``final_score`` orders the ranked candidates: ``ctr`` by the ranker's
    click probability (what a slot that will be shown should maximise), or
    ``ctr_x_exposure`` by click probability times the item's training
    exposure share (the chance that the user both meets and clicks the item,
    which is what logged clicks reward when exposure did not depend on the
    user; see the README's Retrieval section).

    ``new_item_share`` reserves that share of the ``k_retrieve`` candidates
    for new items (no observed training interaction: their vectors come from
    content and attributes alone), filled with the best-scoring new items;
    0 (the default) lets new and known items compete on score alone.
    """

    def __init__(self, retriever, index: ItemIndex, ranker=None, users: Optional[UserStates] = None,
                 descriptions: Optional[Sequence[str]] = None, data=None,
                 final_score: str = "ctr", new_item_share: float = 0.0):
        self.retriever = retriever.eval()
        self.index = index
        self.ranker = ranker.eval() if ranker is not None else None
        self.data = data
        if final_score not in FINAL_SCORES:
            raise ValueError(f"final_score must be one of {list(FINAL_SCORES)}, got '{final_score}'")
        if final_score == "ctr_x_exposure" and data is None:
            raise ValueError("final_score 'ctr_x_exposure' needs the prepared data")
        self.final_score = final_score
        self._exposure = exposure_log_prior(data) if data is not None else None
        self.fingerprint = retriever.fingerprint()
        index.check_query(retriever.output_dim, "ip", self.fingerprint, what="the retriever")
        if users is None:
            if data is None:
                raise ValueError("Recommender needs the user states or the prepared data")
            users = UserStates(data, user_feature=retriever.user_key or "user_id",
                               history_feature=retriever.history_feature)
        self.users = users
        self.descriptions = list(descriptions) if descriptions is not None else None
        # item id -> no observed training interaction (all False without the data)
        from mmf_rec.data import protocol

        seen = protocol.seen_in_training(data) if data is not None else np.zeros(0, bool)
        self.is_new = np.zeros(max(len(seen), int(index.item_ids.max()) + 1), dtype=bool)
        self.is_new[:len(seen)] = ~seen
        if not 0.0 <= float(new_item_share) < 1.0:
            raise ValueError(f"new_item_share must be in [0, 1), got {new_item_share}")
        if new_item_share > 0 and data is None:
            raise ValueError("new_item_share needs the prepared data (which items are new)")
        self.new_item_share = float(new_item_share)
        new_ids = index.item_ids[self.is_new[index.item_ids]]
        self._new_ids = np.asarray(new_ids, dtype=np.int64)
        self._new_vectors = None
        if self.new_item_share > 0 and len(self._new_ids):
            with torch.no_grad():
                self._new_vectors = retriever.encode_items(
                    torch.as_tensor(self._new_ids)).cpu().numpy()
        if self.ranker is not None:
            if int(index.item_ids.max()) >= self.ranker.item_attributes.shape[0]:
                raise ValueError(
                    f"the index holds item ids up to {int(index.item_ids.max())} but the ranker "
                    f"knows {self.ranker.item_attributes.shape[0]} items; rank only items in its "
                    "item table")
            self._ranker_items = self.ranker.encode_catalogue()

    @classmethod
    def from_runs(cls, retriever: PathLike, index: PathLike, ranker: Optional[PathLike] = None,
                  data_dir: Optional[PathLike] = None, final_score: str = "ctr",
                  new_item_share: float = 0.0) -> "Recommender":
        """From run dirs (``env.save_dir`` of ``mmf_run``) or checkpoint files."""
        from mmf_rec.data.prepared import load_prepared

        retriever_run = load_run(retriever, expect_model="two_tower", data_dir=data_dir)
        ranker_run = None
        if ranker is not None:
            ranker_run = load_run(ranker, expect_model="dlrm_mm", data_dir=data_dir)
            if ranker_run.data_root.resolve() != retriever_run.data_root.resolve():
                raise ValueError(
                    f"retriever and ranker were trained on different data: "
                    f"{retriever_run.data_root} vs {ranker_run.data_root}")
        data = load_prepared(retriever_run.data_root, verify_checksums=False)
        return cls(retriever_run.model, ItemIndex.load(index),
                   ranker_run.model if ranker_run else None,
                   data=data, descriptions=data.descriptions(), final_score=final_score,
                   new_item_share=new_item_share)

    # -- the stages ----------------------------------------------------------------
    @torch.no_grad()
    def retrieve(self, fields: Dict[str, torch.Tensor], k: int,
                 exclude: Optional[Sequence[np.ndarray]] = None):
        """(scores, item ids), each (B, k), best first; -1 / -inf pad users
        for whom fewer than k items are left after ``exclude``."""
        queries = self.retriever.encode_users(fields).cpu().numpy()
        most = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        if self._new_vectors is not None:
            return self._retrieve_with_reserve(queries, k, exclude, most)
        depth = min(len(self.index), k + most)
        scores, ids = self.index.search(queries, depth, metric="ip",
                                        model_fingerprint=self.fingerprint)
        if exclude is None and depth == k:
            return scores, ids
        out_scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(ids), k), -1, dtype=np.int64)
        for b in range(len(ids)):
            keep = ids[b] >= 0
            if exclude is not None and len(exclude[b]):
                keep &= ~np.isin(ids[b], exclude[b])
            kept_ids, kept_scores = ids[b][keep][:k], scores[b][keep][:k]
            out_ids[b, :len(kept_ids)] = kept_ids
            out_scores[b, :len(kept_ids)] = kept_scores
        return out_scores, out_ids

    def _retrieve_with_reserve(self, queries: np.ndarray, k: int,
                               exclude: Optional[Sequence[np.ndarray]], most: int):
        """``retrieve`` with ``new_item_share`` of the k slots kept for the
        best new items (scored exactly: they are few), the rest from the index."""
        reserved = min(int(round(k * self.new_item_share)), len(self._new_ids))
        depth = min(len(self.index), k + most + len(self._new_ids))
        scores, ids = self.index.search(queries, depth, metric="ip",
                                        model_fingerprint=self.fingerprint)
        new_scores = queries @ self._new_vectors.T
        out_scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(ids), k), -1, dtype=np.int64)
        for b in range(len(ids)):
            banned = exclude[b] if exclude is not None else np.zeros(0, np.int64)
            keep = (ids[b] >= 0) & ~np.isin(ids[b], banned)
            known = keep & ~self.is_new[np.clip(ids[b], 0, None)]
            new_keep = ~np.isin(self._new_ids, banned)
            new_order = np.argsort(-new_scores[b][new_keep], kind="stable")[:reserved]
            picked_ids = np.concatenate([self._new_ids[new_keep][new_order],
                                         ids[b][known][:k - len(new_order)]])
            picked_scores = np.concatenate([new_scores[b][new_keep][new_order],
                                            scores[b][known][:k - len(new_order)]])
            order = np.argsort(-picked_scores, kind="stable")
            out_ids[b, :len(order)] = picked_ids[order]
            out_scores[b, :len(order)] = picked_scores[order]
        return out_scores, out_ids

    @torch.no_grad()
    def rank(self, fields: Dict[str, torch.Tensor], candidates: np.ndarray,
             pairs_per_call: int = 4096) -> np.ndarray:
        """The ranker's logits (B, K) of each user's candidates (-inf at -1 pads)."""
        from mmf_rec.models.dlrm_mm import Side

        candidates = torch.as_tensor(candidates, dtype=torch.long)
        batch, k = candidates.shape
        users = self.ranker.encode_users(fields)
        catalogue = self._ranker_items
        out = torch.full((batch, k), float("-inf"))
        step = max(1, pairs_per_call // max(k, 1))
        for start in range(0, batch, step):
            rows = slice(start, min(start + step, batch))
            flat = candidates[rows].reshape(-1)
            valid = flat >= 0
            flat = flat.clamp(min=0)
            items = Side(catalogue.tokens[flat], catalogue.mask[flat], catalogue.pooled[flat],
                         catalogue.group_sizes)
            if rows.stop - rows.start == 1:  # one user: score() broadcasts it, no copies
                def repeat(t):
                    return t[rows]
            else:
                def repeat(t):
                    return t[rows].repeat_interleave(k, 0)
            user_side = Side(repeat(users.tokens), repeat(users.mask), repeat(users.pooled),
                             users.group_sizes)
            scores = self.ranker.score(user_side, items).reshape(-1)
            out[rows] = torch.where(valid, scores, torch.tensor(float("-inf"))).reshape(-1, k)
        return out.numpy()

    def final_scores(self, logits: np.ndarray, candidates: np.ndarray,
                     final_score: Optional[str] = None) -> np.ndarray:
        """The order key of ranked candidates: log click probability, plus the
        log exposure prior for ``ctr_x_exposure``; -inf at -1 pads."""
        final_score = final_score or self.final_score
        scores = -np.logaddexp(0.0, -logits.astype(np.float64))  # log sigmoid
        if final_score == "ctr_x_exposure":
            scores = scores + self._exposure[np.clip(candidates, 0, None)]
        return np.where(candidates >= 0, scores, -np.inf)

    # -- the API --------------------------------------------------------------------
    def recommend(self, users: Sequence[int], k_retrieve: int = 200, k_final: int = 10,
                  exclude_seen: bool = True, batch_size: int = 256,
                  progress: bool = False) -> List[Recommendations]:
        """Top ``k_final`` of ``k_retrieve`` candidates for each user id.

        Unknown users get the features-only fallback (``cold_user`` True).
        With ``exclude_seen``, items the user clicked before are never
        recommended. Fewer than ``k_final`` items come back only when the
        catalogue minus the excluded items is smaller.
        """
        if isinstance(users, (int, np.integer)):
            users = [int(users)]
        if not 1 <= k_final <= k_retrieve:
            raise ValueError(f"need 1 <= k_final <= k_retrieve, got k_final={k_final}, "
                             f"k_retrieve={k_retrieve}")
        if k_retrieve > len(self.index):
            raise ValueError(f"k_retrieve={k_retrieve} exceeds the {len(self.index)} items in "
                             "the index")
        results = []
        chunks = range(0, len(users), batch_size)
        for start in tqdm(chunks, desc="recommending", unit="batch", disable=not progress):
            chunk = users[start:start + batch_size]
            batch = self.users.batch(chunk)
            exclude = [self.users.seen(u) for u in batch.user_ids] if exclude_seen else None
            retrieval_scores, candidates = self.retrieve(batch.fields, k_retrieve, exclude)
            if self.ranker is not None:
                logits = self.rank(batch.fields, candidates)
                order_key = self.final_scores(logits, candidates)
            else:
                order_key = retrieval_scores
            order = np.argsort(-order_key, axis=1, kind="stable")[:, :k_final]
            for b, user in enumerate(batch.user_ids):
                picks = []
                for position in order[b]:
                    item = int(candidates[b, position])
                    if item < 0:
                        break
                    probability = (float(1.0 / (1.0 + np.exp(-logits[b, position])))
                                   if self.ranker is not None else None)
                    picks.append(Recommendation(
                        rank=len(picks) + 1, item_id=item,
                        retrieval_score=float(retrieval_scores[b, position]),
                        ranking_score=probability, description=self._snippet(item),
                        new=bool(item < len(self.is_new) and self.is_new[item])))
                results.append(Recommendations(user=user, cold_user=bool(batch.cold[b]),
                                               items=picks))
        return results

    def _snippet(self, item: int) -> str:
        if self.descriptions is None or item >= len(self.descriptions):
            return ""
        text = str(self.descriptions[item])
        return text if len(text) <= SNIPPET else text[: SNIPPET - 3] + "..."


def write_recommendations(results: Sequence[Recommendations], path: PathLike) -> Path:
    """One line per (user, rank): user, cold_user, rank, item_id, new (1: no
    training interaction yet), scores, description (TSV)."""
    import csv

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["user", "cold_user", "rank", "item_id", "new", "retrieval_score",
                         "ranking_score", "description"])
        for result in results:
            for item in result.items:
                writer.writerow([result.user, int(result.cold_user), item.rank, item.item_id,
                                 int(item.new), f"{item.retrieval_score:.6f}",
                                 "" if item.ranking_score is None else f"{item.ranking_score:.6f}",
                                 item.description])
    return path
