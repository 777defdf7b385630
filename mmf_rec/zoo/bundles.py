"""Pipeline bundles: a retriever, an optional ranker and their FAISS index
published and fetched together as ``kbrec.pipeline.<name>``."""

import datetime
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from mmf_rec.files import atomic_path, sha256_file
from mmf_rec.log import log
from mmf_rec.zoo.archive import write_tar_gz
from mmf_rec.zoo.cache import fetch
from mmf_rec.zoo.entries import PREFIX, entry, parse_key, update_zoo_file, zoo_path
from mmf_rec.zoo.errors import ZooFileError, ZooKeyError
from mmf_rec.zoo.publish import export

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
        write_tar_gz(tmp, {f"index/{p.name}": p for p in index_files})
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
