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
- both end in an MLP and are L2-normalised: the score is a cosine, the index
  metric is inner product.

Training uses the clicked rows of each batch: every user's clicked item is
the positive, the other rows' clicked items are the negatives (in-batch
sampled softmax). In-batch negatives are drawn in proportion to their
popularity, which would teach the model to push popular items down; the
log-Q correction (subtracting log of each item's sampling probability from
its logit) undoes that, so the softmax estimates the full-catalogue one. The
temperature sharpens the cosine scores into usable logits.

In evaluation the model also ranks the whole catalogue for every clicked
row and returns the top ``eval_top_k`` ids, which the registered ranking
metrics (``recall@K``, ``ndcg@K``, ``hr@K``, ``mrr``) score.
"""

import hashlib
import json
from typing import Dict, List, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmf.common.registry import registry
from mmf.models.base_model import BaseModel
from torch import Tensor, nn
from tqdm import tqdm

from mmf_rec.data import protocol
from mmf_rec.data.prepared import load_prepared
from mmf_rec.encoders.dense import mlp
from mmf_rec.interaction import masked_mean
from mmf_rec.models.common import (
    build_encoder, dataset_root, dataset_schema, node_params, sparse_inputs,
)
from mmf_rec.models.knowledge import build_item_knowledge
from mmf_rec.paths import config_path
from mmf_rec.ranking_metrics import PAD, TARGET_KEY, TOPK_KEY, USER_KEY
from mmf_rec.schema import PAD_ID

MODALITIES = ("text", "image")
LOGITS_KEY = "in_batch_logits"


def in_batch_logits(users: Tensor, items: Tensor, item_ids: Tensor,
                    item_log_q: Optional[Tensor], temperature: float) -> Tensor:
    """(P, P) logits of P users against the P in-batch items (positives on the
    diagonal): cosine / temperature, minus log q of each in-batch item when
    given (P,), and -inf where another row clicked the same item (it is not
    a negative)."""
    logits = users @ items.t() / temperature
    if item_log_q is not None:
        logits = logits - item_log_q.unsqueeze(0)
    same = item_ids.unsqueeze(1) == item_ids.unsqueeze(0)
    same.fill_diagonal_(False)
    return logits.masked_fill(same, float("-inf"))


@registry.register_loss("in_batch_softmax")
class InBatchSoftmaxLoss(nn.Module):
    """Cross-entropy of each user's row of ``in_batch_logits`` against its own
    (diagonal) item; zero for a batch without clicks."""

    def forward(self, sample_list, model_output):
        if LOGITS_KEY not in model_output:
            raise KeyError(f"in_batch_softmax: the model output has no '{LOGITS_KEY}'")
        logits = model_output[LOGITS_KEY]
        if logits.shape[0] == 0:
            return logits.sum()
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


@registry.register_model("two_tower")
class TwoTower(BaseModel):
    def __init__(self, config):
        super().__init__(config)
        self._catalogue: Optional[Tensor] = None

    @classmethod
    def config_path(cls):
        return config_path("models", "two_tower.yaml")

    # -- build ----------------------------------------------------------------------
    def build(self):
        config = self.config
        self.schema = dataset_schema()
        data = load_prepared(dataset_root(), verify_checksums=False, check_id_ranges=False)
        if data.items is None or data.item_feature is None:
            raise ValueError(f"two_tower: {data.root} has no item table / item feature; "
                             "the item tower encodes items from the item table")
        dim = int(config.embedding_dim)
        self.output_dim = int(config.output_dim)
        self.temperature = float(config.temperature)
        if self.temperature <= 0:
            raise ValueError(
                f"model_config.two_tower.temperature must be > 0, got {self.temperature}")
        self.eval_top_k = int(config.eval_top_k)
        self.num_items = data.items.rows

        self.history_feature = config.get("history_feature") or None
        if self.history_feature is not None:
            self.schema.sparse_feature(self.history_feature)  # named, or a clear error
        excluded = config.get("exclude_features") or []
        if isinstance(excluded, str):  # from the command line: "[user_id]" or "user_id,x"
            excluded = [n.strip(" '\"") for n in excluded.strip("[]").split(",") if n.strip()]
        excluded = list(excluded)
        for name in excluded:
            self.schema.sparse_feature(name)  # named in the schema, or a clear error
        features = [f for f in self.schema.sparse if f.name not in excluded]
        self.user_features = [f.name for f in features if f.side != "item"]
        self.item_features = [f.name for f in features if f.side == "item"]
        if not self.item_features:
            raise ValueError("two_tower: the schema declares no item-side sparse feature")

        sparse = node_params(config.sparse_encoder.get("params"))
        sparse["embedding_dim"] = dim
        tables = sparse.pop("tables", None) or {}
        for name in tables:
            self.schema.sparse_feature(name)

        def side(features):
            own = {name: table for name, table in tables.items() if name in features}
            return {**sparse, "features": features, "tables": own}

        self.user_sparse = build_encoder(config.sparse_encoder.type, side(self.user_features),
                                         schema=self.schema)
        self.item_sparse = build_encoder(config.sparse_encoder.type, side(self.item_features),
                                         schema=self.schema)
        item_table = [torch.from_numpy(np.array(data.items[name][:, 0]))
                      for name in self.item_features]
        self.register_buffer("item_attributes", torch.stack(item_table, 1), persistent=False)
        self._build_id_blanking(data)
        self._build_log_q(data)

        self.dense_encoder = None
        dense_out = 0
        if self.schema.dense:
            params = node_params(config.dense_encoder.params)
            self.dense_encoder = build_encoder(
                config.dense_encoder.type, {**params, "in_dim": len(self.schema.dense)})
            dense_out = self.dense_encoder.out_dim

        self.modalities = [m for m in MODALITIES if bool(config.modalities.get(m))]
        self.knowledge = nn.ModuleDict(
            {m: build_item_knowledge(config, m, data, dim) for m in self.modalities})
        self.item_data_key = self._item_data_key(data)

        hidden = [int(h) for h in (config.tower_hidden or [])]
        user_in = dense_out + dim * (len(self.user_features) + len(self.history_modalities))
        item_in = dim * (len(self.item_features) + len(self.modalities))
        self.user_tower = mlp([user_in, *hidden, self.output_dim], final_activation=False)
        self.item_tower = mlp([item_in, *hidden, self.output_dim], final_activation=False)

    def _build_id_blanking(self, data) -> None:
        """Ids of cold items (no observed training row: mmf_rec.data.protocol)
        have untrained (noise) vectors: they are
        blanked (the padding id, a zero vector), and in training ids are
        blanked at random too, so the towers learn to work from features and
        content alone (cold items; the features-only fallback for new users)."""
        train = data.split("train")
        self.item_id_feature = self.config.get("item_id_feature") or None
        if self.item_id_feature not in self.item_features:
            self.item_id_feature = None  # not read (excluded): nothing to blank
        self.id_dropout = float(self.config.get("id_dropout") or 0.0)
        if self.item_id_feature is not None:
            self.item_id_column = self.item_features.index(self.item_id_feature)
            seen = torch.from_numpy(protocol.seen_in_training(data))
            self.register_buffer("item_seen", seen, persistent=False)
        # the user id column also keys users in evaluation (hr@K), read or not
        self.user_key = self.config.get("user_id_feature") or None
        if self.user_key is not None and self.schema.sparse_feature(self.user_key).side == "item":
            raise ValueError(f"model_config.two_tower.user_id_feature: '{self.user_key}' is an "
                             "item-side feature")
        self.user_id_feature = self.user_key if self.user_key in self.user_features else None
        self.user_id_dropout = float(self.config.get("user_id_dropout") or 0.0)
        if self.user_id_feature is not None:
            feature = self.schema.sparse_feature(self.user_id_feature)
            seen = torch.zeros(feature.cardinality, dtype=torch.bool)
            seen[torch.from_numpy(np.unique(train[self.user_id_feature][:, 0]))] = True
            self.register_buffer("user_seen", seen, persistent=False)

    def _build_log_q(self, data) -> None:
        """log of each item's share of the training clicks: the probability
        that it is an in-batch negative. Items without clicks get the share of
        one click (they never are in-batch items in training anyway)."""
        train = data.split("train")
        clicked = np.asarray(train[data.schema.label]) > 0.5
        items = np.asarray(train[data.item_feature][:, 0])[clicked]
        counts = np.bincount(items, minlength=data.items.rows).astype(np.float64)
        share = np.maximum(counts, 1.0) / max(counts.sum(), 1.0)
        use = bool(self.config.get("logq_correction", True))
        self.register_buffer("log_q", torch.from_numpy(np.log(share)).float() if use else None,
                             persistent=False)

    @staticmethod
    def _item_data_key(data) -> str:
        files = data.manifest.get("items", {}).get("files", {})
        text = json.dumps({k: v.get("sha256") for k, v in files.items()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def history_modalities(self) -> List[str]:
        return self.modalities if self.history_feature else []

    # -- towers -----------------------------------------------------------------------
    def _blank(self, ids: Tensor, seen: Tensor, dropout: float) -> Tensor:
        known = (ids >= 0) & (ids < seen.shape[0])
        blank = ~known | ~seen[ids.clamp(0, seen.shape[0] - 1)]
        if self.training and dropout > 0:
            blank = blank | (torch.rand(blank.shape, device=blank.device) < dropout)
        return torch.where(blank, torch.full_like(ids, PAD_ID), ids)

    def encode_users(self, batch: Mapping[str, Tensor]) -> Tensor:
        """(B, output_dim) unit vectors from a batch's user-side fields
        (``dense`` and ``sparse_<user feature>``); -1 ids are unknown."""
        parts = []
        if self.dense_encoder is not None:
            parts.append(self.dense_encoder(batch["dense"].float()))
        ids = sparse_inputs(batch, self.user_features)
        if self.user_id_feature is not None:
            ids[self.user_id_feature] = self._blank(ids[self.user_id_feature], self.user_seen,
                                                    self.user_id_dropout)
        parts.append(self.user_sparse(ids).flatten(1))
        for modality in self.history_modalities:
            history = batch[f"sparse_{self.history_feature}"]
            vectors, valid = self.knowledge[modality].pooled(history)
            parts.append(masked_mean(vectors, valid))
        return F.normalize(self.user_tower(torch.cat(parts, 1)), dim=-1)

    def encode_items(self, item_ids: Tensor) -> Tensor:
        """(N, output_dim) unit vectors of items, from their id alone."""
        item_ids = item_ids.reshape(-1).long()
        if item_ids.numel() and (int(item_ids.min()) < 0 or int(item_ids.max()) >= self.num_items):
            raise IndexError(f"two_tower: item ids must lie in [0, {self.num_items}), got "
                             f"[{int(item_ids.min())}, {int(item_ids.max())}]")
        attributes = self.item_attributes[item_ids]
        if self.item_id_feature is not None:
            attributes = attributes.clone()
            attributes[:, self.item_id_column] = self._blank(
                attributes[:, self.item_id_column], self.item_seen, self.id_dropout)
        parts = [self.item_sparse(
            {name: attributes[:, j: j + 1] for j, name in enumerate(self.item_features)}
        ).flatten(1)]
        for modality in self.modalities:
            vectors, _ = self.knowledge[modality].pooled(item_ids)
            parts.append(vectors)
        return F.normalize(self.item_tower(torch.cat(parts, 1)), dim=-1)

    @torch.no_grad()
    def encode_catalogue(self, item_ids: Optional[Tensor] = None, batch_size: int = 4096,
                         progress: bool = False) -> Tensor:
        """Item vectors of ``item_ids`` (default: the whole catalogue), in batches."""
        if item_ids is None:
            item_ids = torch.arange(self.num_items, device=self.item_attributes.device)
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

    # -- MMF ------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        self._catalogue = None  # weights may change from here on
        return super().train(mode)

    def load_state_dict(self, state_dict, *args, **kwargs):
        self._catalogue = None
        return super().load_state_dict(state_dict, *args, **kwargs)

    def _user_rows(self, sample_list, rows: Tensor) -> Dict[str, Tensor]:
        keys = [f"sparse_{name}" for name in self.user_features]
        if self.dense_encoder is not None:
            keys.append("dense")
        return {key: sample_list[key].index_select(0, rows) for key in keys}

    def _in_batch_logits(self, users: Tensor, items: Tensor, item_ids: Tensor) -> Tensor:
        log_q = None if self.log_q is None else self.log_q[item_ids]
        return in_batch_logits(users, items, item_ids, log_q, self.temperature)

    def forward(self, sample_list):
        targets = sample_list["targets"].reshape(-1)
        item_ids = sample_list["item_index"].reshape(-1).long()
        clicked = torch.nonzero(targets > 0.5).squeeze(1)
        if self.training:
            if len(clicked) == 0:  # no positive: a zero loss that still backpropagates
                return {LOGITS_KEY: self.user_tower[0].weight[:0, :0]}
            users = self.encode_users(self._user_rows(sample_list, clicked))
            items = self.encode_items(item_ids[clicked])
            return {LOGITS_KEY: self._in_batch_logits(users, items, item_ids[clicked])}
        users = self.encode_users(sample_list)
        items = self.encode_items(item_ids)
        output = {
            "scores": (users * items).sum(-1, keepdim=True) / self.temperature,
            LOGITS_KEY: self._in_batch_logits(users[clicked], items[clicked], item_ids[clicked]),
        }
        output.update(self._retrieve(users[clicked], item_ids[clicked], sample_list, clicked))
        return output

    def _retrieve(self, users: Tensor, targets: Tensor, sample_list, rows: Tensor):
        """Full-catalogue top ``eval_top_k`` of each clicked row (padded with
        -1 when the catalogue is smaller), for the ranking metrics."""
        if self._catalogue is None:
            self._catalogue = self.encode_catalogue()
        depth = min(self.eval_top_k, self.num_items)
        top = torch.topk(users @ self._catalogue.t(), depth, dim=1).indices
        if depth < self.eval_top_k:
            top = F.pad(top, (0, self.eval_top_k - depth), value=PAD)
        if self.user_key is not None:
            user = sample_list[f"sparse_{self.user_key}"][:, 0].index_select(0, rows)
        else:
            user = rows
        return {TOPK_KEY: top, TARGET_KEY: targets, USER_KEY: user}
