"""GroupLens text files line by line: encodings, separators, bad lines counted.

The MovieLens files come in three dialects (tab, ``|`` and ``::`` separated,
or quoted CSV), Latin-1 or UTF-8, and edited copies mix both encodings.
Each line is decoded on its own, split, and either handed on or counted in
the ``RowReport`` by reason with its line number.
"""

import csv
import io
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from mmf_rec.data.report import RowReport, lines_where


def line_encodings(path: Path, table: str, encoding: str) -> Tuple[str, ...]:
    """Encodings to try per line, the file's own first. auto: the movie titles
    are Latin-1 in the 100K/1M files (as GroupLens wrote them) and UTF-8 in
    the csv ones, but edited files mix both, so a title line is decoded as
    UTF-8 when it is valid UTF-8, else as Latin-1. Other tables are UTF-8 only
    (ids, ratings and zip codes are ASCII, so other bytes there are damage)."""
    if encoding != "auto":
        return (encoding,)
    if table != "movies":
        return ("utf-8",)
    return ("latin-1", "utf-8") if path.suffix != ".csv" else ("utf-8", "latin-1")


def decode_line(raw: bytes, encodings: Tuple[str, ...]) -> Tuple[Optional[str], bool]:
    """(text, whether it took another encoding than the file's own); text None
    when none fits. A non-ASCII line that is valid UTF-8 is UTF-8, even in a
    Latin-1 file: Latin-1 text almost never forms valid UTF-8."""
    order = encodings
    if "utf-8" in encodings and not raw.isascii():
        order = ("utf-8", *(e for e in encodings if e != "utf-8"))
    for encoding in order:
        try:
            return raw.decode(encoding), encoding != encodings[0]
        except UnicodeDecodeError:
            continue
    return None, False


def read_rows(path: Path, table: str, separator: str, n_fields: int, encoding: str,
              report: RowReport, header: bool = False) -> Iterator[Tuple[int, List[str]]]:
    """(line number, fields) of every usable line; the rest are counted.

    ``separator`` "csv" parses quoted CSV (movies.csv titles hold commas).
    A UTF-8 byte-order mark before the first line is not part of it.
    """
    encodings = line_encodings(path, table, encoding)
    bad: Dict[str, List[int]] = {"bad_encoding": [], "wrong_field_count": []}
    redecoded: List[int] = []
    total = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(tqdm(f, desc=path.name, unit=" lines", leave=False,
                                          disable=None, mininterval=2), start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if header and number == 1:
                continue
            line, other = decode_line(raw, encodings)
            if line is None:
                total += 1
                bad["bad_encoding"].append(number)
                continue
            line = line.rstrip("\r\n")
            if not line.strip():
                continue  # blank lines (e.g. a trailing one) carry nothing
            total += 1
            if other:
                redecoded.append(number)
            if separator == "csv":
                parts = next(csv.reader(io.StringIO(line)), [])
            else:
                parts = line.split(separator)
            if len(parts) != n_fields:
                bad["wrong_field_count"].append(number)
                continue
            yield number, parts
    report.read(table, total)
    for reason, numbers in bad.items():
        detail = {"bad_encoding": f"not valid {' or '.join(encodings)}",
                  "wrong_field_count": f"expected {n_fields} fields"}[reason]
        report.drop(f"{table}.{reason}", len(numbers), lines_where(path.name, numbers), detail)
    report.repair(f"{table}.redecoded", len(redecoded), lines_where(path.name, redecoded),
                  f"not {encodings[0]} like the rest of the file: decoded as "
                  f"{' / '.join(encodings[1:])}")


def parse_int(text: str) -> Optional[int]:
    text = text.strip()
    return int(text) if re.fullmatch(r"[+-]?\d{1,18}", text) else None


def parse_float(text: str) -> Optional[float]:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None
