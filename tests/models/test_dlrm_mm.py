"""The late-interaction ranker built from a prepared dataset, through MMF."""

import numpy as np
import pytest
import torch

import mmf_rec.plugin

mmf_rec.plugin.apply()

import mmf_rec  # noqa: E402
from tiny_models import TINY_DATA, TINY_ENCODERS, build_tiny, sample_batch  # noqa: E402

mmf_rec.setup_imports()


@pytest.fixture(scope="module")
def prepared(publish_synthetic):
    return publish_synthetic("_mm_test", TINY_DATA)


def build(**overrides):
    return build_tiny("dlrm_mm", TINY_ENCODERS, overrides)


def batch(data, split="test", rows=6):
    return sample_batch(data, "_mm_test", split, rows, "test")


def test_forward_trains_both_sides(prepared):
    model = build()
    sample_list = batch(prepared)
    sample_list.dataset_type = "train"
    output = model(sample_list)
    assert output["scores"].shape == (6, 1)
    output["losses"]["train/_mm_test/logit_bce"].backward()
    for modality in ("text", "image"):
        assert model.knowledge[modality].projection.weight.grad.abs().sum() > 0
    assert model.top_mlp[0].weight.grad.abs().sum() > 0


def test_one_user_against_k_cached_candidates_matches_pairwise_scores(prepared):
    model = build().eval()
    sample_list = batch(prepared, rows=1)
    candidates = torch.arange(10)
    with torch.no_grad():
        ranked = model.score_candidates(sample_list, model.encode_items(candidates))
        one_by_one = []
        for item in candidates.tolist():
            pair = batch(prepared, rows=1)
            pair["item_index"] = torch.tensor([item])
            one_by_one.append(model(pair)["scores"].item())
    assert ranked.shape == (10,)
    assert torch.allclose(ranked, torch.tensor(one_by_one), atol=1e-5)


def test_items_without_training_rows_have_their_id_blanked(prepared):
    model = build().eval()
    is_cold = torch.from_numpy(np.array(prepared.items["is_cold"]))
    cold = torch.nonzero(is_cold).flatten()
    warm = torch.nonzero(~is_cold).flatten()
    assert cold.numel() and torch.equal(model.item_table.blanking.seen, ~is_cold)
    column = model.item_id_column
    attributes, kept = model.item_table(cold)
    assert (attributes[:, column] == -1).all() and not kept.any()
    attributes, kept = model.item_table(warm)
    assert (attributes[:, column] == warm).all() and kept.all()


def test_a_blanked_id_is_masked_out_of_maxsim(prepared):
    """A cold item's id is not a zero token that a user token could match."""
    model = build().eval()
    is_cold = torch.from_numpy(np.array(prepared.items["is_cold"]))
    cold, warm = torch.nonzero(is_cold).flatten()[:3], torch.nonzero(~is_cold).flatten()[:3]
    column = model.item_id_column
    with torch.no_grad():
        assert not model.encode_items(cold).mask[:, column].any()
        assert model.encode_items(warm).mask[:, column].all()


@pytest.mark.parametrize("modalities", [{"text": False, "image": False},
                                        {"text": True, "image": False}])
def test_modalities_can_be_switched_off(prepared, modalities):
    model = build(modalities=modalities)
    assert sorted(model.knowledge) == sorted(m for m, on in modalities.items() if on)
    assert model(batch(prepared))["scores"].shape == (6, 1)


def test_uncached_encoders_give_the_cached_scores(prepared):
    """Cache off (the fine-tuning path) computes the same thing, per batch."""
    cached, live = build().eval(), build(knowledge_cache={"enabled": False}).eval()
    live.load_state_dict(cached.state_dict(), strict=False)
    for modality in ("text", "image"):
        live.knowledge[modality].encoder.projection.load_state_dict(
            cached.knowledge[modality].projection.state_dict())
    sample_list = batch(prepared)
    with torch.no_grad():
        assert torch.allclose(cached(sample_list)["scores"], live(sample_list)["scores"],
                              atol=2e-3)
