"""The token sides: UserTokens and ItemTokens, built from their sizes alone."""

import pytest
import torch

from mmf_rec.interaction import masked_mean
from mmf_rec.models.tokens import ItemTokens, Side, UserTokens


def test_user_tokens_layout_masks_and_pooled_vectors():
    torch.manual_seed(0)
    arch = UserTokens(num_features=3, history_len=4, history_modalities=2)
    dense, categorical = torch.randn(2, 5), torch.randn(2, 3, 5)
    valid = torch.tensor([[True, True, False, False], [False, False, False, False]])
    text, image = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    side = arch(dense, categorical, [(text, valid), (image, valid)])
    assert side.group_sizes == (4, 4, 4)
    assert side.tokens.shape == (2, arch.num_tokens, 5) and arch.num_tokens == 12
    assert side.pooled.shape == (2, arch.num_pooled, 5) and arch.num_pooled == 6
    assert torch.equal(side.tokens[:, 0], dense) and torch.equal(side.tokens[:, 1:4], categorical)
    assert side.mask[:, :4].all()  # dense and categorical tokens are always there
    assert torch.equal(side.mask[:, 4:8], valid)
    assert torch.allclose(side.pooled[:, 4], masked_mean(text, valid))
    assert (side.pooled[1, 4:] == 0).all()  # no valid past item: a zero vector
    groups = list(side.groups())
    assert torch.equal(groups[2][0], image) and torch.equal(groups[2][1], valid)


def test_user_tokens_without_history():
    arch = UserTokens(num_features=2)
    side = arch(torch.randn(3, 4), torch.randn(3, 2, 4))
    assert side.group_sizes == (3,) and arch.num_tokens == 3 and arch.num_pooled == 3


def test_item_tokens_mask_a_blanked_id():
    torch.manual_seed(0)
    arch = ItemTokens(num_features=2, modalities=1, id_column=0)
    categorical = torch.randn(3, 2, 4)
    words, mask = torch.randn(3, 6, 4), torch.rand(3, 6) > 0.3
    side = arch(categorical, torch.tensor([True, False, True]), [(words, mask)])
    assert side.group_sizes == (2, 6)
    assert side.mask[:, 0].tolist() == [True, False, True]  # the id column
    assert side.mask[:, 1].all()  # other attributes are always there
    assert torch.equal(side.mask[:, 2:], mask)
    assert arch.num_pooled == 3 and arch.num_token_groups == 2
    assert torch.allclose(side.pooled[:, 2], masked_mean(words, mask))
    assert torch.equal(side.pooled[:, :2], categorical)


def test_sides_refuse_inputs_of_another_layout():
    with pytest.raises(ValueError, match="built for 2 features"):
        UserTokens(num_features=2)(torch.randn(1, 4), torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="1 modalities, got 2 and 0"):
        ItemTokens(num_features=2, modalities=1)(torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match="no id_column"):
        ItemTokens(num_features=2)(torch.randn(1, 2, 4), torch.tensor([True]))


def test_side_expands_one_row_to_n():
    side = Side(torch.randn(1, 3, 2), torch.ones(1, 3, dtype=torch.bool), torch.randn(1, 2, 2),
                (1, 2))
    wide = side.expand(4)
    assert wide.tokens.shape == (4, 3, 2) and wide.group_sizes == (1, 2)
    assert torch.equal(wide.tokens[3], side.tokens[0])
