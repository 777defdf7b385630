"""The individual compatibility patches, each detecting whether it is needed.

``before_import`` runs before MMF's code executes (module moves and removed
names MMF imports at module level); ``while_mmf_loads`` wraps MMF's import;
``after_import`` adjusts MMF's own objects once they exist. Every patch is a
separate function so that a test can prove each one is still needed.
"""

import collections
import collections.abc
import contextlib
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

# transformers 4 moved the model modules under transformers.models.*; MMF
# 1.0.0rc10 imports them by their 2.x paths.
TRANSFORMERS_MOVES = {
    "transformers.tokenization_auto": "transformers.models.auto.tokenization_auto",
    "transformers.modeling_auto": "transformers.models.auto.modeling_auto",
    "transformers.configuration_auto": "transformers.models.auto.configuration_auto",
    "transformers.modeling_bert": "transformers.models.bert.modeling_bert",
    "transformers.configuration_bert": "transformers.models.bert.configuration_bert",
}

# Aliases removed from ``collections`` in Python 3.10 (MMF's logger uses them).
COLLECTIONS_ABC_NAMES = (
    "Callable",
    "Container",
    "Hashable",
    "Iterable",
    "Iterator",
    "Mapping",
    "MutableMapping",
    "MutableSequence",
    "MutableSet",
    "Sequence",
    "Set",
    "Sized",
)


def _once(fn):
    """Run a patch at most once per process, whatever calls it."""
    done = []

    @functools.wraps(fn)
    def wrapper():
        if not done:
            fn()
            done.append(True)

    return wrapper


# -- before MMF's code runs ----------------------------------------------------
def before_import():
    check_omegaconf()
    alias_collections_abcs()
    alias_demjson()
    alias_moved_transformers_modules()
    provide_transformers_adamw()


@_once
def check_omegaconf():
    """MMF rc10 reads missing config keys as None, as omegaconf 2.0 does."""
    from omegaconf import OmegaConf

    import omegaconf

    try:
        missing = OmegaConf.create({}).surely_missing_key
    except Exception:  # omegaconf >= 2.1 raises ConfigAttributeError
        missing = "raised"
    if missing is not None:
        raise ImportError(
            f"MMF 1.0.0rc10 needs omegaconf 2.0.x (a missing config key reads as "
            f"None); this environment has omegaconf {omegaconf.__version__}. "
            "Install omegaconf==2.0.6 (it needs pip<24.1 to install: "
            "`python -m pip install 'pip<24.1' && pip install omegaconf==2.0.6`), "
            "or run `make install` from the mmf_rec checkout."
        )


@_once
def alias_collections_abcs():
    for name in COLLECTIONS_ABC_NAMES:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


@_once
def alias_demjson():
    """``demjson`` is dead; ``demjson3`` has the same API."""
    if "demjson" in sys.modules or importlib.util.find_spec("demjson") is not None:
        return
    import demjson3

    sys.modules["demjson"] = demjson3


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, new_name):
        self.new_name = new_name

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        real = importlib.import_module(self.new_name)
        public = {k: v for k, v in vars(real).items() if not k.startswith("__")}
        module.__dict__.update(public)
        module.__doc__ = f"{module.__name__}: moved to {self.new_name}"
        if module.__name__ == "transformers.modeling_bert" and not hasattr(
            module, "BertLayerNorm"
        ):
            import torch

            module.BertLayerNorm = torch.nn.LayerNorm


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Serves an old module path only where the installed package lacks it."""

    def find_spec(self, fullname, path=None, target=None):
        new_name = TRANSFORMERS_MOVES.get(fullname)
        if new_name is None:
            return None
        if importlib.machinery.PathFinder.find_spec(fullname, path) is not None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedModuleLoader(new_name))


@_once
def alias_moved_transformers_modules():
    sys.meta_path.append(MovedModuleFinder())


@_once
def provide_transformers_adamw():
    """transformers dropped its AdamW; MMF registers it as optimizer adam_w."""
    import transformers.optimization as optimization

    if hasattr(optimization, "AdamW"):
        return
    from mmf_rec.compat.optim import AdamW

    optimization.AdamW = AdamW


# -- while MMF's modules execute -------------------------------------------------
def _torchtext_stub():
    message = (
        "torchtext is not installed (it no longer exists for this torch); "
        "MMF's pretrained word vectors in mmf.utils.vocab need it. mmf_rec's "
        "models do not use them."
    )

    class _Missing(types.ModuleType):
        def __getattr__(self, name):
            raise ImportError(message)

    stub = types.ModuleType("torchtext")
    stub.vocab = _Missing("torchtext.vocab")
    return stub


@contextlib.contextmanager
def while_mmf_loads():
    """mmf.utils.vocab imports torchtext at module level, for a path we never
    take. Serve a stub only while MMF loads, so that nobody else in the
    process mistakes torchtext for installed."""
    stub = None
    if "torchtext" not in sys.modules and importlib.util.find_spec("torchtext") is None:
        stub = sys.modules["torchtext"] = _torchtext_stub()
    try:
        yield
    finally:
        if stub is not None and sys.modules.get("torchtext") is stub:
            del sys.modules["torchtext"]


# -- after MMF is imported --------------------------------------------------------
def after_import():
    backfill_encoder_registry()
    backfill_encoder_base()
    supply_default_config()
    read_model_and_dataset_from_user_config()
    set_mapping_values_from_the_command_line()
    register_plugins_with_mmf_imports()
    trust_own_checkpoints()


@_once
def backfill_encoder_registry():
    """MMF main's registry.register_encoder / get_encoder_class."""
    from mmf.common.registry import Registry

    if hasattr(Registry, "register_encoder"):
        return
    Registry.mapping.setdefault("encoder_name_mapping", {})

    def register_encoder(cls, name):
        def wrap(encoder_cls):
            from mmf.modules.encoders import Encoder

            if not (isinstance(encoder_cls, type) and issubclass(encoder_cls, Encoder)):
                raise TypeError(
                    f"register_encoder('{name}'): {encoder_cls!r} must subclass "
                    "mmf.modules.encoders.Encoder"
                )
            cls.mapping["encoder_name_mapping"][name] = encoder_cls
            return encoder_cls

        return wrap

    def get_encoder_class(cls, name):
        return cls.mapping["encoder_name_mapping"].get(name, None)

    Registry.register_encoder = classmethod(register_encoder)
    Registry.get_encoder_class = classmethod(get_encoder_class)


@_once
def backfill_encoder_base():
    """MMF main's ``Encoder``: an nn.Module configured by a dataclass."""
    import mmf.modules.encoders as encoders

    if hasattr(encoders, "Encoder"):
        return
    from mmf_rec.compat.encoder import Encoder

    encoders.Encoder = Encoder


@_once
def supply_default_config():
    """The MMF sdist ships without configs/defaults.yaml; use mmf_rec's."""
    import mmf.utils.configuration as configuration

    if os.path.isfile(configuration.get_default_config_path()):
        return
    from mmf_rec.paths import config_path

    path = config_path("mmf_defaults.yaml")
    configuration.get_default_config_path = lambda: path


@_once
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


@_once
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


@_once
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


@_once
def trust_own_checkpoints():
    """torch >= 2.6 loads only tensors by default; MMF checkpoints also hold
    the run's config and counters. They are files this run (or the user)
    wrote, so load them in full."""
    import inspect

    import torch
    from mmf.utils.checkpoint import Checkpoint, _hack_imports

    if "weights_only" not in inspect.signature(torch.load).parameters:
        return

    def _torch_load(self, file):
        _hack_imports()
        device = self.device if "cuda" in str(self.device) else "cpu"
        return torch.load(file, map_location=device, weights_only=False)

    Checkpoint._torch_load = _torch_load
