"""The fused ranking path against the model's own ``score_candidates``: the
same logits within 1e-5 in fp32, for every modality setting and for users
whose history is partly or wholly padding."""

import pytest
import torch

import mmf_rec.plugin

mmf_rec.plugin.apply()

import mmf_rec  # noqa: E402
from tiny_models import TINY_DATA, TINY_ENCODERS, build_tiny, sample_batch  # noqa: E402

mmf_rec.setup_imports()

from mmf_rec.serving.cpu import native_bf16  # noqa: E402
from mmf_rec.serving.fused import FusedRanker, LayoutError, chunk_layout  # noqa: E402


@pytest.fixture(scope="module")
def prepared(publish_synthetic):
    return publish_synthetic("_fused_test", TINY_DATA)


def build(**overrides):
    return build_tiny("dlrm_mm", TINY_ENCODERS, overrides).eval()


def users(data, rows=4):
    return sample_batch(data, "_fused_test", "test", rows, "test")


def model_scores(model, batch, candidates):
    """The model's own scores: score_candidates per user, one row at a time."""
    catalogue = model.encode_catalogue()
    out = []
    for b in range(candidates.shape[0]):
        row = {key: value[b:b + 1] for key, value in batch.items()
               if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == len(candidates)}
        ids = candidates[b]
        items = type(catalogue)(catalogue.tokens[ids], catalogue.mask[ids],
                                catalogue.pooled[ids], catalogue.group_sizes)
        with torch.no_grad():
            out.append(model.score_candidates(row, items))
    return torch.stack(out)


@pytest.mark.parametrize("modalities", [{"text": True, "image": True},
                                        {"text": True, "image": False},
                                        {"text": False, "image": False}])
def test_fused_scores_equal_the_models_score_candidates(prepared, modalities):
    model = build(modalities=modalities)
    batch = users(prepared)
    generator = torch.Generator().manual_seed(1)
    candidates = torch.stack([torch.randperm(prepared.items.rows, generator=generator)[:25]
                              for _ in range(4)])
    expected = model_scores(model, batch, candidates)
    fused = FusedRanker(model)
    got = fused.score_fields(batch, candidates)
    assert got.shape == (4, 25) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()
    # users scored in groups that fit the cache (here one at a time) give the same
    grouped = FusedRanker(model, catalogue=fused.catalogue, max_rows=30)
    assert torch.allclose(grouped.score_fields(batch, candidates), expected, atol=1e-5, rtol=0)
    # one user at a time gives the same, and a later call leaves the answers of
    # earlier ones alone (the scratch buffers are reused from call to call)
    ones = []
    for b in range(4):
        row = {key: value[b:b + 1] for key, value in batch.items()
               if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == 4}
        ones.append(fused.score_fields(row, candidates[b]))
    assert torch.allclose(torch.cat(ones), expected, atol=1e-5, rtol=0)


def test_fused_scores_every_catalogue_item_with_masked_groups(prepared):
    """Cold items (their id blanked and masked) and padded history tokens: the
    masks reach the fused path as they reach the model."""
    model = build()
    batch = users(prepared, rows=1)
    history = [k for k in batch.keys() if k.startswith("sparse_history")]
    assert history
    batch[history[0]][:, 1:] = -1  # padding: masked user tokens
    everything = torch.arange(prepared.items.rows).unsqueeze(0)
    expected = model_scores(model, batch, everything)
    got = FusedRanker(model).score_fields(batch, everything)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()


def test_chunk_layout_pads_groups_to_whole_chunks():
    chunk, chunks = chunk_layout([5, 32, 9])
    assert all(chunk * n >= size for n, size in zip(chunks, [5, 32, 9]))
    assert chunk * sum(chunks) < 3 * 32  # less padding than one common length
    assert chunk_layout([4, 4]) == (4, [1, 1])
    with pytest.raises(LayoutError):
        chunk_layout([3, 0])


def test_a_top_mlp_of_another_shape_is_refused_with_a_clear_error(prepared):
    model = build()
    model.top_mlp = torch.nn.Sequential(torch.nn.Linear(7, 1))
    with pytest.raises(LayoutError, match="top MLP reads 7 inputs"):
        FusedRanker(model).score_fields(users(prepared, rows=1), torch.arange(3))


def test_bf16_is_offered_only_with_native_support_and_stays_close(prepared):
    available, reason = native_bf16()
    assert isinstance(reason, str) and reason
    if not available:
        pytest.skip(f"bf16 path off: {reason}")
    model = build()
    batch = users(prepared)
    candidates = torch.arange(40).repeat(4, 1)
    exact = FusedRanker(model).score_fields(batch, candidates)
    half = FusedRanker(model, dtype=torch.bfloat16).score_fields(batch, candidates)
    assert half.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: close, not equal
    assert (half - exact).abs().max() < 0.1 * max(1.0, exact.abs().max().item())
