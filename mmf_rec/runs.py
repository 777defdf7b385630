"""Trained models back from an ``mmf_run`` save dir or checkpoint, outside MMF's trainer.

An MMF run leaves in ``env.save_dir``: ``config.yaml`` (the resolved run
config), ``best.ckpt`` / ``current.ckpt`` (the model state, optimizer and
that config) and, after the final evaluation, ``<model>_final.pth`` (the
state of the evaluated, best checkpoint). mmf_rec models build themselves
from their dataset (schema and item table come through MMF's registry), so
loading one means: read the config, let the dataset's builder publish the
data to the registry, build the model, load the weights.

:func:`load_run` rebuilds the model alone (explanations, retrieval, scoring);
:func:`load_trainer` builds MMF's whole trainer in test mode around it, for
what needs MMF's own loaders and evaluation loop (``tools/quantize.py``).
"""

import argparse
import functools
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

    @functools.cached_property
    def data(self):
        """The prepared data the model was built from (``PreparedData``),
        opened on first use."""
        from mmf_rec.data.prepared import load_prepared

        return load_prepared(self.data_root, verify_checksums=False, check_id_ranges=False)


def _setup_mmf() -> None:
    import mmf_rec
    import mmf_rec.plugin

    mmf_rec.plugin.apply()
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


def load_trainer(run_dir: PathLike, checkpoint: PathLike, out_dir: PathLike,
                 allow_pickle: bool = False, opt_in: str = "allow_pickle=True"):
    """MMF's trainer for the config of ``run_dir`` in test mode, logging under
    ``out_dir``, with ``checkpoint`` loaded strictly and the model in eval
    mode. ``opt_in`` is how the caller's user sets ``allow_pickle``."""
    import mmf_rec.plugin

    mmf_rec.plugin.apply()
    from mmf.common.registry import registry
    from mmf.utils.build import build_config, build_trainer
    from mmf.utils.configuration import Configuration
    from mmf.utils.env import set_seed, setup_imports
    from mmf.utils.logger import Logger

    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: --run takes an mmf_run env.save_dir")
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found")
    setup_imports()
    args = argparse.Namespace(config_override=None)
    args.opts = [
        f"config={config_file}",
        "run_type=test",
        f"env.save_dir={out_dir}",
        "checkpoint.resume=False",
        "training.tensorboard=False",
    ]
    configuration = Configuration(args)
    configuration.args = args
    config = configuration.get_config()
    config.start_rank, config.device_id = 0, 0
    config.training.seed = set_seed(config.training.seed)
    registry.register("seed", config.training.seed)
    config = build_config(configuration)
    registry.register("writer", Logger(config, name=__name__))
    trainer = build_trainer(config)
    trainer.load()
    state = safe_load.load_checkpoint(checkpoint, allow_pickle, opt_in=opt_in)
    # MMF loads checkpoints non-strictly; a mismatch must not pass silently here.
    trainer.model.load_state_dict(state.get("model", state))
    trainer.model.eval()
    return trainer
