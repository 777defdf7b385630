"""Id blanking and the item table, built from tensors alone."""

import pytest
import torch

from mmf_rec.models.ids import IdBlanking, ItemAttributes

SEEN = torch.tensor([True, False, True, True, False])


def test_unseen_negative_and_unknown_ids_become_padding():
    blanking = IdBlanking(SEEN).eval()
    ids = torch.tensor([[0], [1], [2], [-1], [-3], [5], [99]])
    out, kept = blanking(ids)
    assert out.flatten().tolist() == [0, -1, 2, -1, -1, -1, -1]
    assert kept.flatten().tolist() == [True, False, True, False, False, False, False]


def test_unknown_ids_can_be_left_for_the_encoder_to_refuse():
    blanking = IdBlanking(SEEN, blank_unknown=False).eval()
    out, _ = blanking(torch.tensor([1, 3, -2]))
    assert out.tolist() == [-1, 3, -1]
    # an id past the table is kept when the last seen id is: the encoder refuses it
    assert blanking(torch.tensor([7]))[0].tolist() == [-1]  # the last id is unseen
    last_seen = IdBlanking(torch.tensor([True, True]), blank_unknown=False).eval()
    assert last_seen(torch.tensor([7]))[0].tolist() == [7]


def test_dropout_blanks_at_random_in_training_only():
    seen = torch.ones(1000, dtype=torch.bool)
    blanking = IdBlanking(seen, dropout=0.3)
    ids = torch.arange(1000)
    torch.manual_seed(0)
    _, kept = blanking.train()(ids)
    assert 0.25 < 1 - kept.float().mean() < 0.35
    torch.manual_seed(0)
    assert torch.equal(blanking(ids)[1], kept)  # the draw follows the seed
    assert blanking.eval()(ids)[1].all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="1-d bool"):
        IdBlanking(torch.ones(3))
    with pytest.raises(ValueError, match="dropout"):
        IdBlanking(SEEN, dropout=1.5)
    with pytest.raises(ValueError, match="needs the id_column"):
        ItemAttributes(torch.zeros(5, 2, dtype=torch.long), None, IdBlanking(SEEN))


def test_item_attributes_blank_the_id_column_of_unseen_items():
    table = torch.tensor([[0, 7], [1, 8], [2, 7], [3, 9], [4, 8]])  # item_id, colour
    items = ItemAttributes(table, id_column=0, blanking=IdBlanking(SEEN)).eval()
    assert items.num_items == 5
    attributes, kept = items(torch.tensor([4, 0, 1]))
    assert attributes.tolist() == [[-1, 8], [0, 7], [-1, 8]]  # attributes other than the id stay
    assert kept.tolist() == [False, True, False]
    assert table[1, 0] == 1  # the table itself is untouched
    plain, none = ItemAttributes(table)(torch.tensor([4, 1]))
    assert plain.tolist() == [[4, 8], [1, 8]] and none is None


def test_item_attributes_of_named_features_find_the_id_column():
    table = torch.tensor([[7, 0], [8, 1], [7, 2], [9, 3], [8, 4]])  # colour, item_id
    items = ItemAttributes.of_features(table, ["colour", "item_id"], "item_id", SEEN).eval()
    assert items.id_column == 1
    assert items(torch.tensor([1, 2]))[0].tolist() == [[8, -1], [7, 2]]
    assert ItemAttributes.of_features(table, ["colour", "item_id"]).blanking is None
    with pytest.raises(ValueError, match="'shop' is not among"):
        ItemAttributes.of_features(table, ["colour", "item_id"], "shop", SEEN)
    with pytest.raises(ValueError, match="needs the seen items"):
        ItemAttributes.of_features(table, ["colour", "item_id"], "item_id")
