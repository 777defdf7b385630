"""Row-wise quantization: error bounds, storage, and quantized encoders and models."""

import math

import pytest
import torch

from mmf_rec.encoders.quantize import (
    QuantizedTable,
    dequantize_rows,
    max_error,
    quantize_encoder,
    quantize_model,
    quantize_rows,
    table_bytes,
)
from mmf_rec.encoders.sparse import SparseEncoder
from mmf_rec.schema import PAD_ID, DenseFeature, Schema, SparseFeature
from id_batches import MIXED_SCHEMA as SCHEMA, random_id_batch  # noqa: E402

NAMES = SCHEMA.sparse_names
KINDS = {
    "full": {"kind": "full"},
    "hash": {"kind": "hash", "num_buckets": 7},
    "qr": {"kind": "qr", "collisions": 4},
    "qr_concat": {"kind": "qr", "collisions": 5, "combine": "concat"},
    "mixed_dim": {"kind": "mixed_dim", "temperature": 0.5, "reference_rows": 4},
}


def matrix(rows=64, dim=13, seed=0):
    """Rows of very different scales and signs, a constant row and an all-negative one."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, dim, generator=g) * torch.logspace(-4, 1, rows).unsqueeze(1)
    weight[3] = 0.25
    weight[5] = -weight[5].abs() - 2.0
    return weight


def batch(seed=0, size=16):
    return random_id_batch(SCHEMA, seed, size)


def trained_encoder(kind, seed=0, fused=True):
    """An encoder whose weights are no longer at their (bounded) initial values."""
    torch.manual_seed(seed)
    tables = {name: dict(KINDS[kind]) for name in NAMES}
    enc = SparseEncoder({"embedding_dim": 6, "tables": tables, "fused": fused}, SCHEMA)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return enc


# -- the quantizer ------------------------------------------------------------------------
@pytest.mark.parametrize("precision, levels", [("int8", 255), ("int4", 15)])
def test_dequantized_values_are_within_half_a_step(precision, levels):
    weight = matrix()
    q = quantize_rows(weight, precision)
    error = (dequantize_rows(q) - weight).abs()
    bound = max_error(q).unsqueeze(1)
    # half a step, plus float32 rounding of offset + scale * code
    assert bool((error <= bound + 1e-6 * weight.abs().amax(1, keepdim=True) + 1e-12).all())
    # and the step is the row's own range over the levels (up to float16 rounding)
    span = weight.amax(1) - weight.amin(1)
    steps = q.scale.float()
    assert bool((steps >= span / levels).all())
    assert bool((steps <= span / levels * (1 + 2**-9) + 2 * 2**-24 + weight.amin(1).abs() * 2**-9).all())


def test_constant_row_is_exact_and_range_covers_every_row():
    weight = matrix()
    q = quantize_rows(weight, "int8")
    assert torch.equal(dequantize_rows(q)[3], weight[3])
    low = q.offset.float()
    high = low + q.scale.float() * 255
    assert bool((low <= weight.amin(1)).all()) and bool((high >= weight.amax(1)).all())


def test_fp16_rows_are_rounded_to_half_precision():
    weight = matrix()
    q = quantize_rows(weight, "fp16")
    assert q.codes.dtype == torch.float16 and q.scale is None
    error = (dequantize_rows(q) - weight).abs()
    assert bool((error <= weight.abs() * 2**-11 + 2**-25).all())


def test_storage_per_row():
    weight = matrix(rows=10, dim=13)
    int8, int4, fp16 = (quantize_rows(weight, p) for p in ("int8", "int4", "fp16"))
    assert int8.codes.shape == (10, 13) and int8.codes.dtype == torch.uint8
    assert int4.codes.shape == (10, 7)  # two codes per byte, odd dim padded
    assert int8.scale.dtype == int8.offset.dtype == torch.float16
    assert fp16.codes.nbytes == 10 * 13 * 2


def test_gathering_rows_equals_dequantizing_all():
    q = quantize_rows(matrix(dim=9), "int4")
    rows = torch.tensor([[4, 0, 63], [7, 7, 1]])
    assert torch.equal(dequantize_rows(q, rows), dequantize_rows(q)[rows])


def test_quantizer_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown precision 'int2'; choose one of \['int8'"):
        quantize_rows(matrix(), "int2")
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize_rows(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match=r"\(rows, dim\) matrix"):
        quantize_rows(torch.zeros(3))
    with pytest.raises(ValueError, match="too large for float16"):
        quantize_rows(torch.tensor([[0.0, 1e6]]))


# -- quantized encoders -------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("precision", ["int8", "int4", "fp16"])
def test_quantized_encoder_keeps_shape_and_is_close(kind, precision):
    enc, ids = trained_encoder(kind), batch()
    quantized = quantize_encoder(enc, precision)
    out, want = quantized(ids), enc(ids)
    assert out.shape == want.shape == (16, len(NAMES), 6)
    tolerance = {"int8": 0.02, "int4": 0.3, "fp16": 2e-3}[precision]
    assert (out - want).abs().max() < tolerance
    assert not any(p.numel() > 6 * 6 for p in quantized.parameters())  # tables hold buffers
    assert table_bytes(quantized) < table_bytes(enc)


def test_full_table_lookups_are_within_the_per_row_bound():
    enc, ids = trained_encoder("full"), batch()
    quantized = quantize_encoder(enc, "int8")
    out, want = quantized(ids).detach(), enc(ids).detach()
    for j, name in enumerate(NAMES):
        table, x = quantized.tables[name], ids[name]
        half_step = (table.scale.float() / 2)[x.clamp(min=0)] * (x != PAD_ID)
        bound = half_step.sum(1)  # summed bag: errors add up at most
        if SCHEMA.sparse_feature(name).pooling == "mean":
            bound = bound / (x != PAD_ID).sum(1).clamp(min=1)
        assert bool(((out[:, j] - want[:, j]).abs() <= bound.unsqueeze(1) + 1e-6).all()), name


def test_int8_stores_dim_plus_four_bytes_per_row():
    enc = trained_encoder("full")
    rows = sum(f.cardinality for f in SCHEMA.sparse)
    assert table_bytes(enc) == rows * 6 * 4
    assert table_bytes(quantize_encoder(enc, "int8")) == rows * (6 + 4)
    assert table_bytes(quantize_encoder(enc, "int4")) == rows * (3 + 4)


def test_quantizing_leaves_the_original_untouched():
    enc = trained_encoder("hash")
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    quantized = quantize_encoder(enc, "int8")
    assert enc.fused_groups and not quantized.fused_groups
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert all(isinstance(t, QuantizedTable) for t in quantized.tables.values())
    with pytest.raises(ValueError, match="quantized already"):
        quantize_encoder(quantized, "int8")


@pytest.mark.parametrize("kind", ["full", "qr", "mixed_dim"])
def test_quantized_state_dict_loads_into_a_quantized_fresh_encoder(kind):
    saved = quantize_encoder(trained_encoder(kind, seed=1), "int8").state_dict()
    assert all(v.dtype != torch.float32 for k, v in saved.items() if "projection" not in k)
    fresh = quantize_encoder(trained_encoder(kind, seed=2), "int8")
    fresh.load_state_dict(saved)
    ids = batch()
    reference = quantize_encoder(trained_encoder(kind, seed=1), "int8")
    assert torch.equal(fresh(ids), reference(ids))


def test_quantize_model_swaps_every_sparse_encoder():
    torch.manual_seed(0)

    class TwoSides(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.users = SparseEncoder({"embedding_dim": 6, "features": ["user"]}, SCHEMA)
            self.items = SparseEncoder({"embedding_dim": 6, "features": ["item", "tags"]}, SCHEMA)
            self.head = torch.nn.Linear(6, 1)

        def forward(self, ids):
            return self.head(self.users(ids).sum(1) * self.items(ids).sum(1))

    model, ids = TwoSides(), batch()
    want = model(ids)
    quantize_model(model, "int8")
    assert isinstance(model.users.tables["user"], QuantizedTable)
    assert isinstance(model.items.tables["tags"], QuantizedTable)
    torch.testing.assert_close(model(ids), want, atol=1e-3, rtol=0)
    with pytest.raises(TypeError, match="no sparse encoder"):
        quantize_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown precision"):
        quantize_model(model, "int3")


# -- a registered model, built by MMF from yaml -------------------------------------------
def test_dlrm_with_compressed_tables_from_yaml_trains_and_quantizes():
    import mmf_rec.plugin

    mmf_rec.plugin.apply()
    from mmf.common.registry import registry
    from mmf.common.sample import SampleList
    from mmf.utils.build import build_model
    from omegaconf import OmegaConf

    import mmf_rec
    from mmf_rec.paths import config_path

    mmf_rec.setup_imports()
    schema = Schema(
        dense=(DenseFeature("age"),),
        sparse=(
            SparseFeature("user_id", 50),
            SparseFeature("item_id", 40, side="item"),
            SparseFeature("history", 40, max_len=3, pooling="mean"),
        ),
    )
    previous = registry.get("config", no_warning=True)
    run_config = {"datasets": "_q_test", "evaluation": {"predict": False}}
    registry.register("config", OmegaConf.create(run_config))
    registry.register("_q_test_schema", schema)
    try:
        config = OmegaConf.merge(
            OmegaConf.load(config_path("models", "dlrm.yaml")).model_config.dlrm,
            OmegaConf.create(
                """
                sparse_encoder:
                  params:
                    tables:
                      user_id: {kind: qr, collisions: 8}
                      item_id: {kind: mixed_dim, table_dim: 4}
                      history: {kind: hash, num_buckets: 9}
                item_id_feature: null   # a schema without data: no cold items to blank
                """
            ),
        )
        config.model = "dlrm"
        torch.manual_seed(0)
        model = build_model(config)
        g = torch.Generator().manual_seed(0)
        sample = SampleList({
            "dense": torch.randn(8, 1, generator=g),
            "sparse_user_id": torch.randint(0, 50, (8, 1), generator=g),
            "sparse_item_id": torch.randint(0, 40, (8, 1), generator=g),
            "sparse_history": torch.tensor([[1, 2, PAD_ID]] * 8),
            "targets": torch.randint(0, 2, (8, 1), generator=g).float(),
        })
        sample.dataset_name, sample.dataset_type = "_q_test", "val"
        tables = model.sparse_encoder.tables
        assert type(tables["user_id"]).__name__ == "QRTable"
        assert type(tables["item_id"]).__name__ == "MixedDimTable"
        output = model(sample)
        next(iter(output["losses"].values())).backward()
        assert tables["user_id"].quotient.weight.grad.abs().sum() > 0
        model.eval()
        with torch.no_grad():
            want = model(sample)["scores"]
            quantize_model(model, "int8")
            got = model(sample)["scores"]
        assert isinstance(model.sparse_encoder.tables["user_id"].quotient, QuantizedTable)
        torch.testing.assert_close(got, want, atol=1e-3, rtol=0)
    finally:
        registry.unregister("_q_test_schema")
        registry.register("config", previous)
