"""What the service answers about users and items, and how it checks what a
request names: JSON records of items and users, the example users, the
schema a new user's POST may give, that user's model fields, and the checks
on user and item ids, item lists and k. A refused value raises
:class:`RequestError` with its HTTP status.

Every item carries ``new``: it has no observed training interaction
(``Recommender.is_new``, from ``mmf_rec.data.protocol.seen_in_training``),
so its id says nothing and its content and attributes carry it.
"""

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from mmf_rec.data.prepared import DENSE_COLUMN
from mmf_rec.schema import PAD_ID

SNIPPET = 80


class RequestError(ValueError):
    """A request the service refuses: ``status`` is the HTTP status (4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Records:
    """Users and items of a ``Recommender``'s prepared data, as the service
    shows them; ``k_retrieve`` (at most the index size) and ``max_k`` (at
    most ``k_retrieve``) bound what a request may ask for."""

    def __init__(self, recommender, k_retrieve: int = 200, max_k: int = 100,
                 image_route: str = "/images/"):
        self.recommender = recommender
        self.data = recommender.data
        if self.data is None:
            raise ValueError("the service needs the prepared data (Recommender(data=...))")
        self.users = recommender.users
        self.k_retrieve = min(int(k_retrieve), len(recommender.index))
        self.max_k = min(int(max_k), self.k_retrieve)
        self.image_route = image_route
        schema = self.data.schema
        self.num_items = int(self.data.items.rows)
        self.descriptions = list(recommender.descriptions or self.data.descriptions())
        self.item_columns = {name: values for name, values in self.data.items.columns.items()
                             if name not in ("item_id", "has_image")}
        if "has_image" in self.data.items:
            self.has_image = np.asarray(self.data.items["has_image"], dtype=bool).copy()
        else:
            self.has_image = np.array([self.data.image_path(i).is_file()
                                       for i in range(self.num_items)])
        self.dense_names = list(schema.dense_names)
        hist = self.users.history_feature
        self.categorical = {f.name: f.cardinality for f in self.users.sparse_features
                            if f.name not in (self.users.user_feature, hist)}
        self.history_len = self.users.history_len if hist is not None else 0
        self.dense_bounds = _dense_bounds(self.users.dense[self.users.known]
                                          if self.users.known.any() else self.users.dense)
        self.external_ids = _external_user_ids(self.data.root)
        self.new_items = recommender.is_new

    # -- users ----------------------------------------------------------------------------
    @property
    def num_users(self) -> int:
        return int(self.users.num_users)

    def check_user(self, user: int) -> None:
        if not self.users.is_known(user):
            raise RequestError(
                f"unknown user {user}: known users have ids in [0, {self.num_users}) and at "
                "least one interaction; POST /recommend with features for a new user", 404)

    def history(self, user: int) -> List[int]:
        """The user's last clicked items, most recent first."""
        if self.history_len == 0 or not self.users.is_known(user):
            return []
        row = self.users.sparse[self.users.history_feature][user]
        return [int(i) for i in row if i != PAD_ID]

    def user(self, user: int) -> Dict[str, Any]:
        self.check_user(user)
        out = {
            "user": user,
            "external_id": (None if self.external_ids is None else self.external_ids[user]),
            "features": {**{name: float(v) for name, v in
                            zip(self.dense_names, self.users.dense[user])},
                         **{name: int(self.users.sparse[name][user][0])
                            for name in self.categorical}},
            "history": [self.item(i, full=False) for i in self.history(user)],
            "clicked": int(len(self.users.seen(user))),
        }
        return out

    def example_users(self, count: int = 50) -> List[Dict[str, Any]]:
        """Known users to pick from, those with the most pictured history first."""
        known = np.flatnonzero(self.users.known)
        if self.history_len:
            history = self.users.sparse[self.users.history_feature][known]
            pictured = np.where(history >= 0, self.has_image[np.clip(history, 0, None)], False)
            length = (history >= 0).sum(1)
            order = np.lexsort((known, -length, -pictured.sum(1)))
            known = known[order]
        return [{"user": int(u), "history": len(self.history(int(u)))} for u in known[:count]]

    def schema(self) -> Dict[str, Any]:
        """What a new user's POST may give."""
        return {
            "dense": {name: float(v) for name, v in zip(self.dense_names, self.users.mean_dense)},
            "categorical": dict(self.categorical),
            "history_len": self.history_len,
            "num_items": self.num_items,
            "max_k": self.max_k,
            "k_retrieve": self.k_retrieve,
        }

    def new_user_fields(self, features: Mapping[str, Any],
                        history: Sequence[Any] = ()) -> Dict[str, torch.Tensor]:
        """One row of user-side fields for a user with no id: the given dense
        values (others: the mean), categorical ids (others: unknown) and
        history (item ids, most recent first)."""
        if not isinstance(features, Mapping):
            raise RequestError("'features' must be an object of feature name -> value")
        unknown = sorted(set(features) - set(self.dense_names) - set(self.categorical))
        if unknown:
            raise RequestError(f"unknown features {unknown}; a new user may give "
                               f"{self.dense_names + sorted(self.categorical)}")
        fields = {}
        if self.users.has_dense:
            dense = self.users.mean_dense.astype(np.float32).copy()
            for j, name in enumerate(self.dense_names):
                if name in features and features[name] not in (None, ""):
                    value = _number(features[name], name)
                    low, high = self.dense_bounds[j]
                    if not low <= value <= high:
                        raise RequestError(
                            f"feature '{name}' must be in [{low:.4g}, {high:.4g}] (the known "
                            f"users' range, widened by its width on each side), got {value:.6g}")
                    dense[j] = value
            fields[DENSE_COLUMN] = torch.from_numpy(dense[None])
        for name, values in self.users.sparse.items():
            fields[f"sparse_{name}"] = torch.full((1, values.shape[1]), PAD_ID, dtype=torch.long)
        for name, cardinality in self.categorical.items():
            if name in features and features[name] not in (None, ""):
                value = _integer(features[name], name)
                if not 0 <= value < cardinality:
                    raise RequestError(f"feature '{name}' must be in [0, {cardinality}), "
                                       f"got {value}")
                fields[f"sparse_{name}"][0, 0] = value
        items = self.check_items(history, "history")
        if items and self.history_len == 0:
            raise RequestError("this retriever reads no history")
        if len(items) > self.history_len:
            raise RequestError(f"history holds at most {self.history_len} items, got {len(items)}")
        if items:
            fields[f"sparse_{self.users.history_feature}"][0, :len(items)] = torch.tensor(items)
        return fields

    def check_items(self, items: Any, what: str = "items") -> List[int]:
        if items is None:
            return []
        if isinstance(items, str):
            items = [x for x in items.replace(" ", ",").split(",") if x]
        if not isinstance(items, (list, tuple)):
            raise RequestError(f"'{what}' must be a list of item ids")
        out = [_integer(i, what) for i in items]
        bad = [i for i in out if not 0 <= i < self.num_items]
        if bad:
            raise RequestError(f"{what}: item ids {bad[:5]} are outside [0, {self.num_items})")
        return out

    def check_k(self, k: Any) -> int:
        k = _integer(k, "k")
        if not 1 <= k <= self.max_k:
            raise RequestError(f"k must be in [1, {self.max_k}], got {k}")
        return k

    # -- items ----------------------------------------------------------------------------
    def check_item(self, item: int) -> None:
        if not 0 <= item < self.num_items:
            raise RequestError(f"unknown item {item}: items have ids in [0, {self.num_items})",
                               404)

    def item(self, item: int, full: bool = True) -> Dict[str, Any]:
        self.check_item(item)
        text = str(self.descriptions[item]) if item < len(self.descriptions) else ""
        out = {"item_id": item,
               "description": text if full or len(text) <= SNIPPET else text[:SNIPPET - 3] + "...",
               "image_url": f"{self.image_route}{item}" if self.has_image[item] else None,
               "new": bool(self.new_items[item])}
        if full:
            out["attributes"] = {name: _plain(values[item]) for name, values
                                 in self.item_columns.items()}
        return out

    def image(self, item: int):
        """(path, content type) of the item's image, or a 404."""
        self.check_item(item)
        path = self.data.image_path(item)
        if not path.is_file():
            raise RequestError(f"item {item} has no image", 404)
        suffix = path.suffix.lower()
        kind = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".webp": "image/webp", ".gif": "image/gif"}.get(suffix, "application/octet-stream")
        return path, kind


def _dense_bounds(dense: np.ndarray) -> List[tuple]:
    """Per dense feature, the values a new user may give: the range of the
    known users' values, widened by its width on each side (a model says
    nothing about values far outside what it was trained on, and an
    overflowing one would turn the scores into NaN)."""
    if dense.size == 0:
        return [(-1.0, 1.0)] * dense.shape[1]
    low, high = dense.min(0).astype(np.float64), dense.max(0).astype(np.float64)
    width = np.where(high > low, high - low, 1.0)
    return [(float(lo - w), float(hi + w)) for lo, hi, w in zip(low, high, width)]


def _external_user_ids(root) -> Optional[List[str]]:
    path = root / "users" / "customer_id.npy"
    if not path.is_file():
        return None
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]


def _plain(value):
    value = np.asarray(value).reshape(-1)
    value = value[0] if value.size == 1 else value
    return value.item() if hasattr(value, "item") else value.tolist()


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise RequestError(f"'{name}' must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise RequestError(f"'{name}' must be an integer, got {value!r}")


def _number(value: Any, name: str) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"'{name}' must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise RequestError(f"'{name}' must be finite, got {value!r}")
    return number
