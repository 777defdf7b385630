"""The over arch: the MLP on top of the interaction, ending in a click logit."""

from typing import Sequence

from torch import nn

from mmf_rec.encoders.dense import mlp


class OverArch(nn.Sequential):
    """Linear, ReLU, ..., Linear: ``in_dim`` (the interaction's width) through
    ``hidden`` to ``out_dim`` (one logit), with no activation after the last
    layer.

    It is the Sequential of those layers and nothing else: its state-dict
    keys are the layers' indices (``0.weight``, ...), and the serving path
    reads its Linear layers in order (``mmf_rec.serving.fused``).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (), out_dim: int = 1):
        super().__init__(*mlp([in_dim, *hidden, out_dim], final_activation=False))
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
