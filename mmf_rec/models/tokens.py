"""Each side of a (user, item) pair as a set of d-vectors ("tokens").

A ``Side`` holds one side's tokens in groups (attributes, text, image, ...)
and one pooled vector per group. ``UserTokens`` and ``ItemTokens`` are
``dlrm_mm``'s user-side and item-side arches: they assemble a Side from
what the encoders gave, and hold no parameters, so the encoders stay where
the model's checkpoints name them.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from mmf_rec.interaction import masked_mean


@dataclass
class Side:
    """One side's tokens (N, T, d) with mask (N, T), made of groups of
    ``group_sizes`` tokens (attributes, text, image, ...), and one pooled
    vector per group (N, G, d) for the dot interaction."""

    tokens: Tensor
    mask: Tensor
    pooled: Tensor
    group_sizes: Tuple[int, ...]

    def expand(self, n: int) -> "Side":
        return Side(
            self.tokens.expand(n, -1, -1), self.mask.expand(n, -1),
            self.pooled.expand(n, -1, -1), self.group_sizes,
        )

    @classmethod
    def from_groups(cls, groups: List[Tuple[Tensor, Tensor]], pooled: List[Tensor]) -> "Side":
        """Side from (tokens, mask) groups and the pooled vectors of each."""
        tokens, masks = zip(*groups)
        sizes = tuple(t.shape[1] for t in tokens)
        return cls(torch.cat(tokens, 1), torch.cat(masks, 1), torch.cat(pooled, 1), sizes)

    def groups(self):
        """(tokens, mask) of each group."""
        return zip(self.tokens.split(self.group_sizes, 1), self.mask.split(self.group_sizes, 1))


class UserTokens(nn.Module):
    """The user side: the dense vector and the ``num_features`` categorical
    vectors (the pooled history bag among them) as one group, then, for each
    of ``history_modalities`` (text, image), one vector per past item of the
    ``history_len`` long history.

    Every token of the first group is valid; a past item's token is masked
    where the history is padding or the item lacks that modality. Pooled:
    the dense vector, each categorical vector, and the masked mean of each
    history group.
    """

    def __init__(self, num_features: int, history_len: int = 0, history_modalities: int = 0):
        super().__init__()
        self.num_features = int(num_features)
        self.history_len = int(history_len)
        self.history_modalities = int(history_modalities)

    @property
    def num_tokens(self) -> int:
        return 1 + self.num_features + self.history_len * self.history_modalities

    @property
    def num_pooled(self) -> int:
        return 1 + self.num_features + self.history_modalities

    def forward(self, dense: Tensor, categorical: Tensor,
                history: Sequence[Tuple[Tensor, Tensor]] = ()) -> Side:
        """``dense`` (B, d), ``categorical`` (B, F, d), and per history
        modality (vectors (B, L, d), valid (B, L))."""
        if categorical.shape[1] != self.num_features or len(history) != self.history_modalities:
            raise ValueError(
                f"UserTokens: built for {self.num_features} features and "
                f"{self.history_modalities} history modalities, got "
                f"{categorical.shape[1]} and {len(history)}")
        dense = dense.unsqueeze(1)
        known = torch.ones(dense.shape[0], 1 + categorical.shape[1], dtype=torch.bool,
                           device=dense.device)
        groups = [(torch.cat([dense, categorical], 1), known)]
        pooled = [dense, categorical]
        for vectors, valid in history:
            groups.append((vectors, valid))
            pooled.append(masked_mean(vectors, valid).unsqueeze(1))
        return Side.from_groups(groups, pooled)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, history_len={self.history_len}, " \
               f"history_modalities={self.history_modalities}"


class ItemTokens(nn.Module):
    """The item side: the ``num_features`` attribute vectors as one group,
    then the token vectors of each of ``modalities`` knowledge groups
    (description words, image regions).

    A blanked item id (column ``id_column``) is masked out, so no user token
    can match it. Pooled: each attribute vector and the masked mean of each
    knowledge group.
    """

    def __init__(self, num_features: int, modalities: int = 0, id_column: Optional[int] = None):
        super().__init__()
        self.num_features = int(num_features)
        self.modalities = int(modalities)
        self.id_column = id_column

    @property
    def num_pooled(self) -> int:
        return self.num_features + self.modalities

    @property
    def num_token_groups(self) -> int:
        return 1 + self.modalities

    def forward(self, categorical: Tensor, id_kept: Optional[Tensor] = None,
                knowledge: Sequence[Tuple[Tensor, Tensor]] = ()) -> Side:
        """``categorical`` (N, F, d); ``id_kept`` (N,) whether each item's id
        was kept; per modality (tokens (N, T, d), mask (N, T))."""
        if categorical.shape[1] != self.num_features or len(knowledge) != self.modalities:
            raise ValueError(
                f"ItemTokens: built for {self.num_features} features and {self.modalities} "
                f"modalities, got {categorical.shape[1]} and {len(knowledge)}")
        known = torch.ones(categorical.shape[:2], dtype=torch.bool, device=categorical.device)
        if id_kept is not None:
            if self.id_column is None:
                raise ValueError("ItemTokens: id_kept given, but no id_column to mask")
            known[:, self.id_column] = id_kept
        groups, pooled = [(categorical, known)], [categorical]
        for tokens, mask in knowledge:
            groups.append((tokens, mask))
            pooled.append(masked_mean(tokens, mask).unsqueeze(1))
        return Side.from_groups(groups, pooled)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, modalities={self.modalities}, " \
               f"id_column={self.id_column}"
