"""Users, items and interactions -> the prepared format, under one evaluation protocol.

The MovieLens and bring-your-own readers parse their files into a
``Catalogue`` (items), a ``Population`` (users) and ``Interactions``, and
this module does the rest once: labels, splits, sampled negatives, each
row's history, the schema and the files. Protocols (``SplitConfig.protocol``):

* ``time``: train / val / test by timestamp quantiles over all interactions;
  the test-period rows of cold items (no observed training interaction) form
  ``cold``.
* ``cold_start``: as ``time``, and a seeded ``cold_item_fraction`` of the
  items is held out of training entirely; they are cold, and only their
  test-period rows are evaluated (``cold``), never their older ones.
* ``leave_last_out`` (NCF): per user, the latest positive is the test item
  (ties: the larger item id), the latest remaining one the validation item;
  each is scored against ``eval_negatives`` items (99) drawn without
  replacement from the ascending item ids the user has no interaction with
  (test: in all the data; val: in the training data), users in ascending id
  order, with ``numpy.random.default_rng(seed)`` (test) and ``seed + 1``
  (val). The defaults reproduce ``../shared/data/ml-100k-loo`` exactly. Each
  user's candidates are one block of rows, the held-out item first.

Seen and cold items, the cold split, the sampled negatives of training rows
(items that exist at the row's time, minus the user's positives up to then)
and the scaling of dense user features (training users' statistics) follow
``mmf_rec.data.protocol``, as every reader does.

Labels come from a rating threshold (``labels: rating``), or every
interaction is a positive (``implicit``; then ``negatives_per_positive``
sampled items follow each positive of every split under ``time`` /
``cold_start``, and each training positive under ``leave_last_out``; they
are marked ``sampled``). ``auto`` means implicit for leave_last_out (the NCF
protocol), ratings otherwise. History is the user's last ``history_len``
positives strictly before the row's timestamp, never a cold item.
"""

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

import numpy as np
import pyarrow as pa

from mmf_rec.data import hm
from mmf_rec.data import prepared as fmt
from mmf_rec.data import protocol
from mmf_rec.data.report import DataInputError, RowReport, write_report
from mmf_rec.schema import DenseFeature, KnowledgeField, Schema, SparseFeature

logger = logging.getLogger(__name__)

PROTOCOLS = ("time", "cold_start", "leave_last_out")
LABELS = ("auto", "rating", "implicit", "label")
UNKNOWN = hm.UNKNOWN
_HELD_OUT, _TRAIN_NEGATIVES = 1, 3  # random streams besides the eval lists'

C = TypeVar("C")


def config_from_mapping(cls: Type[C], data: Optional[Mapping[str, Any]], source: str,
                        error: Type[Exception] = DataInputError) -> C:
    """A flat config dataclass from a mapping, every value checked against its type."""
    data = dict(data or {})
    data.pop("preparer_version", None)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise error(f"{source}: unknown keys {unknown}; expected some of {known}")
    defaults, values = cls(), {}
    for key, value in data.items():
        kind = type(getattr(defaults, key))
        ok = True
        if kind is bool:
            ok = isinstance(value, bool)
            converted = value
        else:
            try:
                converted = kind(value)
                ok = kind in (float, str) or float(value) == converted
            except (TypeError, ValueError):
                ok = False
            ok = ok and not isinstance(value, bool) and not (kind is str and value is None)
            if kind is str and not isinstance(value, str):
                ok = False
        if not ok:
            raise error(f"{source}.{key}: expected {kind.__name__}, got {value!r}")
        values[key] = converted
    config = cls(**values)
    config.validate(source)
    return config


@dataclass(frozen=True)
class SplitConfig:
    protocol: str = "leave_last_out"
    labels: str = "auto"
    positive_rating: float = 4.0  # labels: rating -> rating >= this is positive
    eval_negatives: int = 99  # leave_last_out candidates besides the held-out item
    negatives_per_positive: int = 4  # implicit labels: sampled negatives per positive
    history_len: int = 5
    train_fraction: float = 0.8  # time / cold_start: quantiles of all timestamps
    val_fraction: float = 0.1
    cold_item_fraction: float = 0.1  # cold_start only
    seed: int = 2026
    min_count: int = 1  # categorical values seen fewer times share the unknown id 0
    max_vocab: int = 100_000

    def validate(self, source: str = "config") -> None:
        def need(ok, key, expected):
            if not ok:
                raise DataInputError(
                    f"{source}.{key}: expected {expected}, got {getattr(self, key)!r}")

        need(self.protocol in PROTOCOLS, "protocol", f"one of {list(PROTOCOLS)}")
        need(self.labels in LABELS, "labels", f"one of {list(LABELS)}")
        need(self.eval_negatives >= 1, "eval_negatives", ">= 1")
        need(self.negatives_per_positive >= 0, "negatives_per_positive", ">= 0")
        need(self.history_len >= 1, "history_len", ">= 1")
        need(0.0 < self.train_fraction < 1.0, "train_fraction", "in (0, 1)")
        need(0.0 < self.val_fraction < 1.0 - self.train_fraction, "val_fraction",
             "in (0, 1 - train_fraction) so the test period is not empty")
        need(0.0 <= self.cold_item_fraction < 1.0, "cold_item_fraction", "in [0, 1)")
        need(self.seed >= 0, "seed", ">= 0")
        need(self.min_count >= 1, "min_count", ">= 1")
        need(self.max_vocab >= 2, "max_vocab", ">= 2")

    def label_mode(self, has_rating: bool, has_label: bool) -> str:
        mode = self.labels
        if mode == "auto":
            if has_label:
                mode = "label"
            elif self.protocol == "leave_last_out" or not has_rating:
                mode = "implicit"
            else:
                mode = "rating"
        if mode == "rating" and not has_rating:
            raise DataInputError("labels: 'rating' needs a rating column")
        if mode == "label" and not has_label:
            raise DataInputError("labels: 'label' needs a label column")
        return mode

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# -- the three inputs --------------------------------------------------------
@dataclass
class Catalogue:
    """Items: row = item id; keys are the source's ids (as strings)."""

    keys: List[str]
    categorical: Dict[str, np.ndarray]  # feature -> (items,) ids, 0 unknown
    vocab: Dict[str, List[str]]
    descriptions: List[str]
    images: Dict[int, Path] = dataclasses.field(default_factory=dict)

    def __len__(self):
        return len(self.keys)


@dataclass
class Population:
    """Users: row = user id. Dense values stay raw (NaN = missing) until the
    splits are known: they are scaled with training users' statistics."""

    keys: List[str]
    categorical: Dict[str, np.ndarray]
    vocab: Dict[str, List[str]]
    dense_raw: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self):
        return len(self.keys)


@dataclass
class Interactions:
    user: np.ndarray  # int64 row ids into Population
    item: np.ndarray  # int64 row ids into Catalogue
    timestamp: np.ndarray  # int64 seconds
    rating: Optional[np.ndarray] = None  # float64
    label: Optional[np.ndarray] = None  # float32 in [0, 1]

    def take(self, index: np.ndarray) -> "Interactions":
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Interactions(self.user[index], self.item[index], self.timestamp[index],
                            pick(self.rating), pick(self.label))

    def __len__(self):
        return len(self.user)


def encode(values: Sequence[Optional[str]], min_count: int, max_vocab: int
           ) -> Tuple[List[str], np.ndarray]:
    """Strings -> ids by descending frequency; 0 = missing, rare or beyond the cap."""
    return hm.vocabulary(pa.array(list(values), pa.string()), min_count, max_vocab)


def scale_dense(raw: Mapping[str, np.ndarray], rows: int, report: RowReport, table: str,
                fit: np.ndarray) -> Tuple[List[str], np.ndarray, Dict[str, Any]]:
    """Standardise each column with the statistics of the ``fit`` rows (the
    users with a training row); NaN -> the mean (0 after scaling) plus a flag
    column.

    The flag (``<name>_missing``) lets a model tell an imputed value from a
    real average one; imputations and clipped extreme values are counted as
    repairs.
    """
    names, columns, stats = [], [], {}
    for name, values in raw.items():
        scaled, stats[name] = protocol.standardise(values, fit)
        missing = ~np.isfinite(np.asarray(values, dtype=np.float64))
        names.append(name)
        columns.append(scaled)
        report.repair(f"{table}.{name}_clipped", stats[name]["clipped"],
                      detail=f"beyond {protocol.EXTREME_IQRS:g} interquartile ranges of the "
                             "training users' values: clipped")
        if missing.any():
            report.repair(f"{table}.{name}_imputed", int(missing.sum()),
                          detail="missing or not finite: set to the mean and flagged")
            names.append(f"{name}_missing")
            columns.append(missing.astype(np.float64))
    if not names:  # models take a dense vector; give them a constant one
        names, columns = ["bias"], [np.ones(rows)]
    return names, np.stack(columns, axis=1).astype(np.float32), stats


# -- labels, splits, negatives -----------------------------------------------
def _labels(inter: Interactions, mode: str, config: SplitConfig) -> np.ndarray:
    if mode == "implicit":
        return np.ones(len(inter), dtype=np.float32)
    if mode == "rating":
        return (inter.rating >= config.positive_rating).astype(np.float32)
    return inter.label.astype(np.float32)


def _keys(user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    return np.unique(user.astype(np.int64) * n_items + item)


def _time_splits(inter: Interactions, n_items: int, config: SplitConfig,
                 first_seen: np.ndarray
                 ) -> Tuple[Dict[str, np.ndarray], np.ndarray, Dict[str, Any]]:
    """Row indices per split (inter is time-sorted) and the cold-item mask;
    ``first_seen`` is each item's first observed time."""
    t = inter.timestamp
    n = len(t)
    val_start = int(t[min(int(n * config.train_fraction), n - 1)])
    test_start = int(t[min(int(n * (config.train_fraction + config.val_fraction)), n - 1)])
    counts = [int((t < val_start).sum()), int(((t >= val_start) & (t < test_start)).sum()),
              int((t >= test_start).sum())]
    if min(counts) == 0:
        raise DataInputError(
            f"interactions: cannot split by time: train/val/test periods would hold "
            f"{counts} rows (val from {val_start}, test from {test_start}); the data has "
            f"{n} interactions over {len(np.unique(t))} distinct timestamps; change "
            "train_fraction / val_fraction")
    held = np.zeros(n_items, dtype=bool)
    if config.protocol == "cold_start":
        held = protocol.held_out(first_seen, test_start, config.cold_item_fraction,
                                 np.random.default_rng([config.seed, _HELD_OUT]))
    splits, is_cold, left_out = protocol.time_splits(inter.item, t, n_items, val_start,
                                                     test_start, held)
    reasons = {"held_out": int(held.sum()),
               "no_training_interaction": int((is_cold & ~held).sum())}
    info = {"val_start": val_start, "test_start": test_start, "cold_items": int(is_cold.sum()),
            "cold_item_reasons": reasons, "rows_left_out": left_out}
    return splits, is_cold, info


def _last_positive(user: np.ndarray, item: np.ndarray, t: np.ndarray, candidates: np.ndarray
                   ) -> np.ndarray:
    """Per user, the index (into the arrays) of the latest candidate row; ties -> larger item."""
    rows = np.flatnonzero(candidates)
    order = np.lexsort((item[rows], t[rows], user[rows]))
    rows = rows[order]
    last = np.r_[user[rows][1:] != user[rows][:-1], True] if rows.size else np.zeros(0, bool)
    return rows[last]


def _candidates(users: np.ndarray, exclude: np.ndarray, n_items: int, k: int,
                rng: np.random.Generator) -> Tuple[np.ndarray, int]:
    """(users, k) items drawn without replacement from the ascending items the
    user has no ``exclude`` key for (user * n_items + item); -1 pads short pools."""
    out = np.full((len(users), k), -1, dtype=np.int64)
    short = 0
    all_items = np.arange(n_items, dtype=np.int64)
    start = np.searchsorted(exclude, users * n_items)
    end = np.searchsorted(exclude, (users + 1) * n_items)
    for row, (u, a, b) in enumerate(zip(users, start, end)):
        pool = np.delete(all_items, exclude[a:b] - u * n_items)
        if len(pool) < k:
            short += 1
            out[row, : len(pool)] = pool
        else:
            out[row] = rng.choice(pool, k, replace=False)
    return out, short


def _loo_splits(inter: Interactions, positive: np.ndarray, n_items: int,
                config: SplitConfig, report: RowReport
                ) -> Tuple[np.ndarray, Dict[str, Tuple[np.ndarray, np.ndarray]], Dict[str, Any]]:
    """Training row indices, and per eval split (held-out row index, negatives)."""
    u, i, t = inter.user, inter.item, inter.timestamp
    n_positive = np.bincount(u[positive], minlength=int(u.max()) + 1)
    eligible = positive & (n_positive[u] >= 3)
    few = int(((n_positive > 0) & (n_positive < 3)).sum())
    if few:  # such users keep all their interactions in training
        report.repair("interactions.loo_user_too_few_positives", few,
                      detail="fewer than 3 positives: no val/test item, all rows train")
    test_rows = _last_positive(u, i, t, eligible)
    remaining = eligible.copy()
    remaining[test_rows] = False
    val_rows = _last_positive(u, i, t, remaining)
    train = np.ones(len(u), dtype=bool)
    train[test_rows] = False
    train[val_rows] = False
    everything = _keys(u, i, n_items)
    not_test = np.ones(len(u), dtype=bool)
    not_test[test_rows] = False
    in_train = _keys(u[not_test], i[not_test], n_items)
    lists = {}
    for name, rows, exclude, seed in (("test", test_rows, everything, config.seed),
                                      ("val", val_rows, in_train, config.seed + 1)):
        rows = rows[np.argsort(u[rows], kind="stable")]  # users in ascending id order
        negatives, short = _candidates(u[rows], exclude, n_items, config.eval_negatives,
                                       np.random.default_rng(seed))
        if short:
            report.repair(f"interactions.loo_{name}_short_candidate_list", short,
                          detail="fewer unseen items than eval_negatives; all were used")
        lists[name] = (rows, negatives)
    info = {"held_out_users": int(len(test_rows))}
    return np.flatnonzero(train), lists, info


# -- writing -----------------------------------------------------------------
def _schema(catalogue: Catalogue, users: Population, dense_names: Sequence[str],
            config: SplitConfig, name: str, with_images: bool) -> Schema:
    n_items = len(catalogue)
    user = [SparseFeature("user_id", len(users), side="user")] + [
        SparseFeature(f, len(users.vocab[f]), side="user") for f in users.categorical]
    item = [SparseFeature("item_id", n_items, side="item")] + [
        SparseFeature(f, len(catalogue.vocab[f]), side="item") for f in catalogue.categorical]
    history = SparseFeature("history", n_items, side="user", pooling="mean",
                            max_len=config.history_len)
    knowledge = [KnowledgeField("description", kind="text")]
    if with_images:
        knowledge.append(KnowledgeField("image", kind="image"))
    return Schema(dense=tuple(DenseFeature(f, side="user") for f in dense_names),
                  sparse=(*user, *item, history), knowledge=tuple(knowledge),
                  label=fmt.LABEL_COLUMN, source=name)


def _write_split(directory: Path, schema: Schema, rows: Dict[str, np.ndarray],
                 catalogue: Catalogue, users: Population, dense: np.ndarray) -> Dict[str, Any]:
    u, i = rows["user"], rows["item"]
    files = {fmt.DENSE_COLUMN: fmt.write_column(directory, fmt.DENSE_COLUMN, dense[u])}
    for f in schema.sparse:
        if f.name == "user_id":
            values = u
        elif f.name == "item_id":
            values = i
        elif f.name == "history":
            values = rows["history"]
        elif f.name in users.categorical:
            values = users.categorical[f.name][u]
        else:
            values = catalogue.categorical[f.name][i]
        files[f.name] = fmt.write_column(directory, f.name,
                                         values.astype(np.int64).reshape(len(u), f.max_len))
    files[schema.label] = fmt.write_column(directory, schema.label,
                                           rows["label"].astype(np.float32))
    files[fmt.TIMESTAMP_COLUMN] = fmt.write_column(directory, fmt.TIMESTAMP_COLUMN,
                                                   rows["timestamp"].astype(np.int64))
    files[fmt.SAMPLED_COLUMN] = fmt.write_column(directory, fmt.SAMPLED_COLUMN,
                                                 rows["sampled"].astype(bool))
    return {"rows": int(len(u)), "files": files}


def _expand(user, item, timestamp, history, label, negatives):
    """Each row followed by its negatives (-1 entries are left out)."""
    k = negatives.shape[1]
    items = np.concatenate([item[:, None], negatives], axis=1)
    labels = np.zeros((len(item), 1 + k), dtype=np.float32)
    labels[:, 0] = label
    labels[:, 1:] = 0.0
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


def build_prepared(root: Path, name: str, catalogue: Catalogue, users: Population,
                   inter: Interactions, config: SplitConfig, report: RowReport,
                   extra_manifest: Optional[Mapping[str, Any]] = None,
                   images_mode: str = "auto") -> Dict[str, Any]:
    """Write a complete prepared directory at ``root`` (which must be new and empty).

    Callers wrap this in ``report.atomic_output`` so that a failure leaves nothing.
    """
    started = time.perf_counter()
    n_items = len(catalogue)
    if len(inter) == 0:
        raise DataInputError("interactions: no valid rows left to prepare")
    order = np.lexsort((inter.item, inter.timestamp))  # time order, ties by item: deterministic
    inter = inter.take(order)
    mode = config.label_mode(inter.rating is not None, inter.label is not None)
    label = _labels(inter, mode, config)
    positive = label > 0.5
    if not positive.any():
        raise DataInputError(f"interactions: no positive rows (labels: {mode}"
                             + (f", positive_rating {config.positive_rating}" if mode == "rating"
                                else "") + ")")
    k_train = config.negatives_per_positive if mode == "implicit" else 0
    rng = np.random.default_rng([config.seed, _TRAIN_NEGATIVES])
    # the protocol's sampler: items that exist at the row's time, minus the
    # user's positives up to then (mmf_rec.data.protocol)
    first_seen = protocol.first_observed(inter.item, inter.timestamp, n_items)
    positives = (inter.user[positive], inter.item[positive], inter.timestamp[positive])

    def negatives_for(rows, pool):
        rows = rows[positive[rows]]
        drawn = protocol.sample_negatives(inter.user[rows], inter.timestamp[rows], n_items,
                                          k_train, rng, first_seen, pool, positives)
        report.repair("interactions.negatives_not_found", int((drawn < 0).sum()),
                      detail="fewer candidate items existed at the row's time (or all were "
                             "the user's positives) than negatives_per_positive")
        return drawn

    splits: Dict[str, Dict[str, np.ndarray]] = {}
    ranking: Dict[str, Any] = {}

    if config.protocol == "leave_last_out":
        train_rows, lists, info = _loo_splits(inter, positive, n_items, config, report)
        is_cold = ~protocol.seen_items(inter.item[train_rows], None, n_items)
        info["cold_items"] = int(is_cold.sum())
        # history never shows a row an item held out for a later split
        known = {"train": positive.copy()}
        known["train"][lists["val"][0]] = False
        known["train"][lists["test"][0]] = False
        known["val"] = known["train"].copy()
        known["test"] = known["train"].copy()
        known["test"][lists["val"][0]] = True

        def history(rows, split):
            mask = known[split]
            source = hm.Purchases(inter.user[mask], inter.item[mask], inter.timestamp[mask])
            return hm.history_before_day(inter.user[rows], inter.timestamp[rows], source,
                                         np.ones(int(mask.sum()), dtype=bool),
                                         config.history_len)

        splits["train"] = _with_sampled(inter, train_rows, label, positive,
                                        negatives_for(train_rows, ~is_cold),
                                        history(train_rows, "train"))
        for split in ("val", "test"):
            rows, negs = lists[split]
            splits[split] = _expand(inter.user[rows], inter.item[rows], inter.timestamp[rows],
                                    history(rows, split), np.ones(len(rows), np.float32), negs)
            ranking[split] = {"users": int(len(rows)),
                              "candidates_per_user": 1 + config.eval_negatives,
                              "layout": "per user: the held-out item, then its negatives"}
    else:
        rows_of, is_cold, info = _time_splits(inter, n_items, config, first_seen)
        counted = positive & ~is_cold[inter.item]
        history_source = hm.Purchases(inter.user[counted], inter.item[counted],
                                      inter.timestamp[counted])
        history_all = np.ones(len(history_source.user), dtype=bool)
        train_rows = rows_of["train"]
        for split, rows in rows_of.items():
            if split == "cold" and rows.size == 0:
                continue
            hist = hm.history_before_day(inter.user[rows], inter.timestamp[rows],
                                         history_source, history_all, config.history_len)
            negatives = negatives_for(rows, is_cold if split == "cold" else ~is_cold)
            splits[split] = _with_sampled(inter, rows, label, positive, negatives, hist)

    # scaling statistics from the users with a training row only
    trained_users = np.zeros(len(users), dtype=bool)
    trained_users[inter.user[train_rows]] = True
    dense_names, dense, dense_stats = scale_dense(users.dense_raw, len(users), report,
                                                  "users", fit=trained_users)

    for split, rows in splits.items():
        if split != "train" and rows["label"].size and \
                (rows["label"].min() == rows["label"].max()):
            report.repair(f"interactions.{split}_single_class", 1,
                          detail="every row has the same label: AUC is undefined there")

    schema = _schema(catalogue, users, dense_names, config, name,
                     with_images=bool(catalogue.images))
    written = {split: _write_split(root / split, schema, rows, catalogue, users, dense)
               for split, rows in splits.items()}
    image_entry = None
    if catalogue.images:
        try:
            image_entry = hm.write_images(root, catalogue.images, n_items, images_mode, [])
        except hm.HMDataError as e:
            raise DataInputError(str(e)) from None
    has_image = np.zeros(n_items, dtype=bool)
    has_image[list(catalogue.images)] = True
    item_columns = {"item_id": np.arange(n_items, dtype=np.int64).reshape(-1, 1)}
    item_columns.update({f: ids.reshape(-1, 1) for f, ids in catalogue.categorical.items()})
    item_columns.update({"key": _fixed_bytes(catalogue.keys), "is_cold": is_cold,
                         "has_image": has_image})
    items = fmt.write_table(root / fmt.ITEMS, item_columns)
    users_table = fmt.write_table(root / "users", {"key": _fixed_bytes(users.keys)})
    knowledge = {"description": {
        "kind": "text", "path": f"{fmt.ITEMS}/{fmt.DESCRIPTIONS_FILE}",
        "sha256": fmt.write_json(root / fmt.ITEMS / fmt.DESCRIPTIONS_FILE,
                                 catalogue.descriptions)}}
    if image_entry is not None:
        knowledge["image"] = image_entry
    vocab_sha = fmt.write_json(root / "vocab.json", {**users.vocab, **catalogue.vocab})
    report.check()
    manifest = {
        "format": fmt.FORMAT,
        "name": name,
        "schema": schema.to_dict(),
        "seed": config.seed,
        "splits": written,
        "items": items,
        "users": users_table,
        "item_feature": "item_id",
        "user_feature": "user_id",
        "knowledge": knowledge,
        "vocab": {"path": "vocab.json", "sha256": vocab_sha},
        "oracle_auc": None,
        "protocol": {"name": config.protocol, "labels": mode, **_jsonable(info)},
        "ranking": ranking,
        "positives": {s: int((r["label"] > 0.5).sum()) for s, r in splits.items()},
        "dense_stats": dense_stats,
        "interactions": {"valid": int(len(inter)), "positive": int(positive.sum())},
        "dropped": dict(report.dropped),
        "repaired": dict(report.repaired),
        "images": {"present": len(catalogue.images),
                   "missing": n_items - len(catalogue.images)},
        **dict(extra_manifest or {}),
    }
    manifest["report"] = write_report(root, report, {"name": name})
    fmt.write_manifest(root, manifest)
    logger.info("prepared %s (%s) in %.1f s: %d items, %d users, rows %s; %s", name,
                config.protocol, time.perf_counter() - started, n_items, len(users),
                {k: v["rows"] for k, v in written.items()}, report.summary())
    return manifest


def _with_sampled(inter, rows, label, positive, negatives, history):
    """A split's rows in time order: every interaction, and after each positive
    its sampled negatives (none when the labels already hold negatives)."""
    k = negatives.shape[1]
    if k == 0:
        return {"user": inter.user[rows], "item": inter.item[rows],
                "timestamp": inter.timestamp[rows], "history": history,
                "label": label[rows], "sampled": np.zeros(len(rows), dtype=bool)}
    pos = positive[rows]
    full = np.full((len(rows), k), -1, dtype=np.int64)
    full[pos] = negatives
    return _expand(inter.user[rows], inter.item[rows], inter.timestamp[rows], history,
                   label[rows], full)


def _fixed_bytes(keys: Sequence[str]) -> np.ndarray:
    """Source ids as a fixed-width byte column (object arrays cannot be prepared)."""
    return np.asarray([k.encode("utf-8") for k in keys], dtype="S") if len(keys) else \
        np.zeros(0, dtype="S1")


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def split_blocks(root: Path, split: str = "test") -> Tuple[np.ndarray, np.ndarray]:
    """(user ids, item ids (users, candidates)) of a leave_last_out split."""
    data = fmt.load_prepared(root, verify_checksums=False)
    entry = (data.manifest.get("ranking") or {}).get(split)
    if not entry:
        raise DataInputError(f"{root}: split '{split}' is not a leave_last_out candidate "
                             "split (the manifest's 'ranking' has no entry for it)")
    n = int(entry["candidates_per_user"])
    table = data.split(split)
    items = np.asarray(table["item_id"])[:, 0]
    label = np.asarray(table["label"])
    if len(items) % n or not np.all(label[::n] == 1):
        raise DataInputError(f"{root}/{split}: rows are not blocks of {n} with the "
                             "held-out item first (short candidate lists?)")
    return np.asarray(table["user_id"])[::n, 0], items.reshape(-1, n)


def popularity_scores(root: Path, split: str = "test") -> np.ndarray:
    """Candidates scored by their number of positive training rows."""
    data = fmt.load_prepared(root, verify_checksums=False)
    train = data.split("train")
    positive = np.asarray(train["label"]) > 0.5
    counts = np.bincount(np.asarray(train["item_id"])[positive, 0],
                         minlength=data.items.rows)
    _, items = split_blocks(root, split)
    return counts[items].astype(np.float64)
