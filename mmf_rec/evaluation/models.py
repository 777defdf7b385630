"""Full-catalogue scores of trained project models, for ``catalogue.evaluate_scores``.

The headline protocol ranks every item for every query user, so each model
must score (user, item) pairs it never saw as rows: the catalogues here are
small (a few thousand items), so scoring is exhaustive, with the score each
model ranks by in practice:

- ``dlrm``: its click logit, from batches made of the user's fields repeated
  for every item, with the item-side columns taken from the prepared item
  table (what a data row of that (user, item) would hold);
- ``dlrm_mm``: its click logit, the catalogue's item side encoded once and
  scored against one user at a time (``score`` broadcasts a one-user side,
  so nothing is copied per pair);
- ``two_tower``: the inner product of the unit user and item vectors, the
  score its FAISS index retrieves by.

Cold item ids are blanked inside every model, so no special case here.
"""

import os
from typing import Dict, Optional, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]
SUPPORTED = ("dlrm", "dlrm_mm", "two_tower")
# (user, item) pairs per dlrm forward: bounds the memory of one batch
DLRM_PAIRS_PER_CALL = 1 << 16


class UnsupportedModelError(ValueError):
    """A run holds a model that has no full-catalogue scorer."""


def _rows(fields: Dict[str, torch.Tensor], start: int, stop: int) -> Dict[str, torch.Tensor]:
    return {key: value[start:stop] for key, value in fields.items()}


class CatalogueScorer:
    """Scores of users (their model fields) against items, for one trained model.

    ``scores(fields, items)``: ``fields`` hold B users' model inputs
    (``dense``, ``sparse_<user-side feature>``); ``items`` is None (the
    whole catalogue, (B, num_items) out) or (B, K) item ids per user
    ((B, K) out, e.g. sampled candidate lists).
    """

    def __init__(self, model: torch.nn.Module, num_items: int):
        self.model = model.eval()
        self.num_items = int(num_items)

    @classmethod
    def from_run(cls, run_dir: PathLike, data_dir: Optional[PathLike] = None
                 ) -> "CatalogueScorer":
        """The scorer for a run dir (``env.save_dir`` of ``mmf_run``) or checkpoint."""
        from mmf_rec.runs import load_run

        run = load_run(run_dir, data_dir=data_dir)
        return scorer_for(run.model, run.model_name)

    def _check_items(self, items: Optional[np.ndarray], batch: int) -> Optional[torch.Tensor]:
        if items is None:
            return None
        items = torch.as_tensor(np.asarray(items), dtype=torch.long)
        if items.ndim != 2 or items.shape[0] != batch:
            raise ValueError(f"items must have shape (users, K) = ({batch}, K), "
                             f"got {tuple(items.shape)}")
        if items.numel() and (int(items.min()) < 0 or int(items.max()) >= self.num_items):
            raise ValueError(f"item ids must lie in [0, {self.num_items}), got "
                             f"{int(items.min())}..{int(items.max())}")
        return items

    @torch.no_grad()
    def scores(self, fields: Dict[str, torch.Tensor], items: Optional[np.ndarray] = None,
               batch_users: int = 64) -> np.ndarray:
        batch = len(next(iter(fields.values())))
        items = self._check_items(items, batch)
        width = self.num_items if items is None else items.shape[1]
        out = np.empty((batch, width), dtype=np.float32)
        for start in range(0, batch, max(1, int(batch_users))):
            stop = min(start + max(1, int(batch_users)), batch)
            chunk = None if items is None else items[start:stop]
            out[start:stop] = self._score_chunk(_rows(fields, start, stop), chunk).numpy()
        return out

    def _score_chunk(self, fields, items: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class DLRMScorer(CatalogueScorer):
    """Exhaustive forward passes: each user's row repeated for every item."""

    def __init__(self, model, num_items: int):
        super().__init__(model, num_items)
        from mmf_rec.data.prepared import load_prepared
        from mmf_rec.models.common import dataset_root

        data = load_prepared(dataset_root(), verify_checksums=False, check_id_ranges=False)
        self.item_columns = {
            name: torch.from_numpy(np.array(data.items[name]))
            for name in model.sparse_features
            if model.schema.sparse_feature(name).side == "item"}
        self.user_features = [name for name in model.sparse_features
                              if name not in self.item_columns]

    def _score_chunk(self, fields, items):
        users = len(next(iter(fields.values())))
        if items is None:
            items = torch.arange(self.num_items).expand(users, -1)
        k = items.shape[1]
        out = torch.empty(users, k)
        step = max(1, DLRM_PAIRS_PER_CALL // max(k, 1))
        for start in range(0, users, step):
            stop = min(start + step, users)
            flat = items[start:stop].reshape(-1)
            batch = {key: value[start:stop].repeat_interleave(k, 0)
                     for key, value in fields.items()}
            for name, column in self.item_columns.items():
                batch[f"sparse_{name}"] = column[flat]
            batch["item_index"] = flat
            out[start:stop] = self.model.forward(batch)["scores"].reshape(stop - start, k)
        return out


class DLRMMultimodalScorer(CatalogueScorer):
    """The catalogue's item side once, each user against it in one call."""

    def __init__(self, model, num_items: int, item_batch: int = 1024):
        super().__init__(model, num_items)
        self.catalogue = model.encode_catalogue(item_batch)

    def _items(self, ids: Optional[torch.Tensor]):
        from mmf_rec.models.dlrm_mm import Side

        c = self.catalogue
        if ids is None:
            return c
        return Side(c.tokens[ids], c.mask[ids], c.pooled[ids], c.group_sizes)

    def _score_chunk(self, fields, items):
        from mmf_rec.models.dlrm_mm import Side

        users = self.model.encode_users(fields)
        rows = []
        for u in range(users.tokens.shape[0]):
            one = Side(users.tokens[u:u + 1], users.mask[u:u + 1], users.pooled[u:u + 1],
                       users.group_sizes)
            side = self._items(None if items is None else items[u])
            rows.append(self.model.score(one, side).reshape(-1))
        return torch.stack(rows)


class TwoTowerScorer(CatalogueScorer):
    """Inner products of unit user and item vectors (the index's metric)."""

    def __init__(self, model, num_items: int):
        super().__init__(model, num_items)
        self.item_vectors = model.encode_catalogue()

    def _score_chunk(self, fields, items):
        users = self.model.encode_users(fields)
        if items is None:
            return users @ self.item_vectors.t()
        return (users.unsqueeze(1) * self.item_vectors[items]).sum(-1)


SCORERS = {"dlrm": DLRMScorer, "dlrm_mm": DLRMMultimodalScorer, "two_tower": TwoTowerScorer}


def scorer_for(model: torch.nn.Module, model_name: str) -> CatalogueScorer:
    """The scorer of a built model (its run's data published, as load_run leaves it)."""
    if model_name not in SCORERS:
        raise UnsupportedModelError(
            f"no full-catalogue scorer for model '{model_name}'; supported: {list(SUPPORTED)}")
    num_items = int(model.item_attributes.shape[0]) if hasattr(model, "item_attributes") \
        else _catalogue_size(model)
    return SCORERS[model_name](model, num_items)


def _catalogue_size(model) -> int:
    from mmf_rec.data.prepared import load_prepared
    from mmf_rec.models.common import dataset_root

    data = load_prepared(dataset_root(), verify_checksums=False, check_id_ranges=False)
    if data.items is None:
        raise UnsupportedModelError(f"{data.root}: no item table, so there is no catalogue "
                                    "to rank")
    return int(data.items.rows)


def model_scores(run_dir: PathLike, queries, batch_users: int = 64,
                 data_dir: Optional[PathLike] = None) -> np.ndarray:
    """(U, num_items) float32 scores of every item for every query user of
    ``queries`` (``mmf_rec.evaluation.catalogue.Queries``), higher is better."""
    scorer = CatalogueScorer.from_run(run_dir, data_dir=data_dir)
    if scorer.num_items != queries.num_items:
        raise ValueError(f"{run_dir}: the model knows {scorer.num_items} items, the queries "
                         f"{queries.num_items}; were they built from the run's data?")
    return scorer.scores(queries.fields, batch_users=batch_users)
