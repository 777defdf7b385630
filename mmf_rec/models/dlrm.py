"""The ID-only DLRM: bottom MLP, embedding tables, dot interaction, top MLP.

It is the reference architecture for Criteo-style data and the baseline the
multimodal ranker must beat: it sees only ids and categorical columns, so on
items it never trained on it can do no better than chance. Like every model
here it blanks the ids of cold items (no observed training row, see
``mmf_rec.data.protocol``): their vectors were never trained, so the padding
id (a zero vector) stands in for them, as it does in ``dlrm_mm``.
"""

from typing import Optional, Sequence

from mmf.common.registry import registry
from mmf.models.base_model import BaseModel
from omegaconf import OmegaConf
from torch import Tensor, nn

from mmf_rec.encoders.dense import dlrm_init_
from mmf_rec.interaction import DotInteraction
from mmf_rec.models.common import (
    build_bottom_mlp,
    build_encoder,
    dataset_data,
    dataset_schema,
    seen_items,
    sparse_inputs,
)
from mmf_rec.models.ids import IdBlanking
from mmf_rec.models.over_arch import OverArch
from mmf_rec.paths import config_path
from mmf_rec.schema import Schema


class DLRMNet(nn.Module):
    """DLRM from its arches: the sparse encoder (one vector per feature), the
    dense encoder (bottom MLP, ending at the embedding size), a
    ``DotInteraction`` and an ``OverArch`` to one click logit.

    ``forward(batch)`` takes ``dense`` (B, num_dense) and ``sparse_<name>``
    ids and returns logits (B, 1). Arguments: see :meth:`compose`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.compose(*args, **kwargs)

    def compose(self, schema: Schema, sparse_encoder: nn.Module, dense_encoder: nn.Module,
                top_mlp: Sequence[int] = (128, 64), self_interaction: bool = False,
                item_id_feature: Optional[str] = None, item_seen: Optional[Tensor] = None,
                dlrm_init: bool = True) -> None:
        """Build the arches around the given encoders.

        ``top_mlp``: the over arch's hidden sizes. ``item_id_feature`` and
        ``item_seen`` (num_items,) bool: ids of items never seen in training
        read as the padding id. ``dlrm_init``: both MLPs initialised as DLRM
        initialises them (``mmf_rec.encoders.dense.dlrm_init_``), the dense
        encoder first.
        """
        self.schema = schema
        self.sparse_encoder = sparse_encoder
        self.sparse_features = list(sparse_encoder.feature_names)
        self.dense_encoder = dense_encoder
        self.interaction = DotInteraction(len(self.sparse_features),
                                          sparse_encoder.embedding_dim, self_interaction)
        self.top_mlp = OverArch(self.interaction.output_size, top_mlp)
        if dlrm_init:
            dlrm_init_(self.dense_encoder)
            dlrm_init_(self.top_mlp)
        if item_id_feature is not None and item_id_feature not in self.sparse_features:
            raise ValueError(f"DLRMNet: item_id_feature '{item_id_feature}' is not among the "
                             f"encoded features {self.sparse_features}")
        if item_id_feature is not None and item_seen is None:
            raise ValueError("DLRMNet: item_id_feature needs item_seen, the items to keep")
        self.item_id_feature = item_id_feature
        # out-of-range ids are left for the sparse encoder to refuse
        self.item_blanking = (IdBlanking(item_seen, blank_unknown=False)
                              if item_id_feature is not None else None)

    def forward(self, batch) -> Tensor:
        dense = self.dense_encoder(batch["dense"])
        ids = sparse_inputs(batch, self.sparse_features)
        if self.item_blanking is not None:
            items, _ = self.item_blanking(ids[self.item_id_feature])
            ids = {**ids, self.item_id_feature: items}
        return self.top_mlp(self.interaction(dense, self.sparse_encoder(ids)))


@registry.register_model("dlrm")
class DLRM(DLRMNet, BaseModel):
    """``dlrm`` in MMF: ``model_config.dlrm`` and the run's dataset (schema,
    item table) turned into DLRMNet's arguments in ``build()``."""

    def __init__(self, config):
        BaseModel.__init__(self, config)

    @classmethod
    def config_path(cls):
        return config_path("models", "dlrm.yaml")

    def build(self):
        config = self.config
        schema = dataset_schema()
        dim = int(config.embedding_dim)
        sparse_params = {
            **OmegaConf.to_container(config.sparse_encoder.get("params") or {}),
            "embedding_dim": dim,
        }
        sparse_encoder = build_encoder(config.sparse_encoder.type, sparse_params, schema=schema)
        dense_encoder = build_bottom_mlp(config, dim, len(schema.dense))
        item_id_feature = config.get("item_id_feature") or None
        item_seen = None
        if item_id_feature in sparse_encoder.feature_names:
            item_seen = seen_items(dataset_data())
        else:
            item_id_feature = None  # e.g. Criteo: no item ids to blank
        self.compose(
            schema, sparse_encoder, dense_encoder,
            top_mlp=[int(h) for h in config.top_mlp],
            self_interaction=bool(config.self_interaction),
            item_id_feature=item_id_feature, item_seen=item_seen,
        )

    def forward(self, sample_list):
        return {"scores": super().forward(sample_list)}
