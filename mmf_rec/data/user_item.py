"""The files of a user-item dataset, written one way by every real-data reader.

H&M, MovieLens and bring-your-own catalogues all have users and items with
categorical features, each row's history of items, dense user features,
item texts and maybe photos. They share one schema layout, one way to turn
positives and their sampled negatives into rows, one split writer and one
item table, so a model sees the same columns whichever reader made the data.
"""

import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mmf_rec.data.prepared_layout import (
    DENSE_COLUMN, DESCRIPTIONS_FILE, IMAGES_DIR, ITEMS, LABEL_COLUMN, SAMPLED_COLUMN,
    TIMESTAMP_COLUMN, write_column, write_json, write_table)
from mmf_rec.data.report import DataInputError
from mmf_rec.schema import DenseFeature, KnowledgeField, Schema, SparseFeature

IMAGE_MODES = ("auto", "copy", "symlink", "none")
AUTO_COPY_LIMIT_BYTES = 256 << 20  # images="auto": copy up to this, else symlink


def build_schema(name: str, n_users: int, user_features: Mapping[str, int], n_items: int,
                 item_features: Mapping[str, int], dense: Sequence[str], history_len: int,
                 with_images: bool) -> Schema:
    """user_id, the users' categoricals (name -> vocabulary size), item_id, the
    items' categoricals, then ``history``; dense features are the user's."""
    user = [SparseFeature("user_id", n_users, side="user")] + [
        SparseFeature(f, size, side="user") for f, size in user_features.items()]
    item = [SparseFeature("item_id", n_items, side="item")] + [
        SparseFeature(f, size, side="item") for f, size in item_features.items()]
    history = SparseFeature("history", n_items, side="user", pooling="mean",
                            max_len=history_len)
    knowledge = [KnowledgeField("description", kind="text")]
    if with_images:
        knowledge.append(KnowledgeField("image", kind="image"))
    return Schema(dense=tuple(DenseFeature(f, side="user") for f in dense),
                  sparse=(*user, *item, history), knowledge=tuple(knowledge),
                  label=LABEL_COLUMN, source=name)


def with_negatives(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray,
                   history: np.ndarray, label: np.ndarray, negatives: np.ndarray
                   ) -> Dict[str, np.ndarray]:
    """Each row followed by its (rows, k) sampled negatives, which share its
    user, time and history; -1 entries (none found) are left out."""
    k = negatives.shape[1]
    items = np.concatenate([item[:, None], negatives], axis=1)
    labels = np.zeros((len(item), 1 + k), dtype=np.float32)
    labels[:, 0] = label
    sampled = np.ones((len(item), 1 + k), dtype=bool)
    sampled[:, 0] = False
    present = (items >= 0).ravel()
    return {
        "user": np.repeat(user, 1 + k)[present],
        "item": items.ravel()[present],
        "timestamp": np.repeat(timestamp, 1 + k)[present],
        "history": np.repeat(history, 1 + k, axis=0)[present],
        "label": labels.ravel()[present],
        "sampled": sampled.ravel()[present],
    }


def write_split(directory: Path, schema: Schema, rows: Mapping[str, np.ndarray],
                user_features: Mapping[str, np.ndarray], item_features: Mapping[str, np.ndarray],
                dense: np.ndarray) -> Dict[str, Any]:
    """A split's columns from its rows (user, item, timestamp, history, label,
    sampled) and the per-user / per-item feature ids. One column at a time
    (gathered, written, freed): full H&M splits are large."""
    u, i = rows["user"], rows["item"]
    own = {"user_id": u, "item_id": i, "history": rows["history"]}
    files = {DENSE_COLUMN: write_column(directory, DENSE_COLUMN, dense[u])}
    for f in schema.sparse:
        if f.name in own:
            values = own[f.name]
        elif f.name in user_features:
            values = user_features[f.name][u]
        else:
            values = item_features[f.name][i]
        files[f.name] = write_column(directory, f.name,
                                     values.astype(np.int64).reshape(len(u), f.max_len))
    files[schema.label] = write_column(directory, schema.label,
                                       rows["label"].astype(np.float32))
    files[TIMESTAMP_COLUMN] = write_column(directory, TIMESTAMP_COLUMN,
                                           rows["timestamp"].astype(np.int64))
    files[SAMPLED_COLUMN] = write_column(directory, SAMPLED_COLUMN, rows["sampled"].astype(bool))
    return {"rows": int(len(u)), "files": files}


def write_images(root: Path, found: Mapping[int, Path], n_items: int, mode: str,
                 unmatched: Sequence[str]) -> Optional[Dict[str, Any]]:
    """Copy (or link) each matched photo to items/images/<item_id><suffix>;
    returns the manifest's image entry (None without photos)."""
    if mode == "none" or not found:
        return None
    suffixes = sorted({p.suffix.lower() for p in found.values()})
    if len(suffixes) > 1:
        example = {s: next(str(p) for p in found.values() if p.suffix.lower() == s)
                   for s in suffixes}
        raise DataInputError(f"images: photos come in several formats {example}; "
                             "convert them to one so items/images has one file pattern")
    suffix = suffixes[0]
    if mode == "auto":
        size = sum(p.stat().st_size for p in found.values())
        mode = "copy" if size <= AUTO_COPY_LIMIT_BYTES else "symlink"
    directory = root / ITEMS / IMAGES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for item, path in sorted(found.items()):
        target = directory / f"{item}{suffix}"
        if mode == "copy":
            shutil.copyfile(path, target)
        else:
            os.symlink(path.resolve(), target)
    return {
        "kind": "image", "path": f"{ITEMS}/{IMAGES_DIR}",
        "pattern": "{item_id}" + suffix,
        "images_may_be_missing": True,
        "present": len(found), "missing": n_items - len(found),
        "mode": mode, "unmatched_files": len(unmatched),
    }


def write_items(root: Path, categorical: Mapping[str, np.ndarray],
                source_ids: Tuple[str, np.ndarray], is_cold: np.ndarray,
                descriptions: List[str], images: Mapping[int, Path], images_mode: str,
                unmatched: Sequence[str] = ()) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The item table (row = item id; ``source_ids`` names the source's ids),
    the descriptions and the photos; returns the manifest's ``items`` and
    ``knowledge`` entries."""
    n_items = len(is_cold)
    image_entry = write_images(root, images, n_items, images_mode, unmatched)
    has_image = np.zeros(n_items, dtype=bool)
    has_image[list(images)] = True
    columns = {"item_id": np.arange(n_items, dtype=np.int64).reshape(-1, 1)}
    columns.update({f: ids.reshape(-1, 1) for f, ids in categorical.items()})
    columns.update({source_ids[0]: source_ids[1], "is_cold": is_cold, "has_image": has_image})
    table = write_table(root / ITEMS, columns)
    knowledge = {"description": {
        "kind": "text", "path": f"{ITEMS}/{DESCRIPTIONS_FILE}",
        "sha256": write_json(root / ITEMS / DESCRIPTIONS_FILE, descriptions)}}
    if image_entry is not None:
        knowledge["image"] = image_entry
    return table, knowledge
