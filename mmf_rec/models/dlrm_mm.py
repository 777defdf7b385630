"""The multimodal late-interaction ranker (``dlrm_mm``).

Both sides become sets of d-vectors ("tokens"):
- user side: the dense features through the bottom MLP, each user
  categorical feature, the pooled history bag, and one text and one image
  vector per history item;
- item side: each item categorical feature, the description's text tokens
  and the image's grid regions.
Interaction features are, for every user token, its MaxSim over the item's
tokens (ColBERT-style, masked), and DLRM's pairwise dot products of the
pooled vectors of each group; a top MLP turns them into a click logit.

The item side depends only on the item id (its attributes come from the
prepared item table, its knowledge from the cache), so ``encode_items`` can
run once per catalogue and ``score`` ranks one user against K candidates in
one batched call.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from mmf.common.registry import registry
from mmf.models.base_model import BaseModel
from torch import Tensor, nn

from mmf_rec.data import protocol
from mmf_rec.data.prepared import load_prepared
from mmf_rec.encoders.dense import mlp
from mmf_rec.interaction import dot_interaction, dot_interaction_size, masked_mean, maxsim
from mmf_rec.models.common import (
    build_bottom_mlp,
    build_encoder,
    node_params,
    dataset_root,
    dataset_schema,
    sparse_inputs,
)
from mmf_rec.models.knowledge import build_item_knowledge
from mmf_rec.paths import config_path
from mmf_rec.schema import PAD_ID

MODALITIES = ("text", "image")


@dataclass
class Side:
    """One side's tokens (N, T, d) with mask (N, T), made of groups of
    ``group_sizes`` tokens (attributes, text, image, ...), and one pooled
    vector per group (N, G, d) for the dot interaction."""

    tokens: Tensor
    mask: Tensor
    pooled: Tensor
    group_sizes: Tuple[int, ...]

    def expand(self, n: int) -> "Side":
        return Side(
            self.tokens.expand(n, -1, -1), self.mask.expand(n, -1),
            self.pooled.expand(n, -1, -1), self.group_sizes,
        )

    @classmethod
    def from_groups(cls, groups: List[Tuple[Tensor, Tensor]], pooled: List[Tensor]) -> "Side":
        """Side from (tokens, mask) groups and the pooled vectors of each."""
        tokens, masks = zip(*groups)
        sizes = tuple(t.shape[1] for t in tokens)
        return cls(torch.cat(tokens, 1), torch.cat(masks, 1), torch.cat(pooled, 1), sizes)

    def groups(self):
        """(tokens, mask) of each group."""
        return zip(self.tokens.split(self.group_sizes, 1), self.mask.split(self.group_sizes, 1))


@registry.register_model("dlrm_mm")
class DLRMMultimodal(BaseModel):
    def __init__(self, config):
        super().__init__(config)

    @classmethod
    def config_path(cls):
        return config_path("models", "dlrm_mm.yaml")

    # -- build ----------------------------------------------------------------------
    def build(self):
        config = self.config
        self.schema = dataset_schema()
        data = load_prepared(dataset_root(), verify_checksums=False, check_id_ranges=False)
        dim = int(config.embedding_dim)
        self.history_feature = config.get("history_feature") or None
        if self.history_feature is not None:
            self.schema.sparse_feature(self.history_feature)  # named, or a clear error
        self.user_features = [
            f.name for f in self.schema.sparse
            if f.side != "item" and f.name != self.history_feature
        ] + ([self.history_feature] if self.history_feature else [])
        self.item_features = [f.name for f in self.schema.sparse if f.side == "item"]
        if not self.item_features:
            raise ValueError("dlrm_mm: the schema declares no item-side sparse feature")

        sparse = node_params(config.sparse_encoder.get("params"))
        sparse["embedding_dim"] = dim
        # Per-feature tables go to the side that encodes the feature (each
        # encoder rejects tables for features it does not encode).
        tables = sparse.pop("tables", None) or {}
        for name in tables:
            self.schema.sparse_feature(name)  # named in the schema, or a clear error

        def side(features):
            own = {name: table for name, table in tables.items() if name in features}
            return {**sparse, "features": features, "tables": own}

        self.user_sparse = build_encoder(
            config.sparse_encoder.type, side(self.user_features), schema=self.schema
        )
        self.item_sparse = build_encoder(
            config.sparse_encoder.type, side(self.item_features), schema=self.schema
        )
        item_table = [torch.from_numpy(np.array(data.items[name][:, 0])) for name in self.item_features]
        self.register_buffer("item_attributes", torch.stack(item_table, 1), persistent=False)
        self._build_id_dropout(data)

        self.dense_encoder = build_bottom_mlp(config, dim, len(self.schema.dense))

        self.modalities = [m for m in MODALITIES if config.modalities.get(m)]
        self.knowledge = nn.ModuleDict(
            {m: build_item_knowledge(config, m, data, dim) for m in self.modalities}
        )

        user_groups = 1 + len(self.user_features) + len(self.history_modalities)
        item_groups = len(self.item_features) + len(self.modalities)
        user_tokens = 1 + len(self.user_features) + self.history_len * len(self.history_modalities)
        item_token_groups = 1 + len(self.modalities)
        width = dot_interaction_size(user_groups + item_groups - 1, dim) + user_tokens * item_token_groups
        self.top_mlp = mlp([width, *config.top_mlp, 1], final_activation=False)

    def _build_id_dropout(self, data) -> None:
        """An item without training interactions has an untrained id vector:
        noise. Such ids are blanked (the padding id, a zero vector), and in
        training ids are blanked at random too, so the model learns to score
        an item from its attributes and knowledge when the id says nothing."""
        self.item_id_feature = self.config.get("item_id_feature") or None
        self.id_dropout = float(self.config.get("id_dropout") or 0.0)
        if self.item_id_feature is None:
            return
        self.item_id_column = self.item_features.index(self.item_id_feature)
        seen = torch.from_numpy(protocol.seen_in_training(data))
        self.register_buffer("item_seen", seen, persistent=False)

    def _item_attributes(self, item_ids: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """The items' categorical ids, and (N,) whether each id is kept: a
        blanked id is masked out of MaxSim, not a zero token it could match."""
        attributes = self.item_attributes[item_ids]
        if self.item_id_feature is None:
            return attributes, None
        blank = ~self.item_seen[item_ids]
        if self.training and self.id_dropout > 0:
            blank = blank | (torch.rand(blank.shape, device=blank.device) < self.id_dropout)
        column = attributes[:, self.item_id_column]
        attributes = attributes.clone()
        attributes[:, self.item_id_column] = torch.where(blank, PAD_ID, column)
        return attributes, ~blank

    @property
    def history_modalities(self) -> List[str]:
        return self.modalities if self.history_feature else []

    @property
    def history_len(self) -> int:
        if not self.history_feature:
            return 0
        return self.schema.sparse_feature(self.history_feature).max_len

    # -- the two sides ----------------------------------------------------------------
    def encode_users(self, sample_list) -> Side:
        dense = self.dense_encoder(sample_list["dense"]).unsqueeze(1)
        categorical = self.user_sparse(sparse_inputs(sample_list, self.user_features))
        known = torch.ones(dense.shape[0], 1 + categorical.shape[1], dtype=torch.bool,
                           device=dense.device)
        groups = [(torch.cat([dense, categorical], 1), known)]
        pooled = [dense, categorical]
        if self.history_modalities:
            history = sample_list[f"sparse_{self.history_feature}"]
            for modality in self.history_modalities:
                vectors, valid = self.knowledge[modality].pooled(history)
                groups.append((vectors, valid))
                pooled.append(masked_mean(vectors, valid).unsqueeze(1))
        return Side.from_groups(groups, pooled)

    def encode_items(self, item_ids: Tensor) -> Side:
        attributes, id_kept = self._item_attributes(item_ids)
        categorical = self.item_sparse(
            {name: attributes[:, j : j + 1] for j, name in enumerate(self.item_features)}
        )
        known = torch.ones(categorical.shape[:2], dtype=torch.bool, device=categorical.device)
        if id_kept is not None:
            known[:, self.item_id_column] = id_kept
        groups, pooled = [(categorical, known)], [categorical]
        for modality in self.modalities:
            vectors, mask = self.knowledge[modality].tokens(item_ids)
            groups.append((vectors, mask))
            pooled.append(masked_mean(vectors, mask).unsqueeze(1))
        return Side.from_groups(groups, pooled)

    @torch.no_grad()
    def encode_catalogue(self, batch_size: int = 1024) -> Side:
        """The item side of every item of the catalogue, encoded in batches:
        what a serving cache or a full-catalogue evaluation scores against."""
        num_items = self.item_attributes.shape[0]
        parts = [self.encode_items(torch.arange(start, min(start + batch_size, num_items),
                                                device=self.item_attributes.device))
                 for start in range(0, num_items, batch_size)]
        return Side(torch.cat([p.tokens for p in parts]), torch.cat([p.mask for p in parts]),
                    torch.cat([p.pooled for p in parts]), parts[0].group_sizes)

    # -- interaction --------------------------------------------------------------------
    def score(self, users: Side, items: Side) -> Tensor:
        """Logits (N, 1) for N (user, item) pairs; a side with N = 1 is
        broadcast, so one user against K candidates is one call."""
        n = max(users.tokens.shape[0], items.tokens.shape[0])
        users = users.expand(n) if users.tokens.shape[0] == 1 else users
        items = items.expand(n) if items.tokens.shape[0] == 1 else items
        # MaxSim of every user token against each item group separately, so
        # that e.g. a past item's image vector is matched against image regions
        late = torch.cat(
            [maxsim(users.tokens, tokens, users.mask, mask) for tokens, mask in items.groups()],
            1,
        )
        groups = torch.cat([users.pooled, items.pooled], 1)
        dots = dot_interaction(groups[:, 0], groups[:, 1:])
        return self.top_mlp(torch.cat([dots, late], 1))

    def score_candidates(self, user_sample, candidates: Side) -> Tensor:
        """Scores (K,) of one user (a one-row batch) against K encoded items."""
        return self.score(self.encode_users(user_sample), candidates).squeeze(1)

    def forward(self, sample_list):
        users = self.encode_users(sample_list)
        items = self.encode_items(sample_list["item_index"])
        return {"scores": self.score(users, items)}
