"""The prepared directory's layout, and how each of its files is written.

Every reader and generator writes through these functions and names, so a
prepared directory looks the same whoever made it (see ``prepared.py`` for
the whole layout and for opening one). Each file is written atomically and
its sha256 goes into the manifest; the manifest itself is written last, so
its presence marks a complete directory.
"""

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import numpy as np

from mmf_rec.errors import UserError
from mmf_rec.files import atomic_path, atomic_write, sha256_file

FORMAT = "mmf_rec.prepared/2"  # /2: the ``sampled`` column
MANIFEST = "manifest.json"
ITEMS = "items"
LABEL_COLUMN = "label"
SAMPLED_COLUMN = "sampled"
DENSE_COLUMN = "dense"
CLICK_PROB_COLUMN = "click_prob"
TIMESTAMP_COLUMN = "timestamp"
DESCRIPTIONS_FILE = "descriptions.json"
IMAGES_DIR = "images"
IMAGE_PATTERN = "{item_id}.png"

PathLike = Union[str, os.PathLike]


class PreparedDataError(UserError, ValueError):
    """A prepared directory is missing, incomplete, corrupt or inconsistent."""


def column_entry(path: PathLike, array: np.ndarray) -> Dict[str, Any]:
    return {
        "shape": [int(s) for s in array.shape],
        "dtype": str(array.dtype),
        "sha256": sha256_file(path),
    }


def write_column(directory: PathLike, name: str, array: np.ndarray) -> Dict[str, Any]:
    """Save one column atomically; returns its manifest entry."""
    array = np.ascontiguousarray(array)
    if array.dtype == object:
        raise PreparedDataError(f"column '{name}': object arrays cannot be prepared")
    path = Path(directory) / f"{name}.npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    return column_entry(path, array)


def write_table(directory: PathLike, columns: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    """Save equally long columns; returns the table's manifest entry."""
    lengths = {name: len(a) for name, a in columns.items()}
    if len(set(lengths.values())) > 1:
        raise PreparedDataError(f"{directory}: columns differ in length: {lengths}")
    files = {name: write_column(directory, name, a) for name, a in columns.items()}
    return {"rows": next(iter(lengths.values()), 0), "files": files}


def write_json(path: PathLike, data: Any) -> str:
    """Atomic, deterministic json; returns the file's sha256. NaN and infinity
    are refused: they are not JSON, and other readers reject the file."""
    try:
        text = json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    atomic_write(path, text)
    return sha256_file(path)


def write_manifest(root: PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write the manifest last: its presence marks the directory complete."""
    manifest = dict(manifest)
    manifest.setdefault("format", FORMAT)
    path = Path(root) / MANIFEST
    write_json(path, manifest)
    return path
