"""MMF main's ``Encoder`` base class, for MMF releases that lack it."""

from dataclasses import dataclass

from omegaconf import MISSING, OmegaConf
from torch import nn


class Encoder(nn.Module):
    """An nn.Module whose constructor takes a structured (dataclass) config."""

    @dataclass
    class Config:
        name: str = MISSING

    @classmethod
    def from_params(cls, **kwargs):
        config = OmegaConf.structured(cls.Config(**kwargs))
        return cls(config)
