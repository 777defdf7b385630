"""Ids as the models read them: cold ids blanked, and an item's categorical
ids looked up from its item id.

An id with no observed training row has an untrained vector: noise. Every
model reads the padding id (a zero vector) in its place, and in training
may blank ids at random too, so that the rest of the model learns to carry
an item (or a user) whose id says nothing.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from mmf_rec.schema import PAD_ID


class IdBlanking(nn.Module):
    """Replaces unseen ids by the padding id.

    ``seen`` (n,) bool marks the ids with a trained vector. Negative ids are
    blanked; ids >= n are blanked with ``blank_unknown`` (a new user), else
    left for the sparse encoder to refuse. In training, each id is also
    blanked with probability ``dropout``.
    """

    def __init__(self, seen: Tensor, dropout: float = 0.0, blank_unknown: bool = True):
        super().__init__()
        if seen.dim() != 1 or seen.dtype != torch.bool:
            raise ValueError(f"IdBlanking: seen must be a 1-d bool tensor, got "
                             f"{seen.dtype} {tuple(seen.shape)}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"IdBlanking: dropout must lie in [0, 1], got {dropout}")
        self.register_buffer("seen", seen, persistent=False)
        self.dropout = float(dropout)
        self.blank_unknown = bool(blank_unknown)

    def kept(self, ids: Tensor) -> Tensor:
        """Whether each id keeps its value (same shape as ``ids``)."""
        size = self.seen.shape[0]
        kept = self.seen[ids.clamp(0, size - 1)] & (ids >= 0)
        if self.blank_unknown:
            kept = kept & (ids < size)
        if self.training and self.dropout > 0:
            kept = kept & ~(torch.rand(kept.shape, device=kept.device) < self.dropout)
        return kept

    def forward(self, ids: Tensor) -> Tuple[Tensor, Tensor]:
        """The ids with the blanked ones set to the padding id, and ``kept``."""
        kept = self.kept(ids)
        return torch.where(kept, ids, PAD_ID), kept

    def extra_repr(self) -> str:
        return f"ids={self.seen.shape[0]}, dropout={self.dropout}, " \
               f"blank_unknown={self.blank_unknown}"


class ItemAttributes(nn.Module):
    """An item's categorical ids (its id, category, ...) by item id, from the
    item table ``table`` (num_items, F).

    With ``blanking``, column ``id_column`` (the item-id feature) is blanked
    for the item ids it does not keep. What a model reads of an item then
    depends on the item id alone, so a catalogue is encoded once.
    """

    def __init__(self, table: Tensor, id_column: Optional[int] = None,
                 blanking: Optional[IdBlanking] = None):
        super().__init__()
        if table.dim() != 2:
            raise ValueError(f"ItemAttributes: table must be (items, features), got "
                             f"{tuple(table.shape)}")
        if blanking is not None and id_column is None:
            raise ValueError("ItemAttributes: blanking needs the id_column it blanks")
        if id_column is not None and not 0 <= id_column < table.shape[1]:
            raise ValueError(f"ItemAttributes: id_column {id_column} is not a column of "
                             f"a table with {table.shape[1]}")
        self.register_buffer("table", table, persistent=False)
        self.id_column = id_column
        self.blanking = blanking

    @classmethod
    def of_features(cls, table: Tensor, features: Sequence[str],
                    id_feature: Optional[str] = None, seen: Optional[Tensor] = None,
                    dropout: float = 0.0) -> "ItemAttributes":
        """The item table of ``features`` (its columns, in order), blanking
        ``id_feature`` for items not ``seen`` (num_items,) and, in training,
        with probability ``dropout``."""
        if id_feature is None:
            return cls(table)
        if id_feature not in features:
            raise ValueError(f"ItemAttributes: the id feature '{id_feature}' is not among "
                             f"the item features {list(features)}")
        if seen is None:
            raise ValueError(f"ItemAttributes: blanking '{id_feature}' needs the seen items")
        return cls(table, list(features).index(id_feature), IdBlanking(seen, dropout))

    @property
    def num_items(self) -> int:
        return int(self.table.shape[0])

    def forward(self, item_ids: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """(N, F) ids of items ``item_ids`` (N,), and (N,) whether each item
        id was kept (None without blanking)."""
        attributes = self.table[item_ids]
        if self.blanking is None:
            return attributes, None
        kept = self.blanking.kept(item_ids)
        column = attributes[:, self.id_column]
        attributes = attributes.clone()
        attributes[:, self.id_column] = torch.where(kept, column, PAD_ID)
        return attributes, kept
