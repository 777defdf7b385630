"""The individual compatibility shims, each detecting whether it is needed.

``before_import`` runs before MMF's code executes (module moves and removed
names MMF imports at module level); ``while_mmf_loads`` wraps MMF's import;
``after_import`` adjusts MMF's own objects once they exist. Every shim is a
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
    "Callable", "Container", "Hashable", "Iterable", "Iterator", "Mapping", "MutableMapping",
    "MutableSequence", "MutableSet", "Sequence", "Set", "Sized",
)


def once(fn):
    """Run a shim at most once per process, whatever calls it."""
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


@once
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


@once
def alias_collections_abcs():
    for name in COLLECTIONS_ABC_NAMES:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


@once
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


@once
def alias_moved_transformers_modules():
    sys.meta_path.append(MovedModuleFinder())


@once
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


def around_mmf_import(execute):
    """``execute()`` (MMF's import) with every shim around it: before MMF's
    code runs, while it loads, and once it has loaded."""
    before_import()
    with while_mmf_loads():
        execute()
    after_import()


# -- after MMF is imported --------------------------------------------------------
def after_import():
    backfill_encoder_registry()
    backfill_encoder_base()


@once
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


@once
def backfill_encoder_base():
    """MMF main's ``Encoder``: an nn.Module configured by a dataclass."""
    import mmf.modules.encoders as encoders

    if hasattr(encoders, "Encoder"):
        return
    from mmf_rec.compat.encoder import Encoder

    encoders.Encoder = Encoder
