"""The two-tower retriever (``two_tower``): candidate generation for ``dlrm_mm``.

A ranker cannot score a whole catalogue per request; a retriever whose score
is a dot product of two independently computed vectors can, through a
nearest-neighbour index. So:

- user tower: dense features (bottom MLP), user categorical features, the
  history bag, and the mean text and image vector of the history items;
- item tower: item categorical features and the item's pooled text and image
  vectors, read from the same frozen-backbone knowledge cache as ``dlrm_mm``
  (same encoder settings, same cache entries). An item's vector depends only
  on its attributes and content, and ids of items never seen in training are
  blanked, so cold-start items are retrievable from their description and
  photo alone;
- both end in a ``Tower`` (an MLP, then L2 normalisation): the score is a
  cosine, the index metric is inner product.

Training uses the clicked rows of each batch with an in-batch sampled
softmax (``mmf_rec.models.in_batch``); the temperature sharpens the cosine
scores into usable logits.

In evaluation the model also ranks the whole catalogue for every clicked
row and returns the top ``eval_top_k`` ids, which the registered ranking
metrics (``recall@K``, ``ndcg@K``, ``hr@K``, ``mrr``) score.
"""

import hashlib
import json
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmf.common.registry import registry
from mmf.models.base_model import BaseModel
from torch import Tensor, nn
from tqdm import tqdm

from mmf_rec.interaction import masked_mean
from mmf_rec.models.common import (
    build_encoder, build_side_encoders, dataset_data, dataset_schema, item_attributes,
    node_params, seen_items, sparse_inputs,
)
from mmf_rec.models.ids import IdBlanking, ItemAttributes
from mmf_rec.models.in_batch import LOGITS_KEY, in_batch_logits
from mmf_rec.models.knowledge import build_item_knowledge
from mmf_rec.models.towers import Tower
from mmf_rec.paths import config_path
from mmf_rec.ranking_metrics import PAD, TARGET_KEY, TOPK_KEY, USER_KEY
from mmf_rec.schema import Schema

__all__ = ["MODALITIES", "LOGITS_KEY", "in_batch_logits", "TwoTowerNet", "TwoTower"]

MODALITIES = ("text", "image")


class TwoTowerNet(nn.Module):
    """The retriever from its arches: the two sides' sparse encoders, the item
    table (``ItemAttributes``, cold ids blanked), an ``IdBlanking`` of user
    ids, the dense encoder, the item knowledge per modality, and a user and
    an item ``Tower``.

    ``forward(batch)`` gives the in-batch logits of the clicked rows in
    training, and in evaluation also ``scores`` (B, 1) and the catalogue's
    top ``eval_top_k`` per clicked row. Arguments: see :meth:`compose`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.compose(*args, **kwargs)

    def compose(self, schema: Schema, user_sparse: nn.Module, item_sparse: nn.Module,
                item_attributes: Tensor, dense_encoder: Optional[nn.Module] = None,
                knowledge: Optional[Mapping[str, nn.Module]] = None, output_dim: int = 64,
                tower_hidden: Sequence[int] = (128,), temperature: float = 0.05,
                eval_top_k: int = 200, history_feature: Optional[str] = None,
                item_id_feature: Optional[str] = None, item_seen: Optional[Tensor] = None,
                id_dropout: float = 0.0, user_key: Optional[str] = None,
                user_seen: Optional[Tensor] = None, user_id_dropout: float = 0.0,
                item_log_q: Optional[Tensor] = None, item_data_key: str = "") -> None:
        """Build the arches around the given encoders.

        ``item_attributes`` (num_items, F): the item table's ids of the item
        encoder's features, in its order. ``knowledge``: modality name ->
        ``ItemKnowledge``. ``history_feature``: a user feature whose past
        items also bring their mean knowledge vectors. ``item_id_feature``
        and ``item_seen`` (num_items,) bool: ids of items never seen in
        training are blanked, and in training any id with probability
        ``id_dropout``. ``user_key``: the user id column, which keys users in
        evaluation; when the user encoder reads it, ``user_seen``
        (cardinality,) bool and ``user_id_dropout`` blank it likewise.
        ``item_log_q`` (num_items,): log of each item's share of training
        clicks, for the log-Q correction (None: none). ``item_data_key``
        identifies the item table in :meth:`fingerprint`.
        """
        if temperature <= 0:
            raise ValueError(f"TwoTowerNet: temperature must be > 0, got {temperature}")
        self._catalogue: Optional[Tensor] = None
        self.schema = schema
        self.output_dim = int(output_dim)
        self.temperature = float(temperature)
        self.eval_top_k = int(eval_top_k)
        self.history_feature = history_feature
        self.user_features = list(user_sparse.feature_names)
        self.item_features = list(item_sparse.feature_names)
        self.user_sparse = user_sparse
        self.item_sparse = item_sparse

        self.item_id_feature = item_id_feature
        self.item_table = ItemAttributes.of_features(
            item_attributes, self.item_features, item_id_feature, item_seen, id_dropout)

        self.user_key = user_key
        if user_key is not None and schema.sparse_feature(user_key).side == "item":
            raise ValueError(f"TwoTowerNet: user_key '{user_key}' is an item-side feature")
        self.user_id_feature = user_key if user_key in self.user_features else None
        self.user_blanking = None
        if self.user_id_feature is not None:
            if user_seen is None:
                raise ValueError(f"TwoTowerNet: the user encoder reads '{user_key}', which "
                                 "needs user_seen")
            self.user_blanking = IdBlanking(user_seen, user_id_dropout)
        self.register_buffer("log_q", item_log_q, persistent=False)

        self.dense_encoder = dense_encoder
        dense_out = dense_encoder.out_dim if dense_encoder is not None else 0
        self.knowledge = nn.ModuleDict(dict(knowledge or {}))
        self.modalities = list(self.knowledge)
        self.item_data_key = item_data_key

        dim = int(user_sparse.embedding_dim)
        user_in = dense_out + dim * (len(self.user_features) + len(self.history_modalities))
        item_in = dim * (len(self.item_features) + len(self.modalities))
        self.user_tower = Tower(user_in, tower_hidden, self.output_dim)
        self.item_tower = Tower(item_in, tower_hidden, self.output_dim)

    @property
    def num_items(self) -> int:
        return self.item_table.num_items

    @property
    def item_attributes(self) -> Tensor:
        """The item table (num_items, F)."""
        return self.item_table.table

    @property
    def history_modalities(self) -> List[str]:
        return self.modalities if self.history_feature else []

    # -- towers -----------------------------------------------------------------------
    def encode_users(self, batch: Mapping[str, Tensor]) -> Tensor:
        """(B, output_dim) unit vectors from a batch's user-side fields
        (``dense`` and ``sparse_<user feature>``); -1 ids are unknown."""
        parts = []
        if self.dense_encoder is not None:
            parts.append(self.dense_encoder(batch["dense"].float()))
        ids = sparse_inputs(batch, self.user_features)
        if self.user_blanking is not None:
            ids[self.user_id_feature], _ = self.user_blanking(ids[self.user_id_feature])
        parts.append(self.user_sparse(ids).flatten(1))
        for modality in self.history_modalities:
            history = batch[f"sparse_{self.history_feature}"]
            vectors, valid = self.knowledge[modality].pooled(history)
            parts.append(masked_mean(vectors, valid))
        return self.user_tower(torch.cat(parts, 1))

    def encode_items(self, item_ids: Tensor) -> Tensor:
        """(N, output_dim) unit vectors of items, from their id alone."""
        item_ids = item_ids.reshape(-1).long()
        if item_ids.numel() and (int(item_ids.min()) < 0 or int(item_ids.max()) >= self.num_items):
            raise IndexError(f"two_tower: item ids must lie in [0, {self.num_items}), got "
                             f"[{int(item_ids.min())}, {int(item_ids.max())}]")
        attributes, _ = self.item_table(item_ids)
        parts = [self.item_sparse(
            {name: attributes[:, j: j + 1] for j, name in enumerate(self.item_features)}
        ).flatten(1)]
        for modality in self.modalities:
            vectors, _ = self.knowledge[modality].pooled(item_ids)
            parts.append(vectors)
        return self.item_tower(torch.cat(parts, 1))

    @torch.no_grad()
    def encode_catalogue(self, item_ids: Optional[Tensor] = None, batch_size: int = 4096,
                         progress: bool = False) -> Tensor:
        """Item vectors of ``item_ids`` (default: the whole catalogue), in batches."""
        if item_ids is None:
            item_ids = torch.arange(self.num_items, device=self.item_table.table.device)
        chunks = range(0, len(item_ids), batch_size)
        out = [self.encode_items(item_ids[start:start + batch_size])
               for start in tqdm(chunks, desc="encoding items", unit="batch", disable=not progress)]
        return torch.cat(out) if out else torch.zeros(0, self.output_dim)

    # -- identity -----------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Identifies what the towers compute: their weights, the knowledge
        backbones and data they read (cache keys) and the item table. An index
        built from item vectors is only valid for queries from the same one."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        for modality in self.modalities:
            digest.update(f"{modality}:{self.knowledge[modality].cache_key}".encode())
        digest.update(self.item_data_key.encode())
        return digest.hexdigest()[:16]

    # -- training and evaluation --------------------------------------------------------
    def train(self, mode: bool = True):
        self._catalogue = None  # weights may change from here on
        return super().train(mode)

    def load_state_dict(self, state_dict, *args, **kwargs):
        self._catalogue = None
        return super().load_state_dict(state_dict, *args, **kwargs)

    def _user_rows(self, batch, rows: Tensor) -> Dict[str, Tensor]:
        keys = [f"sparse_{name}" for name in self.user_features]
        if self.dense_encoder is not None:
            keys.append("dense")
        return {key: batch[key].index_select(0, rows) for key in keys}

    def _in_batch_logits(self, users: Tensor, items: Tensor, item_ids: Tensor) -> Tensor:
        log_q = None if self.log_q is None else self.log_q[item_ids]
        return in_batch_logits(users, items, item_ids, log_q, self.temperature)

    def forward(self, batch):
        targets = batch["targets"].reshape(-1)
        item_ids = batch["item_index"].reshape(-1).long()
        clicked = torch.nonzero(targets > 0.5).squeeze(1)
        if self.training:
            if len(clicked) == 0:  # no positive: a zero loss that still backpropagates
                return {LOGITS_KEY: self.user_tower[0].weight[:0, :0]}
            users = self.encode_users(self._user_rows(batch, clicked))
            items = self.encode_items(item_ids[clicked])
            return {LOGITS_KEY: self._in_batch_logits(users, items, item_ids[clicked])}
        users = self.encode_users(batch)
        items = self.encode_items(item_ids)
        output = {
            "scores": (users * items).sum(-1, keepdim=True) / self.temperature,
            LOGITS_KEY: self._in_batch_logits(users[clicked], items[clicked], item_ids[clicked]),
        }
        output.update(self._retrieve(users[clicked], item_ids[clicked], batch, clicked))
        return output

    def _retrieve(self, users: Tensor, targets: Tensor, batch, rows: Tensor):
        """Full-catalogue top ``eval_top_k`` of each clicked row (padded with
        -1 when the catalogue is smaller), for the ranking metrics."""
        if self._catalogue is None:
            self._catalogue = self.encode_catalogue()
        depth = min(self.eval_top_k, self.num_items)
        top = torch.topk(users @ self._catalogue.t(), depth, dim=1).indices
        if depth < self.eval_top_k:
            top = F.pad(top, (0, self.eval_top_k - depth), value=PAD)
        if self.user_key is not None:
            user = batch[f"sparse_{self.user_key}"][:, 0].index_select(0, rows)
        else:
            user = rows
        return {TOPK_KEY: top, TARGET_KEY: targets, USER_KEY: user}


# -- MMF ------------------------------------------------------------------------------------
def _listed(value) -> List[str]:
    """A config list of names; from the command line it may arrive as a
    string: "[user_id]" or "user_id,x"."""
    if isinstance(value, str):
        return [n.strip(" '\"") for n in value.strip("[]").split(",") if n.strip()]
    return list(value or [])


def seen_users(data, feature) -> Tensor:
    """(cardinality,) bool: the user ids of the train split."""
    seen = torch.zeros(feature.cardinality, dtype=torch.bool)
    train = data.split("train")
    seen[torch.from_numpy(np.unique(train[feature.name][:, 0]))] = True
    return seen


def click_log_q(data) -> Tensor:
    """log of each item's share of the training clicks: the probability
    that it is an in-batch negative. Items without clicks get the share of
    one click (they never are in-batch items in training anyway)."""
    train = data.split("train")
    clicked = np.asarray(train[data.schema.label]) > 0.5
    items = np.asarray(train[data.item_feature][:, 0])[clicked]
    counts = np.bincount(items, minlength=data.items.rows).astype(np.float64)
    share = np.maximum(counts, 1.0) / max(counts.sum(), 1.0)
    return torch.from_numpy(np.log(share)).float()


def item_data_key(data) -> str:
    """The item table's identity: its files' recorded hashes."""
    files = data.manifest.get("items", {}).get("files", {})
    text = json.dumps({k: v.get("sha256") for k, v in files.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@registry.register_model("two_tower")
class TwoTower(TwoTowerNet, BaseModel):
    """``two_tower`` in MMF: ``model_config.two_tower`` and the run's dataset
    (schema, item table, training clicks, texts, images) turned into
    TwoTowerNet's arguments in ``build()``."""

    def __init__(self, config):
        BaseModel.__init__(self, config)

    @classmethod
    def config_path(cls):
        return config_path("models", "two_tower.yaml")

    def build(self):
        config = self.config
        schema = dataset_schema()
        data = dataset_data()
        if data.items is None or data.item_feature is None:
            raise ValueError(f"two_tower: {data.root} has no item table / item feature; "
                             "the item tower encodes items from the item table")
        dim = int(config.embedding_dim)
        temperature = float(config.temperature)
        if temperature <= 0:
            raise ValueError(
                f"model_config.two_tower.temperature must be > 0, got {temperature}")
        history_feature = config.get("history_feature") or None
        if history_feature is not None:
            schema.sparse_feature(history_feature)  # named, or a clear error
        excluded = _listed(config.get("exclude_features"))
        for name in excluded:
            schema.sparse_feature(name)  # named in the schema, or a clear error
        features = [f for f in schema.sparse if f.name not in excluded]
        user_features = [f.name for f in features if f.side != "item"]
        item_features = [f.name for f in features if f.side == "item"]
        if not item_features:
            raise ValueError("two_tower: the schema declares no item-side sparse feature")
        user_sparse, item_sparse = build_side_encoders(
            config, schema, dim, user_features, item_features)

        item_id_feature = config.get("item_id_feature") or None
        if item_id_feature not in item_features:
            item_id_feature = None  # not read (excluded): nothing to blank
        # the user id column also keys users in evaluation (hr@K), read or not
        user_key = config.get("user_id_feature") or None
        if user_key is not None and schema.sparse_feature(user_key).side == "item":
            raise ValueError(f"model_config.two_tower.user_id_feature: '{user_key}' is an "
                             "item-side feature")
        user_seen = (seen_users(data, schema.sparse_feature(user_key))
                     if user_key in user_features else None)
        log_q = click_log_q(data) if bool(config.get("logq_correction", True)) else None

        dense_encoder = None
        if schema.dense:
            params = node_params(config.dense_encoder.params)
            dense_encoder = build_encoder(
                config.dense_encoder.type, {**params, "in_dim": len(schema.dense)})
        knowledge = {modality: build_item_knowledge(config, modality, data, dim)
                     for modality in MODALITIES if bool(config.modalities.get(modality))}
        self.compose(
            schema, user_sparse, item_sparse, item_attributes(data, item_features),
            dense_encoder, knowledge,
            output_dim=int(config.output_dim),
            tower_hidden=[int(h) for h in (config.tower_hidden or [])],
            temperature=temperature, eval_top_k=int(config.eval_top_k),
            history_feature=history_feature,
            item_id_feature=item_id_feature,
            item_seen=seen_items(data) if item_id_feature is not None else None,
            id_dropout=float(config.get("id_dropout") or 0.0),
            user_key=user_key, user_seen=user_seen,
            user_id_dropout=float(config.get("user_id_dropout") or 0.0),
            item_log_q=log_q, item_data_key=item_data_key(data),
        )
