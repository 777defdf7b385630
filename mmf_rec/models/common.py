"""Glue every mmf_rec model shares: schema lookup, encoder building, inputs."""

from typing import Dict, Sequence

from mmf.common.registry import registry
from omegaconf import OmegaConf
from torch import Tensor, nn

from mmf_rec.schema import Schema, SchemaError


def node_params(node) -> Dict:
    """A config node (e.g. an encoder's ``params``) as a plain dict; None -> {}."""
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def _run_datasets():
    config = registry.get("config")
    return str(config.datasets).split(",") if config is not None else []


def dataset_root() -> str:
    """Prepared-data directory of the run's (first) dataset (``<dataset>_root``)."""
    names = _run_datasets()
    root = registry.get(f"{names[0]}_root", no_warning=True) if names else None
    if root is None:
        raise SchemaError(
            f"no prepared data registered for dataset(s) {names}: this model reads "
            "the item table of an mmf_rec dataset (its builder registers '<dataset>_root')"
        )
    return root


def dataset_schema() -> Schema:
    """The schema registered by the run's dataset(s) (``<dataset>_schema``).

    Several datasets may feed one model only if they declare the same schema.
    """
    names = _run_datasets()
    schemas = {name: registry.get(f"{name}_schema", no_warning=True) for name in names}
    missing = [name for name, schema in schemas.items() if schema is None]
    if not names or missing:
        raise SchemaError(
            f"no feature schema registered for dataset(s) {missing or names}: "
            "mmf_rec models need an mmf_rec dataset (its builder registers "
            "'<dataset>_schema')"
        )
    fingerprints = {name: schema.fingerprint() for name, schema in schemas.items()}
    if len(set(fingerprints.values())) > 1:
        raise SchemaError(f"datasets declare different schemas: {fingerprints}")
    return schemas[names[0]]


def build_encoder(encoder_type: str, params, **kwargs) -> nn.Module:
    """Instantiate a registered encoder from its type and params (each
    encoder checks its params against its own dataclass Config)."""
    encoder_cls = registry.get_encoder_class(encoder_type)
    if encoder_cls is None:
        known = sorted(registry.mapping.get("encoder_name_mapping", {}))
        raise KeyError(f"no encoder registered as '{encoder_type}'; known: {known}")
    return encoder_cls(params, **kwargs)


def build_bottom_mlp(config, dim: int, num_dense: int) -> nn.Module:
    """The dense encoder (bottom MLP) of a model whose dense vector joins the
    interaction with d-dimensional embeddings, so it must end at d."""
    params = OmegaConf.to_container(config.dense_encoder.params, resolve=True)
    hidden = list(params.get("hidden_dims") or [])
    if not hidden or hidden[-1] != dim:
        raise ValueError(
            f"model_config.{config.model}.dense_encoder.params.hidden_dims must end "
            f"with embedding_dim={dim} (the dense vector joins the interaction), "
            f"got {hidden}"
        )
    return build_encoder(config.dense_encoder.type, {**params, "in_dim": num_dense})


def sparse_inputs(sample_list, names: Sequence[str]) -> Dict[str, Tensor]:
    """The batch's id tensors, keyed by feature name (datasets store them as
    ``sparse_<name>``)."""
    return {name: sample_list[f"sparse_{name}"] for name in names}
