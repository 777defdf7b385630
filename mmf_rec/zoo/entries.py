"""Zoo files and keys: where mmf_rec's zoo file is, MMF's beside it, which
keys are mmf_rec's, an entry by key, and writing one into a zoo file."""

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from mmf_rec import paths
from mmf_rec.files import atomic_write
from mmf_rec.zoo.errors import ZooError, ZooKeyError

PREFIX = "kbrec"
ZOO_ENV = "MMF_REC_MODEL_ZOO"


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


def run_env(key: str):
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
    name = run_env("model_zoo") or "configs/zoo/models.yaml"
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
