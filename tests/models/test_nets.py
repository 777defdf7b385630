"""The three models built from a Schema, encoders and tensors, with no run
directory and no registry; and the registered models, which build the same
modules from a run's config."""

import numpy as np
import pytest
import torch

import mmf_rec.plugin

mmf_rec.plugin.apply()

import mmf_rec  # noqa: E402
from mmf.common.registry import registry  # noqa: E402

from mmf_rec.data import protocol  # noqa: E402
from mmf_rec.encoders.dense import DenseEncoder  # noqa: E402
from mmf_rec.encoders.sparse import SparseEncoder  # noqa: E402
from mmf_rec.models.dlrm import DLRMNet  # noqa: E402
from mmf_rec.models.dlrm_mm import LateInteractionNet, side_features  # noqa: E402
from mmf_rec.models.two_tower import TwoTowerNet, click_log_q  # noqa: E402
from mmf_rec.ranking_metrics import TOPK_KEY  # noqa: E402
from mmf_rec.schema import Schema  # noqa: E402
from tiny_models import TINY_BERT, TINY_DATA, build_tiny, sample_batch  # noqa: E402

mmf_rec.setup_imports()

SCHEMA = Schema.from_dict({
    "dense": [{"name": "age"}, {"name": "activity"}],
    "sparse": [
        {"name": "user_id", "cardinality": 50},
        {"name": "item_id", "cardinality": 40, "side": "item"},
        {"name": "category", "cardinality": 5, "side": "item"},
        {"name": "history", "cardinality": 40, "max_len": 3, "pooling": "mean"},
    ],
})
ITEMS = torch.stack([torch.arange(40), torch.arange(40) % 5], 1)  # item_id, category
SEEN = torch.arange(40) % 4 != 0  # items 0, 4, 8, ... never seen in training
TEXTS = [f"a {c} shirt number {i}" for i, c in enumerate(["navy", "red", "olive", "grey"] * 10)]


@pytest.fixture
def no_registry(monkeypatch):
    """Fail any read of a run's config or dataset from MMF's registry."""
    get = registry.get

    def guarded(key, *args, **kwargs):
        if key == "config" or key.endswith(("_schema", "_root", "_manifest")):
            raise AssertionError(f"read '{key}' from the registry")
        return get(key, *args, **kwargs)

    monkeypatch.setattr(registry, "get", guarded)


def batch(size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(0, 40, (size,), generator=g)
    return {
        "dense": torch.randn(size, 2, generator=g),
        "sparse_user_id": torch.randint(0, 50, (size, 1), generator=g),
        "sparse_item_id": items.unsqueeze(1),
        "sparse_category": (items % 5).unsqueeze(1),
        "sparse_history": torch.tensor([[1, 2, -1], [5, -1, -1]] * (size // 2)),
        "item_index": items,
        "targets": (torch.arange(size) % 2 == 0).float().unsqueeze(1),
    }


def sparse(features, dim):
    return SparseEncoder.from_params(SCHEMA, embedding_dim=dim, features=features)


def text_knowledge(tmp_path, dim):
    from mmf_rec.encoders.text import TransformerEncoder
    from mmf_rec.knowledge_cache import source_fingerprint
    from mmf_rec.models.knowledge import ItemKnowledge
    from mmf_rec.processors.text import TextTokenizerProcessor

    encoder = TransformerEncoder({"random_init": TINY_BERT, "max_length": 12, "out_dim": dim})
    tokenizer = TextTokenizerProcessor(encoder.processor_config()["params"])
    return ItemKnowledge(
        "text", encoder, lambda ids: tokenizer.tokenize([TEXTS[i] for i in ids.tolist()]),
        len(TEXTS), use_cache=True, cache_dir=str(tmp_path), batch_size=16,
        source_key=source_fingerprint([], extra=TEXTS))


# -- built by hand ------------------------------------------------------------------------
def test_the_guard_catches_a_registry_read(no_registry):
    from mmf_rec.models.common import dataset_schema

    with pytest.raises(AssertionError, match="read 'config'"):
        dataset_schema()


def test_dlrm_from_a_schema_blanks_cold_items(no_registry):
    torch.manual_seed(0)
    net = DLRMNet(SCHEMA, sparse(None, 4), DenseEncoder({"in_dim": 2, "hidden_dims": [8, 4]}),
                  top_mlp=[16], item_id_feature="item_id", item_seen=SEEN).eval()
    rows = batch()
    with torch.no_grad():
        scores = net(rows)
        assert scores.shape == (8, 1)
        assert net.top_mlp[0].in_features == 4 + 10  # dense vector + 5 vectors' pairs
        rows["sparse_item_id"] = torch.where(SEEN[rows["item_index"]].unsqueeze(1),
                                             rows["sparse_item_id"], -1)
        assert torch.equal(scores, net(rows))  # a cold id reads as the padding id
    with pytest.raises(ValueError, match="not among the encoded features"):
        DLRMNet(SCHEMA, sparse(["user_id"], 4), DenseEncoder({"in_dim": 2, "hidden_dims": [4]}),
                item_id_feature="item_id", item_seen=SEEN)


def test_late_interaction_net_with_text_knowledge_from_tensors(no_registry, tmp_path):
    torch.manual_seed(0)
    users, items = side_features(SCHEMA, "history")
    assert users == ["user_id", "history"] and items == ["item_id", "category"]
    net = LateInteractionNet(
        SCHEMA, sparse(users, 8), sparse(items, 8), ITEMS,
        DenseEncoder({"in_dim": 2, "hidden_dims": [8]}), {"text": text_knowledge(tmp_path, 8)},
        top_mlp=[16], history_feature="history", item_id_feature="item_id", item_seen=SEEN,
        id_dropout=0.5).eval()
    # user tokens: dense, user_id, history bag, 3 past items' text = 6, against 2
    # item groups; pooled: 4 user + 3 item vectors = 7, so 21 pairs after d = 8
    assert net.top_mlp[0].in_features == 6 * 2 + 8 + 21
    rows = batch(4)
    with torch.no_grad():
        scores = net(rows)
        one = {key: value[:1] for key, value in rows.items()}
        ranked = net.score_candidates(one, net.encode_items(rows["item_index"]))
        pairs = torch.cat([net({**one, "item_index": rows["item_index"][k:k + 1]})
                           for k in range(4)]).squeeze(1)
    assert scores.shape == (4, 1)
    assert torch.allclose(ranked, pairs, atol=1e-6)
    cold = net.encode_items(torch.tensor([0, 4, 1]))
    assert cold.mask[:, 0].tolist() == [False, False, True]  # blanked ids are masked
    net.train()
    torch.manual_seed(1)
    dropped = net.encode_items(torch.arange(1, 40, 4).repeat(10))  # all seen
    assert 0.3 < 1 - dropped.mask[:, 0].float().mean() < 0.7  # id dropout in training


def test_two_tower_net_from_tensors(no_registry):
    torch.manual_seed(0)
    user_seen = torch.arange(50) < 25
    net = TwoTowerNet(
        SCHEMA, sparse(["user_id", "history"], 4), sparse(["item_id", "category"], 4), ITEMS,
        DenseEncoder({"in_dim": 2, "hidden_dims": [4]}), output_dim=6, tower_hidden=[8],
        temperature=0.5, eval_top_k=50, history_feature="history", item_id_feature="item_id",
        item_seen=SEEN, user_key="user_id", user_seen=user_seen,
        item_log_q=torch.full((40,), -3.0))
    rows = batch()
    clicked = int(rows["targets"].sum())
    assert net(rows)["in_batch_logits"].shape == (clicked, clicked)
    net.eval()
    with torch.no_grad():
        output = net(rows)
        assert output["scores"].shape == (8, 1)
        top = output[TOPK_KEY]
        assert top.shape == (clicked, 50) and (top[:, 40:] == -1).all()
        unseen = {**rows, "sparse_user_id": torch.full((8, 1), 30)}
        padding = {**rows, "sparse_user_id": torch.full((8, 1), -1)}
        assert torch.equal(net.encode_users(unseen), net.encode_users(padding))
        vectors = net.encode_catalogue()
    assert vectors.shape == (40, 6) and torch.allclose(vectors.norm(dim=1), torch.ones(40))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        TwoTowerNet(SCHEMA, sparse(["user_id"], 4), sparse(["item_id"], 4), ITEMS[:, :1],
                    temperature=0.0)


# -- the registered models build the same modules --------------------------------------
@pytest.fixture(scope="module")
def prepared(publish_synthetic):
    return publish_synthetic("_nets_test", TINY_DATA)


def data_sparse(data, features, dim):
    return SparseEncoder.from_params(data.schema, embedding_dim=dim, features=features)


def item_table(data, features):
    return torch.stack([torch.from_numpy(np.array(data.items[n][:, 0])) for n in features], 1)


def by_hand(model, data):
    """The net the registered model's default config describes, built in the
    order its build() builds it, from seed 0 as build_tiny does."""
    schema, seen = data.schema, torch.from_numpy(protocol.seen_in_training(data))
    dense_dim = len(schema.dense)
    torch.manual_seed(0)
    if model == "dlrm":
        encoder = data_sparse(data, None, 16)
        dense = DenseEncoder({"in_dim": dense_dim, "hidden_dims": [64, 16]})
        return DLRMNet(schema, encoder, dense, top_mlp=[128, 64], item_id_feature="item_id",
                       item_seen=seen)
    if model == "dlrm_mm":
        users, items = side_features(schema, "history")
        user_sparse, item_sparse = data_sparse(data, users, 32), data_sparse(data, items, 32)
        return LateInteractionNet(
            schema, user_sparse, item_sparse, item_table(data, items),
            DenseEncoder({"in_dim": dense_dim, "hidden_dims": [64, 32]}), top_mlp=[256, 64],
            history_feature="history", item_id_feature="item_id", item_seen=seen, id_dropout=0.2)
    users = [f.name for f in schema.sparse if f.side != "item" and f.name != "user_id"]
    items = [f.name for f in schema.sparse if f.side == "item"]
    user_sparse, item_sparse = data_sparse(data, users, 8), data_sparse(data, items, 8)
    return TwoTowerNet(
        schema, user_sparse, item_sparse, item_table(data, items),
        DenseEncoder({"in_dim": dense_dim, "hidden_dims": [64, 32]}), output_dim=16,
        tower_hidden=[16], history_feature="history", item_id_feature="item_id", item_seen=seen,
        id_dropout=0.2, user_key="user_id", item_log_q=click_log_q(data))


@pytest.mark.parametrize("model", ["dlrm", "dlrm_mm", "two_tower"])
def test_the_registered_model_is_its_net_built_from_config(prepared, model):
    ids_only = {"modalities": {"text": False, "image": False}}
    sizes = {"embedding_dim": 8, "output_dim": 16, "tower_hidden": [16]}
    overrides = {"dlrm": [], "dlrm_mm": [ids_only], "two_tower": [ids_only, sizes]}[model]
    registered = build_tiny(model, *overrides)
    net = by_hand(model, prepared)
    assert isinstance(registered, type(net))
    expected, got = registered.state_dict(), net.state_dict()
    assert list(expected) == list(got)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    rows = sample_batch(prepared, "_nets_test", "test", 32, "test")
    registered.train()
    net.train()
    torch.manual_seed(5)
    want = registered(rows)
    torch.manual_seed(5)
    have = net(rows)
    if model == "two_tower":
        assert torch.equal(want["in_batch_logits"], have["in_batch_logits"])
    else:
        assert torch.equal(want["scores"], have)
