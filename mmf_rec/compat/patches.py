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
    decode_yaml_booleans_on_the_command_line()
    register_plugins_with_mmf_imports()
    load_checkpoints_safely()
    unpack_archives_safely()
    # checkpoints: exact resume, and the model zoo (mmf_rec.resume, mmf_rec.zoo)
    resume_training_exactly()
    load_zoo_models_by_key()
    # several processes, on CPU too (mmf_rec.distributed)
    ranks_without_nccl()
    initialise_processes_on_cpu_too()
    shard_data_by_rank()
    # a quiet console: no warnings a user cannot act on
    resolve_the_available_device()
    write_config_with_to_yaml()
    write_config_on_rank_zero_only()
    patch_mmf_cli_run(sys.modules.get("mmf_cli.run"))


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
def load_checkpoints_safely():
    """rc10's loader unpickles checkpoints in full, which runs any code a file
    names, and loads weights non-strictly, so a file that does not fit the
    model leaves it untrained while the log says "Checkpoint loaded". Here a
    checkpoint loads as tensors and plain values (all mmf_rec writes); one
    that needs more loads only with ``checkpoint.allow_pickle=True``, and one
    whose parameter names differ from the model's stops the run unless
    ``checkpoint.strict=False`` (:mod:`mmf_rec.safe_load`)."""
    from mmf.utils.checkpoint import Checkpoint, _hack_imports

    from mmf_rec import safe_load

    def _torch_load(self, file):
        settings = self.config.checkpoint
        device = self.device if "cuda" in str(self.device) else "cpu"
        ckpt = safe_load.load_checkpoint(
            file, allow_pickle=bool(settings.get("allow_pickle", False)),
            opt_in="checkpoint.allow_pickle=True", map_location=device,
            before_unpickle=_hack_imports)
        # checkpoint.pretrained_state_mapping copies some parameters on purpose
        partial = settings.get("resume_pretrained") and settings.get("pretrained_state_mapping")
        if settings.get("strict", True) and not partial:
            state = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
            safe_load.check_keys(self.trainer.model.state_dict().keys(), state, str(file),
                                 "checkpoint.strict=False")
        return ckpt

    Checkpoint._torch_load = _torch_load


@_once
def unpack_archives_safely():
    """rc10's ``decompress`` (zoo and dataset downloads) unpacks with no
    checks: a ``../`` member lands outside the target folder."""
    import mmf.utils.download as download

    from mmf_rec import safe_load

    def decompress(path, fname, delete_original=True):
        archive = os.path.join(path, fname)
        safe_load.extract(archive, path)
        if delete_original:
            os.remove(archive)

    _rebind(download, "decompress", decompress)


# -- several processes (the code is in mmf_rec.distributed) --------------------------
def _rebind(module, name, new):
    """Replace ``module.name`` and every copy that MMF's loaded modules
    imported with ``from module import name``."""
    old = getattr(module, name)
    setattr(module, name, new)
    for loaded in list(sys.modules.values()):
        if getattr(loaded, "__name__", "").startswith(("mmf.", "mmf_cli.")):
            if loaded.__dict__.get(name) is old:
                setattr(loaded, name, new)


@_once
def ranks_without_nccl():
    """rc10 reports rank 0 of 1 whenever torch lacks NCCL (CPU-only builds),
    even inside a gloo process group: every process would think it is the
    master, log and write checkpoints. Ask torch.distributed itself there."""
    import torch.distributed as dist

    import mmf.utils.distributed as mmf_dist

    if not dist.is_available() or dist.is_nccl_available():
        return

    def initialized():
        return dist.is_available() and dist.is_initialized()

    def get_rank():
        return dist.get_rank() if initialized() else 0

    def get_world_size():
        return dist.get_world_size() if initialized() else 1

    def is_master():
        return get_rank() == 0

    def synchronize():
        if initialized() and dist.get_world_size() > 1:
            dist.barrier()

    for name, fn in (("get_rank", get_rank), ("get_world_size", get_world_size),
                     ("is_master", is_master), ("synchronize", synchronize)):
        _rebind(mmf_dist, name, fn)


@_once
def initialise_processes_on_cpu_too():
    """rc10's distributed_init runs a CUDA all-reduce and takes the backend
    as configured (nccl): CPU processes need gloo and a CPU tensor, and
    torchrun's processes their LOCAL_RANK device."""
    import mmf.utils.distributed as mmf_dist

    from mmf_rec import distributed

    _rebind(mmf_dist, "distributed_init", distributed.distributed_init)


@_once
def shard_data_by_rank():
    """Training rows: a seeded shard per rank, reseeded each epoch; evaluation
    rows: in-order shards that the kbrec trainer gathers back (rc10 shuffles
    validation shards, so they cannot be put back in order)."""
    import mmf.utils.build as build

    from mmf_rec import distributed

    original = build._add_extra_args_for_dataloader

    @functools.wraps(original)
    def _add_extra_args_for_dataloader(dataset_instance, other_args=None):
        other_args = original(dataset_instance, other_args)
        return distributed.dataloader_args(dataset_instance, other_args)

    build._add_extra_args_for_dataloader = _add_extra_args_for_dataloader


@_once
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


@_once
def write_config_with_to_yaml():
    """rc10 writes <save_dir>/config.yaml with ``cfg.pretty()``, which omegaconf
    2.0 deprecates with a warning on every run; ``OmegaConf.to_yaml`` writes
    the same file."""
    from mmf.utils.checkpoint import Checkpoint
    from mmf.utils.file_io import PathManager
    from omegaconf import OmegaConf

    def save_config(self):
        with PathManager.open(os.path.join(self.ckpt_foldername, "config.yaml"), "w") as f:
            f.write(OmegaConf.to_yaml(self.config, resolve=True))

    Checkpoint.save_config = save_config


@_once
def write_config_on_rank_zero_only():
    """Every rank's Checkpoint writes <save_dir>/config.yaml in rc10; only rank 0 writes files."""
    from mmf.utils.checkpoint import Checkpoint

    original = Checkpoint.save_config

    @functools.wraps(original)
    def save_config(self):
        from mmf.utils.distributed import is_master

        if is_master():
            original(self)

    Checkpoint.save_config = save_config


def patch_mmf_cli_run(module):
    """``mmf_run`` with ``distributed.world_size`` > 1 asserts that many CUDA
    devices in rc10: put mmf_rec's launcher in place of ``mmf_cli.run.run``.
    A user error (bad data, config or checkpoint) ends it with one line
    (:mod:`mmf_rec.errors`).

    Called by the compat hook once ``mmf_cli.run`` has loaded (it imports
    mmf, and so these patches, before it defines ``run``), or from
    :func:`after_import` when it was loaded already.
    """
    if module is None or not hasattr(module, "run"):
        return
    if getattr(module.run, "__module__", None) == "mmf_rec.distributed":
        return
    from mmf_rec import distributed
    from mmf_rec.errors import one_line_user_errors

    module.run = one_line_user_errors(distributed.run)
    if hasattr(module, "distributed_init"):
        module.distributed_init = distributed.distributed_init


# -- checkpoints: exact resume and the model zoo ---------------------------------------
# (the code is in mmf_rec.resume and mmf_rec.zoo; these only hook it into MMF)
@_once
def resume_training_exactly():
    """rc10's checkpoint.resume=True restarts the interrupted epoch from a new
    random state and forgets where early stopping was, and a run killed while
    a checkpoint is written leaves a truncated file. Checkpoints here are
    written atomically and carry what an exact resume needs
    (:mod:`mmf_rec.resume`); loading one hands that to the trainer."""
    import io

    import torch
    import mmf.utils.distributed as mmf_dist
    from mmf.trainers.base_trainer import BaseTrainer
    from mmf.utils.checkpoint import Checkpoint
    from omegaconf import OmegaConf

    from mmf_rec import resume, safe_load, sharding

    def _sharded(trainer):
        return bool(getattr(trainer, "sharded", False))

    def _gathered_state(trainer, update):
        """Sharded tables gathered whole, which every rank must do together;
        but early stopping saves from rank 0 alone, so each validation
        gathers first (on every rank) and saves at that update use it."""
        stash = getattr(trainer, "_mmf_rec_gathered", None)
        if stash is not None and stash[0] == update:
            return stash[1]
        return sharding.full_state_dict(trainer.model)

    def save(self, update, iteration=None, update_best=False):
        trainer = self.trainer
        model_state = _gathered_state(trainer, update) if _sharded(trainer) else None
        if not mmf_dist.is_master():
            return
        if not iteration:
            iteration = update
        model = trainer.model
        if registry_get("data_parallel") is True or registry_get("distributed") is True:
            model = model.module
        early_stopping = trainer.early_stopping
        ckpt = {
            "model": model_state if model_state is not None else model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "best_iteration": early_stopping.best_monitored_iteration,
            "current_iteration": iteration,
            "current_epoch": trainer.current_epoch,
            "num_updates": update,
            "best_update": early_stopping.best_monitored_update,
            "best_metric_value": early_stopping.best_monitored_value,
            "config": OmegaConf.to_container(self.config, resolve=True),
            resume.STATE_KEY: resume.training_state(trainer, update),
        }
        if self.git_repo:
            ckpt.update(self._get_vcs_fields())
        buffer = io.BytesIO()
        torch.save(safe_load.plain(ckpt), buffer)  # loads back with weights_only=True
        data = buffer.getvalue()
        paths = [os.path.join(self.models_foldername, "model_%d.ckpt" % update)]
        if update_best:
            paths.append(os.path.join(self.ckpt_foldername, self.ckpt_prefix + "best.ckpt"))
        paths.append(os.path.join(self.ckpt_foldername, self.ckpt_prefix + "current.ckpt"))
        for path in paths:  # a killed run leaves the previous file, never half a file
            tmp = f"{path}.tmp{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)

    def registry_get(name):
        from mmf.common.registry import registry

        return registry.get(name, no_warning=True)

    Checkpoint.save = save

    original_finalize = Checkpoint.finalize

    @functools.wraps(original_finalize)
    def finalize(self):
        if not _sharded(self.trainer):
            return original_finalize(self)
        state = sharding.full_state_dict(self.trainer.model)
        if mmf_dist.is_master():
            torch.save(state, self.pth_filepath)

    Checkpoint.finalize = finalize

    original_load_counts = Checkpoint._load_counts

    @functools.wraps(original_load_counts)
    def _load_counts(self, ckpt):
        original_load_counts(self, ckpt)
        resume.remember_loaded(self, ckpt)

    Checkpoint._load_counts = _load_counts

    original_load = Checkpoint._load

    @functools.wraps(original_load)
    def _load(self, *args, **kwargs):
        result = original_load(self, *args, **kwargs)
        self.trainer._mmf_rec_checkpoint_loaded = True  # mmf_predict warns without
        return result

    Checkpoint._load = _load

    original_validation = BaseTrainer._try_full_validation

    @functools.wraps(original_validation)
    def _try_full_validation(self, force=False):
        self._mmf_rec_validating = True
        # (MMF calls this every update; it validates every evaluation_interval)
        if _sharded(self) and (force or self.num_updates % self.evaluation_interval == 0):
            self._mmf_rec_gathered = (self.num_updates, sharding.full_state_dict(self.model))
        try:
            return original_validation(self, force)
        finally:
            self._mmf_rec_validating = False

    BaseTrainer._try_full_validation = _try_full_validation


@_once
def load_zoo_models_by_key():
    """``checkpoint.resume_zoo=kbrec.<model>.<name>`` and
    ``Model.from_pretrained("kbrec....")``: mmf_rec's zoo keys load offline,
    from local files, checked against the data (:mod:`mmf_rec.zoo`). Every
    other key goes to MMF's own zoo and loader as before."""
    import mmf.models.base_model as base_model
    import mmf.utils.checkpoint as checkpoint
    import mmf.utils.download as download

    from mmf_rec import zoo

    original_download = download.download_pretrained_model

    @functools.wraps(original_download)
    def download_pretrained_model(model_name, *args, **kwargs):
        if zoo.owns(model_name):
            return str(zoo.fetch(model_name))
        return original_download(model_name, *args, **kwargs)

    _rebind(download, "download_pretrained_model", download_pretrained_model)

    original_load = checkpoint.load_pretrained_model

    @functools.wraps(original_load)
    def load_pretrained_model(model_name_or_path, *args, **kwargs):
        if zoo.owns(model_name_or_path):
            return zoo.load_pretrained_model(model_name_or_path)
        return original_load(model_name_or_path, *args, **kwargs)

    _rebind(checkpoint, "load_pretrained_model", load_pretrained_model)

    original_from_zoo = checkpoint.Checkpoint._load_from_zoo

    @functools.wraps(original_from_zoo)
    def _load_from_zoo(self, file):
        config = self.trainer.config.checkpoint
        if zoo.owns(file) and not config.zoo_config_override:
            state = zoo.load_for_trainer(self.trainer, file)
            return self.upgrade_state_dict(state), True
        return original_from_zoo(self, file)

    checkpoint.Checkpoint._load_from_zoo = _load_from_zoo

    original_from_pretrained = base_model.BaseModel.from_pretrained.__func__

    @functools.wraps(original_from_pretrained)
    def from_pretrained(cls, model_name, *args, **kwargs):
        if zoo.owns(model_name):
            return zoo.from_pretrained(cls, model_name, *args, **kwargs)
        return original_from_pretrained(cls, model_name, *args, **kwargs)

    base_model.BaseModel.from_pretrained = classmethod(from_pretrained)
