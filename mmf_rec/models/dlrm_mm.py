"""The multimodal late-interaction ranker (``dlrm_mm``).

Both sides become sets of d-vectors ("tokens", ``mmf_rec.models.tokens``):
- user side: the dense features through the bottom MLP, each user
  categorical feature, the pooled history bag, and one text and one image
  vector per history item;
- item side: each item categorical feature, the description's text tokens
  and the image's grid regions.
Interaction features are, for every user token, its MaxSim over the item's
tokens (ColBERT-style, masked), and DLRM's pairwise dot products of the
pooled vectors of each group; an over arch turns them into a click logit.

The item side depends only on the item id (its attributes come from the
item table, its knowledge from the cache), so ``encode_items`` can run once
per catalogue and ``score`` ranks one user against K candidates in one
batched call.
"""

from typing import List, Mapping, Optional, Sequence, Tuple

import torch
from mmf.common.registry import registry
from mmf.models.base_model import BaseModel
from torch import Tensor, nn

from mmf_rec.interaction import DotInteraction, LateInteraction
from mmf_rec.models.common import (
    build_bottom_mlp,
    build_side_encoders,
    dataset_data,
    dataset_schema,
    item_attributes,
    seen_items,
    sparse_inputs,
)
from mmf_rec.models.ids import ItemAttributes
from mmf_rec.models.knowledge import build_item_knowledge
from mmf_rec.models.over_arch import OverArch
from mmf_rec.models.tokens import ItemTokens, Side, UserTokens
from mmf_rec.paths import config_path
from mmf_rec.schema import Schema

__all__ = ["MODALITIES", "Side", "LateInteractionNet", "DLRMMultimodal", "side_features"]

MODALITIES = ("text", "image")


def side_features(schema: Schema, history_feature: Optional[str] = None
                  ) -> Tuple[List[str], List[str]]:
    """(user-side, item-side) sparse feature names of a schema, as the ranker
    reads them: context features count as the user's, and the history bag,
    when named, is the user side's last feature."""
    if history_feature is not None:
        schema.sparse_feature(history_feature)  # named, or a clear error
    user = [f.name for f in schema.sparse if f.side != "item" and f.name != history_feature]
    item = [f.name for f in schema.sparse if f.side == "item"]
    return user + ([history_feature] if history_feature else []), item


class LateInteractionNet(nn.Module):
    """The ranker from its arches: the two sides' sparse encoders, the item
    table (``ItemAttributes``, cold ids blanked), the dense encoder, the item
    knowledge per modality, ``UserTokens`` and ``ItemTokens``, a
    ``LateInteraction`` and a ``DotInteraction``, and an ``OverArch``.

    ``forward(batch)`` takes ``dense``, ``sparse_<user feature>`` and
    ``item_index`` and returns logits (B, 1). Arguments: see :meth:`compose`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.compose(*args, **kwargs)

    def compose(self, schema: Schema, user_sparse: nn.Module, item_sparse: nn.Module,
                item_attributes: Tensor, dense_encoder: nn.Module,
                knowledge: Optional[Mapping[str, nn.Module]] = None,
                top_mlp: Sequence[int] = (256, 64), history_feature: Optional[str] = None,
                item_id_feature: Optional[str] = None, item_seen: Optional[Tensor] = None,
                id_dropout: float = 0.0) -> None:
        """Build the arches around the given encoders.

        ``item_attributes`` (num_items, F): the item table's ids of the item
        encoder's features, in its order. ``knowledge``: modality name ->
        ``ItemKnowledge``, in token order. ``history_feature``: the user
        encoder's last feature, whose past items also bring their knowledge.
        ``item_id_feature`` and ``item_seen`` (num_items,) bool: ids of items
        never seen in training are blanked and masked out, and in training
        any id with probability ``id_dropout``.
        """
        self.schema = schema
        self.user_features = list(user_sparse.feature_names)
        self.item_features = list(item_sparse.feature_names)
        if history_feature is not None and self.user_features[-1:] != [history_feature]:
            raise ValueError(f"LateInteractionNet: the history feature '{history_feature}' "
                             f"must be the user encoder's last feature, got {self.user_features}")
        self.history_feature = history_feature
        self.user_sparse = user_sparse
        self.item_sparse = item_sparse
        self.item_id_feature = item_id_feature
        self.item_table = ItemAttributes.of_features(
            item_attributes, self.item_features, item_id_feature, item_seen, id_dropout)
        self.item_id_column = self.item_table.id_column
        self.dense_encoder = dense_encoder
        self.knowledge = nn.ModuleDict(dict(knowledge or {}))
        self.modalities = list(self.knowledge)
        self.user_tokens = UserTokens(len(self.user_features), self.history_len,
                                      len(self.history_modalities))
        self.item_tokens = ItemTokens(len(self.item_features), len(self.modalities),
                                      self.item_id_column)
        self.late_interaction = LateInteraction(self.user_tokens.num_tokens,
                                                self.item_tokens.num_token_groups)
        self.dot_interaction = DotInteraction(
            self.user_tokens.num_pooled + self.item_tokens.num_pooled - 1,
            user_sparse.embedding_dim)
        self.top_mlp = OverArch(
            self.dot_interaction.output_size + self.late_interaction.output_size, top_mlp)

    @property
    def item_attributes(self) -> Tensor:
        """The item table (num_items, F)."""
        return self.item_table.table

    @property
    def history_modalities(self) -> List[str]:
        return self.modalities if self.history_feature else []

    @property
    def history_len(self) -> int:
        if not self.history_feature:
            return 0
        return self.schema.sparse_feature(self.history_feature).max_len

    # -- the two sides ----------------------------------------------------------------
    def encode_users(self, batch) -> Side:
        dense = self.dense_encoder(batch["dense"])
        categorical = self.user_sparse(sparse_inputs(batch, self.user_features))
        history = []
        if self.history_modalities:
            ids = batch[f"sparse_{self.history_feature}"]
            history = [self.knowledge[modality].pooled(ids)
                       for modality in self.history_modalities]
        return self.user_tokens(dense, categorical, history)

    def encode_items(self, item_ids: Tensor) -> Side:
        attributes, id_kept = self.item_table(item_ids)
        categorical = self.item_sparse(
            {name: attributes[:, j : j + 1] for j, name in enumerate(self.item_features)}
        )
        knowledge = [self.knowledge[modality].tokens(item_ids) for modality in self.modalities]
        return self.item_tokens(categorical, id_kept, knowledge)

    @torch.no_grad()
    def encode_catalogue(self, batch_size: int = 1024) -> Side:
        """The item side of every item of the catalogue, encoded in batches:
        what a serving cache or a full-catalogue evaluation scores against."""
        num_items = self.item_table.num_items
        device = self.item_table.table.device
        parts = [self.encode_items(torch.arange(start, min(start + batch_size, num_items),
                                                device=device))
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
        late = self.late_interaction(users.tokens, users.mask, items.groups())
        groups = torch.cat([users.pooled, items.pooled], 1)
        dots = self.dot_interaction(groups[:, 0], groups[:, 1:])
        return self.top_mlp(torch.cat([dots, late], 1))

    def score_candidates(self, user_sample, candidates: Side) -> Tensor:
        """Scores (K,) of one user (a one-row batch) against K encoded items."""
        return self.score(self.encode_users(user_sample), candidates).squeeze(1)

    def forward(self, batch) -> Tensor:
        users = self.encode_users(batch)
        items = self.encode_items(batch["item_index"])
        return self.score(users, items)


@registry.register_model("dlrm_mm")
class DLRMMultimodal(LateInteractionNet, BaseModel):
    """``dlrm_mm`` in MMF: ``model_config.dlrm_mm`` and the run's dataset
    (schema, item table, texts, images) turned into LateInteractionNet's
    arguments in ``build()``."""

    def __init__(self, config):
        BaseModel.__init__(self, config)

    @classmethod
    def config_path(cls):
        return config_path("models", "dlrm_mm.yaml")

    def build(self):
        config = self.config
        schema = dataset_schema()
        data = dataset_data()
        dim = int(config.embedding_dim)
        history_feature = config.get("history_feature") or None
        user_features, item_features = side_features(schema, history_feature)
        if not item_features:
            raise ValueError("dlrm_mm: the schema declares no item-side sparse feature")
        user_sparse, item_sparse = build_side_encoders(
            config, schema, dim, user_features, item_features)
        item_id_feature = config.get("item_id_feature") or None
        if item_id_feature is not None and item_id_feature not in item_features:
            raise ValueError(f"model_config.dlrm_mm.item_id_feature: '{item_id_feature}' is not "
                             f"an item-side feature {item_features}")
        dense_encoder = build_bottom_mlp(config, dim, len(schema.dense))
        knowledge = {modality: build_item_knowledge(config, modality, data, dim)
                     for modality in MODALITIES if config.modalities.get(modality)}
        self.compose(
            schema, user_sparse, item_sparse, item_attributes(data, item_features),
            dense_encoder, knowledge,
            top_mlp=[int(h) for h in config.top_mlp],
            history_feature=history_feature,
            item_id_feature=item_id_feature,
            item_seen=seen_items(data) if item_id_feature is not None else None,
            id_dropout=float(config.get("id_dropout") or 0.0),
        )

    def forward(self, sample_list):
        return {"scores": super().forward(sample_list)}
