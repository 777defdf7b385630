"""Full-catalogue queries and metrics, on hand-made data with known answers."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from mmf_rec.evaluation import catalogue
from mmf_rec.evaluation.catalogue import (
    Queries, build_queries, evaluate_scores, tie_break_order)

# (user, item, label, sampled, timestamp); items 6 and 7 are cold
SPLITS = {
    "train": [(0, 0, 1, False, 1), (0, 1, 1, False, 2),
              (0, 2, 0, True, 2),    # sampled negative
              (0, 3, 1, True, 3),    # sampled, even with a positive label
              (0, 4, 0, False, 3),   # observed negative: not a positive
              (1, 2, 1, False, 1), (2, 5, 1, False, 1)],
    "val": [(0, 5, 0, True, 10), (0, 4, 1, False, 10),
            (0, 0, 1, False, 11),  # repeat of a train positive
            (1, 3, 1, False, 12)],
    "test": [(0, 5, 1, False, 20),
             (0, 4, 1, False, 21),  # repeat of a val positive
             (1, 1, 1, False, 22),
             (1, 0, 1, True, 22)],  # sampled, positive label
    "cold": [(0, 6, 1, False, 25), (2, 7, 1, False, 19), (2, 6, 0, True, 19)],
}


@pytest.fixture
def data(make_prepared):
    return make_prepared(3, 8, SPLITS, is_cold=[6, 7])


def as_lists(arrays):
    return [sorted(int(x) for x in a) for a in arrays]


def test_val_queries_exclude_train_and_drop_repeats(data):
    q = build_queries(data, "val")
    assert q.split == "val" and q.num_items == 8
    assert q.users.tolist() == [0, 1]
    assert as_lists(q.exclude) == [[0, 1], [2]]  # sampled item 3 is not excluded
    assert as_lists(q.relevant_warm) == [[4], [3]]  # item 0 is a repeat, 5 was sampled
    assert as_lists(q.relevant_cold) == [[], []]
    assert q.repeats_dropped == 1
    assert q.time.tolist() == [10, 12]
    assert (q.profile.toarray() == np.array([[1, 1, 0, 0, 0, 0, 0, 0],
                                             [0, 0, 1, 0, 0, 0, 0, 0]])).all()


def test_test_queries_cover_test_and_cold_and_exclude_train_and_val(data):
    q = build_queries(data, "test")
    assert q.users.tolist() == [0, 1, 2]
    assert as_lists(q.exclude) == [[0, 1, 4], [2, 3], [5]]
    assert as_lists(q.relevant_warm) == [[5], [1], []]  # user 1's sampled item 0 is not
    assert as_lists(q.relevant_cold) == [[6], [], [7]]  # user 2's sampled item 6 is not
    assert q.repeats_dropped == 1


def test_fields_come_from_each_users_earliest_period_positive(data):
    q = build_queries(data, "test")
    # dense holds the global row id: train 0-6, val 7-10, test 11-14, cold 15-17
    assert q.fields["dense"][:, 0].tolist() == [11.0, 13.0, 16.0]
    assert q.time.tolist() == [20, 22, 19]
    assert set(q.fields) == {"dense", "sparse_user_id", "sparse_history"}
    assert q.fields["sparse_user_id"][:, 0].tolist() == [0, 1, 2]
    assert q.fields["sparse_history"].shape == (3, 3)


def test_unknown_period_is_refused(data):
    with pytest.raises(ValueError, match=r"split must be one of \['val', 'test'\], got 'train'"):
        build_queries(data, "train")


def test_known_ranks_give_exact_metrics(data):
    q = build_queries(data, "test")
    scores = np.array([
        # excluded 0, 1, 4 score highest; then 2, 5 (warm), 6 (cold), 3, 7
        [100, 99, 5, 2, 98, 4, 3, 1],
        # excluded 2, 3; relevant warm 1 first
        [1, 10, 50, 40, 2, 3, 4, 5],
        # excluded 5; relevant cold 7 fourth
        [8, 7, 6, 1, 2, 100, 0, 5],
    ], dtype=np.float32)
    out = evaluate_scores(scores, q, ks=(1, 2, 3, 5))
    warm, cold = out["warm"], out["cold"]
    assert warm["users"] == 2 and cold["users"] == 2
    assert warm["recall@1"] == pytest.approx(0.5)
    assert warm["hr@1"] == pytest.approx(0.5)
    assert warm["ndcg@1"] == pytest.approx(0.5)
    assert warm["recall@2"] == pytest.approx(1.0)
    assert warm["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert warm["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert cold["recall@2"] == 0.0
    assert cold["recall@3"] == pytest.approx(0.5)
    assert cold["ndcg@5"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(5)) / 2)
    assert cold["mrr"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    assert set(warm) == {*(f"{m}@{k}" for m in ("recall", "ndcg", "hr") for k in (1, 2, 3, 5)),
                         "mrr", "users"}


def queries(relevant_warm, exclude, num_items, relevant_cold=None):
    """Queries built by hand, for metric tests that need no data."""
    users = len(relevant_warm)
    relevant_cold = relevant_cold or [[] for _ in range(users)]
    arrays = lambda lists: [np.asarray(x, np.int64) for x in lists]  # noqa: E731
    rows = [u for u, items in enumerate(exclude) for _ in items]
    cols = [i for items in exclude for i in items]
    return Queries(split="test", users=np.arange(users), fields={}, time=np.zeros(users, np.int64),
                   relevant_warm=arrays(relevant_warm), relevant_cold=arrays(relevant_cold),
                   exclude=arrays(exclude),
                   profile=sp.csr_matrix((np.ones(len(rows)), (rows, cols)),
                                         shape=(users, num_items)),
                   num_items=num_items, repeats_dropped=0)


def test_an_empty_group_has_no_users_and_no_metrics():
    out = evaluate_scores(np.zeros((2, 5)), queries([[1], [2]], [[], []], 5), ks=(2,))
    assert out["cold"] == {"recall@2": None, "ndcg@2": None, "hr@2": None, "mrr": None,
                           "users": 0}
    assert out["warm"]["users"] == 2


def test_users_without_relevant_items_do_not_count():
    q = queries([[0], []], [[], []], 4)
    scores = np.array([[9, 1, 1, 1], [0, 9, 9, 9]], float)
    out = evaluate_scores(scores, q, ks=(1,))["warm"]
    assert out["users"] == 1 and out["recall@1"] == 1.0 and out["mrr"] == 1.0


def test_ties_are_broken_by_a_seeded_permutation_not_by_item_id():
    n = 50
    q = queries([[0]] * 1, [[]], n)
    ranks = []
    for seed in range(20):
        out = evaluate_scores(np.zeros((1, n)), q, ks=(1,), seed=seed)["warm"]
        position = tie_break_order(n, seed)
        assert out["mrr"] == pytest.approx(1.0 / (position[0] + 1))
        assert out["hr@1"] == float(position[0] == 0)
        ranks.append(position[0] + 1)
    assert np.mean(ranks) > 5  # by item id, item 0 would always be first
    assert evaluate_scores(np.zeros((1, n)), q, ks=(1,), seed=3) == \
        evaluate_scores(np.zeros((1, n)), q, ks=(1,), seed=3)


def test_excluded_items_never_count_even_against_a_minus_inf_item():
    q = queries([[3]], [[0, 1]], 5)
    scores = np.array([[7.0, 7.0, 1.0, 2.0, 0.0]])
    out = evaluate_scores(scores, q, ks=(1, 5))["warm"]
    assert out["mrr"] == pytest.approx(1 / 1) and out["recall@1"] == 1.0
    scores = np.array([[7.0, 7.0, 1.0, -np.inf, 0.0]])
    out = evaluate_scores(scores, q, ks=(1, 5))["warm"]
    assert out["mrr"] == pytest.approx(1 / 3)  # after 2 and 4, not after 0 and 1
    assert out["recall@5"] == 1.0


def test_top_k_and_full_rank_agree_with_a_brute_force_sort(monkeypatch):
    rng = np.random.default_rng(0)
    users, n, seed = 40, 30, 7
    scores = rng.integers(0, 4, size=(users, n)).astype(np.float32)  # many ties
    exclude = [rng.choice(n, size=rng.integers(0, 10), replace=False) for _ in range(users)]
    relevant = [rng.choice(np.setdiff1d(np.arange(n), e), size=rng.integers(1, 4), replace=False)
                for e in exclude]
    q = queries(relevant, exclude, n)
    ks = (1, 5, 10, 25)
    position = tie_break_order(n, seed)
    expected = {f"{m}@{k}": [] for m in ("recall", "hr") for k in ks}
    expected["mrr"] = []
    for u in range(users):
        order = np.lexsort((position, -scores[u]))
        order = order[~np.isin(order, exclude[u])]
        hit = np.isin(order, relevant[u])
        for k in ks:
            expected[f"recall@{k}"].append(hit[:k].sum() / len(relevant[u]))
            expected[f"hr@{k}"].append(float(hit[:k].any()))
        expected["mrr"].append(1.0 / (np.argmax(hit) + 1))
    monkeypatch.setattr(catalogue, "CHUNK_ELEMENTS", 7 * n)  # several chunks
    out = evaluate_scores(scores, q, ks=ks, seed=seed)["warm"]
    for key, values in expected.items():
        assert out[key] == pytest.approx(np.mean(values)), key


def test_k_beyond_the_available_items_finds_everything():
    q = queries([[2, 3]], [[0, 1]], 4)
    out = evaluate_scores(np.array([[9.0, 9.0, 0.0, 1.0]]), q, ks=(3, 100))["warm"]
    assert out["recall@3"] == 1.0 and out["recall@100"] == 1.0 and out["ndcg@3"] == 1.0


def test_bad_scores_are_refused():
    q = queries([[0]], [[]], 3)
    with pytest.raises(ValueError,
                       match=r"scores must have shape \(users, items\) = \(1, 3\), got \(1, 4\)"):
        evaluate_scores(np.zeros((1, 4)), q)
    with pytest.raises(ValueError, match="scores of user 0 .* hold NaN"):
        evaluate_scores(np.array([[0.0, np.nan, 1.0]]), q)


def test_reserve_new_items_interleaves_by_share_and_keeps_each_list_order():
    from mmf_rec.evaluation.catalogue import reserve_new_items

    n = 10
    is_new = np.zeros(n, bool)
    is_new[[7, 8, 9]] = True
    scores = np.array([[9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0]])  # new items score lowest
    queries_ = queries([[1]], [[0]], n)
    np.testing.assert_array_equal(reserve_new_items(scores, queries_, is_new, 0.0), scores)
    out = reserve_new_items(scores, queries_, is_new, 0.25)
    order = [int(i) for i in np.argsort(-out[0], kind="stable")]
    order = [i for i in order if i != 0]  # the excluded item comes last, whatever it scored
    assert [i for i in order if is_new[i]] == [7, 8, 9]  # each list keeps its order
    assert [i for i in order if not is_new[i]] == [1, 2, 3, 4, 5, 6]
    assert sum(is_new[order[:4]]) == 1 and sum(is_new[order[:8]]) == 2
    with pytest.raises(ValueError, match="share"):
        reserve_new_items(scores, queries_, is_new, 1.0)
