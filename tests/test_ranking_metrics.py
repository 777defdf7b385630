"""Recall@K, NDCG@K, HR@K and MRR against hand-computed cases and a naive loop."""

import math

import numpy as np
import pytest
import torch

import mmf_rec.plugin

mmf_rec.plugin.apply()

from mmf.common.registry import registry  # noqa: E402

from mmf_rec import ranking_metrics as rm  # noqa: E402

L2 = 1 / math.log2(3)  # discount at rank 2
L4 = 1 / math.log2(5)  # discount at rank 4


def test_two_relevant_items_by_hand():
    ranked = [[1, 2, 3, 4]]
    relevant = [{2, 4}]
    assert rm.recall_at_k(ranked, relevant, 1) == 0.0
    assert rm.recall_at_k(ranked, relevant, 2) == 0.5
    assert rm.recall_at_k(ranked, relevant, 4) == 1.0
    # DCG@2 = 1/log2(3); the ideal list holds both relevant items on top
    assert rm.ndcg_at_k(ranked, relevant, 2) == pytest.approx(L2 / (1 + L2))
    assert rm.ndcg_at_k(ranked, relevant, 4) == pytest.approx((L2 + L4) / (1 + L2))
    assert rm.hit_rate_at_k(ranked, relevant, 1) == 0.0
    assert rm.hit_rate_at_k(ranked, relevant, 2) == 1.0
    assert rm.mrr(ranked, relevant) == 0.5


def test_one_relevant_item_per_query_by_hand():
    ranked = np.array([[5, 6, 7], [7, 5, 6], [1, 2, 3]])
    target = np.array([7, 7, 9])
    assert rm.recall_at_k(ranked, target, 1) == pytest.approx(1 / 3)
    assert rm.recall_at_k(ranked, target, 3) == pytest.approx(2 / 3)
    # ranks 3, 1, none: NDCG 1/log2(4) = 0.5, 1, 0
    assert rm.ndcg_at_k(ranked, target, 3) == pytest.approx(0.5)
    assert rm.mrr(ranked, target) == pytest.approx((1 / 3 + 1 + 0) / 3)
    # plain lists and tensors are read the same way
    assert rm.mrr(ranked.tolist(), [7, 7, 9]) == rm.mrr(torch.tensor(ranked), torch.tensor(target))


def test_hit_rate_pools_queries_by_group():
    ranked = [[5, 6], [7, 5], [1, 2]]
    target = [7, 7, 9]
    assert rm.hit_rate_at_k(ranked, target, 1) == pytest.approx(1 / 3)
    # user "a" has one hit in two queries, user "b" none
    assert rm.hit_rate_at_k(ranked, target, 1, groups=["a", "a", "b"]) == 0.5


def test_padding_and_short_lists_count_as_not_retrieved():
    ranked = [[3, -1, -1]]
    assert rm.recall_at_k(ranked, [{3, 4}], 3) == 0.5
    assert rm.ndcg_at_k(ranked, [{3, 4}], 3) == pytest.approx(1 / (1 + L2))
    # k beyond the list length: the missing positions are not hits
    assert rm.recall_at_k([[1, 2]], [{2}], 50) == 1.0
    assert rm.mrr([[1, 2]], [{9}]) == 0.0


def test_ranking_report_has_every_metric():
    report = rm.ranking_report([[1, 2], [2, 1]], [2, 2], ks=(1, 2), groups=[0, 1])
    assert report["recall@1"] == 0.5 and report["recall@2"] == 1.0
    assert report["hr@1"] == 0.5 and report["mrr"] == 0.75 and report["queries"] == 2
    assert report["ndcg@2"] == pytest.approx((L2 + 1) / 2)


def _naive(ranked, relevant, k):
    recalls, ndcgs, hits, rrs = [], [], [], []
    for row, rel in zip(ranked, relevant):
        top = list(row[:k])
        found = [i for i in top if i in rel]
        recalls.append(len(found) / len(rel))
        hits.append(float(bool(found)))
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(top) if i in rel)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
        ndcgs.append(dcg / idcg)
        first = next((r for r, i in enumerate(row) if i in rel), None)
        rrs.append(0.0 if first is None else 1 / (first + 1))
    return np.mean(recalls), np.mean(ndcgs), np.mean(hits), np.mean(rrs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_metrics_match_a_naive_loop(seed):
    rng = np.random.default_rng(seed)
    ranked = np.stack([rng.permutation(30)[:12] for _ in range(40)])
    relevant = [set(rng.choice(30, rng.integers(1, 6), replace=False).tolist()) for _ in range(40)]
    for k in (1, 5, 12):
        recall, ndcg, hit, rr = _naive(ranked, relevant, k)
        assert rm.recall_at_k(ranked, relevant, k) == pytest.approx(recall)
        assert rm.ndcg_at_k(ranked, relevant, k) == pytest.approx(ndcg)
        assert rm.hit_rate_at_k(ranked, relevant, k) == pytest.approx(hit)
        assert rm.mrr(ranked, relevant) == pytest.approx(rr)


@pytest.mark.parametrize("ranked, relevant, k, message", [
    ([[1, 2, 1]], [1], 2, "more than once"),
    ([[1, 2]], [set()], 2, "no relevant item"),
    ([[1, 2]], [1], 0, "positive integer"),
    ([[1, 2]], [1, 2], 1, "2 relevant"),
    ([1, 2], [1], 1, "2-d"),
    ([[1, 2]], [-1], 1, ">= 0"),
])
def test_bad_input_is_one_clear_error(ranked, relevant, k, message):
    with pytest.raises(ValueError, match=message):
        rm.recall_at_k(ranked, relevant, k)


def test_mmf_wrappers_are_registered_and_read_the_retrieval_output():
    assert {"recall@10", "ndcg@100", "hr@10", "mrr"} <= set(registry.mapping["metric_name_mapping"])
    output = {
        rm.TOPK_KEY: torch.tensor([[5, 6, 7], [7, 5, 6], [1, 2, 3]]),
        rm.TARGET_KEY: torch.tensor([7, 7, 9]),
        rm.USER_KEY: torch.tensor([0, 0, 1]),
    }
    recall = registry.get_metric_class("recall@1")()
    assert recall.calculate(None, output).item() == pytest.approx(1 / 3)
    assert registry.get_metric_class("hr@1")().calculate(None, output).item() == 0.5
    assert registry.get_metric_class("mrr")().calculate(None, output).item() == pytest.approx(4 / 9)
    assert registry.get_metric_class("ndcg@1")().required_params == [
        rm.TOPK_KEY, rm.TARGET_KEY, rm.USER_KEY]


def test_mmf_wrappers_say_what_is_missing():
    with pytest.raises(KeyError, match="retrieval model"):
        registry.get_metric_class("recall@10")().calculate(None, {"scores": torch.zeros(2, 1)})
    short = {rm.TOPK_KEY: torch.zeros(2, 5, dtype=torch.long),
             rm.TARGET_KEY: torch.zeros(2, dtype=torch.long), rm.USER_KEY: torch.zeros(2)}
    with pytest.raises(ValueError, match="eval_top_k"):
        registry.get_metric_class("recall@10")().calculate(None, short)
    empty = {rm.TOPK_KEY: torch.zeros(0, 10, dtype=torch.long),
             rm.TARGET_KEY: torch.zeros(0, dtype=torch.long), rm.USER_KEY: torch.zeros(0)}
    assert math.isnan(registry.get_metric_class("recall@10")().calculate(None, empty).item())
