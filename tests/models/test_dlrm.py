"""The registered DLRM built from a schema, through MMF's model builder."""

import numpy as np
import pytest
import torch

import mmf_rec.plugin

mmf_rec.plugin.apply()

from mmf.common.registry import registry  # noqa: E402
from mmf.utils.build import build_model  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import mmf_rec  # noqa: E402
from mmf_rec.paths import config_path  # noqa: E402
from mmf_rec.schema import Schema, SchemaError  # noqa: E402

mmf_rec.setup_imports()

SCHEMA = Schema.from_dict(
    {
        "dense": [{"name": "age"}, {"name": "activity"}],
        "sparse": [
            {"name": "user_id", "cardinality": 50},
            {"name": "item_id", "cardinality": 40, "side": "item"},
            {"name": "history", "cardinality": 40, "max_len": 3, "pooling": "mean"},
        ],
    }
)


@pytest.fixture
def dataset_registered():
    previous = registry.get("config", no_warning=True)
    registry.register(
        "config",
        OmegaConf.create({"datasets": "_dlrm_test", "evaluation": {"predict": False}}),
    )
    registry.register("_dlrm_test_schema", SCHEMA)
    yield
    registry.unregister("_dlrm_test_schema")
    registry.register("config", previous)


def dlrm_config(**overrides):
    config = OmegaConf.load(config_path("models", "dlrm.yaml")).model_config.dlrm
    # a schema without data on disk: no item table to tell cold items by
    config = OmegaConf.merge(config, {"item_id_feature": None}, overrides)
    config.model = "dlrm"
    return config


def batch(size=8):
    g = torch.Generator().manual_seed(0)
    return {
        "dense": torch.randn(size, 2, generator=g),
        "sparse_user_id": torch.randint(0, 50, (size, 1), generator=g),
        "sparse_item_id": torch.randint(0, 40, (size, 1), generator=g),
        "sparse_history": torch.tensor([[1, 2, -1]] * size),
        "targets": torch.randint(0, 2, (size, 1), generator=g).float(),
    }


@pytest.mark.parametrize("fused", [True, False])
def test_forward_gives_one_logit_per_row_and_a_loss(dataset_registered, fused):
    model = build_model(dlrm_config(sparse_encoder={"params": {"fused": fused}}))
    from mmf.common.sample import SampleList

    sample_list = SampleList(batch())
    sample_list.dataset_name, sample_list.dataset_type = "_dlrm_test", "train"
    output = model(sample_list)
    assert output["scores"].shape == (8, 1)
    loss = output["losses"]["train/_dlrm_test/logit_bce"]
    loss.backward()
    encoder = model.sparse_encoder
    if fused:
        group = next(g for g in encoder.fused_groups if "item_id" in g.rows)
        weight = encoder.fused_weights[encoder.fused_groups.index(group)]
        item_grad = weight.grad[group.rows["item_id"]]
    else:
        item_grad = encoder.tables["item_id"].weight.grad
    touched = set(batch()["sparse_item_id"].flatten().tolist())
    assert set(item_grad.abs().sum(1).nonzero().flatten().tolist()) == touched


def test_bottom_mlp_must_end_at_embedding_dim(dataset_registered):
    config = dlrm_config(dense_encoder={"params": {"hidden_dims": [32, 8]}})
    with pytest.raises(ValueError, match="must end with embedding_dim=16"):
        build_model(config)


def test_unknown_feature_in_config_is_named(dataset_registered):
    config = dlrm_config(sparse_encoder={"params": {"features": ["user_id", "colour"]}})
    with pytest.raises(SchemaError, match="colour"):
        build_model(config)


def test_model_without_a_schema_says_what_it_needs():
    previous = registry.get("config", no_warning=True)
    registry.register("config", OmegaConf.create({"datasets": "_no_such_dataset"}))
    try:
        with pytest.raises(SchemaError, match="_no_such_dataset"):
            build_model(dlrm_config())
    finally:
        registry.register("config", previous)


def test_cold_item_ids_are_blanked_as_in_every_model(publish_synthetic):
    data = publish_synthetic("_dlrm_cold", {"num_users": 50, "num_items": 40,
                                            "num_interactions": 1500, "image_size": 16})
    model = build_model(dlrm_config(item_id_feature="item_id")).eval()
    is_cold = torch.from_numpy(np.array(data.items["is_cold"]))
    assert is_cold.any() and torch.equal(model.item_blanking.seen, ~is_cold)
    items = torch.arange(40).unsqueeze(1)
    blanked = model.item_blanking(items)[0][:, 0]
    assert torch.equal(blanked == -1, is_cold)
    # a cold item scores as the padding id does: its untrained vector is never read
    from tiny_models import sample_batch

    rows = sample_batch(data, "_dlrm_cold", "test", 40, "test")
    rows["sparse_item_id"] = items
    with torch.no_grad():
        scores = model(rows)["scores"]
        rows["sparse_item_id"] = torch.where(is_cold.unsqueeze(1), -1, items)
        assert torch.equal(scores, model(rows)["scores"])
