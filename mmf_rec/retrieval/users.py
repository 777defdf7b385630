"""Each user's current state, as the user-side fields of a model batch.

Prepared data has no user table: user features and the history live on each
interaction row. To recommend "now" for a user id, the state is rebuilt from
the user's most recent row across every split: its dense and categorical
features, and a history that also counts that row's own click (the way the
data's history column is built: most recent first, clicks on items that
were held out of training not counted). The items a user clicked anywhere
are their "seen" items, for ``exclude_seen``.

An id with no rows (or outside the id range) is a cold user: the fallback
is the features-only state (mean dense features, every categorical and the
history unknown), which the towers were trained to handle by id dropout.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from mmf_rec.data.prepared import DENSE_COLUMN, TIMESTAMP_COLUMN, PreparedData
from mmf_rec.log import log
from mmf_rec.schema import PAD_ID


@dataclass
class UserBatch:
    """User-side model fields for B users, and which of them are cold."""

    fields: Dict[str, torch.Tensor]
    user_ids: List[int]
    cold: np.ndarray  # (B,) bool


class UserStates:
    def __init__(self, data: PreparedData, user_feature: str = "user_id",
                 history_feature: Optional[str] = "history"):
        schema = data.schema
        self.user_feature = user_feature
        self.num_users = schema.sparse_feature(user_feature).cardinality
        self.history_feature = history_feature
        if history_feature is not None:
            self.history_len = schema.sparse_feature(history_feature).max_len
        self.sparse_features = [f for f in schema.sparse if f.side != "item"]
        self.has_dense = bool(schema.dense)
        item_feature = data.item_feature
        is_cold = (np.asarray(data.items["is_cold"], dtype=bool)
                   if data.items is not None and "is_cold" in data.items else None)

        # every row of every split, in time order (split order breaks ties)
        columns = {name: [] for name in ("user", "item", "label", "time", "split", "row")}
        for s, name in enumerate(data.split_names):
            table = data.split(name)
            columns["user"].append(np.asarray(table[user_feature][:, 0]))
            columns["item"].append(np.asarray(table[item_feature][:, 0]))
            columns["label"].append(np.asarray(table[schema.label]) > 0.5)
            time = (np.asarray(table[TIMESTAMP_COLUMN]) if TIMESTAMP_COLUMN in table
                    else np.arange(table.rows))
            columns["time"].append(time.astype(np.int64))
            columns["split"].append(np.full(table.rows, s))
            columns["row"].append(np.arange(table.rows))
        rows = {k: np.concatenate(v) for k, v in columns.items()}
        order = np.lexsort((rows["split"], rows["time"]))
        rows = {k: v[order] for k, v in rows.items()}

        # the last row of each user
        users, last = np.unique(rows["user"][::-1], return_index=True)
        last = len(order) - 1 - last
        self.known = np.zeros(self.num_users, dtype=bool)
        self.known[users] = True
        self.dense = np.zeros((self.num_users, len(schema.dense)), dtype=np.float32)
        self.sparse = {f.name: np.full((self.num_users, f.max_len), PAD_ID, dtype=np.int64)
                       for f in self.sparse_features}
        for s, name in enumerate(data.split_names):
            table = data.split(name)
            mine = rows["split"][last] == s
            who, at = users[mine], rows["row"][last][mine]
            if not len(who):
                continue
            if self.has_dense:
                self.dense[who] = np.asarray(table[DENSE_COLUMN])[at]
            for f in self.sparse_features:
                self.sparse[f.name][who] = np.asarray(table[f.name])[at]
        if history_feature is not None:
            # the last row's click enters the history, as it would for a next row
            counted = rows["label"][last] & (
                ~is_cold[rows["item"][last]] if is_cold is not None else True)
            who = users[counted]
            history = self.sparse[history_feature]
            history[who] = np.concatenate(
                [rows["item"][last][counted][:, None], history[who][:, :-1]], axis=1)
        self.mean_dense = self.dense[self.known].mean(axis=0) if self.known.any() else self.dense[0]

        # items each user clicked, as CSR
        clicked = rows["label"]
        pairs = np.unique(np.stack([rows["user"][clicked], rows["item"][clicked]], 1), axis=0)
        self.seen_indptr = np.searchsorted(pairs[:, 0], np.arange(self.num_users + 1))
        self.seen_items = pairs[:, 1]
        self._warned_cold = set()

    def is_known(self, user: int) -> bool:
        return 0 <= user < self.num_users and bool(self.known[user])

    def seen(self, user: int) -> np.ndarray:
        """Items the user clicked (sorted); empty for a cold user."""
        if not self.is_known(user):
            return np.zeros(0, dtype=np.int64)
        return self.seen_items[self.seen_indptr[user]:self.seen_indptr[user + 1]]

    def batch(self, user_ids: Sequence[int]) -> UserBatch:
        """User-side fields (``dense``, ``sparse_<feature>``) of these users."""
        ids = np.asarray([int(u) for u in user_ids], dtype=np.int64)
        cold = np.array([not self.is_known(u) for u in ids], dtype=bool)
        rows = np.where(cold, 0, ids)
        fields = {}
        if self.has_dense:
            dense = self.dense[rows].copy()
            dense[cold] = self.mean_dense
            fields[DENSE_COLUMN] = torch.from_numpy(dense)
        for name, values in self.sparse.items():
            column = values[rows].copy()
            column[cold] = PAD_ID
            fields[f"sparse_{name}"] = torch.from_numpy(column)
        for user in ids[cold].tolist():
            if user not in self._warned_cold:
                self._warned_cold.add(user)
                log(f"user {user} is unknown (no interactions in the data): using the "
                    "features-only fallback (mean dense features, no id, no history)",
                    level="warning")
        return UserBatch(fields=fields, user_ids=ids.tolist(), cold=cold)
