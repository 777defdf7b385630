"""MMF glue every registered model shares: a run's config and registry turned
into constructor arguments (schema, prepared data, encoders, tensors).

The models themselves (``DLRMNet``, ``LateInteractionNet``, ``TwoTowerNet``)
and their arches take those arguments and never read the registry; only the
registered models' ``build()`` calls what is here.
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
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


def dataset_data():
    """The run's prepared data (``PreparedData``), opened without the checks
    its builder has already made."""
    from mmf_rec.data.prepared import load_prepared

    return load_prepared(dataset_root(), verify_checksums=False, check_id_ranges=False)


def run_cache_root() -> Optional[str]:
    """The run's ``env.cache_dir`` (where knowledge caches go); None outside a
    run, or when the value does not resolve."""
    config = registry.get("config", no_warning=True)
    try:
        return config.env.cache_dir or None
    except Exception:
        return None


def build_encoder(encoder_type: str, params, **kwargs) -> nn.Module:
    """Instantiate a registered encoder from its type and params (each
    encoder checks its params against its own dataclass Config)."""
    encoder_cls = registry.get_encoder_class(encoder_type)
    if encoder_cls is None:
        known = sorted(registry.mapping.get("encoder_name_mapping", {}))
        raise KeyError(f"no encoder registered as '{encoder_type}'; known: {known}")
    return encoder_cls(params, **kwargs)


def build_bottom_mlp(config, dim: int, num_dense: int) -> nn.Module:
    """The dense arch (the dense encoder, DLRM's bottom MLP) of a model whose
    dense vector joins the interaction with d-dimensional embeddings, so it
    must end at d."""
    params = OmegaConf.to_container(config.dense_encoder.params, resolve=True)
    hidden = list(params.get("hidden_dims") or [])
    if not hidden or hidden[-1] != dim:
        raise ValueError(
            f"model_config.{config.model}.dense_encoder.params.hidden_dims must end "
            f"with embedding_dim={dim} (the dense vector joins the interaction), "
            f"got {hidden}"
        )
    return build_encoder(config.dense_encoder.type, {**params, "in_dim": num_dense})


def build_side_encoders(config, schema: Schema, dim: int, user_features: Sequence[str],
                        item_features: Sequence[str]) -> Tuple[nn.Module, nn.Module]:
    """The user side's and the item side's sparse encoders (in that order),
    from one ``sparse_encoder`` config: per-feature ``tables`` go to the side
    that encodes the feature (each encoder rejects tables for features it
    does not encode)."""
    sparse = node_params(config.sparse_encoder.get("params"))
    sparse["embedding_dim"] = dim
    tables = sparse.pop("tables", None) or {}
    for name in tables:
        schema.sparse_feature(name)  # named in the schema, or a clear error

    def side(features):
        own = {name: table for name, table in tables.items() if name in features}
        return {**sparse, "features": list(features), "tables": own}

    user = build_encoder(config.sparse_encoder.type, side(user_features), schema=schema)
    item = build_encoder(config.sparse_encoder.type, side(item_features), schema=schema)
    return user, item


def item_attributes(data, features: Sequence[str]) -> Tensor:
    """(num_items, F) ids of the item table's columns ``features``."""
    return torch.stack([torch.from_numpy(np.array(data.items[name][:, 0]))
                        for name in features], 1)


def seen_items(data) -> Tensor:
    """(num_items,) bool: items with an observed training row (see
    ``mmf_rec.data.protocol``)."""
    from mmf_rec.data import protocol

    return torch.from_numpy(protocol.seen_in_training(data))


def sparse_inputs(sample_list, names: Sequence[str]) -> Dict[str, Tensor]:
    """The batch's id tensors, keyed by feature name (datasets store them as
    ``sparse_<name>``)."""
    return {name: sample_list[f"sparse_{name}"] for name in names}

