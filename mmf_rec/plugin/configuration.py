"""MMF's command line and config loading, as mmf_rec's configs need them.

rc10 reads ``model`` and ``dataset`` only from the command line, decodes
command-line values with Python's literal_eval, and cannot set a mapping
from the command line; it finds plugins only through ``env.user_dir``, and
its sdist ships without ``configs/defaults.yaml``. Each function below
changes one of these, once MMF is imported.
"""

import functools
import os

from mmf_rec.compat.shims import once


def install():
    supply_default_config()
    read_model_and_dataset_from_user_config()
    set_mapping_values_from_the_command_line()
    decode_yaml_booleans_on_the_command_line()
    register_plugins_with_mmf_imports()
    resolve_the_available_device()


@once
def supply_default_config():
    """The MMF sdist ships without configs/defaults.yaml; use mmf_rec's."""
    import mmf.utils.configuration as configuration

    if os.path.isfile(configuration.get_default_config_path()):
        return
    from mmf_rec.paths import config_path

    path = config_path("mmf_defaults.yaml")
    configuration.get_default_config_path = lambda: path


@once
def read_model_and_dataset_from_user_config():
    """Let ``mmf_run config=X.yaml`` name model and dataset inside X.yaml.

    rc10 reads ``model`` and ``dataset`` only from the command line, so a
    project config alone could not be run.
    """
    from mmf.utils.configuration import Configuration

    original = Configuration._build_user_config

    @functools.wraps(original)
    def _build_user_config(self, opts):
        user_config = original(self, opts)
        if opts.get("model") is None and user_config.get("model"):
            opts.model = user_config.get("model")
        has_dataset = opts.get("dataset") is not None or opts.get("datasets") is not None
        if not has_dataset:
            named = user_config.get("datasets") or user_config.get("dataset")
            if named:
                opts.datasets = named
        return user_config

    Configuration._build_user_config = _build_user_config


@once
def decode_yaml_booleans_on_the_command_line():
    """``key=false`` on the command line: rc10 decodes values with Python's
    literal_eval, so yaml's ``false`` / ``true`` / ``null`` stay strings, and
    the string ``'false'`` is truthy. Decode them as the yaml files would."""
    from mmf.utils.configuration import Configuration

    original = Configuration._decode_value
    words = {"true": True, "false": False, "null": None, "~": None}

    @functools.wraps(original)
    def _decode_value(self, value):
        if isinstance(value, str) and value.strip().lower() in words:
            return words[value.strip().lower()]
        return original(self, value)

    Configuration._decode_value = _decode_value


@once
def set_mapping_values_from_the_command_line():
    """``key={'a': 1}`` on the command line: rc10 walks into the existing
    mapping at ``key`` and sets nothing, silently. Set the value instead."""
    from mmf.utils.configuration import Configuration
    from omegaconf import OmegaConf

    original = Configuration._merge_with_dotlist

    @functools.wraps(original)
    def _merge_with_dotlist(self, config, opts):
        config = original(self, config, opts)
        if not opts:
            return config
        if opts[0].find("=") != -1:
            pairs = [opt.split("=", 1) for opt in opts]
        else:
            pairs = list(zip(opts[0::2], opts[1::2]))
        for key, value in pairs:
            decoded = self._decode_value(value)
            if isinstance(decoded, dict) and OmegaConf.select(config, key) is not None:
                OmegaConf.update(config, key, decoded, merge=False)
        return config

    Configuration._merge_with_dotlist = _merge_with_dotlist


@once
def register_plugins_with_mmf_imports():
    """Find mmf_rec's registrations because it is installed, not because of
    ``env.user_dir``: hook MMF's two import points."""
    import mmf.utils.env as env
    from mmf.utils.configuration import Configuration

    import mmf_rec

    original_setup_imports = env.setup_imports

    @functools.wraps(original_setup_imports)
    def setup_imports():
        original_setup_imports()
        mmf_rec.setup_imports()

    env.setup_imports = setup_imports

    original_import_user_dir = Configuration.import_user_dir

    @functools.wraps(original_import_user_dir)
    def import_user_dir(self):
        mmf_rec.setup_imports()
        original_import_user_dir(self)

    Configuration.import_user_dir = import_user_dir


@once
def resolve_the_available_device():
    """``${available_device:}``: cuda where torch sees a GPU, else cpu.

    mmf_rec's defaults ask for it, so a run that names no device gets the one
    that exists; rc10's "cuda is not present" warning then only meets a run
    that asked for CUDA itself. (rc10's Configuration clears omegaconf's
    resolvers and registers its own: this one joins them there.)"""
    from mmf.utils.configuration import Configuration
    from omegaconf import OmegaConf

    def available_device(*_):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    original = Configuration._register_resolvers

    @functools.wraps(original)
    def _register_resolvers(self):
        original(self)
        if OmegaConf.get_resolver("available_device") is None:
            OmegaConf.register_resolver("available_device", available_device)

    Configuration._register_resolvers = _register_resolvers
