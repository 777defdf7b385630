"""H&M Personalized Fashion Recommendations -> the prepared format.

Reads the Kaggle layout (``articles.csv``, ``customers.csv``,
``transactions_train.csv``, ``images/<3 digits>/<article id, 10 digits>.jpg``)
or the same tables as parquet (``*_sample.parquet``, flat ``images/``), and
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

Malformed values (an unparseable date or id) and missing files or columns
stop the run with one error naming file, column and row; rows that cannot be
used (an unknown article, a missing id, a duplicate catalogue entry) are
counted in the manifest's ``dropped`` and logged.
"""

import csv
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mmf_rec.data.cli import reader_main
from mmf_rec.data import prepared as fmt
from mmf_rec.data import protocol
from mmf_rec.schema import PAD_ID, DenseFeature, KnowledgeField, Schema, SparseFeature

logger = logging.getLogger(__name__)

NAME = "hm"
# Bumped whenever the prepared data would change for the same input and config.
PREPARER_VERSION = 1
UNKNOWN = "<unknown>"  # id 0 of every vocabulary: missing, rare or unseen

# Candidate file names per table, first found wins: Kaggle CSV, then parquet.
TABLE_FILES = {
    "articles": ("articles.csv", "articles.parquet", "articles_sample.parquet"),
    "customers": ("customers.csv", "customers.parquet", "customers_sample.parquet"),
    "transactions": ("transactions_train.csv", "transactions_train.parquet",
                     "transactions.csv", "transactions.parquet",
                     "transactions_sample.parquet"),
}
# Item categorical features and the article column each is built from.
ITEM_ATTRIBUTES = (
    ("product_code", "product_code"),
    ("product_type", "product_type_name"),
    ("product_group", "product_group_name"),
    ("graphical_appearance", "graphical_appearance_name"),
    ("colour_group", "colour_group_name"),
    ("perceived_colour_value", "perceived_colour_value_name"),
    ("perceived_colour_master", "perceived_colour_master_name"),
    ("department", "department_name"),
    ("index", "index_name"),
    ("index_group", "index_group_name"),
    ("section", "section_name"),
    ("garment_group", "garment_group_name"),
)
ARTICLE_COLUMNS = ("article_id", "prod_name", "detail_desc",
                   *sorted({column for _, column in ITEM_ATTRIBUTES}))
CUSTOMER_COLUMNS = ("customer_id", "FN", "Active", "club_member_status",
                    "fashion_news_frequency", "age", "postal_code")
TRANSACTION_COLUMNS = ("t_dat", "customer_id", "article_id")
USER_CATEGORICALS = (
    ("club_member_status", "club_member_status"),
    ("fashion_news_frequency", "fashion_news_frequency"),
)
DENSE_FEATURES = ("age", "age_missing", "fn", "active")
# Age bucket upper bounds (exclusive); bucket 0 is unknown age.
AGE_EDGES = (25, 35, 45, 55, 65)
AGE_RANGE = (10, 110)  # ages outside it are treated as missing
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
AUTO_COPY_LIMIT_BYTES = 256 << 20  # images="auto": copy up to this, else symlink
DROP_REASONS = (
    "articles.missing_article_id", "articles.duplicate_article_id",
    "customers.missing_customer_id", "customers.duplicate_customer_id",
    "transactions.missing_article_id", "transactions.missing_customer_id",
    "transactions.unknown_article", "transactions.unknown_customer",
    "negatives.no_candidate",
)
_HELD_OUT, _NEGATIVES = 1, 2  # random streams
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class HMDataError(ValueError):
    """The H&M input is missing, malformed, or the config asks the impossible."""


# -- config ------------------------------------------------------------------
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
        data = dict(data or {})
        data.pop("preparer_version", None)
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise HMDataError(f"{source}: unknown keys {unknown}; expected some of {known}")
        defaults, values = cls(), {}
        for key, value in data.items():
            kind = type(getattr(defaults, key))
            try:
                values[key] = kind(value)
                exact = kind in (float, str) or float(value) == values[key]
            except (TypeError, ValueError):
                exact = False
            if not exact or isinstance(value, bool) or (kind is str and value is None):
                raise HMDataError(f"{source}.{key}: expected {kind.__name__}, got {value!r}")
        config = cls(**values)
        config.validate(source)
        return config

    def validate(self, source: str = "hm config") -> None:
        def need(ok, key, expected):
            if not ok:
                raise HMDataError(
                    f"{source}.{key}: expected {expected}, got {getattr(self, key)!r}")

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
        need(self.images in ("auto", "copy", "symlink", "none"), "images",
             "one of auto, copy, symlink, none")

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "preparer_version": PREPARER_VERSION}


ConfigLike = Union[HMConfig, Mapping[str, Any], None]


def as_config(config: ConfigLike) -> HMConfig:
    if isinstance(config, HMConfig):
        config.validate()
        return config
    return HMConfig.from_mapping(config)


# -- reading -----------------------------------------------------------------
@dataclass
class Source:
    """One input table, with enough to name a row in an error."""

    path: Path
    table: pa.Table

    @property
    def is_csv(self) -> bool:
        return self.path.suffix.lower() == ".csv"

    def where(self, row: int, column: str) -> str:
        line = f" (line {row + 2})" if self.is_csv else ""
        return f"{self.path}: row {row + 1}{line}, column '{column}'"


def find_table(src: Path, table: str) -> Path:
    for name in TABLE_FILES[table]:
        if (src / name).is_file():
            return src / name
    raise HMDataError(
        f"{src}: no {table} file; looked for {', '.join(TABLE_FILES[table])}"
    )


def _column_names(path: Path) -> List[str]:
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                return next(csv.reader(f), [])
        return list(pq.read_schema(path).names)
    except (OSError, UnicodeDecodeError, pa.ArrowException) as e:
        raise HMDataError(f"{path}: cannot read its header ({e})") from None


def read_source(path: Path, columns: Sequence[str]) -> Source:
    """Only the needed columns; CSV cells as strings (typed later, row by row)."""
    names = _column_names(path)
    missing = [c for c in columns if c not in names]
    if missing:
        raise HMDataError(
            f"{path}: column '{missing[0]}' is missing"
            + (f" (and {missing[1:]})" if len(missing) > 1 else "")
            + f"; the file has {names}; the H&M layout needs {list(columns)}"
        )
    try:
        if path.suffix.lower() == ".csv":
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                include_columns=list(columns),
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=True,
            ))
        else:
            table = pq.read_table(path, columns=list(columns))
    except (OSError, pa.ArrowException) as e:
        raise HMDataError(f"{path}: cannot be read ({e})") from None
    return Source(path, table.combine_chunks())


def _strings(source: Source, column: str) -> pa.Array:
    """A column as trimmed strings; empty cells become null."""
    array = source.table[column].combine_chunks()
    if not pa.types.is_string(array.type):
        array = pc.cast(array, pa.string())
    array = pc.utf8_trim_whitespace(array)
    return pc.if_else(pc.equal(array, ""), pa.scalar(None, pa.string()), array)


def _integers(source: Source, column: str) -> Tuple[np.ndarray, np.ndarray]:
    """(values int64, valid mask); a present value that is not an integer is an error."""
    array = source.table[column].combine_chunks()
    if pa.types.is_integer(array.type):
        valid = ~np.asarray(array.is_null())
        return np.asarray(array.fill_null(0), dtype=np.int64), valid
    if pa.types.is_floating(array.type):
        values = np.asarray(array.fill_null(0.0), dtype=np.float64)
        valid = ~np.asarray(array.is_null())
        bad = valid & ~(np.isfinite(values) & (values == np.round(values)))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise HMDataError(f"{source.where(row, column)}: {values[row]!r} is not an "
                              "integer id")
        return values.astype(np.int64), valid
    text = _strings(source, column)
    valid = ~np.asarray(text.is_null())
    ok = np.asarray(pc.match_substring_regex(text, r"^[+-]?\d{1,18}$").fill_null(True))
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise HMDataError(
            f"{source.where(row, column)}: {text[row].as_py()!r} is not an integer id")
    return np.asarray(pc.cast(text, pa.int64()).fill_null(0), dtype=np.int64), valid


def _floats(source: Source, column: str) -> np.ndarray:
    """float64 with NaN for missing; an unparseable value is an error."""
    array = source.table[column].combine_chunks()
    if not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
        text = _strings(source, column)
        try:
            array = pc.cast(text, pa.float64())
        except pa.ArrowInvalid:
            for row, value in enumerate(text.to_pylist()):
                try:
                    float(value if value is not None else 0.0)
                except ValueError:
                    raise HMDataError(f"{source.where(row, column)}: {value!r} is not "
                                      "a number") from None
            raise
    return np.asarray(pc.cast(array, pa.float64()).fill_null(np.nan), dtype=np.float64)


def _days(source: Source, column: str) -> np.ndarray:
    """Days since 1970-01-01 (int64); a missing or unparseable date is an error."""
    array = source.table[column].combine_chunks()
    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        days = pc.cast(pc.cast(array, pa.date32()), pa.int32())
    else:  # YYYY-MM-DD text; few distinct dates, so parse each once
        encoded = _strings(source, column).dictionary_encode()
        parsed = pc.strptime(encoded.dictionary, format="%Y-%m-%d", unit="s",
                             error_is_null=True)
        # strptime rolls 2020-02-30 over to March: only dates that print back as read
        strict = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), encoded.dictionary)
        parsed = pc.if_else(strict, parsed, pa.scalar(None, parsed.type))
        days = pc.cast(pc.cast(parsed, pa.date32()), pa.int32()).take(encoded.indices)
    if days.null_count:
        bad = np.flatnonzero(np.asarray(days.is_null()))
        value = source.table[column][int(bad[0])].as_py()
        problem = "the date is missing" if value in (None, "") else \
            f"cannot parse {value!r} as a date YYYY-MM-DD"
        raise HMDataError(f"{source.where(int(bad[0]), column)}: {problem} "
                          f"({len(bad)} such rows)")
    return np.asarray(days, dtype=np.int64)


def _iso(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


# -- vocabularies ------------------------------------------------------------
def vocabulary(values: pa.Array, min_count: int, max_size: int) -> Tuple[List[str], np.ndarray]:
    """Ids by descending frequency (ties by value); 0 = missing, rare or beyond the cap."""
    counts = pc.value_counts(values.drop_null())
    keys = counts.field("values").to_pylist()
    n = np.asarray(counts.field("counts"), dtype=np.int64)
    ranked = sorted((-int(c), k) for k, c in zip(keys, n) if c >= min_count)
    kept = [k for _, k in ranked[: max_size - 1]]
    index = pc.index_in(values, value_set=pa.array(kept, pa.string()))
    ids = np.asarray(index.fill_null(-1), dtype=np.int64) + 1
    return [UNKNOWN, *kept], ids


def age_buckets(age: np.ndarray) -> np.ndarray:
    """0 for unknown, then one bucket per AGE_EDGES interval."""
    bucket = np.searchsorted(np.asarray(AGE_EDGES), np.nan_to_num(age), side="right") + 1
    return np.where(np.isnan(age), 0, bucket).astype(np.int64)


# -- the three tables --------------------------------------------------------
@dataclass
class Articles:
    article_id: np.ndarray  # sorted; row = item id
    features: Dict[str, np.ndarray]  # item categorical -> ids
    vocab: Dict[str, List[str]]
    descriptions: List[str]


@dataclass
class Customers:
    customer_id: pa.Array  # sorted; row = user id
    features: Dict[str, np.ndarray]
    vocab: Dict[str, List[str]]
    dense: np.ndarray  # (users, len(DENSE_FEATURES)) float32
    age_stats: Dict[str, Any]
    age: np.ndarray  # (users,) raw years, NaN missing


def _count(dropped: Dict[str, int], reason: str, mask: np.ndarray, source: Source,
           column: str) -> None:
    n = int(mask.sum())
    dropped[reason] += n
    if n:
        row = int(np.flatnonzero(mask)[0])
        logger.warning("%s: dropping %d rows (%s; first: %s)", source.path.name, n,
                       reason, source.where(row, column))


def _keep_first(ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mask of rows whose id is valid and not seen on an earlier row."""
    first = np.zeros(len(ids), dtype=bool)
    rows = np.flatnonzero(valid)
    _, at = np.unique(ids[rows], return_index=True)
    first[rows[at]] = True
    return first


def describe(row: Mapping[str, Optional[str]]) -> str:
    """A readable text: name, type and colour, appearance and line, then H&M's detail."""
    name = row.get("prod_name") or row.get("product_type_name") or "Article"
    kind = row.get("product_type_name")
    colour = row.get("colour_group_name")
    what = " ".join(x for x in (colour, kind.lower() if kind else None) if x)
    text = f"{name}: {what}" if what else name
    extras = [x for x in (row.get("graphical_appearance_name"), row.get("index_name")) if x]
    if extras:
        text += f" ({', '.join(extras)})"
    text += "."
    if row.get("detail_desc"):
        text += " " + row["detail_desc"]
    return text


def read_articles(path: Path, config: HMConfig, dropped: Dict[str, int]) -> Articles:
    source = read_source(path, ARTICLE_COLUMNS)
    ids, valid = _integers(source, "article_id")
    _count(dropped, "articles.missing_article_id", ~valid, source, "article_id")
    keep = _keep_first(ids, valid)
    _count(dropped, "articles.duplicate_article_id", valid & ~keep, source, "article_id")
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        raise HMDataError(f"{path}: no article has a valid article_id")
    rows = rows[np.argsort(ids[rows], kind="stable")]
    take = pa.array(rows)
    text = {c: _strings(source, c).take(take) for c in ARTICLE_COLUMNS if c != "article_id"}
    features, vocab = {}, {}
    for feature, column in ITEM_ATTRIBUTES:
        vocab[feature], features[feature] = vocabulary(text[column], config.min_count,
                                                       config.max_vocab)
    columns = {c: a.to_pylist() for c, a in text.items()}
    descriptions = [describe({c: columns[c][i] for c in columns}) for i in range(len(rows))]
    return Articles(ids[rows], features, vocab, descriptions)


def read_customers(path: Path, config: HMConfig, dropped: Dict[str, int]) -> Customers:
    source = read_source(path, CUSTOMER_COLUMNS)
    customer = _strings(source, "customer_id")
    valid = ~np.asarray(customer.is_null())
    _count(dropped, "customers.missing_customer_id", ~valid, source, "customer_id")
    encoded = customer.dictionary_encode()
    codes = np.asarray(encoded.indices.fill_null(-1), dtype=np.int64)
    keep = _keep_first(codes, valid)
    _count(dropped, "customers.duplicate_customer_id", valid & ~keep, source, "customer_id")
    rows = np.flatnonzero(keep)
    rows = rows[np.asarray(pc.sort_indices(customer.take(pa.array(rows))))]
    take = pa.array(rows)

    features, vocab = {}, {}
    for feature, column in USER_CATEGORICALS:
        vocab[feature], features[feature] = vocabulary(
            _strings(source, column).take(take), config.min_count, config.max_vocab)
    vocab["postal_code"], features["postal_code"] = vocabulary(
        _strings(source, "postal_code").take(take), max(config.min_count, 2),
        config.postal_code_buckets)
    age = _floats(source, "age")[rows]
    implausible = ~np.isnan(age) & ((age < AGE_RANGE[0]) | (age > AGE_RANGE[1]))
    age[implausible] = np.nan
    features["age_bucket"] = age_buckets(age)
    vocab["age_bucket"] = [UNKNOWN] + [
        f"{lo}-{hi - 1}" for lo, hi in zip((0, *AGE_EDGES), AGE_EDGES)] + [f"{AGE_EDGES[-1]}+"]
    missing = np.isnan(age)
    flags = [np.nan_to_num(_floats(source, c)[rows]) != 0 for c in ("FN", "Active")]
    dense = np.stack([
        np.zeros(len(age)),  # scaled age: filled in by scale_age once splits are known
        missing.astype(np.float64),
        *flags,
    ], axis=1).astype(np.float32)
    stats = {"implausible_as_missing": int(implausible.sum())}
    return Customers(customer.take(take), features, vocab, dense, stats, age)


def scale_age(customers: Customers, fit: np.ndarray) -> None:
    """Fill the dense age column, standardised with the ``fit`` customers' ages."""
    scaled, stats = protocol.standardise(customers.age, fit)
    customers.dense[:, DENSE_FEATURES.index("age")] = scaled
    customers.age_stats.update(stats)


@dataclass
class Purchases:
    """Valid transactions in time order (by day, then file order)."""

    user: np.ndarray
    item: np.ndarray
    day: np.ndarray


def read_transactions(path: Path, articles: Articles, customers: Customers,
                      dropped: Dict[str, int]) -> Purchases:
    source = read_source(path, TRANSACTION_COLUMNS)
    day = _days(source, "t_dat")
    article, article_valid = _integers(source, "article_id")
    customer = _strings(source, "customer_id")
    customer_valid = ~np.asarray(customer.is_null())
    _count(dropped, "transactions.missing_article_id", ~article_valid, source, "article_id")
    _count(dropped, "transactions.missing_customer_id", article_valid & ~customer_valid,
           source, "customer_id")
    position = np.searchsorted(articles.article_id, article)
    position = np.minimum(position, len(articles.article_id) - 1)
    known_article = article_valid & (articles.article_id[position] == article)
    unknown_article = article_valid & customer_valid & ~known_article
    _count(dropped, "transactions.unknown_article", unknown_article, source, "article_id")
    user = np.asarray(pc.index_in(customer, value_set=customers.customer_id).fill_null(-1),
                      dtype=np.int64)
    unknown_customer = article_valid & customer_valid & known_article & (user < 0)
    _count(dropped, "transactions.unknown_customer", unknown_customer, source, "customer_id")
    keep = np.flatnonzero(known_article & customer_valid & (user >= 0))
    keep = keep[np.argsort(day[keep], kind="stable")]
    return Purchases(user[keep], position[keep], day[keep])


# -- splits ------------------------------------------------------------------
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


def history_before_day(user: np.ndarray, day: np.ndarray, purchases: Purchases,
                       counted: np.ndarray, history_len: int) -> np.ndarray:
    """Each row's user's last ``history_len`` counted purchases on earlier days.

    Most recent first, PAD_ID padded; purchases on the row's own day are left
    out, so neither a row nor its negatives see that day's basket.
    """
    base = int(min(day.min(initial=0), purchases.day.min(initial=0)))
    span = int(max(day.max(initial=0), purchases.day.max(initial=0))) - base + 1
    cu = purchases.user[counted]
    cd = purchases.day[counted] - base
    order = np.lexsort((cd, cu))  # stable: file order kept within a day
    keys = cu[order] * span + cd[order]
    items = purchases.item[counted][order]
    end = np.searchsorted(keys, user * span + (day - base), side="left")
    start = np.searchsorted(keys, user * span, side="left")
    history = np.full((len(user), history_len), PAD_ID, dtype=np.int64)
    for k in range(history_len):
        position = end - 1 - k
        ok = position >= start
        history[ok, k] = items[position[ok]]
    return history


# -- images ------------------------------------------------------------------
def find_images(src: Path, article_id: np.ndarray) -> Tuple[Dict[int, Path], List[str]]:
    """item id -> photo, from flat ``images/`` or Kaggle's ``images/<3 digits>/``."""
    root = src / "images"
    found, unmatched = {}, []
    if not root.is_dir():
        return found, unmatched
    for directory, _, files in os.walk(root):
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(directory) / name
            item = -1
            if stem.isdigit():
                at = int(np.searchsorted(article_id, int(stem)))
                if at < len(article_id) and article_id[at] == int(stem):
                    item = at
            if item < 0 or item in found:
                unmatched.append(str(path.relative_to(src)))
            else:
                found[item] = path
    return found, sorted(unmatched)


def write_images(root: Path, found: Dict[int, Path], n_items: int, mode: str,
                 unmatched: List[str]) -> Optional[Dict[str, Any]]:
    """Copy (or link) each matched photo to items/images/<item_id><suffix>."""
    if mode == "none" or not found:
        return None
    suffixes = sorted({p.suffix.lower() for p in found.values()})
    if len(suffixes) > 1:
        example = {s: next(str(p) for p in found.values() if p.suffix.lower() == s)
                   for s in suffixes}
        raise HMDataError(f"images: photos come in several formats {example}; "
                          "convert them to one so items/images has one file pattern")
    suffix = suffixes[0]
    if mode == "auto":
        size = sum(p.stat().st_size for p in found.values())
        mode = "copy" if size <= AUTO_COPY_LIMIT_BYTES else "symlink"
    directory = root / fmt.ITEMS / fmt.IMAGES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for item, path in sorted(found.items()):
        target = directory / f"{item}{suffix}"
        if mode == "copy":
            shutil.copyfile(path, target)
        else:
            os.symlink(path.resolve(), target)
    return {
        "kind": "image", "path": f"{fmt.ITEMS}/{fmt.IMAGES_DIR}",
        "pattern": "{item_id}" + suffix,
        "images_may_be_missing": True,
        "present": len(found), "missing": n_items - len(found),
        "mode": mode, "unmatched_files": len(unmatched),
    }


# -- schema and writing ------------------------------------------------------
def build_schema(n_users: int, articles: Articles, customers: Customers,
                 config: HMConfig, with_images: bool) -> Schema:
    n_items = len(articles.article_id)
    user = [SparseFeature("user_id", n_users, side="user")] + [
        SparseFeature(name, len(customers.vocab[name]), side="user")
        for name in ("club_member_status", "fashion_news_frequency", "age_bucket",
                     "postal_code")]
    item = [SparseFeature("item_id", n_items, side="item")] + [
        SparseFeature(name, len(articles.vocab[name]), side="item")
        for name, _ in ITEM_ATTRIBUTES]
    history = SparseFeature("history", n_items, side="user", pooling="mean",
                            max_len=config.history_len)
    knowledge = [KnowledgeField("description", kind="text")]
    if with_images:
        knowledge.append(KnowledgeField("image", kind="image"))
    return Schema(
        dense=tuple(DenseFeature(name, side="user") for name in DENSE_FEATURES),
        sparse=(*user, *item, history),
        knowledge=tuple(knowledge),
        label=fmt.LABEL_COLUMN,
        source=NAME,
    )


def write_split(directory: Path, schema: Schema, rows: Dict[str, np.ndarray],
                articles: Articles, customers: Customers) -> Dict[str, Any]:
    """One column at a time (gathered, written, freed): full H&M splits are large."""
    u, i = rows["user"], rows["item"]
    side = {**{name: (ids, u) for name, ids in customers.features.items()},
            **{name: (ids, i) for name, ids in articles.features.items()}}
    files = {fmt.DENSE_COLUMN: fmt.write_column(directory, fmt.DENSE_COLUMN,
                                                customers.dense[u])}
    for f in schema.sparse:
        if f.name in side:
            ids, index = side[f.name]
            values = ids[index]
        else:
            values = {"user_id": u, "item_id": i, "history": rows["history"]}[f.name]
        files[f.name] = fmt.write_column(
            directory, f.name, values.astype(np.int64).reshape(len(u), f.max_len))
    files[schema.label] = fmt.write_column(directory, schema.label,
                                           rows["label"].astype(np.float32))
    files[fmt.TIMESTAMP_COLUMN] = fmt.write_column(
        directory, fmt.TIMESTAMP_COLUMN, rows["day"].astype(np.int64) * 86400)
    files[fmt.SAMPLED_COLUMN] = fmt.write_column(directory, fmt.SAMPLED_COLUMN,
                                                 rows["sampled"].astype(bool))
    return {"rows": int(len(u)), "files": files}


def _rows_with_negatives(purchases: Purchases, positives: np.ndarray,
                         negatives: np.ndarray, history: np.ndarray) -> Dict[str, np.ndarray]:
    """Each positive followed by its negatives; negatives not found are left out."""
    k = negatives.shape[1]
    items = np.concatenate([purchases.item[positives][:, None], negatives], axis=1)
    present = (items >= 0).ravel()
    label = np.zeros((len(positives), 1 + k), dtype=np.float32)
    label[:, 0] = 1.0
    return {
        "sampled": (label == 0.0).ravel()[present],
        "user": np.repeat(purchases.user[positives], 1 + k)[present],
        "item": items.ravel()[present],
        "day": np.repeat(purchases.day[positives], 1 + k)[present],
        "history": np.repeat(history, 1 + k, axis=0)[present],
        "label": label.ravel()[present],
    }


def prepare_hm(src_dir: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
               config: ConfigLike = None) -> Dict[str, Any]:
    """Write a prepared directory from H&M tables; returns its manifest.

    ``out_dir`` must be absent or empty (two runs' files would pass no
    checksum); the manifest is written last, so an interrupted run leaves an
    incomplete directory that no reader accepts.
    """
    config = as_config(config)
    src, root = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise HMDataError(f"{src}: H&M source directory does not exist")
    paths = {name: find_table(src, name) for name in TABLE_FILES}
    if root.exists() and any(root.iterdir()):
        raise fmt.PreparedDataError(
            f"{root}: refusing to prepare into a non-empty directory; "
            "remove it or choose another --out")
    started = time.perf_counter()
    dropped = {reason: 0 for reason in DROP_REASONS}
    articles = read_articles(paths["articles"], config, dropped)
    customers = read_customers(paths["customers"], config, dropped)
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

    history = history_before_day(purchases.user, purchases.day, purchases, ~cold_row,
                                 config.history_len)
    train_counts = np.bincount(purchases.item[positives["train"]], minlength=n_items)
    rng = np.random.default_rng([config.seed, _NEGATIVES])
    found, unmatched = find_images(src, articles.article_id) if config.images != "none" \
        else ({}, [])
    schema = build_schema(n_users, articles, customers, config, with_images=bool(found))
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
        split_rows = _rows_with_negatives(purchases, positive, negatives, history[positive])
        splits[name] = write_split(root / name, schema, split_rows, articles, customers)
        negatives_count[name] = int((negatives >= 0).sum())
        del split_rows, negatives
    image_entry = write_images(root, found, n_items, config.images, unmatched)
    has_image = np.zeros(n_items, dtype=bool)
    has_image[list(found)] = True
    item_columns = {"item_id": np.arange(n_items, dtype=np.int64).reshape(-1, 1)}
    item_columns.update({name: ids.reshape(-1, 1) for name, ids in articles.features.items()})
    item_columns.update({"article_id": articles.article_id, "is_cold": is_cold,
                         "has_image": has_image})
    items = fmt.write_table(root / fmt.ITEMS, item_columns)
    users = fmt.write_table(root / "users", {
        "customer_id": np.asarray(customers.customer_id.to_pylist(), dtype="S")})
    knowledge = {"description": {
        "kind": "text", "path": f"{fmt.ITEMS}/{fmt.DESCRIPTIONS_FILE}",
        "sha256": fmt.write_json(root / fmt.ITEMS / fmt.DESCRIPTIONS_FILE,
                                 articles.descriptions)}}
    if image_entry is not None:
        knowledge["image"] = image_entry
    vocab_sha = fmt.write_json(root / "vocab.json",
                               {**customers.vocab, **articles.vocab})

    def period(mask):
        days = purchases.day[mask]
        return [_iso(days.min()), _iso(days.max())] if days.size else None

    manifest = {
        "format": fmt.FORMAT,
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
    fmt.write_manifest(root, manifest)
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
