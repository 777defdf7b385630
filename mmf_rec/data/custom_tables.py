"""A table that a data yaml names, read as trimmed strings with line numbers.

CSV, TSV or parquet; only the named columns are read. Cells stay Python
strings (None when empty) until the reader types them, so a bad value is
reported with its file and line instead of failing the whole read. Rows with
the wrong number of fields or bytes that are not UTF-8 are dropped and
counted in the ``RowReport``.
"""

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mmf_rec.data.report import DataInputError, RowReport, lines_where


class CustomDataError(DataInputError):
    """The data yaml or the tables it names are missing or malformed."""


class Table:
    """A table's named columns as Python strings (None = empty), with line numbers."""

    def __init__(self, path: Path, name: str, columns: Sequence[str], report: RowReport,
                 delimiter: Optional[str] = None):
        self.path, self.name = path, name
        if not path.is_file():
            raise CustomDataError(f"{name}.path: {path} does not exist")
        columns = list(dict.fromkeys(c for c in columns if c))
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            table, self.line = self._parquet(columns), None
        elif suffix in (".csv", ".tsv", ".txt"):
            table = self._csv(columns, delimiter or ("\t" if suffix == ".tsv" else ","),
                              report)
        else:
            raise CustomDataError(f"{name}.path: {path}: expected .csv, .tsv or .parquet")
        report.read(name, table.num_rows + self.malformed)
        self.values: Dict[str, List[Optional[str]]] = {}
        bad_rows = np.zeros(table.num_rows, dtype=bool)
        for column in columns:
            values, bad = _decode(table[column])
            self.values[column] = values
            bad_rows |= bad
        self.rows = table.num_rows
        if self.line is None:
            self.line = np.arange(1, self.rows + 1)
        self.keep = ~bad_rows
        report.drop(f"{name}.bad_encoding", int(bad_rows.sum()),
                    lines_where(path.name, self.line[bad_rows]), "not valid UTF-8")

    def _parquet(self, columns):
        self.malformed = 0
        names = pq.read_schema(self.path).names
        self._need(columns, names)
        return pq.read_table(self.path, columns=columns)

    def _csv(self, columns, delimiter, report):
        with open(self.path, "rb") as f:
            header = f.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
        names = next(iter([header.split(delimiter)]))
        names = [n.strip().strip('"') for n in names]
        self._need(columns, names)
        bad: List[int] = []

        def invalid(row):
            bad.append(row.number if row.number is not None else -1)
            return "skip"

        try:
            table = pacsv.read_csv(
                self.path,
                parse_options=pacsv.ParseOptions(delimiter=delimiter,
                                                 invalid_row_handler=invalid),
                convert_options=pacsv.ConvertOptions(
                    include_columns=columns,
                    column_types={c: pa.binary() for c in columns}),
                read_options=pacsv.ReadOptions(use_threads=False))
        except (OSError, pa.ArrowException) as e:
            raise CustomDataError(f"{self.path}: cannot be read as CSV ({e})") from None
        self.malformed = len(bad)
        # pyarrow numbers rows from 1 (the header) and skips empty lines; the
        # report names lines of the file (no quoted newlines assumed; else approximate)
        line_of = _line_numbers(self.path)
        report.drop(f"{self.name}.wrong_field_count", len(bad),
                    lines_where(self.path.name, line_of(bad)),
                    f"expected {len(names)} fields like the header")
        rows = np.setdiff1d(np.arange(2, table.num_rows + len(bad) + 2), bad)
        self.line = line_of(rows[: table.num_rows])
        return table

    def _need(self, columns, names):
        missing = [c for c in columns if c not in names]
        if missing:
            raise CustomDataError(f"{self.path}: column '{missing[0]}' is missing"
                                  + (f" (and {missing[1:]})" if len(missing) > 1 else "")
                                  + f"; the file has {names}")

    def where(self, mask: np.ndarray) -> List[str]:
        return lines_where(self.path.name, self.line[mask])


def _line_numbers(path: Path):
    """Row numbers as pyarrow's CSV reader gives them (1 = the first non-empty
    line; empty lines are skipped) -> line numbers of the file."""
    with open(path, "rb") as f:
        empty = [n for n, raw in enumerate(f, start=1) if raw in (b"\n", b"\r\n")]
    # the i-th empty line (0-based) follows this many non-empty ones
    before = np.asarray(empty, dtype=np.int64) - np.arange(1, len(empty) + 1)

    def line_of(rows):
        rows = np.asarray(rows, dtype=np.int64)
        return rows + np.searchsorted(before, rows, side="left")

    return line_of


def _decode(array) -> Tuple[List[Optional[str]], np.ndarray]:
    """Trimmed strings (empty -> None) and a mask of undecodable cells."""
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        try:
            array = pc.cast(array, pa.string())
        except pa.ArrowInvalid:
            values, bad = [], []
            for raw in array.to_pylist():
                try:
                    values.append(None if raw is None else raw.decode("utf-8"))
                    bad.append(False)
                except UnicodeDecodeError:
                    values.append(None)
                    bad.append(True)
            array = pa.array(values, pa.string())
            return _clean(array), np.asarray(bad, dtype=bool)
    elif not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        array = pc.cast(array, pa.string())
    return _clean(array), np.zeros(len(array), dtype=bool)


def _clean(array) -> List[Optional[str]]:
    return [None if v is None or not v.strip() else v.strip() for v in array.to_pylist()]
