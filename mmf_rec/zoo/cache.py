"""Fetching a zoo model into the local cache: copied or downloaded, unpacked,
checked by sha256, and fetched again when the cached copy is stale or damaged."""

import datetime
import json
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from mmf_rec.files import sha256_file
from mmf_rec.log import log
from mmf_rec.zoo.archive import META, unpack
from mmf_rec.zoo.entries import entry, run_env, zoo_path
from mmf_rec.zoo.errors import ZooChecksumError, ZooError, ZooFileError

CACHE_ENV = "MMF_REC_ZOO_CACHE"
BUILT = ".built.json"


def cache_root() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(os.path.expanduser(override)).absolute()
    data_dir = run_env("data_dir")
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
        unpack(target, dest)


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
