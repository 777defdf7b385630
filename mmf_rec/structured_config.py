"""Turning whatever a caller passes as a component config (encoders,
processors) into one checked against its dataclass."""

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


def structured_config(config_class, config, what: str):
    """``config`` (dict, DictConfig, dataclass or None) over ``config_class``'s defaults.

    Unknown keys and values of the wrong type fail here, naming the encoder,
    instead of deep inside the first forward pass.
    """
    try:
        return OmegaConf.merge(OmegaConf.structured(config_class), config or {})
    except OmegaConfBaseException as e:
        raise ValueError(f"{what} config: {e}") from e
