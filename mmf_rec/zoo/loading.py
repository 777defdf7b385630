"""Loading a zoo model: read and checked against the data and the model it
goes into, for ``checkpoint.resume_zoo``, ``from_pretrained`` and MMF's
``load_pretrained_model``; and building a model for its data outside a run."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from mmf_rec.log import log
from mmf_rec.zoo.archive import CONFIG, FORMAT, META
from mmf_rec.zoo.cache import fetch
from mmf_rec.zoo.entries import parse_key
from mmf_rec.zoo.errors import ZooError, ZooFileError, ZooMismatchError
from mmf_rec.zoo.fingerprints import (config_differences, data_differences,
                                      data_fingerprints, knowledge_differences,
                                      state_differences)


@dataclass
class ZooModel:
    key: str
    directory: Path
    meta: Dict[str, Any]
    config: Any  # the run's full config (DictConfig)
    state_dict: Dict[str, Any]

    @property
    def model(self) -> str:
        return self.meta["model"]

    @property
    def model_config(self):
        return self.config.model_config[self.model]


def load(key: str) -> ZooModel:
    """Fetch, check and read a zoo model (weights as a state dict)."""
    import torch
    from omegaconf import OmegaConf

    model_name, _ = parse_key(key)
    directory = fetch(key)
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError) as e:
        raise ZooFileError(f"zoo model '{key}': {directory / META} is unreadable ({e})") from None
    if meta.get("format") != FORMAT:
        raise ZooError(f"zoo model '{key}': {directory / META} has format "
                       f"{meta.get('format')!r}, this mmf_rec reads {FORMAT!r}")
    if meta.get("model") != model_name:
        raise ZooMismatchError(f"zoo model '{key}' holds a '{meta.get('model')}' model, "
                               f"but its key says '{model_name}'")
    weights = directory / meta["weights"]
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ZooFileError(f"zoo model '{key}': {weights} does not load as a state dict "
                           f"of tensors ({type(e).__name__}: {e})") from None
    config = OmegaConf.load(directory / CONFIG)
    return ZooModel(key, directory, meta, config, state)


def _fail(key: str, what: str, differences: List[str]) -> None:
    if differences:
        raise ZooMismatchError(f"zoo model '{key}' does not fit {what}: "
                               + "; ".join(differences))


def current_data() -> Optional[Tuple[str, Any, Dict[str, Any], str]]:
    """(dataset, schema, manifest, root) of the run's data, if one is registered."""
    from mmf.common.registry import registry

    config = registry.get("config", no_warning=True)
    if config is None or not config.get("datasets"):
        return None
    name = str(config.datasets).split(",")[0]
    schema = registry.get(f"{name}_schema", no_warning=True)
    manifest = registry.get(f"{name}_manifest", no_warning=True)
    if schema is None or manifest is None:
        return None
    return name, schema, manifest, registry.get(f"{name}_root", no_warning=True)


def check_data(zoo_model: ZooModel, data) -> None:
    name, schema, manifest, root = data
    current = data_fingerprints(schema, manifest)
    _fail(zoo_model.key, f"the data of this run ({name} at {root})",
          data_differences(zoo_model.meta["data"], current))


def check_model(zoo_model: ZooModel, model, run_model_config=None) -> None:
    differences = knowledge_differences(zoo_model.meta["data"], model)
    differences += state_differences(model.state_dict(), zoo_model.state_dict)
    if differences and run_model_config is not None:
        from omegaconf import OmegaConf

        config = config_differences(
            OmegaConf.to_container(zoo_model.model_config, resolve=True),
            OmegaConf.to_container(run_model_config, resolve=True))
        config = [c for c in config if not c.startswith("model:")]
        if config:
            differences.append("model_config differs: " + "; ".join(config[:6]))
    _fail(zoo_model.key, f"the '{zoo_model.model}' model built here", differences)


def load_for_trainer(trainer, key: str) -> Dict[str, Any]:
    """``checkpoint.resume_zoo=<key>``: the weights, checked against the run's
    data and the model the trainer built."""
    zoo_model = load(key)
    run_model = str(trainer.config.model)
    if run_model != zoo_model.model:
        raise ZooMismatchError(f"zoo model '{key}' is a '{zoo_model.model}' model; this run "
                               f"builds '{run_model}' (model={zoo_model.model} in the config)")
    data = current_data()
    if data is not None:
        check_data(zoo_model, data)
    model = trainer.model
    model = getattr(model, "module", model)
    run_config = trainer.config.model_config[run_model]
    check_model(zoo_model, model, run_config)
    log(f"zoo model '{key}' fits this run's data and model; loading its weights")
    return zoo_model.state_dict


def build_model(model_name: str, config, data_dir: Optional[str] = None, check=None):
    """Build a registered model for the data its config names, outside a run.

    The model's dataset is built and published as ``mmf_run`` does (the
    synthetic data is generated if missing); ``data_dir`` replaces the
    config's ``dataset_config.<dataset>.data_dir``. ``check(data)`` runs once
    the data is published, before the model is built.
    """
    from mmf.common.registry import registry
    from omegaconf import OmegaConf, open_dict

    import mmf_rec

    mmf_rec.setup_imports()
    config = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    datasets = str(config.datasets).split(",")
    if data_dir is not None:
        for name in datasets:
            config.dataset_config[name].data_dir = str(data_dir)
    previous = registry.get("config", no_warning=True)
    registry.register("config", config)
    from mmf_rec import resume

    outer_rng = resume.rng_state()
    # seeded as mmf_run seeds before it builds: a randomly initialised frozen
    # encoder then gets the same weights, and its knowledge cache the same key
    seed = config.get("training", {}).get("seed", None)
    if seed is not None and seed != -1:
        from mmf.utils.env import set_seed

        set_seed(seed)
    try:
        for name in datasets:
            builder_cls = registry.get_builder_class(name)
            if builder_cls is None:
                raise ZooError(f"no dataset builder registered as '{name}'")
            builder = builder_cls()
            builder.build(config.dataset_config[name])
            builder.update_registry_for_model(config.dataset_config[name])
        if check is not None:
            data = current_data()
            if data is None:
                raise ZooError(f"dataset(s) {datasets} published no schema and manifest: "
                               "not an mmf_rec dataset")
            check(data)
        model_cls = registry.get_model_class(model_name)
        if model_cls is None:
            raise ZooError(f"no model registered as '{model_name}'")
        model_config = config.model_config[model_name]
        with open_dict(model_config):
            model_config.model = model_name
        model = model_cls(model_config)
        model.build()
        model.init_losses()
        return model
    finally:
        resume.set_rng_state(outer_rng)  # the caller's random state is left alone
        if previous is None:
            registry.unregister("config")
        else:
            registry.register("config", previous)


def from_pretrained(cls, key: str, data_dir: Optional[str] = None, **kwargs):
    """``Model.from_pretrained("kbrec.<model>.<name>")``: the model, built for
    the data it was trained on (or the run's, inside a run; or ``data_dir``),
    checked, with the zoo weights, in eval mode."""
    from mmf.common.registry import registry

    zoo_model = load(key)
    expected = registry.get_model_class(zoo_model.model)
    if cls is not expected and expected is not None and not issubclass(expected, cls):
        raise ZooMismatchError(f"zoo model '{key}' is a '{zoo_model.model}' "
                               f"({expected.__name__}); it cannot load as {cls.__name__}")
    data = current_data() if data_dir is None else None
    if data is not None and data[0] in str(zoo_model.config.datasets).split(","):
        check_data(zoo_model, data)
        model_config = zoo_model.model_config
        from omegaconf import open_dict

        with open_dict(model_config):
            model_config.model = zoo_model.model
        model = expected(model_config)
        model.build()
    else:
        model = build_model(zoo_model.model, zoo_model.config, data_dir,
                            check=lambda d: check_data(zoo_model, d))
    check_model(zoo_model, model)
    model.load_state_dict(zoo_model.state_dict)
    model.is_pretrained = True
    model.eval()
    return model


def load_pretrained_model(key: str) -> Dict[str, Any]:
    """MMF's ``load_pretrained_model`` result for a zoo key (config, weights)."""
    zoo_model = load(key)
    return {"config": zoo_model.model_config, "checkpoint": zoo_model.state_dict,
            "full_config": zoo_model.config}
