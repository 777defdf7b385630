"""The ID-only DLRM: bottom MLP, embedding tables, dot interaction, top MLP.

It is the reference architecture for Criteo-style data and the baseline the
multimodal ranker must beat: it sees only ids and categorical columns, so on
items it never trained on it can do no better than chance. Like every model
here it blanks the ids of cold items (no observed training row, see
``mmf_rec.data.protocol``): their vectors were never trained, so the padding
id (a zero vector) stands in for them, as it does in ``dlrm_mm``.
"""

from typing import Dict

import torch
from omegaconf import OmegaConf
from mmf.common.registry import registry
from mmf.models.base_model import BaseModel

from mmf_rec.data import protocol
from mmf_rec.data.prepared import load_prepared
from mmf_rec.interaction import dot_interaction, dot_interaction_size
from mmf_rec.encoders.dense import dlrm_init_, mlp
from mmf_rec.models.common import (
    build_bottom_mlp,
    build_encoder,
    dataset_root,
    dataset_schema,
    sparse_inputs,
)
from mmf_rec.paths import config_path
from mmf_rec.schema import PAD_ID
from torch import Tensor


@registry.register_model("dlrm")
class DLRM(BaseModel):
    def __init__(self, config):
        super().__init__(config)

    @classmethod
    def config_path(cls):
        return config_path("models", "dlrm.yaml")

    def build(self):
        config = self.config
        self.schema = dataset_schema()
        dim = int(config.embedding_dim)

        sparse_params = {
            **OmegaConf.to_container(config.sparse_encoder.get("params") or {}),
            "embedding_dim": dim,
        }
        self.sparse_encoder = build_encoder(
            config.sparse_encoder.type, sparse_params, schema=self.schema
        )
        self.sparse_features = list(self.sparse_encoder.feature_names)

        self.dense_encoder = build_bottom_mlp(config, dim, len(self.schema.dense))

        self.self_interaction = bool(config.self_interaction)
        width = dot_interaction_size(
            len(self.sparse_features), dim, self.self_interaction
        )
        self.top_mlp = mlp([width, *config.top_mlp, 1], final_activation=False)
        dlrm_init_(self.dense_encoder)
        dlrm_init_(self.top_mlp)
        self._build_cold_blanking()

    def _build_cold_blanking(self) -> None:
        """The seen-item mask of the item id feature, when the data has items."""
        self.item_id_feature = self.config.get("item_id_feature") or None
        if self.item_id_feature not in self.sparse_features:
            self.item_id_feature = None  # e.g. Criteo: no item ids to blank
            return
        data = load_prepared(dataset_root(), verify_checksums=False, check_id_ranges=False)
        seen = torch.from_numpy(protocol.seen_in_training(data))
        self.register_buffer("item_seen", seen, persistent=False)

    def _blank_cold(self, ids: Dict[str, Tensor]) -> Dict[str, Tensor]:
        if self.item_id_feature is None:
            return ids
        items = ids[self.item_id_feature]
        seen = self.item_seen[items.clamp(0, self.item_seen.shape[0] - 1)] & (items >= 0)
        return {**ids, self.item_id_feature: torch.where(seen, items, PAD_ID)}

    def forward(self, sample_list):
        dense = self.dense_encoder(sample_list["dense"])
        sparse = self.sparse_encoder(
            self._blank_cold(sparse_inputs(sample_list, self.sparse_features)))
        interaction = dot_interaction(dense, sparse, self.self_interaction)
        return {"scores": self.top_mlp(interaction)}
