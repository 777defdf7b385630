"""Criteo display-advertising logs -> the prepared format, with DLRM's preprocessing.

Each line is tab-separated: a 0/1 click label, 13 integer counts (I1..I13)
and 26 categorical values (C1..C26, 32-bit hashes written as hex); any
field may be empty. Layouts:

* Kaggle (Display Advertising Challenge): one ``train.txt`` of 7 days in time
  order. As in DLRM, the first 6/7 of its lines train, and the last day is
  halved into val and test.
* Terabyte (Criteo 1TB click logs): ``day_0`` ... ``day_23`` (``.gz`` too).
  Every day but the last trains, and the last is halved into val and test.

Preprocessing (DLRM's): dense values become log(1 + x), with negatives
clipped to 0 and missing values set to 0 (both are counted in the report).
Categorical values get ids either by frequency (values seen at least
``min_frequency`` times in the training lines, at most ``max_table_size`` - 1
of them, most frequent kept; the vocabularies are saved under ``vocab/`` so
that new data maps the same way) or by hashing (value mod
``max_table_size`` - 1, plus 1). In both modes id 0 is the missing /
rare / unknown row.

Files are read in blocks of ``chunk_mb`` and parsed with numpy, one block at
a time (``criteo_lines.py``). Malformed lines are dropped, counted by reason
with their first line numbers. The output is built beside ``--out`` and
renamed into place only when complete.
"""

import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
from tqdm import tqdm

from mmf_rec.data.cli import reader_main
from mmf_rec.data.config import as_config, config_from_mapping, requirement
from mmf_rec.data.criteo_lines import (
    BAD_LINES, N_DENSE, N_SPARSE, Chunk, blocks, count_lines, parse_block)
from mmf_rec.data.prepared_layout import (
    DENSE_COLUMN, FORMAT, LABEL_COLUMN, SAMPLED_COLUMN, column_entry, write_column,
    write_manifest)
from mmf_rec.data.report import DataInputError, RowReport, atomic_output, lines_where, \
    write_report
from mmf_rec.schema import DenseFeature, Schema, SparseFeature

logger = logging.getLogger(__name__)

NAME = "criteo"
PREPARER_VERSION = 1
DENSE_NAMES = tuple(f"I{i}" for i in range(1, N_DENSE + 1))
SPARSE_NAMES = tuple(f"C{i}" for i in range(1, N_SPARSE + 1))
SPLITS = ("train", "val", "test")
_DAY = re.compile(r"^day_(\d+)(\.gz)?$")


class CriteoDataError(DataInputError):
    """The Criteo input is missing or malformed, or the config is wrong."""


@dataclass(frozen=True)
class CriteoConfig:
    layout: str = "auto"  # auto | kaggle | terabyte
    categorical: str = "frequency"  # frequency | hash
    min_frequency: int = 1
    max_table_size: int = 10_000_000  # rows per table, id 0 included
    train_fraction: float = 6 / 7  # kaggle: share of lines that train (6 of 7 days)
    chunk_mb: int = 64
    on_bad_rows: str = "skip"
    max_bad_fraction: float = 0.01

    @classmethod
    def from_mapping(cls, data, source: str = "criteo config") -> "CriteoConfig":
        return config_from_mapping(cls, data, source, CriteoDataError,
                                   ignore=("preparer_version",))

    def validate(self, source: str = "criteo config") -> None:
        need = requirement(self, source, CriteoDataError)
        need(self.layout in ("auto", "kaggle", "terabyte"), "layout",
             "auto, kaggle or terabyte")
        need(self.categorical in ("frequency", "hash"), "categorical", "frequency or hash")
        need(self.min_frequency >= 1, "min_frequency", ">= 1")
        need(self.max_table_size >= 2, "max_table_size", ">= 2")
        need(0.0 < self.train_fraction < 1.0, "train_fraction", "in (0, 1)")
        need(self.chunk_mb >= 1, "chunk_mb", ">= 1")
        need(self.on_bad_rows in ("skip", "fail"), "on_bad_rows", "skip or fail")
        need(0.0 <= self.max_bad_fraction <= 1.0, "max_bad_fraction", "in [0, 1]")

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "preparer_version": PREPARER_VERSION}


# -- files and line ranges ---------------------------------------------------
def find_files(src: Path, layout: str) -> Tuple[str, List[Path]]:
    """The layout and its files in time order."""
    if src.is_file():
        if layout == "terabyte":
            raise CriteoDataError(f"{src}: the terabyte layout is a directory of day_N files")
        return "kaggle", [src]
    if not src.is_dir():
        raise CriteoDataError(f"{src}: Criteo source does not exist")
    days = sorted(((int(m.group(1)), p) for p in src.iterdir()
                   if (m := _DAY.match(p.name))), key=lambda x: x[0])
    kaggle = [src / n for n in ("train.txt", "train.txt.gz") if (src / n).is_file()]
    if layout in ("auto", "terabyte") and days:
        numbers = [d for d, _ in days]
        if len(set(numbers)) != len(numbers) or numbers != list(range(numbers[0],
                                                                     numbers[-1] + 1)):
            raise CriteoDataError(f"{src}: day files must be consecutive and unique, found "
                                  f"{[p.name for _, p in days]}")
        if len(days) < 2:
            raise CriteoDataError(f"{src}: the terabyte layout needs at least two day files "
                                  "(all but the last train; the last is val and test)")
        return "terabyte", [p for _, p in days]
    if layout in ("auto", "kaggle") and kaggle:
        return "kaggle", kaggle[:1]
    raise CriteoDataError(f"{src}: no Criteo files; looked for train.txt[.gz] (kaggle) and "
                          "day_0 ... day_N[.gz] (terabyte)")


# -- categorical ids -----------------------------------------------------------
class FrequencyCounter:
    """Per-column counts of hash values, merged as chunks arrive."""

    def __init__(self):
        self.values = [np.zeros(0, np.uint64) for _ in range(N_SPARSE)]
        self.counts = [np.zeros(0, np.int64) for _ in range(N_SPARSE)]

    def add(self, chunk: Chunk) -> None:
        for j in range(N_SPARSE):
            present = chunk.sparse[~chunk.sparse_missing[:, j], j]
            values, counts = np.unique(present, return_counts=True)
            merged = np.concatenate([self.values[j], values])
            weights = np.concatenate([self.counts[j], counts])
            self.values[j], inverse = np.unique(merged, return_inverse=True)
            self.counts[j] = np.bincount(inverse, weights=weights).astype(np.int64)

    def vocabularies(self, min_frequency: int, max_size: int) -> List[np.ndarray]:
        """Sorted kept values per column: frequent enough, most frequent first to the cap."""
        out = []
        for values, counts in zip(self.values, self.counts):
            keep = counts >= min_frequency
            values, counts = values[keep], counts[keep]
            if len(values) > max_size - 1:
                top = np.lexsort((values, -counts))[: max_size - 1]
                values = values[top]
            out.append(np.sort(values))
        return out


def map_ids(chunk: Chunk, config: CriteoConfig, vocab: Optional[List[np.ndarray]]
            ) -> np.ndarray:
    """(rows, 26) int64 ids; 0 = missing, rare or unknown."""
    ids = np.zeros(chunk.sparse.shape, dtype=np.int64)
    for j in range(N_SPARSE):
        values = chunk.sparse[:, j]
        if vocab is None:
            column = (values % np.uint64(config.max_table_size - 1)).astype(np.int64) + 1
        else:
            table = vocab[j]
            at = np.minimum(np.searchsorted(table, values), max(len(table) - 1, 0))
            known = (table[at] == values) if len(table) else np.zeros(len(values), bool)
            column = np.where(known, at + 1, 0)
        ids[:, j] = np.where(chunk.sparse_missing[:, j], 0, column)
    return ids


def dense_transform(chunk: Chunk) -> Tuple[np.ndarray, int]:
    """log(1 + max(x, 0)) as float32; missing are already 0. Returns the count clipped."""
    negative = chunk.dense < 0
    return np.log1p(np.maximum(chunk.dense, 0).astype(np.float64)).astype(np.float32), \
        int(negative.sum())


# -- writing ---------------------------------------------------------------------
class SplitWriter:
    """Appends a split's columns to raw files, then turns them into .npy files."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.rows = 0
        self.columns = {LABEL_COLUMN: (np.float32, ()), SAMPLED_COLUMN: (np.bool_, ()),
                        DENSE_COLUMN: (np.float32, (N_DENSE,)),
                        **{name: (np.int64, (1,)) for name in SPARSE_NAMES}}
        self.files = {name: open(directory / f".{name}.raw", "wb") for name in self.columns}

    def append(self, label: np.ndarray, dense: np.ndarray, ids: np.ndarray) -> None:
        self.files[LABEL_COLUMN].write(np.ascontiguousarray(label, np.float32).tobytes())
        # every Criteo row is a logged impression: nothing is sampled
        self.files[SAMPLED_COLUMN].write(np.zeros(len(label), np.bool_).tobytes())
        self.files[DENSE_COLUMN].write(np.ascontiguousarray(dense, np.float32).tobytes())
        for j, name in enumerate(SPARSE_NAMES):
            self.files[name].write(np.ascontiguousarray(ids[:, j], np.int64).tobytes())
        self.rows += len(label)

    def finish(self) -> Dict[str, Any]:
        entries = {}
        for name, (dtype, tail) in self.columns.items():
            self.files[name].close()
            raw = self.directory / f".{name}.raw"
            path = self.directory / f"{name}.npy"
            shape = (self.rows, *tail)
            out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
            if self.rows:
                source = np.memmap(raw, dtype=dtype, mode="r", shape=shape)
                step = 1 << 20
                for start in range(0, self.rows, step):
                    out[start:start + step] = source[start:start + step]
                del source
            out.flush()
            del out
            os.remove(raw)
            entries[name] = column_entry(path, np.load(path, mmap_mode="r"))
        return {"rows": self.rows, "files": entries}

    def close(self):
        for f in self.files.values():
            f.close()


def _schedule(layout: str, files: List[Path], config: CriteoConfig
              ) -> List[Tuple[Path, List[Tuple[int, str]]]]:
    """Per file, (first line of a range, split) pairs in line order."""
    chunk = config.chunk_mb << 20
    if layout == "kaggle":
        n = count_lines(files[0], chunk)
        train_end = int(n * config.train_fraction)
        val_end = train_end + (n - train_end) // 2
        return [(files[0], [(1, "train"), (train_end + 1, "val"), (val_end + 1, "test")])]
    last = count_lines(files[-1], chunk)
    plan = [(p, [(1, "train")]) for p in files[:-1]]
    plan.append((files[-1], [(1, "val"), (last // 2 + 1, "test")]))
    return plan


def _rows_by_split(chunk: Chunk, ranges: List[Tuple[int, str]]) -> Dict[str, np.ndarray]:
    starts = np.asarray([s for s, _ in ranges])
    which = np.searchsorted(starts, chunk.line, side="right") - 1
    return {name: np.flatnonzero(which == k) for k, (_, name) in enumerate(ranges)}


def _pass(plan, config: CriteoConfig, desc: str) -> Iterator[Tuple[Path, List, Chunk]]:
    chunk_bytes = config.chunk_mb << 20
    total = sum(p.stat().st_size for p, _ in plan)
    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=None,
              mininterval=2, leave=False) as bar:
        for path, ranges in plan:
            line = 1
            for block in blocks(path, chunk_bytes):
                chunk, n = parse_block(block, line)
                line += n
                bar.update(len(block) if path.suffix != ".gz" else 0)
                yield path, ranges, chunk
            if path.suffix == ".gz":
                bar.update(path.stat().st_size)


def prepare_criteo(src: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
                   config=None) -> Dict[str, Any]:
    """Write a prepared directory from Criteo TSV files; returns its manifest."""
    config = as_config(CriteoConfig, config)
    started = time.perf_counter()
    layout, files = find_files(Path(src), config.layout)
    plan = _schedule(layout, files, config)
    report = RowReport(policy=config.on_bad_rows, max_bad_fraction=config.max_bad_fraction)
    vocab = None
    if config.categorical == "frequency":
        counter = FrequencyCounter()
        for _, ranges, chunk in _pass(plan, config, "counting"):
            rows = _rows_by_split(chunk, ranges).get("train")
            if rows is not None and rows.size:
                counter.add(chunk.take(rows))
        vocab = counter.vocabularies(config.min_frequency, config.max_table_size)
    missing = np.zeros(N_DENSE + N_SPARSE, dtype=np.int64)
    clipped, positives = 0, {s: 0 for s in SPLITS}
    with atomic_output(out_dir) as root:
        writers = {name: SplitWriter(root / name) for name in SPLITS}
        try:
            for path, ranges, chunk in _pass(plan, config, "writing"):
                report.read("lines", len(chunk.line) + sum(len(v) for v in chunk.bad.values()))
                for reason, lines in chunk.bad.items():
                    report.drop(f"lines.{reason}", len(lines), lines_where(path.name, lines),
                                BAD_LINES[reason])
                missing += np.concatenate([chunk.dense_missing.sum(axis=0),
                                           chunk.sparse_missing.sum(axis=0)])
                dense, n_clipped = dense_transform(chunk)
                clipped += n_clipped
                ids = map_ids(chunk, config, vocab)
                for name, rows in _rows_by_split(chunk, ranges).items():
                    writers[name].append(chunk.label[rows], dense[rows], ids[rows])
                    positives[name] += int(chunk.label[rows].sum())
            splits = {name: w.finish() for name, w in writers.items()}
        finally:
            for w in writers.values():
                w.close()
        report.repair("lines.dense_missing_set_to_0", int(missing[:N_DENSE].sum()))
        report.repair("lines.dense_negative_clipped_to_0", clipped)
        report.check()
        empty = [name for name, entry in splits.items() if entry["rows"] == 0]
        if empty:
            usable = sum(entry["rows"] for entry in splits.values())
            raise CriteoDataError(f"{src}: splits {empty} would be empty; the input has "
                                  f"{usable} usable lines")
        if vocab is not None:
            cardinality = [len(v) + 1 for v in vocab]
            vocab_files = {name: write_column(root / "vocab", name, v)
                           for name, v in zip(SPARSE_NAMES, vocab)}
        else:
            cardinality = [config.max_table_size] * N_SPARSE
            vocab_files = {}
        schema = Schema(
            dense=tuple(DenseFeature(n, side="context") for n in DENSE_NAMES),
            sparse=tuple(SparseFeature(n, int(c), side="context")
                         for n, c in zip(SPARSE_NAMES, cardinality)),
            label=LABEL_COLUMN, source=NAME)
        manifest = {
            "format": FORMAT,
            "name": NAME,
            "schema": schema.to_dict(),
            "splits": splits,
            "item_feature": None,
            "oracle_auc": None,
            "layout": layout,
            "preparer": config.to_dict(),
            "source": {"files": [str(p.resolve()) for p in files],
                       "bytes": sum(p.stat().st_size for p in files)},
            "vocab": {"path": "vocab", "mode": config.categorical, "files": vocab_files,
                      "unknown_id": 0},
            "missing_values": {name: int(n) for name, n in
                               zip(DENSE_NAMES + SPARSE_NAMES, missing)},
            "positives": positives,
            "dropped": dict(report.dropped),
            "repaired": dict(report.repaired),
        }
        manifest["report"] = write_report(root, report, {"name": NAME})
        write_manifest(root, manifest)
    logger.info("prepared %s (%s) in %.1f s: rows %s; %s", NAME, layout,
                time.perf_counter() - started, {k: v["rows"] for k, v in splits.items()},
                report.summary())
    return manifest


def main(argv=None) -> int:
    return reader_main(
        argv, prog="python -m mmf_rec.data.criteo",
        description="Prepare Criteo display-advertising TSV (Kaggle or Terabyte layout) "
                    "with DLRM's preprocessing.",
        src_help="train.txt (or the folder holding it), or a folder of day_N files",
        config_cls=CriteoConfig, prepare=prepare_criteo,
    )


if __name__ == "__main__":
    raise SystemExit(main())
