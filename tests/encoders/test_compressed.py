"""Quotient-remainder and mixed-dimension tables, alone and in the sparse encoder."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from mmf_rec.encoders.compressed import MixedDimTable, QRTable, mixed_dimension
from mmf_rec.encoders.sparse import SparseEncoder
from mmf_rec.encoders.tables import TABLE_KINDS, build_table
from mmf_rec.schema import PAD_ID, SchemaError, SparseFeature
from id_batches import MIXED_SCHEMA as SCHEMA, random_id_batch  # noqa: E402

NAMES = SCHEMA.sparse_names
COMBINES = ["multiply", "add", "concat"]
KINDS = {
    "full": {"kind": "full"},
    "hash": {"kind": "hash", "num_buckets": 7},
    "qr": {"kind": "qr", "collisions": 4},
    "qr_add": {"kind": "qr", "collisions": 3, "combine": "add"},
    "qr_concat": {"kind": "qr", "collisions": 5, "combine": "concat"},
    "mixed_dim": {"kind": "mixed_dim", "temperature": 0.5, "reference_rows": 4},
}


def batch(seed=0, size=16):
    return random_id_batch(SCHEMA, seed, size)


def encoder(kind, seed=0, dim=6, **config):
    torch.manual_seed(seed)
    tables = {name: dict(KINDS[kind]) for name in NAMES}
    return SparseEncoder({"embedding_dim": dim, "tables": tables, **config}, SCHEMA)


def qr_table(n=37, collisions=4, combine="multiply", dim=6, pooling="sum", max_len=1, seed=0):
    torch.manual_seed(seed)
    feature = SparseFeature("f", n, pooling=pooling, max_len=max_len)
    return build_table(feature, dim, {"kind": "qr", "collisions": collisions, "combine": combine})


def every_id(n):
    return torch.arange(n).unsqueeze(1)


# -- quotient-remainder -----------------------------------------------------------------
@pytest.mark.parametrize("combine", COMBINES)
def test_qr_gives_every_id_its_own_vector(combine):
    table = qr_table(combine=combine)
    vectors = table(every_id(37)).detach()
    distance = torch.cdist(vectors, vectors) + torch.eye(37) * 1e9
    assert distance.min() > 1e-6
    # whereas hashing into as many rows as QR stores must map ids together
    rows = table.quotient.num_rows + table.remainder.num_rows
    hashed = build_table(table.feature, 6, {"kind": "hash", "num_buckets": rows})(every_id(37))
    assert len(torch.unique(hashed.detach(), dim=0)) <= rows < 37


def test_qr_sizes_are_quotient_and_remainder():
    table = qr_table(n=37, collisions=4)
    assert (table.quotient.num_rows, table.remainder.num_rows) == (10, 4)  # ceil(37 / 4), 4
    assert sum(p.numel() for p in table.parameters()) == (10 + 4) * 6
    concat = qr_table(n=37, collisions=4, combine="concat", dim=7)
    assert (concat.quotient.dim, concat.remainder.dim) == (3, 4)
    assert concat(every_id(37)).shape == (37, 7)


@pytest.mark.parametrize("combine", COMBINES)
def test_qr_vectors_follow_the_definition(combine):
    table = qr_table(combine=combine, pooling="mean", max_len=3)
    ids = torch.tensor([[5, 36, PAD_ID], [PAD_ID] * 3, [0, 0, 13]])
    q, r = table.quotient.weight.detach(), table.remainder.weight.detach()

    def vector(i):
        a, b = q[i // 4], r[i % 4]
        return {"multiply": a * b, "add": a + b, "concat": torch.cat([a, b])}[combine]

    want = torch.stack([
        (vector(5) + vector(36)) / 2,
        torch.zeros(6),
        (2 * vector(0) + vector(13)) / 3,
    ])
    torch.testing.assert_close(table(ids), want)


@pytest.mark.parametrize("combine", COMBINES)
def test_qr_gradients_reach_exactly_the_quotient_and_remainder_rows(combine):
    table = qr_table(n=50, collisions=4, combine=combine, max_len=3)
    ids = torch.tensor([[1, 2, PAD_ID], [17, PAD_ID, PAD_ID], [PAD_ID] * 3, [49, 1, 1]])
    table(ids).pow(2).sum().backward()
    used = ids[ids != PAD_ID]
    for part, want in ((table.quotient, used // 4), (table.remainder, used % 4)):
        touched = part.weight.grad.abs().sum(1).nonzero().flatten().tolist()
        assert set(touched) == set(want.tolist()), part.part


def test_qr_starts_at_about_the_scale_of_a_full_table():
    bound = math.sqrt(1 / 5000)
    for combine in COMBINES:
        vectors = qr_table(n=5000, collisions=8, combine=combine, dim=16)(every_id(5000))
        assert vectors.abs().max() <= bound * (1 + 1e-6)
        assert vectors.abs().mean() > bound / 20, combine


@pytest.mark.parametrize(
    "options, message",
    [
        ({"combine": "multiply"}, r"missing: \['collisions'\]"),
        ({"collisions": 0}, "collisions must be a positive integer, got 0"),
        ({"collisions": 2.5}, "collisions must be a positive integer"),
        ({"collisions": True}, "collisions must be a positive integer"),
        ({"collisions": 51}, r"collisions must be at most the cardinality \(50\), got 51"),
        ({"collisions": 4, "combine": "mean"},
         r"unknown combine 'mean'; choose one of \['multiply', 'add', 'concat'\]"),
    ],
)
def test_qr_option_errors_are_clear(options, message):
    with pytest.raises(SchemaError, match=message):
        SparseEncoder({"tables": {"user": {"kind": "qr", **options}}}, SCHEMA)


def test_qr_concat_needs_two_entries():
    with pytest.raises(SchemaError, match="concat' needs embedding_dim >= 2"):
        qr_table(combine="concat", dim=1)


# -- mixed dimension ----------------------------------------------------------------------
def test_mixed_dimension_rule():
    assert mixed_dimension(100, 16, 0.5, 100) == 16  # at the reference size: full width
    assert mixed_dimension(10, 16, 0.5, 100) == 16  # smaller tables never get wider
    assert mixed_dimension(10_000, 16, 0.5, 100) == 2  # 16 * (1/100) ** 0.5 = 1.6
    assert mixed_dimension(10_000, 16, 0.0, 100) == 16  # temperature 0: no reduction
    assert mixed_dimension(10**9, 16, 1.0, 100) == 1  # never below one entry
    widths = [mixed_dimension(n, 32, 0.3, 100) for n in (100, 1_000, 10_000, 100_000)]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]


def test_mixed_dim_table_is_narrow_rows_projected_to_the_shared_dim():
    torch.manual_seed(0)
    feature = SparseFeature("f", 400, pooling="mean", max_len=3)
    table = build_table(feature, 8, {"kind": "mixed_dim", "temperature": 0.5})
    assert table.table_dim == 4  # 8 * (100 / 400) ** 0.5
    assert table.table.weight.shape == (400, 4) and table.projection.weight.shape == (8, 4)
    ids = torch.tensor([[3, 9, PAD_ID], [PAD_ID] * 3])
    rows = table.table.weight.detach()
    want = torch.stack([(rows[3] + rows[9]) / 2, torch.zeros(4)]) @ table.projection.weight.T
    torch.testing.assert_close(table(ids), want.detach())
    table(ids).sum().backward()
    assert table.table.weight.grad.abs().sum(1).nonzero().flatten().tolist() == [3, 9]
    assert table.projection.weight.grad.abs().sum() > 0


def test_mixed_dim_explicit_width_and_full_width_without_projection():
    feature = SparseFeature("f", 400)
    assert build_table(feature, 8, {"kind": "mixed_dim", "table_dim": 3}).table_dim == 3
    full_width = build_table(feature, 8, {"kind": "mixed_dim", "temperature": 0.0})
    assert full_width.table_dim == 8 and full_width.projection is None


@pytest.mark.parametrize(
    "options, message",
    [
        ({"temperature": 1.5}, r"temperature must be a number in \[0, 1\], got 1.5"),
        ({"temperature": "high"}, "temperature must be a number"),
        ({"table_dim": 0}, "table_dim must be a positive integer, got 0"),
        ({"table_dim": 7}, r"table_dim must be at most embedding_dim \(6\), got 7"),
        ({"reference_rows": -1}, "reference_rows must be a positive integer"),
        ({"dim": 3}, r"unknown: \['dim'\]"),
    ],
)
def test_mixed_dim_option_errors_are_clear(options, message):
    with pytest.raises(SchemaError, match=message):
        SparseEncoder({"embedding_dim": 6, "tables": {"user": {"kind": "mixed_dim", **options}}},
                       SCHEMA)


# -- in the encoder ----------------------------------------------------------------------
def test_kinds_are_registered_for_configs():
    assert TABLE_KINDS["qr"] is QRTable and TABLE_KINDS["mixed_dim"] is MixedDimTable


@pytest.mark.parametrize("fused", [True, False])
def test_encoder_output_shape_never_changes_with_the_kind(fused):
    ids = batch()
    shapes = {kind: tuple(encoder(kind, fused=fused)(ids).shape) for kind in KINDS}
    assert set(shapes.values()) == {(16, len(NAMES), 6)}, shapes


def test_compressed_kinds_sit_in_order_beside_fused_tables():
    tables = {"item": KINDS["qr"], "genres": KINDS["mixed_dim"]}
    torch.manual_seed(0)
    mixed = SparseEncoder({"embedding_dim": 6, "tables": tables}, SCHEMA)
    assert [g.names for g in mixed.fused_groups] == [["user", "tags"]]
    ids = batch()
    out = mixed(ids)
    for j, name in enumerate(NAMES):
        if name in tables:
            want = mixed.tables[name](ids[name])
        else:
            rows = mixed.table_weight(name)
            valid = ids[name] != PAD_ID
            want = (rows[ids[name].clamp(min=0)] * valid.unsqueeze(-1)).sum(1)
        torch.testing.assert_close(out[:, j], want, msg=name)


@pytest.mark.parametrize("kind", ["qr", "qr_concat", "mixed_dim"])
def test_state_dict_round_trips(kind):
    trained, fresh = encoder(kind, seed=1), encoder(kind, seed=2)
    ids = batch()
    assert not torch.allclose(trained(ids), fresh(ids))
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh(ids), trained(ids))


def test_compressed_tables_store_fewer_numbers():
    def count(kind):
        state = encoder(kind, dim=16).state_dict()  # per table, fused or not
        return sum(v.numel() for k, v in state.items() if k.startswith("tables.user."))

    full = count("full")
    assert count("qr") == (13 + 4) * 16 < full / 2  # ceil(50 / 4) + 4 rows
    assert count("mixed_dim") < full


def test_selected_from_yaml():
    config = OmegaConf.create(
        """
        embedding_dim: 8
        tables:
          user: {kind: qr, collisions: 8, combine: add}
          item: {kind: mixed_dim, temperature: 0.4}
          tags: {kind: hash, num_buckets: 5}
        """
    )
    enc = SparseEncoder(config, SCHEMA)
    assert isinstance(enc.tables["user"], QRTable) and enc.tables["user"].combine == "add"
    assert isinstance(enc.tables["item"], MixedDimTable)
    assert enc(batch()).shape == (16, 4, 8)
