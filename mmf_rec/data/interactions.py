"""Users, items and interactions -> the prepared format, under one evaluation protocol.

The MovieLens and bring-your-own readers parse their files into a
``Catalogue`` (items), a ``Population`` (users) and ``Interactions``, and
this module does the rest once: labels, splits and their protocols (see
``splits.py``), sampled negatives, each row's history, the schema and the
files.

Seen and cold items, the cold split, the sampled negatives of training rows
(items that exist at the row's time, minus the user's positives up to then)
and the scaling of dense user features (training users' statistics) follow
``mmf_rec.data.protocol``, as every reader does.

Under ``implicit`` labels, ``negatives_per_positive`` sampled items follow
each positive of every split under ``time`` / ``cold_start``, and each
training positive under ``leave_last_out``; they are marked ``sampled``.
History is the user's last ``history_len`` positives strictly before the
row's timestamp, never a cold item.
"""

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mmf_rec.data import protocol
from mmf_rec.data.prepared import load_prepared
from mmf_rec.data.prepared_layout import FORMAT, write_json, write_manifest, write_table
from mmf_rec.data.report import DataInputError, RowReport, write_report
from mmf_rec.data.splits import (
    TRAIN_NEGATIVES_STREAM, SplitConfig, split_by_time, split_leave_last_out)
from mmf_rec.data.user_item import build_schema, with_negatives, write_items, write_split

logger = logging.getLogger(__name__)


# -- the three inputs ------------------------------------------------------
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


def _labels(inter: Interactions, mode: str, config: SplitConfig) -> np.ndarray:
    if mode == "implicit":
        return np.ones(len(inter), dtype=np.float32)
    if mode == "rating":
        return (inter.rating >= config.positive_rating).astype(np.float32)
    return inter.label.astype(np.float32)


# -- the prepared directory ------------------------------------------------
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
    rng = np.random.default_rng([config.seed, TRAIN_NEGATIVES_STREAM])
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
        train_rows, lists, info = split_leave_last_out(inter.user, inter.item, inter.timestamp,
                                                       positive, n_items, config, report)
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
            return protocol.history_before(
                inter.user[rows], inter.timestamp[rows],
                (inter.user[mask], inter.item[mask], inter.timestamp[mask]), config.history_len)

        splits["train"] = _with_sampled(inter, train_rows, label, positive,
                                        negatives_for(train_rows, ~is_cold),
                                        history(train_rows, "train"))
        for split in ("val", "test"):
            rows, negs = lists[split]
            splits[split] = with_negatives(inter.user[rows], inter.item[rows],
                                           inter.timestamp[rows], history(rows, split),
                                           np.ones(len(rows), np.float32), negs)
            ranking[split] = {"users": int(len(rows)),
                              "candidates_per_user": 1 + config.eval_negatives,
                              "layout": "per user: the held-out item, then its negatives"}
    else:
        rows_of, is_cold, info = split_by_time(inter.item, inter.timestamp, n_items, config,
                                               first_seen)
        counted = positive & ~is_cold[inter.item]
        history_source = (inter.user[counted], inter.item[counted], inter.timestamp[counted])
        train_rows = rows_of["train"]
        for split, rows in rows_of.items():
            if split == "cold" and rows.size == 0:
                continue
            hist = protocol.history_before(inter.user[rows], inter.timestamp[rows],
                                           history_source, config.history_len)
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

    schema = build_schema(
        name, len(users), {f: len(users.vocab[f]) for f in users.categorical}, n_items,
        {f: len(catalogue.vocab[f]) for f in catalogue.categorical}, dense_names,
        config.history_len, with_images=bool(catalogue.images))
    written = {split: write_split(root / split, schema, rows, users.categorical,
                                  catalogue.categorical, dense)
               for split, rows in splits.items()}
    items, knowledge = write_items(root, catalogue.categorical,
                                   ("key", _fixed_bytes(catalogue.keys)), is_cold,
                                   catalogue.descriptions, catalogue.images, images_mode)
    users_table = write_table(root / "users", {"key": _fixed_bytes(users.keys)})
    vocab_sha = write_json(root / "vocab.json", {**users.vocab, **catalogue.vocab})
    report.check()
    manifest = {
        "format": FORMAT,
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
    write_manifest(root, manifest)
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
    return with_negatives(inter.user[rows], inter.item[rows], inter.timestamp[rows], history,
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
    data = load_prepared(root, verify_checksums=False)
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
    data = load_prepared(root, verify_checksums=False)
    train = data.split("train")
    positive = np.asarray(train["label"]) > 0.5
    counts = np.bincount(np.asarray(train["item_id"])[positive, 0],
                         minlength=data.items.rows)
    _, items = split_blocks(root, split)
    return counts[items].astype(np.float64)
