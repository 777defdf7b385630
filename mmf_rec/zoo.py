"""mmf_rec's model zoo: trained runs published and loaded back by key, offline.

A key is ``kbrec.<model>.<name>`` (e.g. ``kbrec.dlrm.tiny``). Its entry in
mmf_rec's zoo file (``configs/zoo/models.yaml``, or the file named by
``$MMF_REC_MODEL_ZOO``) has MMF's zoo layout, ``version`` and ``resources``
(``url``, ``file_name``, ``hashcode`` = sha256, ``compressed``), plus what the
model depends on. MMF's own zoo (``env.model_zoo``) stays in force: a key
that is not mmf_rec's goes to MMF's loader unchanged (:func:`model_zoo`
shows both, merged).

An archive (``tools/export_zoo.py``) holds, at its root, MMF's pretrained
layout: one ``config.yaml`` (the run's config), one ``<model>.pth`` (the
weights: a state dict of tensors only, loaded with
``torch.load(weights_only=True)``), and ``zoo.json``: the key, the sha256
of both files, the run's metrics, and fingerprints of the data the model
was trained on: the feature schema (names, sides, cardinalities), the
vocabularies (item table columns and the reader's vocabulary files, by
sha256) and, for ``dlrm_mm``, the item knowledge cache entries (encoder and
item data).

``url`` may be a local file, a ``file://`` URL, or a local directory (holding
``file_name``, or the unpacked files themselves); http(s) and ``mmf://``
URLs go through MMF's downloader. Resources are copied into the cache
(``$MMF_REC_ZOO_CACHE``, else ``<env.data_dir>/models``, MMF's place) and
checked before use. Everything that can go wrong (unknown key, missing file,
checksum, data or model that does not fit) raises one :class:`ZooError`
that says what differs.
"""

import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from mmf_rec import paths, safe_load
from mmf_rec.errors import UserError
from mmf_rec.files import atomic_path, atomic_write, sha256_file
from mmf_rec.log import log

PREFIX = "kbrec"
ZOO_ENV = "MMF_REC_MODEL_ZOO"
CACHE_ENV = "MMF_REC_ZOO_CACHE"
META = "zoo.json"
CONFIG = "config.yaml"
FORMAT = "mmf_rec.zoo/1"
BUILT = ".built.json"


class ZooError(UserError, RuntimeError):
    """A zoo model cannot be used; the message says why."""


class ZooKeyError(ZooError):
    pass


class ZooFileError(ZooError):
    """A file the entry names is missing or unreadable."""


class ZooChecksumError(ZooError):
    pass


class ZooMismatchError(ZooError):
    """The zoo model was trained on other data, or for another model."""


# -- the zoo files -------------------------------------------------------------------
def zoo_path() -> Path:
    """mmf_rec's zoo file: ``$MMF_REC_MODEL_ZOO``, else the shipped one."""
    override = os.environ.get(ZOO_ENV)
    if override:
        return Path(os.path.expanduser(override)).absolute()
    return Path(paths.configs_dir()) / "zoo" / "models.yaml"


def _read_yaml(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        return {}
    with open(path) as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ZooError(f"{path}: a zoo file must be a mapping, got {type(data).__name__}")
    return data


def _run_config():
    from mmf.common.registry import registry

    return registry.get("config", no_warning=True)


def _run_env(key: str):
    """``env.<key>`` of the run's config; None outside a run, or where the
    value is missing or cannot be resolved."""
    config = _run_config()
    if config is None:
        return None
    try:
        return getattr(config.env, key)
    except Exception:
        return None


def mmf_zoo_path() -> Optional[Path]:
    """MMF's zoo file (``env.model_zoo``) when it exists and is not mmf_rec's."""
    name = _run_env("model_zoo") or "configs/zoo/models.yaml"
    try:
        from mmf.utils.general import get_absolute_path

        resolved = get_absolute_path(name) if _run_config() is not None else name
    except Exception:
        resolved = name
    path = Path(resolved)
    if not path.is_file():
        return None
    ours = zoo_path()
    if ours.is_file() and os.path.samefile(path, ours):
        return None
    return path.absolute()


def model_zoo(mmf_zoo: Optional[os.PathLike] = None) -> Dict[str, Any]:
    """MMF's zoo entries with mmf_rec's merged over them (a plain dict)."""
    from omegaconf import OmegaConf

    mmf_file = Path(mmf_zoo) if mmf_zoo is not None else mmf_zoo_path()
    merged = OmegaConf.create({})
    if mmf_file is not None and mmf_file.is_file():
        from mmf.utils.configuration import load_yaml

        merged = OmegaConf.merge(merged, load_yaml(str(mmf_file)))
    merged = OmegaConf.merge(merged, OmegaConf.create(_read_yaml(zoo_path())))
    return OmegaConf.to_container(merged, resolve=True)


def _select(tree: Mapping[str, Any], key: str) -> Optional[Any]:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _entries(tree: Mapping[str, Any], prefix: str = "") -> List[str]:
    """Keys of every entry (a node with ``resources``) under ``tree``."""
    out = []
    for name, node in tree.items():
        key = f"{prefix}{name}"
        if isinstance(node, Mapping):
            if "resources" in node:
                out.append(key)
            else:
                out.extend(_entries(node, key + "."))
    return out


def owns(key: str) -> bool:
    """Whether ``key`` is mmf_rec's (its prefix, or an entry in mmf_rec's zoo)."""
    if not isinstance(key, str) or os.path.exists(key):
        return False
    return key.split(".")[0] == PREFIX or _select(_read_yaml(zoo_path()), key) is not None


def parse_key(key: str) -> Tuple[str, str]:
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or not all(parts):
        raise ZooKeyError(
            f"zoo key '{key}': expected '{PREFIX}.<model>.<name>', e.g. {PREFIX}.dlrm.tiny"
        )
    return parts[1], parts[2]


def entry(key: str) -> Dict[str, Any]:
    path = zoo_path()
    tree = _read_yaml(path)
    node = _select(tree, key)
    if not isinstance(node, Mapping) or "resources" not in node or "version" not in node:
        known = _entries(tree)
        where = f"{path}" if path.is_file() else f"{path} (no such file)"
        raise ZooKeyError(
            f"no zoo entry '{key}' in mmf_rec's zoo {where}; it has "
            f"{known or 'no entries'} (export one with tools/export_zoo.py, or point "
            f"${ZOO_ENV} at another zoo file)"
        )
    return dict(node)


# -- fetching into the cache -------------------------------------------------------------
def cache_root() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(os.path.expanduser(override)).absolute()
    data_dir = _run_env("data_dir")
    if not data_dir:
        from mmf.utils.configuration import resolve_dir

        data_dir = resolve_dir("MMF_DATA_DIR", "data")
    return Path(os.path.expanduser(str(data_dir))).absolute() / "models"


def _local_path(url: str) -> Optional[Path]:
    """The local path a resource url names; None for a remote url."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.netloc + parsed.path))
    if parsed.scheme == "":
        return Path(os.path.expanduser(url)).absolute()
    return None


def _resources(key: str, node: Mapping[str, Any]) -> List[Dict[str, Any]]:
    resources = node["resources"]
    if isinstance(resources, Mapping):
        resources = [resources]
    out = []
    for i, resource in enumerate(resources or []):
        if not isinstance(resource, Mapping) or "url" not in resource \
                or "file_name" not in resource:
            raise ZooError(f"zoo entry '{key}' ({zoo_path()}): resources[{i}] needs "
                           f"url and file_name, got {resource!r}")
        out.append(dict(resource))
    return out


def _unpack(archive: Path, dest: Path) -> None:
    try:
        safe_load.extract(archive, dest)
    except safe_load.ArchiveError as e:
        raise ZooFileError(str(e)) from None


def _fetch_resource(key: str, resource: Dict[str, Any], files: Mapping[str, str],
                    dest: Path) -> None:
    url, file_name = str(resource["url"]), str(resource["file_name"])
    hashcode = resource.get("hashcode")
    compressed = bool(resource.get("compressed", True))
    where = f"zoo entry '{key}' ({zoo_path()})"
    local = _local_path(url)
    if local is None:  # http(s), mmf://: MMF's downloader (needs the network)
        from mmf.utils.download import DownloadableFile

        try:
            DownloadableFile(url, file_name, hashcode=hashcode,
                             compressed=compressed).download_file(str(dest))
        except AssertionError as e:
            raise ZooChecksumError(f"{where}: {e}") from None
        except Exception as e:
            raise ZooFileError(f"{where}: cannot download {url}: {e}") from None
        return
    if local.is_dir():
        if (local / file_name).is_file():
            local = local / file_name
        elif (local / META).is_file():  # the unpacked files themselves
            for name, expected in files.items():
                source = local / name
                if not source.is_file():
                    raise ZooFileError(f"{where}: {source} is missing (the directory "
                                       f"{local} should hold {sorted(files)})")
                actual = sha256_file(source)
                if actual != expected:
                    raise ZooChecksumError(
                        f"{where}: checksum mismatch for {source}: sha256 {actual}, "
                        f"the zoo entry records {expected}")
                shutil.copy2(source, dest / name)
            return
        else:
            raise ZooFileError(f"{where}: {local} holds neither {file_name} nor an "
                               f"unpacked model ({META})")
    if not local.is_file():
        raise ZooFileError(f"{where}: {file_name} is missing: {url} does not exist")
    target = dest / file_name
    shutil.copyfile(local, target)
    if hashcode:
        actual = sha256_file(target)
        if actual != hashcode:
            raise ZooChecksumError(
                f"{where}: checksum mismatch for {local}: sha256 {actual}, the zoo "
                f"entry records {hashcode}; the file changed after it was exported "
                "(re-export it, or restore the file)")
    if compressed:
        _unpack(target, dest)


def _built_version(directory: Path) -> Optional[str]:
    try:
        return json.loads((directory / BUILT).read_text()).get("version")
    except (OSError, ValueError):
        return None


def _check_files(key: str, directory: Path, files: Mapping[str, str]) -> None:
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise ZooFileError(f"zoo model '{key}': {path} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ZooChecksumError(
                f"zoo model '{key}': checksum mismatch for {path}: sha256 {actual}, "
                f"expected {expected}")


def fetch(key: str) -> Path:
    """The local directory of a zoo model, fetched and checked if needed."""
    node = entry(key)
    version = str(node["version"])
    files = dict(node.get("files") or {})
    resources = _resources(key, node)
    root = cache_root()
    target = root / key
    if _built_version(target) == version:
        try:
            _check_files(key, target, files)
            return target
        except ZooError as e:
            log(f"zoo cache {target} is damaged ({e}); fetching '{key}' again",
                level="warning")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        for resource in resources:
            _fetch_resource(key, resource, files, tmp)
        _check_files(key, tmp, files)
        (tmp / BUILT).write_text(json.dumps({
            "version": version, "created_at": datetime.datetime.now().isoformat()}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"zoo model '{key}' (version {version}) is in {target}")
    return target


# -- what a model depends on ------------------------------------------------------------
def vocabulary_parts(manifest: Mapping[str, Any], schema) -> Dict[str, str]:
    """sha256 of what gives the ids their meaning: the item table's columns
    the schema names, and the reader's vocabulary files."""
    parts = {}
    names = set(schema.sparse_names)
    for column, info in sorted(((manifest.get("items") or {}).get("files") or {}).items()):
        if column in names:
            parts[f"items/{column}"] = str(info.get("sha256"))
    vocab = manifest.get("vocab") or {}
    if vocab.get("sha256"):
        parts[str(vocab.get("path", "vocab"))] = str(vocab["sha256"])
    for name, info in sorted((vocab.get("files") or {}).items()):
        parts[f"{vocab.get('path', 'vocab')}/{name}"] = str(info.get("sha256"))
    return parts


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def data_fingerprints(schema, manifest: Mapping[str, Any], model=None) -> Dict[str, Any]:
    vocabulary = vocabulary_parts(manifest, schema)
    out = {
        "schema": {"fingerprint": schema.fingerprint(), "features": schema.to_dict()},
        "vocabulary": {"fingerprint": _digest(vocabulary), "parts": vocabulary},
    }
    knowledge = knowledge_keys(model) if model is not None else {}
    if knowledge:
        out["knowledge"] = knowledge
    return out


def knowledge_keys(model) -> Dict[str, str]:
    knowledge = getattr(model, "knowledge", None)
    if knowledge is None or not hasattr(knowledge, "items"):
        return {}
    return {name: str(getattr(module, "cache_key", None)) for name, module in knowledge.items()}


def _schema_differences(zoo: Mapping[str, Any], here: Mapping[str, Any]) -> List[str]:
    out = []
    if zoo.get("label") != here.get("label"):
        out.append(f"label '{zoo.get('label')}' in the zoo model, '{here.get('label')}' here")
    for section in ("dense", "sparse", "knowledge"):
        theirs = {f["name"]: f for f in zoo.get(section) or []}
        ours = {f["name"]: f for f in here.get(section) or []}
        missing = [n for n in theirs if n not in ours]
        extra = [n for n in ours if n not in theirs]
        if missing:
            out.append(f"{section} features {missing} of the zoo model are not in this data")
        if extra:
            out.append(f"{section} features {extra} of this data are not in the zoo model")
        for name in theirs:
            if name in ours and theirs[name] != ours[name]:
                changed = ", ".join(
                    f"{k} {theirs[name].get(k)} in the zoo model, {ours[name].get(k)} here"
                    for k in sorted(set(theirs[name]) | set(ours[name]))
                    if theirs[name].get(k) != ours[name].get(k))
                out.append(f"{section} feature '{name}': {changed}")
        common = [n for n in theirs if n in ours]
        if not missing and not extra and common != [n for n in ours if n in theirs]:
            out.append(f"{section} features are in another order: {list(theirs)} in the "
                       f"zoo model, {list(ours)} here")
    return out


def data_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    out = []
    zoo_schema, here_schema = recorded["schema"], current["schema"]
    if zoo_schema["fingerprint"] != here_schema["fingerprint"]:
        details = _schema_differences(zoo_schema["features"], here_schema["features"])
        out.append("schema differs: " + ("; ".join(details) or
                   f"fingerprint {zoo_schema['fingerprint']} in the zoo model, "
                   f"{here_schema['fingerprint']} here"))
    theirs, ours = recorded["vocabulary"]["parts"], current["vocabulary"]["parts"]
    if theirs != ours:
        changed = [n for n in theirs if n in ours and theirs[n] != ours[n]]
        details = []
        if changed:
            details.append(f"{changed} differ (e.g. {changed[0]}: sha256 "
                           f"{theirs[changed[0]][:12]}... in the zoo model, "
                           f"{ours[changed[0]][:12]}... here)")
        missing = [n for n in theirs if n not in ours]
        extra = [n for n in ours if n not in theirs]
        if missing:
            details.append(f"{missing} are missing here")
        if extra:
            details.append(f"{extra} are not in the zoo model")
        out.append("vocabularies differ (the same ids mean other items or values): "
                   + "; ".join(details))
    return out


def knowledge_differences(recorded: Mapping[str, Any], model) -> List[str]:
    theirs = recorded.get("knowledge") or {}
    ours = knowledge_keys(model)
    out = []
    for name in sorted(set(theirs) | set(ours)):
        if theirs.get(name) != ours.get(name):
            out.append(f"item knowledge '{name}': cache entry {theirs.get(name)} in the zoo "
                       f"model, {ours.get(name)} here (another encoder or other item data)")
    return out


def state_differences(expected: Mapping[str, Any], state: Mapping[str, Any]) -> List[str]:
    """Parameter names and shapes of the model built here vs the zoo weights."""
    def strip(sd):
        return {k[7:] if k.startswith("module.") else k: tuple(v.shape)
                for k, v in sd.items() if hasattr(v, "shape")}

    mine, theirs = strip(expected), strip(state)
    out = []
    missing = sorted(set(mine) - set(theirs))
    extra = sorted(set(theirs) - set(mine))
    shapes = [f"{k} {list(theirs[k])} in the zoo model, {list(mine[k])} here"
              for k in sorted(set(mine) & set(theirs)) if mine[k] != theirs[k]]
    if missing:
        out.append(f"{len(missing)} parameters of this model are not in the zoo weights "
                   f"(e.g. {missing[:3]})")
    if extra:
        out.append(f"{len(extra)} zoo parameters have no place in this model (e.g. {extra[:3]})")
    if shapes:
        out.append("shapes differ: " + "; ".join(shapes[:4]))
    return out


def _config_differences(zoo: Any, here: Any, prefix: str = "") -> List[str]:
    if isinstance(zoo, Mapping) and isinstance(here, Mapping):
        out = []
        for k in sorted(set(zoo) | set(here), key=str):
            out += _config_differences(zoo.get(k), here.get(k), f"{prefix}{k}.")
        return out
    return [] if zoo == here else [f"{prefix[:-1]}: {zoo!r} in the zoo model, {here!r} here"]


# -- loading ----------------------------------------------------------------------
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

        config = _config_differences(
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


# -- export --------------------------------------------------------------------------
def _load_checkpoint(path: Path, allow_pickle: bool) -> Dict[str, Any]:
    try:
        ckpt = safe_load.load_checkpoint(path, allow_pickle, opt_in="--allow-pickle")
    except safe_load.CheckpointError as e:
        raise ZooFileError(str(e)) from None
    if not isinstance(ckpt, Mapping):
        raise ZooFileError(f"{path}: holds a {type(ckpt).__name__}, not a checkpoint")
    return ckpt


def _tar_gz(path: Path, files: Mapping[str, Path]) -> None:
    """A reproducible archive: sorted names, no timestamps or owners."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                 filename="") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = Path(files[name]).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))


def update_zoo_file(path: Path, key: str, node: Dict[str, Any]) -> None:
    """Add or replace ``key`` in a zoo file, keeping its leading comments."""
    path = Path(path)
    header, tree = "", {}
    if path.is_file():
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        for line in lines:
            if line.startswith("#") or not line.strip():
                header += line
            else:
                break
        tree = _read_yaml(path)
    parts = key.split(".")
    parent = tree
    for part in parts[:-1]:
        child = parent.get(part)
        if not isinstance(child, dict):
            child = parent[part] = {}
        parent = child
    parent[parts[-1]] = node
    body = yaml.safe_dump(tree, sort_keys=False, default_flow_style=False, width=100)
    atomic_write(path, header + body)


def export(run_dir: os.PathLike, key: str, out_dir: Optional[os.PathLike] = None,
           zoo_file: Optional[os.PathLike] = None, checkpoint: str = "best",
           allow_pickle: bool = False) -> Dict[str, Any]:
    """Package a trained run as zoo model ``key`` and record it in a zoo file.

    ``allow_pickle`` lets a checkpoint that needs a full unpickle load (it
    runs code stored in the file); the archive then holds plain weights."""
    import torch
    from omegaconf import OmegaConf

    model_name, _ = parse_key(key)
    run_dir = Path(run_dir).absolute()
    config_file = run_dir / CONFIG
    if not config_file.is_file():
        raise ZooFileError(f"{run_dir}: no {CONFIG}: not the save_dir of an mmf_run run")
    config = OmegaConf.load(config_file)
    candidates = {"best": "best.ckpt", "current": "current.ckpt"}
    if checkpoint not in candidates:
        raise ZooError(f"checkpoint must be one of {sorted(candidates)}, got '{checkpoint}'")
    ckpt_file = run_dir / candidates[checkpoint]
    if not ckpt_file.is_file():
        raise ZooFileError(f"{ckpt_file} is missing: has the run written a checkpoint?")
    ckpt = _load_checkpoint(ckpt_file, allow_pickle)
    if isinstance(ckpt.get("config"), Mapping):
        # the config of the run that wrote the weights (a later mmf_predict or
        # test run in the same save_dir rewrites config.yaml)
        config = OmegaConf.create(ckpt["config"])
    if str(config.model) != model_name:
        raise ZooMismatchError(f"{config_file}: the run trained '{config.model}', but the "
                               f"key '{key}' names '{model_name}'")
    state = ckpt.get("model", ckpt)
    state = {k[7:] if k.startswith("module.") else k: v.detach().clone().cpu()
             for k, v in state.items()}

    recorded = {}

    def fingerprint(data):
        name, schema, manifest, root = data
        recorded.update(dataset=name, root=str(root),
                        data=data_fingerprints(schema, manifest))

    model = build_model(model_name, config, check=fingerprint)
    differences = state_differences(model.state_dict(), state)
    if differences:
        raise ZooMismatchError(f"{ckpt_file} does not load into the '{model_name}' model its "
                               f"config builds: " + "; ".join(differences))
    model.load_state_dict(state)
    knowledge = knowledge_keys(model)
    if knowledge:
        recorded["data"]["knowledge"] = knowledge

    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    out_dir = Path(out_dir).absolute() if out_dir is not None else run_dir / "zoo"
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_name = f"{model_name}.pth"
    with tempfile.TemporaryDirectory(prefix=".export.", dir=out_dir) as staging:
        staging = Path(staging)
        OmegaConf.save(config, staging / CONFIG)
        torch.save(state, staging / weights_name)
        files = {CONFIG: sha256_file(staging / CONFIG),
                 weights_name: sha256_file(staging / weights_name)}
        meta = {
            "format": FORMAT, "key": key, "model": model_name,
            "weights": weights_name, "dataset": recorded["dataset"],
            "data": recorded["data"],
            "run": {"save_dir": str(run_dir), "checkpoint": ckpt_file.name,
                    "num_updates": ckpt.get("num_updates"),
                    "metrics": {split: {k: v for k, v in values.items()
                                        if k in ("auc", "log_loss")}
                                for split, values in metrics.items()
                                if isinstance(values, dict)}},
            "files": files,
            "torch": torch.__version__,
        }
        (staging / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        files[META] = sha256_file(staging / META)
        archive_name = f"{key}.tar.gz"
        archive = out_dir / archive_name
        with atomic_path(archive) as tmp:
            _tar_gz(tmp, {name: staging / name for name in files})
    digest = sha256_file(archive)
    node = {
        "version": f"1.0_{digest[:12]}",
        "resources": [{"url": archive.as_uri(), "file_name": archive_name,
                       "hashcode": digest, "compressed": True}],
        "files": files,
        "model": model_name,
        "dataset": recorded["dataset"],
        "depends_on": {
            "schema": recorded["data"]["schema"]["fingerprint"],
            "vocabulary": recorded["data"]["vocabulary"]["fingerprint"],
            **({"knowledge": knowledge} if knowledge else {}),
        },
        "metrics": meta["run"]["metrics"],
        "exported": datetime.datetime.now().replace(microsecond=0).isoformat(),
        "source": str(run_dir),
    }
    zoo_file = Path(zoo_file).absolute() if zoo_file is not None else zoo_path()
    update_zoo_file(zoo_file, key, node)
    log(f"exported '{key}' to {archive} (sha256 {digest}); entry written to {zoo_file}")
    return {"key": key, "archive": str(archive), "sha256": digest, "zoo_file": str(zoo_file),
            "entry": node}


# -- pipeline bundles ----------------------------------------------------------------
PIPELINE = "pipeline"


def export_bundle(key: str, retriever: os.PathLike, index: os.PathLike,
                  ranker: Optional[os.PathLike] = None, out_dir: Optional[os.PathLike] = None,
                  zoo_file: Optional[os.PathLike] = None,
                  allow_pickle: bool = False) -> Dict[str, Any]:
    """Publish a retrieve-then-rank pipeline as ``kbrec.pipeline.<name>``.

    The retriever and the ranker become zoo models of their own
    (``kbrec.two_tower.<name>``, ``kbrec.dlrm_mm.<name>``, with their data
    fingerprints); the bundle entry names them and carries the FAISS index,
    whose metadata already records the retriever's fingerprint.
    """
    model, name = parse_key(key)
    if model != PIPELINE:
        raise ZooKeyError(f"zoo key '{key}': a bundle key is '{PREFIX}.{PIPELINE}.<name>'")
    index = Path(index).absolute()
    index_files = sorted(p for p in index.iterdir() if p.is_file()) if index.is_dir() else []
    if not index_files:
        raise ZooFileError(f"{index}: not an index directory (tools/build_index.py writes one)")
    members = {"retriever": export(retriever, f"{PREFIX}.two_tower.{name}", out_dir,
                                   zoo_file, allow_pickle=allow_pickle)["key"]}
    if ranker is not None:
        members["ranker"] = export(ranker, f"{PREFIX}.dlrm_mm.{name}", out_dir, zoo_file,
                                   allow_pickle=allow_pickle)["key"]
    out_dir = Path(out_dir).absolute() if out_dir is not None else Path(retriever) / "zoo"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {f"index/{p.name}": sha256_file(p) for p in index_files}
    archive = out_dir / f"{key}.tar.gz"
    with atomic_path(archive) as tmp:
        _tar_gz(tmp, {f"index/{p.name}": p for p in index_files})
    digest = sha256_file(archive)
    node = {
        "version": f"1.0_{digest[:12]}",
        "resources": [{"url": archive.as_uri(), "file_name": archive.name,
                       "hashcode": digest, "compressed": True}],
        "files": files,
        "model": PIPELINE,
        "members": members,
        "exported": datetime.datetime.now().replace(microsecond=0).isoformat(),
    }
    zoo_file = Path(zoo_file).absolute() if zoo_file is not None else zoo_path()
    update_zoo_file(zoo_file, key, node)
    log(f"exported pipeline '{key}' ({members}) with its index to {archive}")
    return {"key": key, "archive": str(archive), "sha256": digest, "zoo_file": str(zoo_file),
            "entry": node}


def fetch_bundle(key: str) -> Dict[str, Optional[Path]]:
    """Local paths of a pipeline bundle's parts, each fetched and checked:
    ``retriever`` and ``ranker`` (weights files next to their config.yaml, as
    :func:`mmf_rec.runs.load_run` reads them; ranker None if the bundle has
    none) and ``index`` (a directory)."""
    node = entry(key)
    members = node.get("members")
    if not isinstance(members, Mapping) or "retriever" not in members:
        raise ZooKeyError(f"zoo entry '{key}' is not a pipeline bundle (no members); "
                          f"export one with tools/export_zoo.py --bundle")

    def weights(member_key):
        directory = fetch(member_key)
        return directory / f"{parse_key(member_key)[0]}.pth"

    ranker = members.get("ranker")
    return {"retriever": weights(members["retriever"]), "index": fetch(key) / "index",
            "ranker": weights(ranker) if ranker else None}
