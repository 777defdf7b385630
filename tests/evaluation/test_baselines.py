"""Classic baselines: closed forms checked against independent computations."""

import numpy as np
import pytest
import scipy.sparse as sp

from mmf_rec.evaluation import baselines
from mmf_rec.evaluation.baselines import (
    ALS, BASELINES, EASE, ContentKNN, ItemKNN, Popularity, cosine_similarity, ease_weights,
    keep_top_per_row, train_matrix)
from mmf_rec.evaluation.catalogue import build_queries, evaluate_scores

# 3 users x 4 items; (user, item, label, sampled, timestamp)
SMALL = {
    "train": [(0, 0, 1, False, 1), (0, 1, 1, False, 1), (0, 1, 1, False, 2),  # duplicate
              (1, 1, 1, False, 1), (1, 2, 1, False, 1),
              (2, 0, 1, False, 1), (2, 3, 1, False, 1),
              (1, 3, 1, True, 2),   # sampled with a positive label: ignored
              (2, 2, 0, False, 2)],  # observed negative: ignored
    "val": [(0, 3, 1, False, 10), (1, 0, 1, False, 10), (2, 1, 1, False, 10)],
    "test": [(0, 2, 1, False, 20), (1, 3, 1, False, 20), (2, 2, 1, False, 20)],
}
X_SMALL = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], float)


@pytest.fixture
def small(make_prepared):
    return make_prepared(3, 4, SMALL)


def test_train_matrix_holds_observed_training_positives_once(small):
    assert (train_matrix(small).toarray() == X_SMALL).all()


def test_popularity_counts_ignore_sampled_rows_and_negatives(small):
    queries = build_queries(small, "test")
    scores = Popularity().fit(small).score(queries)
    assert scores.shape == (3, 4)
    assert (scores == np.array([2, 2, 1, 1], np.float32)).all()


def test_ease_matches_the_constrained_least_squares_it_solves():
    """Column j of B is the ridge regression of item j on the other items."""
    X = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 0]], float)
    l2 = 0.7
    B = ease_weights(sp.csr_matrix(X), l2)
    for j in range(4):
        others = [i for i in range(4) if i != j]
        A = X[:, others]
        column = np.linalg.solve(A.T @ A + l2 * np.eye(3), A.T @ X[:, j])
        assert B[others, j] == pytest.approx(column, abs=1e-9)
        assert B[j, j] == 0.0
    P = np.linalg.inv(X.T @ X + l2 * np.eye(4))  # the paper's closed form, too
    closed = np.eye(4) - P / np.diag(P)[None, :]
    np.fill_diagonal(closed, 0.0)
    assert B == pytest.approx(closed, abs=1e-12)


def test_ease_scores_are_the_profile_times_b(small):
    model = EASE(l2=2.0).fit(small)
    queries = build_queries(small, "test")  # profile: train + val positives
    profile = X_SMALL.copy()
    profile[[0, 1, 2], [3, 0, 1]] = 1
    expected = profile @ ease_weights(sp.csr_matrix(X_SMALL), 2.0)
    assert model.score(queries) == pytest.approx(expected.astype(np.float32), abs=1e-5)


def test_itemknn_cosine_and_neighbour_pruning(small):
    S = cosine_similarity(sp.csr_matrix(X_SMALL)).toarray()
    # item columns: 0 = users {0,2}, 1 = {0,1}, 2 = {1}, 3 = {2}
    expected = np.array([[0, 1 / 2, 0, 1 / np.sqrt(2)],
                         [1 / 2, 0, 1 / np.sqrt(2), 0],
                         [0, 1 / np.sqrt(2), 0, 0],
                         [1 / np.sqrt(2), 0, 0, 0]])
    assert S == pytest.approx(expected)
    top = keep_top_per_row(sp.csr_matrix(expected), 1).toarray()
    assert (np.count_nonzero(top, axis=1) == 1).all()
    assert top[0, 3] == pytest.approx(1 / np.sqrt(2)) and top[1, 2] == pytest.approx(1 / np.sqrt(2))
    queries = build_queries(small, "val")  # profile = train positives
    scores = ItemKNN(neighbours=1).fit(small).score(queries)
    assert scores == pytest.approx((X_SMALL @ top).astype(np.float32))


def blocks(n_users=40, n_items=20, per_user=6, seed=0):
    """Two communities: users of each like items of their own half only.
    Each user has ``per_user`` training items and one val and one test item."""
    rng = np.random.default_rng(seed)
    splits = {"train": [], "val": [], "test": []}
    half = n_items // 2
    for u in range(n_users):
        own = rng.permutation(half) + (half if u >= n_users // 2 else 0)
        splits["train"] += [(u, int(i), 1, False, 1) for i in own[:per_user]]
        splits["val"].append((u, int(own[per_user]), 1, False, 10))
        splits["test"].append((u, int(own[per_user + 1]), 1, False, 20))
    return n_users, n_items, splits


def test_als_beats_random_scores_on_a_block_structured_matrix(make_prepared):
    data = make_prepared(*blocks())
    queries = build_queries(data, "val")
    als = evaluate_scores(ALS(factors=4, alpha=10.0).fit(data, seed=0).score(queries),
                          queries, ks=(5,))["warm"]
    rng = np.random.default_rng(1)
    random = evaluate_scores(rng.random((len(queries), 20)), queries, ks=(5,))["warm"]
    # random picks 5 of the ~14 unexcluded items; the 4 left in the own block hold the answer
    assert als["hr@5"] == 1.0
    assert als["ndcg@5"] > random["ndcg@5"] + 0.2


def test_als_is_reproducible_for_a_seed_and_profiles_count(make_prepared):
    data = make_prepared(*blocks())
    val, test = build_queries(data, "val"), build_queries(data, "test")
    first = ALS(factors=4).fit(data, seed=3).score(val)
    assert first == pytest.approx(ALS(factors=4).fit(data, seed=3).score(val), abs=1e-4)
    # the test profile adds the val positive, which changes the user's factors
    assert not np.allclose(ALS(factors=4).fit(data, seed=3).score(test), first)


def test_content_knn_ranks_cold_items_by_content(make_prepared):
    # items 0, 1 and cold 4 point one way; 2, 3 and cold 5 the other
    vectors = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [1, 0.05], [0.05, 1]], np.float32)
    splits = {"train": [(0, 0, 1, False, 1), (0, 1, 1, False, 1), (1, 2, 1, False, 1),
                        (1, 3, 1, False, 1)],
              "val": [(0, 1, 1, False, 10), (1, 2, 1, False, 10)],
              "test": [(0, 0, 1, False, 20)],
              "cold": [(0, 4, 1, False, 20), (1, 5, 1, False, 20)]}
    data = make_prepared(2, 6, splits, is_cold=[4, 5])
    queries = build_queries(data, "test")
    for aggregate in ("mean", "max"):
        model = ContentKNN(embeddings=vectors, aggregate=aggregate).fit(data)
        out = evaluate_scores(model.score(queries), queries, ks=(1,))
        assert out["cold"]["users"] == 2 and out["cold"]["hr@1"] == 1.0, aggregate
    with pytest.raises(ValueError, match=r"embeddings must have shape \(6, d\), got \(5, 2\)"):
        ContentKNN(embeddings=vectors[:5]).fit(data)


def test_tune_picks_the_best_val_point_and_never_reads_test(small, monkeypatch):
    periods = []
    real = baselines.build_queries
    monkeypatch.setattr(baselines, "build_queries",
                        lambda data, split: periods.append(split) or real(data, split))
    params, value = EASE.tune(small, seed=0)
    assert periods == ["val"]
    assert params["l2"] in EASE.grid["l2"]
    queries = real(small, "val")
    values = [evaluate_scores(EASE(**p).fit(small).score(queries), queries, ks=(10,))["warm"]
              ["ndcg@10"] for p in EASE.candidates()]
    assert value == pytest.approx(max(values))
    assert params == EASE.candidates()[int(np.argmax(values))]


def test_registry_grids_are_small_and_parameters_are_checked():
    assert set(BASELINES) == {"oracle", "popularity", "itemknn", "ease", "als", "content_knn"}
    for cls in BASELINES.values():
        assert all(2 <= len(values) <= 4 for values in cls.grid.values()), cls
        assert len(cls.candidates()) <= 6
    with pytest.raises(TypeError, match=r"unknown parameters \['lambda'\]"):
        EASE(**{"lambda": 1.0})
    with pytest.raises(RuntimeError, match="call fit"):
        EASE().score(None)


def test_item_embeddings_mean_pool_the_cached_text_tokens(make_prepared, tmp_path):
    import json

    import torch

    from mmf_rec.evaluation.baselines import item_embeddings

    data = make_prepared(3, 4, SMALL)
    texts = ["a red wool jumper", "a blue cotton shirt", "a red wool jumper", "garden hose"]
    (data.root / "items" / "descriptions.json").write_text(json.dumps(texts))
    settings = {"text_encoder": {"params": {"random_init": {
        "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32}, "max_length": 8}},
        "knowledge_cache": {"dir": str(tmp_path / "cache")}}
    torch.manual_seed(0)
    vectors = item_embeddings(data, ("text",), settings)
    assert vectors.shape == (4, 16)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(4), abs=1e-3)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-3)  # same text, same vector
    assert not np.allclose(vectors[0], vectors[3], atol=1e-2)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one cache entry, reused next time
    torch.manual_seed(0)
    assert item_embeddings(data, ("text",), settings) == pytest.approx(vectors)
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_oracle_beats_popularity_on_generated_data_and_refuses_other_data(tmp_path, small):
    from mmf_rec.data import synthetic
    from mmf_rec.data.prepared import load_prepared
    from mmf_rec.evaluation.baselines import Oracle, Popularity
    from mmf_rec.evaluation.catalogue import build_queries, evaluate_scores

    config = {"seed": 3, "num_users": 300, "num_items": 120, "num_interactions": 12000,
              "image_size": 8}
    synthetic.generate(tmp_path / "gen", config, progress=False)
    data = load_prepared(tmp_path / "gen", verify_checksums=False)
    queries = build_queries(data, "test")
    report = {name: evaluate_scores(cls().fit(data).score(queries), queries, ks=(10,))
              for name, cls in (("oracle", Oracle), ("popularity", Popularity))}
    assert report["oracle"]["warm"]["recall@10"] > 1.3 * report["popularity"]["warm"]["recall@10"]
    assert report["oracle"]["cold"]["recall@10"] > 0.1  # it knows the new items too
    with pytest.raises(ValueError, match="not generated kbrec_synthetic"):
        Oracle().fit(small)
