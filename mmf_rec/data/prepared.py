"""The prepared on-disk format: one memory-mappable .npy per column per split.

Every reader and generator writes this format (through ``prepared_layout``)
and every MMF dataset reads it, so opening and validation live here once.
Layout of a prepared directory::

    manifest.json                written last and atomically
    <split>/<column>.npy         one file per column per split; every split
                                 has ``label`` and ``sampled`` (True on a
                                 sampled negative, False on an observed row;
                                 see mmf_rec.data.protocol)
    items/<column>.npy           the item table, row = item id
    items/descriptions.json      item texts, index = item id (optional)
    items/images/<item_id>.png   item images (optional; the manifest's image
                                 entry may name another "pattern", e.g.
                                 "{item_id}.jpg", and for real catalogues may
                                 set "images_may_be_missing": true with the
                                 "missing" count)

Pure numpy and json: no torch, no mmf, so it can be used by any tool.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from mmf_rec.data.prepared_layout import (
    DENSE_COLUMN, DESCRIPTIONS_FILE, FORMAT, IMAGE_PATTERN, IMAGES_DIR, ITEMS, MANIFEST,
    SAMPLED_COLUMN, PathLike, PreparedDataError)
from mmf_rec.data.prepared_layout import (  # noqa: F401  (for the format's users)
    LABEL_COLUMN, TIMESTAMP_COLUMN, write_manifest, write_table)
from mmf_rec.files import sha256_file
from mmf_rec.schema import PAD_ID, Schema, SchemaError


@dataclass
class PreparedTable:
    """Equally long, memory-mapped columns of one split (or of the item table)."""

    directory: Path
    rows: int
    columns: Dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.columns[name]
        except KeyError:
            raise PreparedDataError(
                f"{self.directory}: no column '{name}'; it has {sorted(self.columns)}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def __len__(self) -> int:
        return self.rows


@dataclass
class PreparedData:
    root: Path
    manifest: Dict[str, Any]
    schema: Schema
    splits: Dict[str, PreparedTable]
    items: Optional[PreparedTable] = None
    _descriptions: Optional[List[str]] = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.root.name)

    @property
    def split_names(self) -> List[str]:
        return list(self.splits)

    @property
    def item_feature(self) -> Optional[str]:
        """The sparse feature whose value is the row's item id, if any."""
        return self.manifest.get("item_feature")

    def split(self, name: str) -> PreparedTable:
        if name not in self.splits:
            raise PreparedDataError(
                f"{self.root / MANIFEST}: unknown split '{name}'; "
                f"the manifest lists {self.split_names}"
            )
        return self.splits[name]

    def descriptions(self) -> List[str]:
        if self._descriptions is None:
            path = self.root / ITEMS / DESCRIPTIONS_FILE
            self._descriptions = _read_json(path)
        return self._descriptions

    def image_path(self, item_id: int) -> Path:
        """Where the item's image is; with "images_may_be_missing" it may not exist."""
        entry = next((e for e in (self.manifest.get("knowledge") or {}).values()
                      if e.get("kind") == "image"), {})
        directory = self.root / entry.get("path", f"{ITEMS}/{IMAGES_DIR}")
        return directory / entry.get("pattern", IMAGE_PATTERN).format(item_id=int(item_id))


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise PreparedDataError(f"{path}: file is missing") from None
    except (OSError, ValueError) as e:
        raise PreparedDataError(f"{path}: not readable json ({e})") from None


def read_manifest(root: PathLike) -> Dict[str, Any]:
    root = Path(root)
    how = (
        "create it with `python -m mmf_rec.data.synthetic --out DIR`, "
        "`python -m mmf_rec.data.hm --src DIR --out DIR` (H&M data) or one of "
        "the readers in tools/, or let the dataset builder generate it"
    )
    if not root.is_dir():
        raise PreparedDataError(
            f"{root}: prepared data directory does not exist; {how}"
        )
    path = root / MANIFEST
    if not path.is_file():
        raise PreparedDataError(
            f"{path}: manifest is missing, so {root} is not a complete prepared "
            f"directory (it is written last; an interrupted run leaves none); {how}"
        )
    manifest = _read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest)
        hint = ("; it was prepared by an older mmf_rec (before sampled negatives were "
                "marked and seen items defined by observed rows): prepare it again"
                if got == "mmf_rec.prepared/1" else "")
        raise PreparedDataError(
            f"{path}: key 'format': expected '{FORMAT}', got {got!r}{hint}")
    for key in ("schema", "splits"):
        if key not in manifest:
            raise PreparedDataError(f"{path}: required key '{key}' is missing")
    return manifest


def _open_column(path: Path, entry: Mapping[str, Any], verify_checksum: bool) -> np.ndarray:
    try:
        expected_shape = tuple(int(s) for s in entry["shape"])
        expected_dtype = np.dtype(entry["dtype"])
    except (KeyError, TypeError, ValueError) as e:
        raise PreparedDataError(
            f"{path}: manifest entry must have 'shape' and 'dtype', got {dict(entry)} ({e})"
        ) from None
    expected = f"shape {list(expected_shape)} dtype {expected_dtype}"
    if not path.is_file():
        raise PreparedDataError(f"{path}: file is missing; the manifest expects {expected}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise PreparedDataError(
            f"{path}: not a readable .npy (truncated or corrupt?): {e}; "
            f"the manifest expects {expected}"
        ) from None
    if array.shape != expected_shape or array.dtype != expected_dtype:
        raise PreparedDataError(
            f"{path}: has shape {list(array.shape)} dtype {array.dtype}; "
            f"the manifest expects {expected}"
        )
    if verify_checksum:
        _check_sha256(path, entry)
    return array


def _check_sha256(path, entry) -> None:
    if "sha256" not in entry:
        return
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise PreparedDataError(
            f"{path}: sha256 {actual} does not match the manifest's "
            f"{entry['sha256']}; the file changed after it was prepared"
        )


def _open_table(
    directory: Path, entry: Mapping[str, Any], verify_checksums: bool
) -> PreparedTable:
    if not isinstance(entry, Mapping) or "files" not in entry or "rows" not in entry:
        raise PreparedDataError(
            f"{directory}: manifest entry must have 'rows' and 'files', got {entry!r}"
        )
    rows = int(entry["rows"])
    columns = {}
    for name, file_entry in entry["files"].items():
        path = directory / f"{name}.npy"
        array = _open_column(path, file_entry, verify_checksums)
        if array.ndim == 0 or array.shape[0] != rows:
            raise PreparedDataError(
                f"{path}: has {array.shape[0] if array.ndim else 0} rows; "
                f"the manifest says the table has {rows}"
            )
        columns[name] = array
    return PreparedTable(directory=directory, rows=rows, columns=columns)


def check_ids(path: PathLike, feature: str, array: np.ndarray, cardinality: int) -> None:
    """Ids must be PAD_ID or lie in [0, cardinality)."""
    if array.size == 0:
        return
    if not np.issubdtype(array.dtype, np.integer):
        raise PreparedDataError(
            f"{path}: feature '{feature}': expected integer ids, got dtype {array.dtype}"
        )
    high = int(array.max())
    if high >= cardinality:
        raise PreparedDataError(
            f"{path}: feature '{feature}': id {high} is out of range; expected "
            f"{PAD_ID} (padding) or an id in [0, {cardinality})"
        )
    low = int(array.min())
    if low < 0 and low != PAD_ID:
        raise PreparedDataError(
            f"{path}: feature '{feature}': id {low} is out of range; expected "
            f"{PAD_ID} (padding) or an id in [0, {cardinality})"
        )


def _check_split(name: str, table: PreparedTable, schema: Schema) -> None:
    def path(column):
        return table.directory / f"{column}.npy"

    for f in schema.sparse:
        array = table[f.name] if f.name in table else None
        if array is None:
            raise PreparedDataError(
                f"{path(f.name)}: missing from the manifest's split '{name}'; "
                f"the schema declares sparse feature '{f.name}'"
            )
        if array.ndim != 2 or array.shape[1] != f.max_len:
            raise PreparedDataError(
                f"{path(f.name)}: feature '{f.name}' has shape {list(array.shape)}; "
                f"expected [rows, {f.max_len}] (max_len from the schema)"
            )
        check_ids(path(f.name), f.name, array, f.cardinality)
    if schema.dense:
        if DENSE_COLUMN not in table:
            raise PreparedDataError(
                f"{path(DENSE_COLUMN)}: missing from split '{name}'; the schema "
                f"declares {len(schema.dense)} dense features"
            )
        dense = table[DENSE_COLUMN]
        if dense.ndim != 2 or dense.shape[1] != len(schema.dense):
            raise PreparedDataError(
                f"{path(DENSE_COLUMN)}: has shape {list(dense.shape)}; expected "
                f"[rows, {len(schema.dense)}] for dense features {schema.dense_names}"
            )
    if schema.label not in table:
        raise PreparedDataError(
            f"{path(schema.label)}: label column missing from split '{name}'"
        )
    label = table[schema.label]
    if label.ndim != 1:
        raise PreparedDataError(
            f"{path(schema.label)}: label must have shape [rows], got {list(label.shape)}"
        )
    if label.size and (float(label.min()) < 0.0 or float(label.max()) > 1.0):
        raise PreparedDataError(
            f"{path(schema.label)}: labels must lie in [0, 1], found "
            f"min {float(label.min())} max {float(label.max())}"
        )
    if SAMPLED_COLUMN not in table:
        raise PreparedDataError(
            f"{path(SAMPLED_COLUMN)}: missing from split '{name}'; every split marks "
            "its sampled negatives (prepare the data again with this mmf_rec)")
    sampled = table[SAMPLED_COLUMN]
    if sampled.dtype != np.bool_ or sampled.shape != label.shape:
        raise PreparedDataError(
            f"{path(SAMPLED_COLUMN)}: expected bool of shape {list(label.shape)}, got "
            f"{sampled.dtype} {list(sampled.shape)}")


def _check_items(table: PreparedTable, schema: Schema) -> None:
    """Item-table columns named after sparse features follow the split layout."""
    for column, array in table.columns.items():
        try:
            feature = schema.sparse_feature(column)
        except SchemaError:
            continue
        path = table.directory / f"{column}.npy"
        if array.ndim != 2 or array.shape[1] != feature.max_len:
            raise PreparedDataError(
                f"{path}: feature '{column}' has shape {list(array.shape)}; "
                f"expected [items, {feature.max_len}] (max_len from the schema)"
            )
        check_ids(path, column, array, feature.cardinality)


def load_prepared(
    root: PathLike, verify_checksums: bool = True, check_id_ranges: bool = True
) -> PreparedData:
    """Open a prepared directory memory-mapped, after validating it.

    Checksums cost one read of every file; skip them for very large data that
    was verified once already. Shape, dtype and id-range checks are always cheap.
    """
    root = Path(root)
    manifest = read_manifest(root)
    try:
        schema = Schema.from_dict(manifest["schema"], source=str(root / MANIFEST))
    except SchemaError as e:
        raise PreparedDataError(str(e)) from None
    splits = {}
    for name, entry in manifest["splits"].items():
        table = _open_table(root / name, entry, verify_checksums)
        if check_id_ranges:
            _check_split(name, table, schema)
        splits[name] = table
    items = None
    if manifest.get("items"):
        items = _open_table(root / ITEMS, manifest["items"], verify_checksums)
        if check_id_ranges:
            _check_items(items, schema)
    _check_knowledge(root, manifest, verify_checksums, items.rows if items else None)
    return PreparedData(root=root, manifest=manifest, schema=schema, splits=splits, items=items)


def _check_knowledge(
    root: Path, manifest: Mapping[str, Any], verify_checksums: bool, n_items: Optional[int]
) -> None:
    """Knowledge files the manifest lists must exist (and match, if checked)."""
    for name, entry in (manifest.get("knowledge") or {}).items():
        path = root / entry["path"]
        if entry.get("kind") == "image":
            _check_image_dir(path, name, n_items, entry)
            continue
        if not path.is_file():
            raise PreparedDataError(
                f"{path}: file for knowledge field '{name}' is missing"
            )
        if verify_checksums:
            _check_sha256(path, entry)
        if n_items is not None and path.suffix == ".json":
            texts = _read_json(path)
            if not isinstance(texts, list) or len(texts) != n_items:
                got = len(texts) if isinstance(texts, list) else type(texts).__name__
                raise PreparedDataError(
                    f"{path}: expected a list of {n_items} texts (one per item), got {got}"
                )


def _check_image_dir(
    path: Path, name: str, n_items: Optional[int], entry: Mapping[str, Any]
) -> None:
    """Every item has an image, unless the manifest allows gaps (real catalogues
    lack some photos); then the gaps must number what the manifest records."""
    if not path.is_dir():
        raise PreparedDataError(
            f"{path}: image directory for knowledge field '{name}' is missing"
        )
    if n_items is None:
        return
    pattern = entry.get("pattern", IMAGE_PATTERN)
    try:
        names = [pattern.format(item_id=i) for i in range(n_items)]
    except (KeyError, IndexError, ValueError) as e:
        raise PreparedDataError(
            f"{path}: knowledge field '{name}': pattern {pattern!r} must name only "
            f"{{item_id}} ({e!r})"
        ) from None
    present = set(os.listdir(path))
    missing = [i for i, file in enumerate(names) if file not in present]
    if entry.get("images_may_be_missing"):
        recorded = entry.get("missing")
        if recorded is not None and len(missing) != int(recorded):
            raise PreparedDataError(
                f"{path}: {len(missing)} of {n_items} item images are missing, but the "
                f"manifest records {recorded} for knowledge field '{name}'; images were "
                "added or removed after the data was prepared"
            )
        return
    if missing:
        raise PreparedDataError(
            f"{path}: {len(missing)} of {n_items} item images are missing "
            f"(first: {names[missing[0]]}) for knowledge field '{name}'"
        )
