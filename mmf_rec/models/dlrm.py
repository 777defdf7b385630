"""The ID-only DLRM: bottom MLP, embedding tables, dot interaction, top MLP.

It is the reference architecture for Criteo-style data and the baseline the
multimodal ranker must beat: it sees only ids and categorical columns, so on
items it never trained on it can do no better than chance.
"""

from omegaconf import OmegaConf
from mmf.common.registry import registry
from mmf.models.base_model import BaseModel

from mmf_rec.interaction import dot_interaction, dot_interaction_size
from mmf_rec.encoders.dense import dlrm_init_, mlp
from mmf_rec.models.common import (
    build_bottom_mlp,
    build_encoder,
    dataset_schema,
    sparse_inputs,
)
from mmf_rec.paths import config_path


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

    def forward(self, sample_list):
        dense = self.dense_encoder(sample_list["dense"])
        sparse = self.sparse_encoder(sparse_inputs(sample_list, self.sparse_features))
        interaction = dot_interaction(dense, sparse, self.self_interaction)
        return {"scores": self.top_mlp(interaction)}
