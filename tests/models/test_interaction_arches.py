"""The interaction arches: DotInteraction and LateInteraction, built from
their constructor arguments alone."""

import pytest
import torch

from mmf_rec.interaction import DotInteraction, LateInteraction, dot_interaction, maxsim


def test_dot_interaction_by_hand_and_its_width():
    arch = DotInteraction(num_sparse=2, dim=2)
    dense = torch.tensor([[1.0, 2.0]])
    sparse = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]])
    # the dense vector, then <s0, d>, <s1, d>, <s1, s0>
    assert arch(dense, sparse).tolist() == [[1.0, 2.0, 3.0, 8.0, 0.0]]
    assert arch.output_size == 5
    with_self = DotInteraction(num_sparse=2, dim=2, self_interaction=True)
    assert with_self.output_size == 2 + 6
    assert torch.equal(with_self(dense, sparse), dot_interaction(dense, sparse, True))


def test_dot_interaction_refuses_another_number_of_vectors():
    arch = DotInteraction(num_sparse=3, dim=4)
    with pytest.raises(ValueError, match="built for 3 sparse vectors, got 2"):
        arch(torch.randn(5, 4), torch.randn(5, 2, 4))


def test_late_interaction_is_group_major_maxsim_by_hand():
    arch = LateInteraction(num_query_tokens=2, num_groups=2)
    query = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    attributes = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])
    words = torch.tensor([[[5.0, 1.0], [-1.0, 7.0], [9.0, 9.0]]])
    words_mask = torch.tensor([[True, True, False]])  # the 9s are padding
    out = arch(query, None, [(attributes, None), (words, words_mask)])
    # group 0: token 0 -> max(2, 0), token 1 -> max(0, 3); group 1 without padding
    assert out.tolist() == [[2.0, 3.0, 5.0, 7.0]]
    assert arch.output_size == 4


def test_late_interaction_masks_query_tokens_and_empty_groups():
    arch = LateInteraction(num_query_tokens=3, num_groups=2)
    torch.manual_seed(0)
    query, docs = torch.randn(4, 3, 8), torch.randn(4, 5, 8)
    query_mask = torch.tensor([[True, False, True]] * 4)
    empty = torch.zeros(4, 5, dtype=torch.bool)
    out = arch(query, query_mask, [(docs, None), (docs, empty)])
    assert out.shape == (4, 6)
    assert (out[:, 1] == 0).all()  # a masked query token scores 0
    assert (out[:, 3:] == 0).all()  # a group with no valid token gives nothing
    assert torch.equal(out[:, :3], maxsim(query, docs, query_mask))


def test_late_interaction_refuses_another_layout():
    arch = LateInteraction(num_query_tokens=3, num_groups=2)
    tokens = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="3 query tokens against 2 groups"):
        arch(tokens, None, [(tokens, None)])
