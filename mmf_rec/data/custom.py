"""Bring-your-own catalogue: tables described in one yaml -> the prepared format.

``python tools/prepare.py --config data.yaml --out DIR`` reads::

    format: custom            # or movielens | hm | criteo (then: src + config)
    name: my_shop             # recorded in the manifest
    items:
      path: items.csv         # .csv / .tsv / .parquet, relative to this yaml
      id: item_id
      categorical: [category, brand]
      text: [title, description]     # joined into the item's description
      image: image_path       # optional: a column of image paths ...
      images_root: images     # ... relative to this folder (default: the yaml's)
    users:                    # optional; without it, users are the ids seen
      path: users.csv
      id: user_id
      dense: [age, income]    # numbers; missing ones are imputed and flagged
      categorical: [region]
    interactions:
      path: clicks.csv
      user: user_id
      item: item_id
      label: clicked          # 0/1; or `rating: stars`; or neither (implicit)
      timestamp: ts           # unix seconds or ISO 8601 text; none: file order
    split: {protocol: time}   # see SplitConfig in splits.py
    bad_rows: {policy: skip, max_bad_fraction: 0.01}
    images: auto              # auto | copy | symlink | none

For ``format: movielens|hm|criteo`` the yaml holds ``src`` (the folder with
the published files) and ``config`` (that reader's options). Every row that
cannot be used is counted per reason with its first line numbers (see
``report.py``); the output is built beside ``--out`` and renamed in only when
complete.
"""

import importlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from mmf_rec.data.config import config_from_mapping
from mmf_rec.data.custom_tables import CustomDataError, Table
from mmf_rec.data.interactions import Catalogue, Interactions, Population, build_prepared
from mmf_rec.data.report import RowReport, atomic_output
from mmf_rec.data.splits import SplitConfig
from mmf_rec.data.user_item import IMAGE_MODES
from mmf_rec.data.vocab import encode

logger = logging.getLogger(__name__)

NAME = "custom"
# ``format:`` -> the built-in reader that prepares it: prepare(src, out_dir, config).
# Named, not imported, so that a custom catalogue loads no other reader.
READERS = {
    "movielens": ("mmf_rec.data.movielens", "prepare_movielens"),
    "hm": ("mmf_rec.data.hm", "prepare_hm"),
    "criteo": ("mmf_rec.data.criteo", "prepare_criteo"),
}
# Readers that write into out_dir as they go: here their output is built beside it.
WRITES_IN_PLACE = ("hm",)
FORMATS = ("custom", *READERS)
TOP_KEYS = {"format", "name", "items", "users", "interactions", "split", "bad_rows",
            "images"}
TABLE_KEYS = {
    "items": {"path", "id", "categorical", "text", "image", "images_root", "delimiter"},
    "users": {"path", "id", "dense", "categorical", "delimiter"},
    "interactions": {"path", "user", "item", "label", "rating", "timestamp", "delimiter"},
}
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01


# -- the yaml ----------------------------------------------------------------------
def _section(spec: Mapping[str, Any], key: str, required: bool) -> Optional[Dict[str, Any]]:
    value = spec.get(key)
    if value is None:
        if required:
            raise CustomDataError(f"data yaml: section '{key}' is required")
        return None
    if not isinstance(value, Mapping):
        raise CustomDataError(f"data yaml: '{key}' must be a mapping, got {value!r}")
    unknown = sorted(set(value) - TABLE_KEYS[key])
    if unknown:
        raise CustomDataError(f"data yaml: {key}: unknown keys {unknown}; expected some of "
                              f"{sorted(TABLE_KEYS[key])}")
    return dict(value)


def _names(section: Mapping[str, Any], key: str, where: str) -> List[str]:
    value = section.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise CustomDataError(f"data yaml: {where}.{key}: expected a list of column names, "
                              f"got {value!r}")
    return list(value)


def _one(section: Mapping[str, Any], key: str, where: str, required=True) -> Optional[str]:
    value = section.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise CustomDataError(f"data yaml: {where}.{key}: expected a column name, got {value!r}")
    return value


def _path(base: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise CustomDataError(f"data yaml: {where}: expected a path, got {value!r}")
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    return path if path.is_absolute() else base / path


# -- tables -> catalogue, population, interactions -------------------------------
def _unique_rows(table: Table, ids: List[Optional[str]], report: RowReport) -> np.ndarray:
    """Rows to keep: decodable, with an id, first of their id (in file order)."""
    missing = np.asarray([v is None for v in ids]) & table.keep
    report.drop(f"{table.name}.missing_id", int(missing.sum()), table.where(missing),
                "the id cell is empty")
    seen, duplicate = set(), np.zeros(len(ids), dtype=bool)
    keep = table.keep & ~missing
    for row in np.flatnonzero(keep):
        if ids[row] in seen:
            duplicate[row] = True
        seen.add(ids[row])
    report.drop(f"{table.name}.duplicate_id", int(duplicate.sum()), table.where(duplicate),
                "an id seen on an earlier row; the first is kept")
    rows = np.flatnonzero(keep & ~duplicate)
    if rows.size == 0:
        raise CustomDataError(f"{table.path}: no row has a usable id")
    return rows[np.argsort(np.asarray([ids[r] for r in rows]), kind="stable")]


def readable_image(path: Path) -> bool:
    """Whether the file decodes as an image. An empty or truncated file would
    otherwise count as present and fail only when training reads it. JPEGs
    decode at 1/8 scale: every byte is still read, at a fraction of the cost."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            picture.draft("RGB", (picture.width // 8 or 1, picture.height // 8 or 1))
            picture.load()
        return True
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def read_items(spec: Dict[str, Any], base: Path, split: SplitConfig,
               report: RowReport, images: str) -> Catalogue:
    where = "items"
    id_column = _one(spec, "id", where)
    categorical = _names(spec, "categorical", where)
    text = _names(spec, "text", where)
    image = _one(spec, "image", where, required=False)
    table = Table(_path(base, spec.get("path"), "items.path"), "items",
                  [id_column, *categorical, *text, *([image] if image else [])], report,
                  spec.get("delimiter"))
    rows = _unique_rows(table, table.values[id_column], report)
    keys = [table.values[id_column][r] for r in rows]
    vocab, features = {}, {}
    for column in categorical:
        vocab[column], features[column] = encode(
            [table.values[column][r] for r in rows], split.min_count, split.max_vocab)
    descriptions, empty = [], []
    for n, r in enumerate(rows):
        parts = [table.values[c][r] for c in text if table.values[c][r]]
        descriptions.append(". ".join(p.rstrip(".") for p in parts) + "." if parts else "")
        if not parts:
            empty.append(r)
    if text:
        report.repair("items.empty_text", len(empty), table.where(np.asarray(empty, int)),
                      "every text column is empty: the description is ''")
    found: Dict[int, Path] = {}
    if image and images != "none":
        root = _path(base, spec.get("images_root") or ".", "items.images_root")
        absent, unreadable = [], []
        for n, r in enumerate(rows):
            value = table.values[image][r]
            path = _path(root, value, "items.image") if value else None
            if path is None or not path.is_file():
                absent.append(r)
            elif not readable_image(path):
                unreadable.append(r)
            else:
                found[n] = path
        report.repair("items.missing_image", len(absent), table.where(np.asarray(absent, int)),
                      "no path, or no file there: the item's image is masked")
        report.repair("items.unreadable_image", len(unreadable),
                      table.where(np.asarray(unreadable, int)),
                      "the file does not decode as an image (empty or truncated?): "
                      "the item's image is masked")
    return Catalogue(keys=keys, categorical=features, vocab=vocab,
                     descriptions=descriptions, images=found)


def read_users(spec: Optional[Dict[str, Any]], base: Path, seen_ids: List[str],
               split: SplitConfig, report: RowReport) -> Population:
    if spec is None:
        keys = sorted(set(seen_ids))
        return Population(keys, {}, {})
    where = "users"
    id_column = _one(spec, "id", where)
    dense_columns = _names(spec, "dense", where)
    categorical = _names(spec, "categorical", where)
    table = Table(_path(base, spec.get("path"), "users.path"), "users",
                  [id_column, *dense_columns, *categorical], report, spec.get("delimiter"))
    rows = _unique_rows(table, table.values[id_column], report)
    keys = [table.values[id_column][r] for r in rows]
    vocab, features = {}, {}
    for column in categorical:
        vocab[column], features[column] = encode(
            [table.values[column][r] for r in rows], split.min_count, split.max_vocab)
    raw = {}
    for column in dense_columns:
        values, unparsable = [], []
        for r in rows:
            cell = table.values[column][r]
            try:
                values.append(float(cell) if cell is not None else np.nan)
            except ValueError:
                values.append(np.nan)
                unparsable.append(r)
        report.repair(f"users.{column}_unparsable", len(unparsable),
                      table.where(np.asarray(unparsable, int)), "not a number: imputed")
        raw[column] = np.asarray(values, dtype=np.float64)
    return Population(keys, features, vocab, raw)


def _timestamps(cells: List[Optional[str]]) -> Tuple[np.ndarray, np.ndarray]:
    """Unix seconds from integers or ISO 8601 text; (values, ok)."""
    out = np.zeros(len(cells), dtype=np.int64)
    ok = np.zeros(len(cells), dtype=bool)
    for n, cell in enumerate(cells):
        if cell is None:
            continue
        if re.fullmatch(r"[+-]?\d{1,18}", cell):
            out[n], ok[n] = int(cell), True
            continue
        try:
            value = np.datetime64(cell.replace("Z", ""), "s")
        except ValueError:
            continue
        if not np.isnat(value):
            out[n], ok[n] = int(value.astype(np.int64)), True
    return out, ok


def read_interactions(spec: Dict[str, Any], base: Path, report: RowReport
                      ) -> Tuple[Table, Dict[str, Any]]:
    where = "interactions"
    columns = {key: _one(spec, key, where, required=key in ("user", "item"))
               for key in ("user", "item", "label", "rating", "timestamp")}
    if columns["label"] and columns["rating"]:
        raise CustomDataError("data yaml: interactions: give label or rating, not both")
    table = Table(_path(base, spec.get("path"), "interactions.path"), "interactions",
                  [c for c in columns.values() if c], report, spec.get("delimiter"))
    return table, columns


def link(table: Table, columns: Dict[str, Optional[str]], catalogue: Catalogue,
         users: Population, report: RowReport) -> Interactions:
    """Raw cells -> Interactions; every unusable row is counted by reason."""
    n = table.rows
    keep = table.keep.copy()

    def drop(mask, reason, detail):
        mask = mask & keep
        report.drop(f"interactions.{reason}", int(mask.sum()), table.where(mask), detail)
        keep[mask] = False

    user_index = {k: i for i, k in enumerate(users.keys)}
    item_index = {k: i for i, k in enumerate(catalogue.keys)}
    user_cells, item_cells = table.values[columns["user"]], table.values[columns["item"]]
    drop(np.asarray([v is None for v in user_cells]) | np.asarray([v is None for v in item_cells]),
         "missing_id", "the user or item cell is empty")
    user = np.asarray([user_index.get(v, -1) for v in user_cells], dtype=np.int64)
    item = np.asarray([item_index.get(v, -1) for v in item_cells], dtype=np.int64)
    drop(user < 0, "unknown_user", "the user is not in the users table")
    drop(item < 0, "unknown_item", "the item is not in the items table")
    rating = label = None
    for key in ("rating", "label"):
        if not columns[key]:
            continue
        values = np.full(n, np.nan)
        for r, cell in enumerate(table.values[columns[key]]):
            try:
                values[r] = float(cell) if cell is not None else np.nan
            except ValueError:
                pass
        drop(~np.isfinite(values), f"bad_{key}", f"the {key} is missing or not a number")
        if key == "label":
            drop(np.isfinite(values) & ((values < 0) | (values > 1)), "label_out_of_range",
                 "labels must lie in [0, 1]")
            label = values
        else:
            rating = values
    if columns["timestamp"]:
        stamp, ok = _timestamps(table.values[columns["timestamp"]])
        drop(~ok, "bad_timestamp", "not unix seconds or ISO 8601")
        drop(ok & ((stamp < 0) | (stamp >= MAX_TIMESTAMP)), "timestamp_out_of_range",
             "before 1970 or after 2099")
    else:
        stamp = np.arange(n, dtype=np.int64)  # no time column: file order is time
    rows = np.flatnonzero(keep)
    fields_ = [user[rows], item[rows], stamp[rows]] + \
        [a[rows] for a in (rating, label) if a is not None]
    _, first = np.unique(np.stack(fields_, axis=1), axis=0, return_index=True)
    duplicate = np.zeros(n, dtype=bool)
    duplicate[np.setdiff1d(rows, rows[first])] = True
    drop(duplicate, "duplicate_row", "an exact repeat of an earlier row")
    rows = np.flatnonzero(keep)
    return Interactions(user=user[rows], item=item[rows], timestamp=stamp[rows],
                        rating=None if rating is None else rating[rows],
                        label=None if label is None else label[rows].astype(np.float32))


def prepare_custom(spec: Mapping[str, Any], base: Path, out_dir: Union[str, os.PathLike]
                   ) -> Dict[str, Any]:
    unknown = sorted(set(spec) - TOP_KEYS)
    if unknown:
        raise CustomDataError(f"data yaml: unknown keys {unknown}; expected some of "
                              f"{sorted(TOP_KEYS)}")
    name = str(spec.get("name") or NAME)
    split = config_from_mapping(SplitConfig, spec.get("split") or {}, "split", CustomDataError,
                                ignore=("preparer_version",))
    bad = spec.get("bad_rows") or {}
    if not isinstance(bad, Mapping) or set(bad) - {"policy", "max_bad_fraction"}:
        raise CustomDataError(f"data yaml: bad_rows: expected policy and/or "
                              f"max_bad_fraction, got {bad!r}")
    report = RowReport(policy=str(bad.get("policy", "skip")),
                       max_bad_fraction=float(bad.get("max_bad_fraction", 0.01)))
    images = str(spec.get("images", "auto"))
    if images not in IMAGE_MODES:
        raise CustomDataError(f"data yaml: images: expected auto, copy, symlink or none, "
                              f"got {images!r}")
    items_spec = _section(spec, "items", True)
    users_spec = _section(spec, "users", False)
    inter_spec = _section(spec, "interactions", True)
    catalogue = read_items(items_spec, base, split, report, images)
    table, columns = read_interactions(inter_spec, base, report)
    users = read_users(users_spec, base, [v for v in table.values[columns["user"]] if v],
                       split, report)
    inter = link(table, columns, catalogue, users, report)
    extra = {"preparer": {"format": "custom", "split": split.to_dict()},
             "source": {key: str(_path(base, s.get("path"), key)) for key, s in
                        (("items", items_spec), ("users", users_spec),
                         ("interactions", inter_spec)) if s}}
    with atomic_output(out_dir) as tmp:
        return build_prepared(tmp, name, catalogue, users, inter, split, report, extra,
                              images_mode=images)


def prepare_from_yaml(config_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike]
                      ) -> Dict[str, Any]:
    """Read a data yaml and dispatch on its ``format``; returns the manifest."""
    import yaml

    config_path = Path(config_path)
    try:
        spec = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CustomDataError(f"{config_path}: data yaml does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CustomDataError(f"{config_path}: not a readable yaml file ({e})") from None
    if not isinstance(spec, Mapping):
        raise CustomDataError(f"{config_path}: expected a mapping at the top, got {spec!r}")
    base = config_path.resolve().parent
    kind = spec.get("format", "custom")
    if kind not in FORMATS:
        raise CustomDataError(f"{config_path}: format: expected one of {list(FORMATS)}, "
                              f"got {kind!r}")
    if kind == "custom":
        return prepare_custom({k: v for k, v in spec.items() if k != "format"}, base, out_dir)
    extra = sorted(set(spec) - {"format", "src", "config"})
    if extra:
        raise CustomDataError(f"{config_path}: format {kind} takes only src and config, "
                              f"not {extra}")
    src = _path(base, spec.get("src"), "src")
    reader_config = spec.get("config") or {}
    module, function = READERS[kind]
    prepare = getattr(importlib.import_module(module), function)
    if kind not in WRITES_IN_PLACE:
        return prepare(src, out_dir, reader_config)
    with atomic_output(out_dir) as tmp:
        return prepare(src, tmp, reader_config)
