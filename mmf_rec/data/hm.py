"""H&M Personalized Fashion Recommendations -> the prepared format.

Reads the Kaggle layout or the parquet sample (see ``hm_source.py``) and
writes a prepared directory that every model and the MMF dataset read
unchanged (see ``prepared.py``).

Purchases are the positives. Each is followed by ``negatives_per_positive``
seeded negatives, marked ``sampled``: articles on sale by that day (bought by
someone on or before it) that the customer had not bought by then. Splits are
by date: train, val, test, and ``cold`` (test-period rows of items with no
training-period purchase, plus a seeded held-out fraction of items; their
negatives come from cold items, the other splits' from the rest). Seen and
cold items, the splits, the negatives and the scaling of age follow
``mmf_rec.data.protocol``, as every reader does. A row's
``history`` holds items bought on earlier days only, so no row sees its own
day or the future. Real data has no known click model: no ``click_prob``
column, and ``oracle_auc`` is null.
"""

import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from mmf_rec.data import protocol
from mmf_rec.data.cli import reader_main
from mmf_rec.data.config import as_config, config_from_mapping, requirement
from mmf_rec.data.hm_source import (
    DENSE_FEATURES, DROP_REASONS, ITEM_ATTRIBUTES, TABLE_FILES, Customers, HMDataError,
    find_images, find_table, read_articles, read_customers, read_transactions)
from mmf_rec.data.prepared_layout import (
    FORMAT, PreparedDataError, write_json, write_manifest, write_table)
from mmf_rec.data.user_item import (
    IMAGE_MODES, build_schema, with_negatives, write_items, write_split)

logger = logging.getLogger(__name__)

NAME = "hm"
# Bumped whenever the prepared data would change for the same input and config.
PREPARER_VERSION = 1
_HELD_OUT, _NEGATIVES = 1, 2  # random streams
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class HMConfig:
    seed: int = 1
    negatives_per_positive: int = 4
    # uniform over the pool, or by training-period purchase count (+1)
    negative_sampling: str = "uniform"
    history_len: int = 5
    # Period boundaries as transaction quantiles, moved to day boundaries...
    train_fraction: float = 0.8
    val_fraction: float = 0.1
    # ...or as dates (YYYY-MM-DD, first day of the period; both or neither).
    val_start: str = ""
    test_start: str = ""
    # Items bought before the test period that are held out as cold anyway.
    cold_item_fraction: float = 0.05
    # Vocabularies: values seen fewer times share the unknown id 0.
    min_count: int = 1
    max_vocab: int = 50_000
    postal_code_buckets: int = 1000
    # auto: copy when the matched photos are small, else symlink; none: no images.
    images: str = "auto"

    @classmethod
    def from_mapping(cls, data: Optional[Mapping[str, Any]], source: str = "hm config"):
        return config_from_mapping(cls, data, source, HMDataError, ignore=("preparer_version",))

    def validate(self, source: str = "hm config") -> None:
        need = requirement(self, source, HMDataError)
        need(self.seed >= 0, "seed", ">= 0")
        need(self.negatives_per_positive >= 0, "negatives_per_positive", ">= 0")
        need(self.negative_sampling in ("uniform", "popularity"), "negative_sampling",
             "'uniform' or 'popularity'")
        need(self.history_len >= 1, "history_len", ">= 1")
        need(0.0 < self.train_fraction < 1.0, "train_fraction", "in (0, 1)")
        need(0.0 < self.val_fraction < 1.0 - self.train_fraction, "val_fraction",
             "in (0, 1 - train_fraction) so the test period is not empty")
        for key in ("val_start", "test_start"):
            need(getattr(self, key) == "" or _DATE.match(getattr(self, key)), key,
                 "'' or a date YYYY-MM-DD")
        need(bool(self.val_start) == bool(self.test_start), "test_start",
             "set together with val_start (or neither)")
        need(not self.val_start or self.val_start < self.test_start, "test_start",
             f"a date after val_start {self.val_start}")
        need(0.0 <= self.cold_item_fraction < 1.0, "cold_item_fraction", "in [0, 1)")
        need(self.min_count >= 1, "min_count", ">= 1")
        need(self.max_vocab >= 2, "max_vocab", ">= 2")
        need(self.postal_code_buckets >= 1, "postal_code_buckets", ">= 1")
        need(self.images in IMAGE_MODES, "images", "one of auto, copy, symlink, none")

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "preparer_version": PREPARER_VERSION}


ConfigLike = Union[HMConfig, Mapping[str, Any], None]


def _iso(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def scale_age(customers: Customers, fit: np.ndarray) -> None:
    """Fill the dense age column, standardised with the ``fit`` customers' ages."""
    scaled, stats = protocol.standardise(customers.age, fit)
    customers.dense[:, DENSE_FEATURES.index("age")] = scaled
    customers.age_stats.update(stats)


def period_starts(day: np.ndarray, config: HMConfig) -> Tuple[int, int]:
    """First day of val and of test; every period must hold some purchases."""
    if config.val_start:
        val_start = int(np.datetime64(config.val_start, "D").astype(np.int64))
        test_start = int(np.datetime64(config.test_start, "D").astype(np.int64))
    else:
        n = len(day)
        val_start = int(day[min(int(n * config.train_fraction), n - 1)]) if n else 0
        test_start = int(day[min(int(n * (config.train_fraction + config.val_fraction)),
                                 n - 1)]) if n else 0
    counts = [(day < val_start).sum(), ((day >= val_start) & (day < test_start)).sum(),
              (day >= test_start).sum()]
    if min(counts) == 0:
        span = f"{_iso(day[0])} to {_iso(day[-1])}" if len(day) else "no valid rows"
        raise HMDataError(
            f"transactions: cannot split by date: train/val/test periods would hold "
            f"{[int(c) for c in counts]} purchases (val from "
            f"{_iso(val_start)}, test from {_iso(test_start)}; data spans {span}); "
            "set val_start/test_start or the fractions so each period has some"
        )
    return val_start, test_start


def prepare_hm(src_dir: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
               config: ConfigLike = None) -> Dict[str, Any]:
    """Write a prepared directory from H&M tables; returns its manifest.

    ``out_dir`` must be absent or empty (two runs' files would pass no
    checksum); the manifest is written last, so an interrupted run leaves an
    incomplete directory that no reader accepts.
    """
    config = as_config(HMConfig, config)
    src, root = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise HMDataError(f"{src}: H&M source directory does not exist")
    paths = {name: find_table(src, name) for name in TABLE_FILES}
    if root.exists() and any(root.iterdir()):
        raise PreparedDataError(
            f"{root}: refusing to prepare into a non-empty directory; "
            "remove it or choose another --out")
    started = time.perf_counter()
    dropped = {reason: 0 for reason in DROP_REASONS}
    articles = read_articles(paths["articles"], config.min_count, config.max_vocab, dropped)
    customers = read_customers(paths["customers"], config.min_count, config.max_vocab,
                               config.postal_code_buckets, dropped)
    purchases = read_transactions(paths["transactions"], articles, customers, dropped)
    n_items, n_users = len(articles.article_id), len(customers.customer_id)
    read_seconds = time.perf_counter() - started

    val_start, test_start = period_starts(purchases.day, config)
    first_seen = protocol.first_observed(purchases.item, purchases.day, n_items)
    held = protocol.held_out(first_seen, test_start, config.cold_item_fraction,
                             np.random.default_rng([config.seed, _HELD_OUT]))
    positives, is_cold, left_out = protocol.time_splits(
        purchases.item, purchases.day, n_items, val_start, test_start, held)
    cold_reasons = {"held_out": int(held.sum()),
                    "no_training_purchase": int((is_cold & ~held).sum())}
    cold_row = is_cold[purchases.item]
    in_test = purchases.day >= test_start
    # scaling statistics from customers with a training purchase only
    trained = np.zeros(n_users, dtype=bool)
    trained[purchases.user[positives["train"]]] = True
    scale_age(customers, trained)

    counted = ~cold_row
    history = protocol.history_before(
        purchases.user, purchases.day,
        (purchases.user[counted], purchases.item[counted], purchases.day[counted]),
        config.history_len)
    train_counts = np.bincount(purchases.item[positives["train"]], minlength=n_items)
    rng = np.random.default_rng([config.seed, _NEGATIVES])
    found, unmatched = find_images(src, articles.article_id) if config.images != "none" \
        else ({}, [])
    schema = build_schema(
        NAME, n_users, {f: len(customers.vocab[f]) for f in (
            "club_member_status", "fashion_news_frequency", "age_bucket", "postal_code")},
        n_items, {f: len(articles.vocab[f]) for f, _ in ITEM_ATTRIBUTES}, DENSE_FEATURES,
        config.history_len, with_images=bool(found))
    root.mkdir(parents=True, exist_ok=True)
    splits, negatives_count = {}, {}
    for name, positive in positives.items():
        pool = is_cold if name == "cold" else ~is_cold
        weight = (train_counts + 1.0) if config.negative_sampling == "popularity" else None
        negatives = protocol.sample_negatives(
            purchases.user[positive], purchases.day[positive], n_items,
            config.negatives_per_positive, rng, first_seen, pool,
            (purchases.user, purchases.item, purchases.day), weight)
        missing = int((negatives < 0).sum())
        if missing:
            dropped["negatives.no_candidate"] += missing
            logger.warning("%s: %d negatives could not be drawn (users who had bought every "
                           "item of the %d-item pool on sale by then)", name, missing,
                           int(pool.sum()))
        split_rows = with_negatives(
            purchases.user[positive], purchases.item[positive], purchases.day[positive] * 86400,
            history[positive], np.ones(len(positive), np.float32), negatives)
        splits[name] = write_split(root / name, schema, split_rows, customers.features,
                                   articles.features, customers.dense)
        negatives_count[name] = int((negatives >= 0).sum())
        del split_rows, negatives
    items, knowledge = write_items(root, articles.features, ("article_id", articles.article_id),
                                   is_cold, articles.descriptions, found, config.images,
                                   unmatched)
    users = write_table(root / "users", {
        "customer_id": np.asarray(customers.customer_id.to_pylist(), dtype="S")})
    vocab_sha = write_json(root / "vocab.json", {**customers.vocab, **articles.vocab})

    def period(mask):
        days = purchases.day[mask]
        return [_iso(days.min()), _iso(days.max())] if days.size else None

    manifest = {
        "format": FORMAT,
        "name": NAME,
        "schema": schema.to_dict(),
        "seed": config.seed,
        "preparer": config.to_dict(),
        "source": {name: {"path": str(p.resolve()), "bytes": p.stat().st_size}
                   for name, p in paths.items()},
        "splits": splits,
        "items": items,
        "users": users,
        "item_feature": "item_id",
        "user_feature": "user_id",
        "knowledge": knowledge,
        "vocab": {"path": "vocab.json", "sha256": vocab_sha},
        "oracle_auc": None,
        "periods": {
            "train": period(purchases.day < val_start),
            "val": period((purchases.day >= val_start) & ~in_test),
            "test": period(in_test),
            "val_start": _iso(val_start), "test_start": _iso(test_start),
        },
        "cold_items": int(is_cold.sum()),
        "cold_item_reasons": cold_reasons,
        "positives": {name: int(len(p)) for name, p in positives.items()},
        "negatives": negatives_count,
        "transactions": {"valid": int(len(purchases.day))},
        "protocol": {"name": "time", "labels": "implicit", "cold_items": int(is_cold.sum()),
                     "cold_item_reasons": cold_reasons, "rows_left_out": left_out},
        "dropped": dropped,
        "customers": {"rows": n_users, "with_purchases": int(len(np.unique(purchases.user))),
                      "age": customers.age_stats},
        "images": {"present": len(found), "missing": n_items - len(found),
                   "unmatched_files": unmatched[:20], "unmatched_count": len(unmatched)},
    }
    write_manifest(root, manifest)
    logger.info(
        "prepared %s in %s (%.1f s, reading %.1f s): %d items, %d users, rows %s, "
        "cold items %d, dropped %s", NAME, root, time.perf_counter() - started,
        read_seconds, n_items, n_users, {k: v["rows"] for k, v in splits.items()},
        int(is_cold.sum()), {k: v for k, v in dropped.items() if v} or "none")
    return manifest


def main(argv=None) -> int:
    return reader_main(
        argv, prog="python -m mmf_rec.data.hm",
        description="Prepare H&M Personalized Fashion Recommendations data (Kaggle CSV "
                    "or parquet sample) for mmf_rec models.",
        src_help="directory with articles, customers, transactions (+ images/)",
        config_cls=HMConfig, prepare=prepare_hm,
    )


if __name__ == "__main__":
    raise SystemExit(main())
