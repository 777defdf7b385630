import pytest
import torch

from mmf_rec.interaction import dot_interaction, dot_interaction_size


def naive_dot_interaction(dense, sparse, self_interaction):
    rows = []
    for b in range(dense.shape[0]):
        vectors = [dense[b]] + [sparse[b, f] for f in range(sparse.shape[1])]
        values = list(dense[b])
        for i in range(len(vectors)):
            for j in range(i + 1 if self_interaction else i):
                values.append(torch.dot(vectors[i], vectors[j]))
        rows.append(torch.stack(values))
    return torch.stack(rows)


@pytest.mark.parametrize("self_interaction", [False, True])
@pytest.mark.parametrize("num_sparse", [1, 3, 8])
def test_matches_naive_double_loop(num_sparse, self_interaction):
    torch.manual_seed(num_sparse)
    dense = torch.randn(5, 4, dtype=torch.float64)
    sparse = torch.randn(5, num_sparse, 4, dtype=torch.float64)
    got = dot_interaction(dense, sparse, self_interaction)
    want = naive_dot_interaction(dense, sparse, self_interaction)
    assert got.shape == (5, dot_interaction_size(num_sparse, 4, self_interaction))
    torch.testing.assert_close(got, want)


def test_pair_count():
    assert dot_interaction_size(26, 16) == 16 + 27 * 26 // 2
    assert dot_interaction_size(26, 16, self_interaction=True) == 16 + 27 * 28 // 2


def test_cached_index_serves_other_sizes_in_turn():
    dense = torch.randn(2, 3, dtype=torch.float64)
    for f in (2, 5, 2):
        sparse = torch.randn(2, f, 3, dtype=torch.float64)
        torch.testing.assert_close(
            dot_interaction(dense, sparse), naive_dot_interaction(dense, sparse, False)
        )


def test_gradients_flow_to_both_inputs():
    dense = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    sparse = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, s: dot_interaction(d, s), (dense, sparse))
    dot_interaction(dense, sparse).sum().backward()
    assert dense.grad.abs().sum() > 0 and sparse.grad.abs().sum() > 0


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="disagree"):
        dot_interaction(torch.randn(2, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="expects"):
        dot_interaction(torch.randn(2, 4), torch.randn(2, 4))


# -- MaxSim -----------------------------------------------------------------------
from mmf_rec.interaction import maxsim  # noqa: E402


def naive_maxsim(query, doc, query_mask, doc_mask):
    batch, q_len, _ = query.shape
    out = torch.zeros(batch, q_len)
    for b in range(batch):
        for q in range(q_len):
            if not query_mask[b, q]:
                continue
            best = None
            for t in range(doc.shape[1]):
                if doc_mask[b, t]:
                    value = float(query[b, q] @ doc[b, t])
                    best = value if best is None else max(best, value)
            out[b, q] = 0.0 if best is None else best
    return out


def test_maxsim_matches_a_naive_loop_with_masks():
    g = torch.Generator().manual_seed(3)
    query, doc = torch.randn(4, 5, 8, generator=g), torch.randn(4, 7, 8, generator=g)
    query_mask = torch.rand(4, 5, generator=g) > 0.3
    doc_mask = torch.rand(4, 7, generator=g) > 0.5
    doc_mask[2] = False  # a doc with no valid token (e.g. a missing image)
    expected = naive_maxsim(query, doc, query_mask, doc_mask)
    got = maxsim(query, doc, query_mask, doc_mask)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.all(got[2] == 0)


def test_maxsim_broadcasts_one_user_against_k_candidates():
    g = torch.Generator().manual_seed(4)
    user, items = torch.randn(1, 3, 8, generator=g), torch.randn(6, 4, 8, generator=g)
    items_mask = torch.ones(6, 4, dtype=torch.bool)
    items_mask[:, -1] = False
    got = maxsim(user, items, doc_mask=items_mask)
    one_by_one = torch.cat([maxsim(user, items[k : k + 1, :3]) for k in range(6)])
    assert got.shape == (6, 3)
    assert torch.allclose(got, one_by_one, atol=1e-6)


def test_maxsim_gradient_reaches_only_the_winning_doc_token():
    query = torch.tensor([[[1.0, 0.0]]], requires_grad=True)
    doc = torch.tensor([[[0.5, 0.0], [2.0, 0.0], [9.0, 0.0]]], requires_grad=True)
    doc_mask = torch.tensor([[True, True, False]])  # the largest is masked out
    maxsim(query, doc, doc_mask=doc_mask).sum().backward()
    assert doc.grad[0, :, 0].tolist() == [0.0, 1.0, 0.0]
    assert query.grad[0, 0].tolist() == [2.0, 0.0]


def test_masked_mean_ignores_padding_and_empty_rows_give_zeros():
    from mmf_rec.interaction import masked_mean

    vectors = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0]] * 3])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_mean(vectors, mask).tolist() == [[2.0, 3.0], [0.0, 0.0]]
