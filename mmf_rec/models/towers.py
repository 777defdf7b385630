"""A two-tower model's tower head: features to a unit vector."""

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from mmf_rec.encoders.dense import mlp


class Tower(nn.Sequential):
    """An MLP from a tower's concatenated features (``in_dim``) through
    ``hidden`` to ``out_dim``, then L2 normalisation: the dot product of a
    user's and an item's vector is a cosine, which an inner-product index
    searches exactly.

    Like ``OverArch``, only the MLP's layers are children, indexed from 0.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int):
        super().__init__(*mlp([in_dim, *hidden, out_dim], final_activation=False))
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(super().forward(features), dim=-1)
