import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmf.common.registry import registry

from mmf_rec.encoders.sparse import SparseEncoder
from mmf_rec.encoders.tables import TABLE_KINDS, Table, hash_ids, register_table_kind
from mmf_rec.schema import PAD_ID, Schema, SchemaError, SparseFeature
from id_batches import random_id_batch  # noqa: E402

SCHEMA = Schema(
    sparse=(
        SparseFeature("user", 50),
        SparseFeature("item", 30, side="item", pooling="mean"),
        SparseFeature("tags", 20, side="item", max_len=4),
        SparseFeature("genres", 10, side="item", pooling="mean", max_len=3),
    )
)
NAMES = SCHEMA.sparse_names
KINDS = {"full": {"kind": "full"}, "hash": {"kind": "hash", "num_buckets": 7}}


def batch(seed=0, size=16):
    return random_id_batch(SCHEMA, seed, size)


def encoder(kind="full", fused=True, seed=0, **config):
    torch.manual_seed(seed)
    names = config.get("features") or NAMES
    config.setdefault("tables", {name: dict(KINDS[kind]) for name in names})
    return SparseEncoder({"embedding_dim": 5, "fused": fused, **config}, SCHEMA)


def expected(enc, ids):
    """Pooled vectors by the definition, from the encoder's own tables."""
    out = torch.zeros(next(iter(ids.values())).shape[0], len(enc.features), enc.embedding_dim)
    for j, feature in enumerate(enc.features):
        table, weight = enc.tables[feature.name], enc.table_weight(feature.name)
        for b, row in enumerate(ids[feature.name]):
            kept = row[row != PAD_ID]
            if len(kept):
                vectors = weight[table.row_ids(kept)]
                out[b, j] = vectors.mean(0) if feature.pooling == "mean" else vectors.sum(0)
    return out


def table_grad(enc, name):
    for weight, group in zip(enc.fused_weights, enc.fused_groups):
        if name in group.rows:
            return weight.grad.to_dense()[group.rows[name]]
    return enc.tables[name].weight.grad.to_dense()


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kind", ["full", "hash"])
def test_matches_pooling_by_definition(kind, fused):
    enc, ids = encoder(kind, fused), batch()
    out = enc(ids)
    assert out.shape == (16, len(NAMES), 5)
    torch.testing.assert_close(out, expected(enc, ids).detach())


def test_shape_does_not_depend_on_kind_or_fusing():
    ids = batch()
    shapes = {
        (kind, fused): tuple(encoder(kind, fused)(ids).shape)
        for kind in KINDS
        for fused in (True, False)
    }
    assert set(shapes.values()) == {(16, 4, 5)}


@pytest.mark.parametrize("fused", [True, False])
def test_mean_pooling_ignores_padding(fused):
    enc = encoder(fused=fused, features=["genres"], tables={})
    weight = enc.table_weight("genres").detach()
    out = enc({"genres": torch.tensor([[3, PAD_ID, PAD_ID], [3, 5, PAD_ID], [PAD_ID] * 3])})
    torch.testing.assert_close(out[0, 0], weight[3])
    torch.testing.assert_close(out[1, 0], (weight[3] + weight[5]) / 2)
    assert torch.equal(out[2, 0], torch.zeros(5))


@pytest.mark.parametrize("sparse_grad", [False, True])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kind", ["full", "hash"])
def test_gradients_reach_exactly_the_rows_looked_up(kind, fused, sparse_grad):
    enc, ids = encoder(kind, fused, sparse_grad=sparse_grad), batch(size=6)
    enc(ids).pow(2).sum().backward()
    for name in NAMES:
        table = enc.tables[name]
        used = ids[name][ids[name] != PAD_ID]
        want = set(table.row_ids(used).tolist())
        grad = table_grad(enc, name)
        assert set(grad.abs().sum(1).nonzero().flatten().tolist()) == want, name
    if sparse_grad:
        assert all(p.grad.is_sparse for p in enc.parameters())


def test_sparse_gradients_equal_dense_ones():
    ids = batch()
    dense, sparse = encoder(seed=3), encoder(seed=3, sparse_grad=True)
    dense(ids).pow(2).sum().backward()
    sparse(ids).pow(2).sum().backward()
    for name in NAMES:
        torch.testing.assert_close(table_grad(sparse, name), table_grad(dense, name))


@pytest.mark.parametrize("kind", ["full", "hash"])
def test_fused_and_unfused_agree_on_same_weights(kind):
    fused, unfused = encoder(kind, True, seed=1), encoder(kind, False, seed=1)
    # Same seed, same weights: fusing takes the tables' initial matrices.
    for key, value in unfused.state_dict().items():
        assert torch.equal(fused.state_dict()[key], value), key
    with torch.no_grad():
        for p in unfused.parameters():
            p.add_(torch.randn_like(p))
    fused.load_state_dict(unfused.state_dict())
    for seed in range(3):
        ids = batch(seed)
        torch.testing.assert_close(fused(ids), unfused(ids))


def test_state_dict_is_per_table_and_round_trips():
    fused, unfused = encoder(seed=1), encoder(fused=False, seed=2)
    assert list(fused.state_dict()) == list(unfused.state_dict())
    assert list(fused.state_dict()) == [f"tables.{n}.weight" for n in NAMES]
    unfused.load_state_dict(fused.state_dict())
    fresh = encoder(seed=5)
    fresh.load_state_dict(unfused.state_dict())
    ids = batch()
    torch.testing.assert_close(fresh(ids), fused(ids))


def test_loading_a_wrongly_sized_table_names_it():
    state = encoder(fused=False).state_dict()
    state["tables.tags.weight"] = torch.zeros(21, 5)
    with pytest.raises(RuntimeError, match=r"tables\.tags\.weight.*\(21, 5\).*\(20, 5\)"):
        encoder().load_state_dict(state)


def test_small_group_cap_splits_the_fused_matrix_without_changing_outputs():
    ids = batch()
    one, split = encoder("hash", seed=4), encoder("hash", seed=4, fused_group_mb=1e-4)
    assert len(one.fused_groups) == 1
    assert [g.names for g in split.fused_groups] == [[n] for n in NAMES]
    torch.testing.assert_close(split(ids), one(ids))
    one.load_state_dict(split.state_dict())


def test_features_are_output_in_configured_order():
    ids = batch()
    everything = encoder(seed=7)
    picked = encoder(seed=7, features=["tags", "user"])
    out = picked(ids)
    assert out.shape == (16, 2, 5)
    picked.load_state_dict(
        {k: v for k, v in everything.state_dict().items() if k.split(".")[1] in ("tags", "user")}
    )
    torch.testing.assert_close(picked(ids), everything(ids)[:, [2, 0]])


@pytest.fixture
def constant_kind():
    """A kind that is not one matrix, so it is looked up beside the fused tables."""

    @register_table_kind("constant_for_test")
    class ConstantTable(Table):
        def __init__(self, feature, dim, *, value: float):
            super().__init__(feature, dim)
            self.vector = torch.nn.Parameter(torch.full((dim,), float(value)))

        def forward(self, ids):
            return self.vector.expand(ids.shape[0], -1)

    yield "constant_for_test"
    del TABLE_KINDS["constant_for_test"]


@pytest.mark.parametrize("fused", [True, False])
def test_other_kinds_sit_in_place_between_fused_tables(constant_kind, fused):
    torch.manual_seed(0)
    tables = {"item": {"kind": constant_kind, "value": 2.5}}
    enc = SparseEncoder({"embedding_dim": 5, "tables": tables, "fused": fused}, SCHEMA)
    plain = encoder(seed=0, fused=False)
    plain.load_state_dict(
        {k: v for k, v in enc.state_dict().items() if "item" not in k}, strict=False
    )
    ids = batch()
    out, want = enc(ids), plain(ids)
    assert torch.equal(out[:, 1], torch.full((16, 5), 2.5))
    torch.testing.assert_close(out[:, [0, 2, 3]], want[:, [0, 2, 3]])
    assert "tables.item.vector" in enc.state_dict()


# -- hashing ----------------------------------------------------------------------
def _mix32_reference(x):
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _hash_reference(i, buckets, seed=0):
    low, high = i & 0xFFFFFFFF, (i >> 32) & 0xFFFFFFFF
    return _mix32_reference(low ^ _mix32_reference(high ^ (seed ^ 0x9E3779B9))) % buckets


SAMPLE_IDS = [0, 1, 2, 3, 999, 12345, 2**31, 2**32 + 7, 2**40 + 1, 2**63 - 1]


def test_hash_is_exact_integer_arithmetic():
    got = hash_ids(torch.tensor(SAMPLE_IDS), 1000, seed=3).tolist()
    assert got == [_hash_reference(i, 1000, 3) for i in SAMPLE_IDS]


def test_hash_values_are_pinned():
    # Checkpoints of hashed tables depend on these; changing them is a format change.
    got = hash_ids(torch.tensor(SAMPLE_IDS), 1000).tolist()
    assert got == [89, 407, 726, 334, 233, 514, 224, 131, 461, 918]


def test_hash_spreads_ids_over_buckets():
    buckets = hash_ids(torch.arange(100_000), 100)
    counts = torch.bincount(buckets, minlength=100)
    assert buckets.min() >= 0 and buckets.max() < 100
    assert counts.min() > 850 and counts.max() < 1150
    ids = torch.arange(100)
    assert not torch.equal(hash_ids(ids, 100, seed=1), hash_ids(ids, 100))


def test_hash_is_the_same_in_other_processes():
    tables = Path(__file__).resolve().parents[2] / "mmf_rec" / "encoders" / "tables.py"
    # Loads the module by path: it needs only torch, and mmf's import is slow.
    code = (
        "import importlib.util, json, sys, torch\n"
        f"spec = importlib.util.spec_from_file_location('tables', {str(tables)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"print(json.dumps(m.hash_ids(torch.tensor({SAMPLE_IDS}), 977).tolist()))\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin:/bin"},
        )
        for seed in (1, 2)
    ]
    here = hash_ids(torch.tensor(SAMPLE_IDS), 977).tolist()
    assert [json.loads(r.stdout) for r in runs] == [here, here]


# -- errors -----------------------------------------------------------------------
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("bad", [50, -2])
def test_out_of_range_ids_name_the_feature(fused, bad):
    ids = batch()
    ids["user"][3, 0] = bad
    with pytest.raises(ValueError, match=r"sparse feature 'user': 1 ids out of range.*\[0, 50\)"):
        encoder(fused=fused)(ids)


def test_id_check_can_be_disabled():
    ids = batch()
    ids["user"][3, 0] = 10**9  # hashing maps any id to a bucket
    out = encoder("hash", check_ids=False)(ids)
    assert out.shape == (16, 4, 5)
    with pytest.raises(ValueError, match="out of range"):
        encoder("hash")(ids)


def test_unknown_feature_lists_the_known_ones():
    with pytest.raises(SchemaError, match=r"unknown sparse feature 'age'.*\['user', 'item'"):
        SparseEncoder({"features": ["user", "age"]}, SCHEMA)
    with pytest.raises(SchemaError, match=r"unknown sparse feature 'age'.*\['user', 'item'"):
        SparseEncoder({"tables": {"age": {"kind": "hash", "num_buckets": 3}}}, SCHEMA)


def test_table_for_a_feature_not_encoded_is_an_error():
    with pytest.raises(SchemaError, match="'tags', which is not among the encoded"):
        SparseEncoder({"features": ["user"], "tables": {"tags": {"kind": "full"}}}, SCHEMA)


def test_table_option_errors_are_clear():
    with pytest.raises(SchemaError, match=r"'user': unknown table kind 'qrr'; known kinds: \["):
        SparseEncoder({"tables": {"user": {"kind": "qrr"}}}, SCHEMA)
    with pytest.raises(SchemaError, match=r"'hash' takes options \['num_buckets', 'seed'\].*"
                                          r"missing: \['num_buckets'\]"):
        SparseEncoder({"tables": {"user": {"kind": "hash"}}}, SCHEMA)
    with pytest.raises(SchemaError, match=r"unknown: \['buckets'\]"):
        options = {"kind": "hash", "num_buckets": 3, "buckets": 3}
        SparseEncoder({"tables": {"user": options}}, SCHEMA)
    with pytest.raises(SchemaError, match="num_buckets must be a positive integer"):
        SparseEncoder({"tables": {"user": {"kind": "hash", "num_buckets": 0}}}, SCHEMA)
    with pytest.raises(SchemaError, match="must be a mapping"):
        SparseEncoder({"tables": {"user": "hash"}}, SCHEMA)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="sparse encoder config: .*embeding_dim"):
        SparseEncoder({"embeding_dim": 8}, SCHEMA)
    with pytest.raises(SchemaError, match="embedding_dim must be >= 1"):
        SparseEncoder({"embedding_dim": 0}, SCHEMA)
    with pytest.raises(SchemaError, match="more than once"):
        SparseEncoder({"features": ["user", "user"]}, SCHEMA)
    with pytest.raises(SchemaError, match="no sparse features"):
        SparseEncoder({}, Schema())


def test_batch_errors_are_clear():
    ids = batch()
    del ids["tags"]
    with pytest.raises(KeyError, match="no feature 'tags'"):
        encoder()(ids)
    ids = batch()
    ids["user"] = ids["user"].float()
    with pytest.raises(TypeError, match="'user' must hold integer ids"):
        encoder()(ids)
    ids = batch()
    ids["user"] = ids["user"][:4]
    with pytest.raises(ValueError, match="disagree on batch size"):
        encoder()(ids)


def test_registered_and_buildable_from_params():
    assert registry.get_encoder_class("sparse") is SparseEncoder
    enc = SparseEncoder.from_params(SCHEMA, embedding_dim=3, features=["user"])
    assert enc({"user": torch.tensor([[1], [2]])}).shape == (2, 1, 3)
    enc = SparseEncoder({"embedding_dim": 3}, SCHEMA.to_dict())
    assert enc.feature_names == NAMES
