"""The H&M source directory read into typed arrays: articles, customers,
transactions and photos.

Reads the Kaggle layout (``articles.csv``, ``customers.csv``,
``transactions_train.csv``, ``images/<3 digits>/<article id, 10 digits>.jpg``)
or the same tables as parquet (``*_sample.parquet``, flat ``images/``).
Malformed values (an unparseable date or id) and missing files or columns
stop the run with one error naming file, column and row; rows that cannot be
used (an unknown article, a missing id, a duplicate catalogue entry) are
counted by reason in ``dropped`` and logged.
"""

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mmf_rec.data.report import DataInputError
from mmf_rec.data.vocab import buckets, vocabulary

logger = logging.getLogger(__name__)

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
DROP_REASONS = (
    "articles.missing_article_id", "articles.duplicate_article_id",
    "customers.missing_customer_id", "customers.duplicate_customer_id",
    "transactions.missing_article_id", "transactions.missing_customer_id",
    "transactions.unknown_article", "transactions.unknown_customer",
    "negatives.no_candidate",
)

class HMDataError(DataInputError):
    """The H&M input is missing, malformed, or the config asks the impossible."""


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


def read_articles(path: Path, min_count: int, max_vocab: int, dropped: Dict[str, int]
                  ) -> Articles:
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
        vocab[feature], features[feature] = vocabulary(text[column], min_count, max_vocab)
    columns = {c: a.to_pylist() for c, a in text.items()}
    descriptions = [describe({c: columns[c][i] for c in columns}) for i in range(len(rows))]
    return Articles(ids[rows], features, vocab, descriptions)


def read_customers(path: Path, min_count: int, max_vocab: int, postal_code_buckets: int,
                   dropped: Dict[str, int]) -> Customers:
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
            _strings(source, column).take(take), min_count, max_vocab)
    vocab["postal_code"], features["postal_code"] = vocabulary(
        _strings(source, "postal_code").take(take), max(min_count, 2), postal_code_buckets)
    age = _floats(source, "age")[rows]
    implausible = ~np.isnan(age) & ((age < AGE_RANGE[0]) | (age > AGE_RANGE[1]))
    age[implausible] = np.nan
    vocab["age_bucket"], features["age_bucket"] = buckets(age, AGE_EDGES)
    missing = np.isnan(age)
    flags = [np.nan_to_num(_floats(source, c)[rows]) != 0 for c in ("FN", "Active")]
    dense = np.stack([
        np.zeros(len(age)),  # scaled age: filled in by scale_age once splits are known
        missing.astype(np.float64),
        *flags,
    ], axis=1).astype(np.float32)
    stats = {"implausible_as_missing": int(implausible.sum())}
    return Customers(customer.take(take), features, vocab, dense, stats, age)


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


