"""The two-tower retriever: its loss, its towers, its evaluation output."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mmf_rec.plugin

mmf_rec.plugin.apply()

import mmf_rec  # noqa: E402
from mmf_rec.models.two_tower import in_batch_logits  # noqa: E402
from mmf_rec.ranking_metrics import TARGET_KEY, TOPK_KEY, USER_KEY  # noqa: E402
from tiny_models import TINY_DATA, TINY_ENCODERS, build_tiny, sample_batch  # noqa: E402

mmf_rec.setup_imports()

# the two towers' own sizes, on top of the shared tiny encoders
TOWERS = {"embedding_dim": 8, "output_dim": 16, "tower_hidden": [16]}


@pytest.fixture(scope="module")
def prepared(publish_synthetic):
    return publish_synthetic("_tt_test", TINY_DATA)


def build(**overrides):
    return build_tiny("two_tower", TINY_ENCODERS, TOWERS, overrides)


def batch(data, split="train", rows=64, dataset_type="train"):
    return sample_batch(data, "_tt_test", split, rows, dataset_type)


# -- the loss ---------------------------------------------------------------------------
def test_in_batch_logits_by_hand():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    item_ids = torch.tensor([4, 9, 4])  # rows 0 and 2 clicked the same item
    log_q = torch.log(torch.tensor([0.5, 0.1, 0.5]))
    logits = in_batch_logits(users, items, item_ids, log_q, temperature=0.5)
    # cosine / 0.5 - log q; the same item in another row is no negative
    assert logits[0, 0] == pytest.approx(2.0 - math.log(0.5))
    assert logits[0, 1] == pytest.approx(0.0 - math.log(0.1))
    assert logits[1, 1] == pytest.approx(2.0 - math.log(0.1))
    assert logits[2, 1] == pytest.approx(1.6 - math.log(0.1))
    assert logits[0, 2] == -math.inf and logits[2, 0] == -math.inf
    assert logits[2, 2] == pytest.approx(1.2 - math.log(0.5))
    # without a correction, plain cosine / temperature
    plain = in_batch_logits(users, items, torch.arange(3), None, temperature=0.5)
    assert torch.allclose(plain, users @ items.t() / 0.5)


def test_log_q_correction_lifts_rare_items():
    """In-batch negatives arrive in proportion to popularity; the correction
    discounts a popular item as a negative, so the loss of a user who
    clicked a rare item, with a popular one beside it, goes down."""
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[0.8, 0.6], [0.6, 0.8]])
    ids = torch.tensor([0, 1])
    rare_then_popular = torch.log(torch.tensor([0.01, 0.5]))
    corrected = in_batch_logits(users, items, ids, rare_then_popular, 1.0)
    plain = in_batch_logits(users, items, ids, None, 1.0)
    loss = lambda logits: F.cross_entropy(logits, torch.arange(2), reduction="none")  # noqa: E731
    assert loss(corrected)[0] < loss(plain)[0]  # the user of the rare item
    assert loss(corrected)[1] > loss(plain)[1]  # the user of the popular item


def test_training_forward_uses_clicked_rows_and_trains_both_towers(prepared):
    model = build()
    sample_list = batch(prepared)
    clicked = int((sample_list["targets"] > 0.5).sum())
    output = model(sample_list)
    logits = output["in_batch_logits"]
    assert logits.shape == (clicked, clicked) and clicked > 5
    loss = output["losses"]["train/_tt_test/in_batch_softmax"]
    expected = F.cross_entropy(logits, torch.arange(clicked))
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    for layer in (model.user_tower[0], model.item_tower[0], model.knowledge["text"].projection,
                  model.knowledge["image"].projection):
        assert layer.weight.grad.abs().sum() > 0


def test_a_few_updates_lower_the_loss(prepared):
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    sample_list = batch(prepared, rows=256)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = model(sample_list)["losses"]["train/_tt_test/in_batch_softmax"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_a_batch_without_clicks_has_zero_loss(prepared):
    model = build()
    sample_list = batch(prepared, rows=16)
    sample_list["targets"] = torch.zeros_like(sample_list["targets"])
    loss = model(sample_list)["losses"]["train/_tt_test/in_batch_softmax"]
    assert loss.item() == 0.0


# -- the towers ---------------------------------------------------------------------------
def test_towers_give_unit_vectors(prepared):
    model = build().eval()
    with torch.no_grad():
        users = model.encode_users(batch(prepared, rows=8))
        items = model.encode_catalogue()
    assert users.shape == (8, 16) and items.shape == (60, 16)
    assert torch.allclose(users.norm(dim=1), torch.ones(8), atol=1e-5)
    assert torch.allclose(items.norm(dim=1), torch.ones(60), atol=1e-5)


def test_cold_items_are_encoded_from_content_not_from_their_id(prepared):
    model = build().eval()
    cold = torch.nonzero(torch.from_numpy(np.array(prepared.items["is_cold"]))).flatten()
    warm = torch.nonzero(~torch.from_numpy(np.array(prepared.items["is_cold"]))).flatten()
    assert len(cold) > 0
    with torch.no_grad():
        before = model.encode_items(torch.cat([cold, warm]))
        weight = model.item_sparse.table_weight("item_id")
        weight.add_(torch.randn_like(weight))  # scramble every id vector
        after = model.encode_items(torch.cat([cold, warm]))
    n = len(cold)
    assert torch.allclose(before[:n], after[:n], atol=1e-6)  # cold: id blanked
    assert not torch.allclose(before[n:], after[n:], atol=1e-3)  # warm: id read
    # and the content does reach a cold item's vector
    text = model.knowledge["text"].projection.weight
    with torch.no_grad():
        text.add_(torch.randn_like(text))
        moved = model.encode_items(cold)
    assert not torch.allclose(moved, after[:n], atol=1e-3)


def test_unknown_user_ids_are_blanked(prepared):
    model = build(exclude_features=[]).eval()
    sample_list = batch(prepared, rows=4)
    fields = {k: v.clone() for k, v in sample_list.items() if k.startswith(("dense", "sparse_"))}
    blank = dict(fields, sparse_user_id=torch.full_like(fields["sparse_user_id"], -1))
    too_big = dict(fields, sparse_user_id=torch.full_like(fields["sparse_user_id"], 10**6))
    with torch.no_grad():
        assert torch.allclose(model.encode_users(blank), model.encode_users(too_big))
        assert not torch.allclose(model.encode_users(blank), model.encode_users(fields))


def test_fingerprint_follows_the_weights(prepared):
    model = build()
    again = build()
    assert model.fingerprint() == again.fingerprint()
    with torch.no_grad():
        model.item_tower[0].bias.add_(1e-3)
    assert model.fingerprint() != again.fingerprint()


def test_excluded_features_are_not_read(prepared):
    model = build(exclude_features=["user_id"])
    assert "user_id" not in model.user_features and model.user_id_feature is None
    assert "user_id" in build(exclude_features=[]).user_features
    # as MMF's command line hands a list over: a string
    assert "user_id" not in build(exclude_features="[user_id]").user_features
    assert model.user_key == "user_id"  # still keys users in evaluation
    with pytest.raises(ValueError, match="colour"):
        build(exclude_features=["colour"])


# -- evaluation output -------------------------------------------------------------------
def test_evaluation_ranks_the_whole_catalogue_for_each_click(prepared):
    model = build().eval()
    sample_list = batch(prepared, split="val", rows=80, dataset_type="val")
    clicked = torch.nonzero(sample_list["targets"].reshape(-1) > 0.5).flatten()
    with torch.no_grad():
        output = model(sample_list)
        users = model.encode_users(sample_list)[clicked]
        scores = users @ model.encode_catalogue().t()
    top = output[TOPK_KEY]
    assert output["scores"].shape == (80, 1)
    # 200 asked, 60 items: the whole catalogue, then -1 padding
    assert top.shape == (len(clicked), 200)
    assert (top[:, 60:] == -1).all()
    # every item once per row, in order of score (ties may fall either way)
    assert (torch.sort(top[:, :60], dim=1).values == torch.arange(60)).all()
    assert torch.allclose(scores.gather(1, top[:, :60]),
                          torch.sort(scores, dim=1, descending=True).values, atol=1e-6)
    assert torch.equal(output[TARGET_KEY], sample_list["item_index"][clicked])
    assert torch.equal(output[USER_KEY], sample_list["sparse_user_id"][clicked, 0])
    assert "val/_tt_test/in_batch_softmax" in output["losses"]


def test_catalogue_cache_is_dropped_when_weights_can_change(prepared):
    model = build().eval()
    sample_list = batch(prepared, split="val", rows=40, dataset_type="val")
    with torch.no_grad():
        first = model(sample_list)[TOPK_KEY]
        model.train()
        model.item_tower[-1].weight.mul_(-1)  # reverses every item score
        model.eval()
        second = model(sample_list)[TOPK_KEY]
    assert not torch.equal(first, second)


def test_items_without_a_photo_still_get_vectors_and_no_photo_at_all_is_refused(
        publish_synthetic):
    from mmf_rec.models.knowledge import MissingModalityError

    gaps = publish_synthetic("_tt_gaps", {**TINY_DATA, "missing_image_fraction": 0.5})
    image = gaps.manifest["knowledge"]["image"]
    assert image["missing"] > 10
    model = build().eval()
    missing = [i for i in range(gaps.items.rows) if not gaps.image_path(i).is_file()]
    vectors = model.encode_catalogue()
    assert torch.isfinite(vectors).all()
    assert torch.allclose(vectors[missing].norm(dim=1), torch.ones(len(missing)), atol=1e-5)
    _, valid = model.knowledge["image"].pooled(torch.tensor(missing))
    assert not valid.any()  # the photo part is empty, the rest still speaks
    publish_synthetic("_tt_gaps", {**TINY_DATA, "missing_image_fraction": 1.0})
    with pytest.raises(MissingModalityError, match=r"modalities\.image=false"):
        build()
