from pathlib import Path

import pytest
from mmf.common.registry import registry
from omegaconf import OmegaConf

import mmf_rec.encoders  # noqa: F401  (registers them)
import mmf_rec.encoders.image  # noqa: F401
import mmf_rec.encoders.text  # noqa: F401  (registers "transformer")
from mmf_rec.schema import Schema, SparseFeature

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "encoders"


@pytest.mark.parametrize(
    "name", ["sparse", "dense", "transformer", "torchvision_resnet", "efficientnet_lite0"]
)
def test_default_yaml_states_the_config_defaults(name):
    config = OmegaConf.load(CONFIGS / f"{name}.yaml")
    assert config.type == name
    cls = registry.get_encoder_class(name)
    defaults = OmegaConf.to_container(OmegaConf.structured(cls.Config))
    params = OmegaConf.to_container(config.params)
    # name is stated only where it is a real parameter (torchvision_resnet's architecture)
    assert set(params) - {"name"} == set(defaults) - {"name"}
    for key, value in params.items():
        if defaults[key] != "???":
            assert value == defaults[key], key


def test_default_yamls_build_encoders():
    schema = Schema(sparse=(SparseFeature("a", 5), SparseFeature("b", 7)))
    sparse = OmegaConf.load(CONFIGS / "sparse.yaml")
    assert registry.get_encoder_class("sparse")(sparse.params, schema).feature_names == ["a", "b"]
    dense = OmegaConf.load(CONFIGS / "dense.yaml")
    dense.params.in_dim = 13
    assert registry.get_encoder_class("dense")(dense.params).out_dim == 16
