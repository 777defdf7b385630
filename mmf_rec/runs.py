"""Trained models back from an ``mmf_run`` save dir or checkpoint, outside MMF's trainer.

An MMF run leaves in ``env.save_dir``: ``config.yaml`` (the resolved run
config), ``best.ckpt`` / ``current.ckpt`` (the model state, optimizer and
that config) and, after the final evaluation, ``<model>_final.pth`` (the
state of the evaluated, best checkpoint). mmf_rec models build themselves
from their dataset (schema and item table come through MMF's registry), so
loading one means: read the config, let the dataset's builder publish the
data to the registry, build the model, load the weights.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from omegaconf import OmegaConf

from mmf_rec import safe_load
from mmf_rec.errors import UserError
from mmf_rec.log import log

PathLike = Union[str, os.PathLike]


class RunLoadError(UserError, ValueError):
    """A run dir or checkpoint cannot be turned back into a model."""


@dataclass
class LoadedRun:
    model: torch.nn.Module
    config: object  # the run's DictConfig
    model_name: str
    dataset_name: str
    data_root: Path
    weights: Path


def _setup_mmf() -> None:
    import mmf_rec
    import mmf_rec.compat

    mmf_rec.compat.apply()
    mmf_rec.setup_imports()


def _weights_and_config(path: Path, allow_pickle: bool = False):
    """(state dict, config, the file the weights came from)."""
    if path.is_dir():
        config_file = path / "config.yaml"
        if not config_file.is_file():
            raise RunLoadError(f"{path}: no config.yaml; is this an mmf_run env.save_dir?")
        config = OmegaConf.load(str(config_file))
        candidates = [path / f"{config.model}_final.pth", path / "best.ckpt", path / "current.ckpt"]
        weights = next((c for c in candidates if c.is_file()), None)
        if weights is None:
            raise RunLoadError(f"{path}: none of {[c.name for c in candidates]} exists; the run "
                               "saved no checkpoint yet")
    elif path.is_file():
        weights, config = path, None
        sibling = path.parent / "config.yaml"
        if not sibling.is_file() and path.parent.name == "models":
            sibling = path.parent.parent / "config.yaml"
        if sibling.is_file():
            config = OmegaConf.load(str(sibling))
    else:
        raise RunLoadError(f"{path}: no such run dir or checkpoint file")
    try:
        state = safe_load.load_checkpoint(str(weights), allow_pickle)
    except safe_load.CheckpointError as error:
        raise RunLoadError(str(error)) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        if config is None and state.get("config") is not None:
            config = OmegaConf.create(state["config"])
        state = state["model"]
    if config is None:
        raise RunLoadError(f"{weights}: holds no config and no config.yaml is next to it")
    state = {key[len("module."):] if key.startswith("module.") else key: value
             for key, value in state.items()}
    return state, config, weights


def load_run(path: PathLike, expect_model: Optional[str] = None,
             data_dir: Optional[PathLike] = None, allow_pickle: bool = False) -> LoadedRun:
    """Rebuild the model of a run dir (or checkpoint file) in eval mode.

    ``data_dir`` replaces the run's ``env.data_dir`` (data moved since the
    run); the prepared data must be the one the model was trained on.
    ``allow_pickle`` lets a checkpoint that needs a full unpickle load (it
    runs code stored in the file: only for files you trust).
    """
    _setup_mmf()
    from mmf.common.registry import registry

    path = Path(path)
    state, config, weights = _weights_and_config(path, allow_pickle)
    model_name = str(config.model)
    if expect_model is not None and model_name != expect_model:
        raise RunLoadError(f"{path}: holds a '{model_name}' model, expected '{expect_model}'")
    dataset_name = str(config.datasets).split(",")[0]
    attributes = config.model_config[model_name]
    for modality in ("text", "image"):
        settings = attributes.get(f"{modality}_encoder")
        if settings is not None and (settings.get("params") or {}).get("random_init"):
            log(f"{path}: the {modality} backbone was randomly initialised and is not saved "
                "with the run; it is rebuilt from the run's seed, as mmf_run built it",
                level="warning")
    from mmf_rec.zoo import ZooError, build_model

    try:
        model = build_model(model_name, config, data_dir)
    except ZooError as error:
        raise RunLoadError(f"{path}: {error}") from None
    # the model's data stays published (schema, root) for what reads it next
    registry.register("config", config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RunLoadError(
            f"{weights}: does not fit a '{model_name}' model built from its config "
            f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})")
    model.eval()
    return LoadedRun(model=model, config=config, model_name=model_name,
                     dataset_name=dataset_name,
                     data_root=Path(registry.get(f"{dataset_name}_root")), weights=weights)
