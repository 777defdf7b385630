"""Tiny hand-made prepared directories with known answers."""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pytest

from mmf_rec.data import prepared
from mmf_rec.schema import DenseFeature, Schema, SparseFeature

SAMPLED = getattr(prepared, "SAMPLED_COLUMN", "sampled")
HISTORY_LEN = 3

# (user, item, label, sampled, timestamp)
Row = Tuple[int, int, float, bool, int]


def schema(n_users: int, n_items: int) -> Schema:
    return Schema(
        dense=(DenseFeature("age", side="user"),),
        sparse=(SparseFeature("user_id", n_users, side="user"),
                SparseFeature("item_id", n_items, side="item"),
                SparseFeature("history", n_items, side="user", pooling="mean",
                              max_len=HISTORY_LEN)))


def split_columns(rows: Sequence[Row], first_row_id: int, n_items: int) -> Dict[str, np.ndarray]:
    """Columns of one split; ``dense`` holds a global row id, so a test can
    tell which row a query's fields came from; ``history`` holds the user id
    (modulo the catalogue size)."""
    n = len(rows)
    table = np.array(rows, dtype=np.float64).reshape(n, 5)
    history = np.full((n, HISTORY_LEN), -1, np.int64)
    history[:, 0] = table[:, 0].astype(np.int64) % n_items
    return {
        "user_id": table[:, 0:1].astype(np.int64),
        "item_id": table[:, 1:2].astype(np.int64),
        "history": history,
        "dense": (first_row_id + np.arange(n, dtype=np.float32))[:, None],
        "label": table[:, 2].astype(np.float32),
        SAMPLED: table[:, 3].astype(bool),
        "timestamp": table[:, 4].astype(np.int64),
    }


def write_prepared(root, n_users: int, n_items: int, splits: Dict[str, Sequence[Row]],
                   is_cold: Optional[Sequence[int]] = None):
    """Write and load a prepared directory; ``is_cold`` lists the cold items."""
    cold = np.zeros(n_items, bool)
    cold[list(is_cold or [])] = True
    entries, offset = {}, 0
    for name, rows in splits.items():
        entries[name] = prepared.write_table(root / name, split_columns(rows, offset, n_items))
        offset += len(rows)
    items = prepared.write_table(root / prepared.ITEMS, {"is_cold": cold})
    prepared.write_manifest(root, {
        "name": "tiny", "schema": schema(n_users, n_items).to_dict(), "splits": entries,
        "items": items, "item_feature": "item_id", "user_feature": "user_id"})
    return prepared.load_prepared(root, verify_checksums=False)


@pytest.fixture
def make_prepared(tmp_path):
    counter = iter(range(1000))

    def make(*args, **kwargs):
        return write_prepared(tmp_path / f"data{next(counter)}", *args, **kwargs)

    return make
