"""The FAISS item index (real FAISS, real files), user states, and the
retrieve-then-rank Recommender on tiny trained-from-scratch models."""

import json

import numpy as np
import pytest
import torch

import mmf_rec.plugin

mmf_rec.plugin.apply()


import mmf_rec  # noqa: E402
import mmf_rec.data.protocol  # noqa: E402
from mmf_rec.retrieval.index import (  # noqa: E402
    IndexFileError,
    IndexMismatchError,
    ItemIndex,
)
from mmf_rec.retrieval.pipeline import (  # noqa: E402
    Recommender,
    exposure_log_prior,
    write_recommendations,
)
from mmf_rec.retrieval.users import UserStates  # noqa: E402
from mmf_rec.schema import PAD_ID  # noqa: E402
from tiny_models import TINY_ENCODERS, build_tiny  # noqa: E402

mmf_rec.setup_imports()


def unit_vectors(n, dim=16, seed=0, clusters=None):
    rng = np.random.default_rng(seed)
    if clusters:
        centres = rng.normal(size=(clusters, dim))
        x = centres[rng.integers(clusters, size=n)] + 0.3 * rng.normal(size=(n, dim))
    else:
        x = rng.normal(size=(n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(items, ids, queries, k):
    scores = queries @ items.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(scores, order, 1)


# -- the index ---------------------------------------------------------------------------
def test_flat_search_is_exact_and_maps_rows_to_item_ids():
    items, queries = unit_vectors(300), unit_vectors(20, seed=1)
    ids = np.arange(300) * 7 + 1000  # not row numbers
    index = ItemIndex.build(items, ids, model_fingerprint="abc", progress=False)
    scores, found = index.search(queries, 10, model_fingerprint="abc")
    want_ids, want_scores = exact_top(items, ids, queries, 10)
    assert np.array_equal(found, want_ids)
    assert np.allclose(scores, want_scores, atol=1e-5)


def test_round_trip_through_files_keeps_results_and_metadata(tmp_path):
    items, queries = unit_vectors(200), unit_vectors(5, seed=1)
    index = ItemIndex.build(items, np.arange(200), index_type="hnsw", params={"M": 8},
                            model_fingerprint="fp1", source={"run": "x"}, progress=False)
    before = index.search(queries, 7, model_fingerprint="fp1")
    index.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["index_type"] == "hnsw" and meta["metric"] == "ip" and meta["dim"] == 16
    assert meta["num_items"] == 200 and meta["model_fingerprint"] == "fp1"
    assert meta["params"] == {"M": 8, "ef_construction": 200, "ef_search": 128}
    loaded = ItemIndex.load(tmp_path / "idx")
    after = loaded.search(queries, 7, model_fingerprint="fp1")
    assert np.array_equal(before[1], after[1]) and np.allclose(before[0], after[0])
    assert loaded.meta.source == {"run": "x"}


def test_new_items_are_added_without_rebuilding(tmp_path):
    items = unit_vectors(120)
    index = ItemIndex.build(items[:100], np.arange(100), model_fingerprint="fp", progress=False)
    index.save(tmp_path / "idx")
    index = ItemIndex.load(tmp_path / "idx")
    index.add(items[100:], np.arange(100, 120), model_fingerprint="fp", progress=False)
    index.save(tmp_path / "idx")
    index = ItemIndex.load(tmp_path / "idx")
    assert len(index) == 120
    _, found = index.search(items[100:], 1, model_fingerprint="fp")
    assert np.array_equal(found[:, 0], np.arange(100, 120))  # each finds itself
    with pytest.raises(ValueError, match="already in the index"):
        index.add(items[:2], [3, 500], model_fingerprint="fp")
    with pytest.raises(IndexMismatchError, match="model fingerprint"):
        index.add(items[:1], [900], model_fingerprint="other")


def test_one_error_names_every_mismatch():
    index = ItemIndex.build(unit_vectors(50), np.arange(50), model_fingerprint="mine",
                            progress=False)
    with pytest.raises(IndexMismatchError) as error:
        index.search(unit_vectors(2, dim=8), 5, metric="l2", model_fingerprint="theirs")
    message = str(error.value)
    assert "dimension 8 != the index's 16" in message
    assert "metric 'l2' != the index's 'ip'" in message
    assert "theirs != the index's mine" in message and "rebuild" in message
    with pytest.raises(IndexMismatchError, match="dimension"):
        index.search(unit_vectors(2, dim=8), 5)


def test_k_larger_than_the_catalogue_is_refused():
    index = ItemIndex.build(unit_vectors(30), np.arange(30), progress=False)
    with pytest.raises(ValueError, match="k=31 exceeds the 30 items"):
        index.search(unit_vectors(1), 31)
    assert index.search(unit_vectors(1), 30)[1].shape == (1, 30)


@pytest.mark.parametrize("index_type, params", [
    ("hnsw", {"M": 16, "ef_search": 64}),
    ("ivfpq", {"nlist": 16, "m": 8, "nbits": 6, "nprobe": 12, "refine": 4}),
])
def test_approximate_indexes_find_most_exact_neighbours(index_type, params):
    items = unit_vectors(4000, clusters=40)
    queries = unit_vectors(50, seed=2, clusters=40)
    ids = np.arange(4000)
    index = ItemIndex.build(items, ids, index_type=index_type, params=params, progress=False)
    _, found = index.search(queries, 20)
    want, _ = exact_top(items, ids, queries, 20)
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(found, want)])
    assert recall > 0.9, recall


def test_search_params_can_be_tuned_after_loading(tmp_path):
    items = unit_vectors(2000, clusters=20)
    index = ItemIndex.build(items, np.arange(2000), index_type="ivfpq",
                            params={"nlist": 32, "m": 4, "nbits": 6, "nprobe": 1, "refine": 0},
                            progress=False)
    queries = unit_vectors(40, seed=3, clusters=20)
    want, _ = exact_top(items, np.arange(2000), queries, 10)

    def recall(found):
        return np.mean([len(set(a) & set(b)) for a, b in zip(found, want)]) / 10

    narrow = recall(index.search(queries, 10)[1])
    index.set_search_params(nprobe=32)
    wide = recall(index.search(queries, 10)[1])
    assert wide > narrow
    with pytest.raises(ValueError, match="unknown search params"):
        index.set_search_params(ef_search=10)


def test_bad_build_input_is_refused():
    with pytest.raises(ValueError, match="unknown index type"):
        ItemIndex.build(unit_vectors(10), np.arange(10), index_type="annoy")
    with pytest.raises(ValueError, match="unknown params"):
        ItemIndex.build(unit_vectors(10), np.arange(10), index_type="hnsw", params={"nprobe": 3})
    with pytest.raises(ValueError, match="ids repeat"):
        ItemIndex.build(unit_vectors(3), [1, 1, 2])
    with pytest.raises(ValueError, match="zero items"):
        ItemIndex.build(np.zeros((0, 4), dtype=np.float32), [])
    with pytest.raises(ValueError, match="training vectors"):
        ItemIndex.build(unit_vectors(100), np.arange(100), index_type="ivfpq",
                        params={"nlist": 64})


@pytest.fixture
def saved(tmp_path):
    index = ItemIndex.build(unit_vectors(40), np.arange(40), model_fingerprint="fp",
                            progress=False)
    index.save(tmp_path / "idx")
    return tmp_path / "idx"


def test_corrupt_index_file_is_a_clear_error(saved):
    data = bytearray((saved / "index.faiss").read_bytes())
    data[100] ^= 0xFF
    (saved / "index.faiss").write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="sha256 does not match"):
        ItemIndex.load(saved)


def test_garbage_index_file_is_a_clear_error_even_unverified(saved):
    (saved / "index.faiss").write_bytes(b"not a faiss index at all")
    with pytest.raises(IndexFileError, match="FAISS cannot read it"):
        ItemIndex.load(saved, verify=False)


def test_empty_or_incomplete_index_directory_is_a_clear_error(saved, tmp_path):
    (saved / "item_ids.npy").write_bytes(b"")
    with pytest.raises(IndexFileError, match="missing or empty"):
        ItemIndex.load(saved)
    (saved / "meta.json").unlink()
    with pytest.raises(IndexFileError, match="meta.json: missing"):
        ItemIndex.load(saved)
    with pytest.raises(IndexFileError, match="no index directory"):
        ItemIndex.load(tmp_path / "nowhere")


# -- users and the pipeline, on tiny models -----------------------------------------------
TINY = {"seed": 7, "num_users": 80, "num_items": 50, "num_interactions": 3000,
        "history_len": 3, "image_size": 32}


@pytest.fixture(scope="module")
def world(publish_synthetic):
    data = publish_synthetic("_rt_test", TINY)
    models = {}
    for name, extra in (("two_tower", {"embedding_dim": 8, "output_dim": 16,
                                       "tower_hidden": [16]}),
                        ("dlrm_mm", {"embedding_dim": 8,
                                     "dense_encoder": {"params": {"hidden_dims": [8]}},
                                     "top_mlp": [16]})):
        models[name] = build_tiny(name, TINY_ENCODERS, extra).eval()
    retriever = models["two_tower"]
    with torch.no_grad():
        vectors = retriever.encode_catalogue().numpy()
    index = ItemIndex.build(vectors, np.arange(len(vectors)),
                            model_fingerprint=retriever.fingerprint(), progress=False)
    return data, retriever, models["dlrm_mm"], index


def test_user_state_is_the_last_row_plus_its_click(world):
    data = world[0]
    users = UserStates(data, history_feature="history")
    rows = []
    for split in data.split_names:
        table = data.split(split)
        for r in range(table.rows):
            rows.append((int(table["timestamp"][r]), split, r))
    rows.sort()
    is_cold = np.asarray(data.items["is_cold"])
    checked = 0
    for user in (0, 5, 17, 33):
        mine = [(t, s, r) for t, s, r in rows if data.split(s)["user_id"][r, 0] == user]
        if not mine:
            continue
        _, split, r = mine[-1]
        table = data.split(split)
        history = list(table["history"][r])
        item = int(table["item_id"][r, 0])
        if table["label"][r] > 0.5 and not is_cold[item]:
            history = [item] + history[:-1]
        fields = users.batch([user]).fields
        assert fields["sparse_history"][0].tolist() == history
        assert np.allclose(fields["dense"][0].numpy(), table["dense"][r])
        assert fields["sparse_region"][0, 0] == table["region"][r, 0]
        clicked = {int(data.split(s)["item_id"][q, 0]) for _, s, q in mine
                   if data.split(s)["label"][q] > 0.5}
        assert set(users.seen(user).tolist()) == clicked
        checked += 1
    assert checked >= 3


def test_unknown_user_gets_the_features_only_fallback(world):
    users = UserStates(world[0])
    batch = users.batch([3, 10**6])
    assert batch.cold.tolist() == [False, True]
    for key, value in batch.fields.items():
        if key.startswith("sparse_"):
            assert (value[1] == PAD_ID).all(), key
    assert np.allclose(batch.fields["dense"][1].numpy(), users.mean_dense)
    assert len(users.seen(10**6)) == 0


def test_batched_ranking_matches_one_user_at_a_time(world):
    data, retriever, ranker, index = world
    recommender = Recommender(retriever, index, ranker, data=data)
    batch = recommender.users.batch([1, 2, 3])
    candidates = np.array([[0, 5, 9, -1], [3, 4, 5, 6], [49, 0, 1, 2]])
    ranked = recommender.rank(batch.fields, candidates, pairs_per_call=5)
    with torch.no_grad():
        for b in range(3):
            one = {k: v[b:b + 1] for k, v in batch.fields.items()}
            valid = candidates[b][candidates[b] >= 0]
            want = ranker.score_candidates(one, ranker.encode_items(torch.from_numpy(valid)))
            assert np.allclose(ranked[b, :len(valid)], want.numpy(), atol=1e-5)
    assert ranked[0, 3] == -np.inf


def test_recommend_returns_ranked_unseen_items(world, tmp_path):
    data, retriever, ranker, index = world
    recommender = Recommender(retriever, index, ranker, data=data,
                              descriptions=data.descriptions())
    results = recommender.recommend([4, 11, 10**6], k_retrieve=30, k_final=5, batch_size=2)
    assert [r.user for r in results] == [4, 11, 10**6]
    assert [r.cold_user for r in results] == [False, False, True]
    for result in results:
        assert [i.rank for i in result.items] == [1, 2, 3, 4, 5]
        scores = [i.ranking_score for i in result.items]
        assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
        seen = set(recommender.users.seen(result.user).tolist())
        assert not seen & {i.item_id for i in result.items}
        assert all(i.description for i in result.items)
    # the candidates are the retriever's top 30 among unseen items
    batch = recommender.users.batch([4])
    seen = recommender.users.seen(4)
    _, top = index.search(retriever.encode_users(batch.fields).detach().numpy(), 50)
    allowed = [i for i in top[0] if i not in seen][:30]
    assert {i.item_id for i in results[0].items} <= set(allowed)
    path = write_recommendations(results, tmp_path / "recs.tsv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("user\tcold_user\trank\titem_id") and len(lines) == 16


def test_without_exclusion_or_ranker_the_retrieval_order_is_kept(world):
    data, retriever, _, index = world
    recommender = Recommender(retriever, index, data=data)
    result = recommender.recommend([4], k_retrieve=20, k_final=20, exclude_seen=False)[0]
    _, top = index.search(retriever.encode_users(
        recommender.users.batch([4]).fields).detach().numpy(), 20)
    assert [i.item_id for i in result.items] == top[0].tolist()
    assert all(i.ranking_score is None for i in result.items)


def test_recommender_refuses_bad_requests_and_foreign_indexes(world):
    data, retriever, ranker, index = world
    recommender = Recommender(retriever, index, ranker, data=data)
    with pytest.raises(ValueError, match="exceeds the 50 items"):
        recommender.recommend([1], k_retrieve=51, k_final=10)
    with pytest.raises(ValueError, match="k_final <= k_retrieve"):
        recommender.recommend([1], k_retrieve=5, k_final=10)
    foreign = ItemIndex.build(unit_vectors(50), np.arange(50), model_fingerprint="other-model",
                              progress=False)
    with pytest.raises(IndexMismatchError, match="model fingerprint"):
        Recommender(retriever, foreign, ranker, data=data)


def test_exposure_prior_orders_by_click_probability_times_exposure(world):
    data, retriever, ranker, index = world
    prior = exposure_log_prior(data)
    counts = np.bincount(np.asarray(data.split("train")["item_id"][:, 0]), minlength=50)
    shown = counts > 0
    assert not shown.all()  # the cold items were never shown in training
    share = np.exp(prior)
    assert share.sum() == pytest.approx(1.0)
    assert np.allclose(share[shown] / share[shown].sum(), counts[shown] / counts.sum())
    assert np.allclose(share[~shown], share[shown].mean())  # a new item counts as average
    recommender = Recommender(retriever, index, ranker, data=data, final_score="ctr_x_exposure")
    a, b = int(np.argmax(counts)), int(np.argmin(np.where(shown, counts, 10**9)))
    key = recommender.final_scores(np.array([[0.0, 0.0, 2.0]]), np.array([[a, b, -1]]))
    assert key[0, 0] - key[0, 1] == pytest.approx(prior[a] - prior[b])
    assert key[0, 0] == pytest.approx(np.log(0.5) + prior[a]) and key[0, 2] == -np.inf
    plain = recommender.final_scores(np.array([[0.0, 1.0]]), np.array([[a, b]]), "ctr")
    assert plain[0, 1] > plain[0, 0]
    with pytest.raises(ValueError, match="final_score"):
        Recommender(retriever, index, ranker, data=data, final_score="revenue")


def test_new_item_share_reserves_candidates_for_the_best_new_items(world):
    data, retriever, _, index = world
    is_new = ~mmf_rec.data.protocol.seen_in_training(data)
    assert is_new.sum() >= 5
    plain = Recommender(retriever, index, data=data)
    reserving = Recommender(retriever, index, data=data, new_item_share=0.4)
    fields = plain.users.batch([4, 11]).fields
    exclude = [plain.users.seen(4), plain.users.seen(11)]
    _, before = plain.retrieve(fields, 10, exclude)
    scores, after = reserving.retrieve(fields, 10, exclude)
    queries = retriever.encode_users(fields).detach().numpy()
    new_ids = np.flatnonzero(is_new)
    with torch.no_grad():
        new_scores = queries @ retriever.encode_items(torch.from_numpy(new_ids)).numpy().T
    for b in range(2):
        assert len(set(after[b])) == 10 and not set(after[b]) & set(exclude[b].tolist())
        assert np.all(np.diff(scores[b]) <= 1e-6)  # merged lists stay ordered by score
        picked_new = [i for i in after[b] if is_new[i]]
        assert len(picked_new) >= 4  # 40% of 10, at least
        best_new = new_ids[np.argsort(-new_scores[b], kind="stable")][:4]
        assert set(best_new) <= set(picked_new)
        known = [i for i in before[b] if not is_new[i]]
        assert [i for i in after[b] if not is_new[i]] == known[:10 - len(picked_new)]
    result = reserving.recommend([4], k_retrieve=10, k_final=10)[0]
    assert [i.new for i in result.items] == [bool(is_new[i.item_id]) for i in result.items]
    with pytest.raises(ValueError, match="new_item_share"):
        Recommender(retriever, index, data=data, new_item_share=1.0)
