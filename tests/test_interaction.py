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
