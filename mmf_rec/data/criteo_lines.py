"""Criteo TSV lines, a block at a time, parsed with numpy.

A line is a 0/1 click label, 13 integer counts and 26 categorical values
(32-bit hashes written as hex), tab-separated; any field may be empty.
Files (``.gz`` too) are read in blocks of whole lines and each block is
parsed with vectorised numpy, so memory stays flat whatever the file size.
Lines with the wrong number of fields, bytes that are not ASCII, a label
other than 0/1, or unparsable numbers or hex values are returned by reason
with their line numbers.
"""

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Tuple

import numpy as np

N_DENSE, N_SPARSE = 13, 26
N_FIELDS = 1 + N_DENSE + N_SPARSE
BAD_LINES = {  # reason -> what is wrong with such a line
    "bad_encoding": "bytes outside ASCII",
    "wrong_field_count": f"expected {N_FIELDS} tab-separated fields",
    "bad_label": "the label must be 0 or 1",
    "bad_integer": "an integer column holds something else",
    "bad_categorical": "a categorical column is not hex (up to 16 digits)",
}
_HEX = np.full(256, 255, dtype=np.uint8)
for _c, _v in zip(b"0123456789abcdef", range(16)):
    _HEX[_c] = _v
for _c, _v in zip(b"ABCDEF", range(10, 16)):
    _HEX[_c] = _v


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def blocks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    """Whole lines, about ``chunk_bytes`` at a time (the last may lack its newline)."""
    rest = b""
    with _open(path) as f:
        while True:
            data = f.read(chunk_bytes)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            rest = data[cut:]
            yield data[:cut]
    if rest:
        yield rest


def count_lines(path: Path, chunk_bytes: int) -> int:
    n = 0
    for block in blocks(path, chunk_bytes):
        n += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    return n


@dataclass
class Chunk:
    line: np.ndarray  # 1-based line numbers of the kept rows
    label: np.ndarray  # float32
    dense: np.ndarray  # (rows, 13) int64, missing = 0
    dense_missing: np.ndarray  # (rows, 13) bool
    sparse: np.ndarray  # (rows, 26) uint64 hash values
    sparse_missing: np.ndarray  # (rows, 26) bool
    bad: Dict[str, np.ndarray]  # reason -> line numbers

    def take(self, rows: np.ndarray) -> "Chunk":
        """The kept rows ``rows``, without the bad lines."""
        return Chunk(self.line[rows], self.label[rows], self.dense[rows],
                     self.dense_missing[rows], self.sparse[rows], self.sparse_missing[rows], {})


def _segment_counts(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    total = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    return total[ends] - total[starts]


def _parse_int(data: np.ndarray, s: np.ndarray, e: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Decimal integers in data[s:e] (optional leading '-'); (values, ok)."""
    length = e - s
    negative = (length > 0) & (data[np.minimum(s, len(data) - 1)] == ord("-"))
    s = s + negative
    length = e - s
    ok = (length <= 18) & ~(negative & (length == 0))
    value = np.zeros(s.shape, dtype=np.int64)
    for j in range(int(length[ok].max(initial=0))):
        active = ok & (length > j)
        digit = data[np.where(active, s + j, 0)].astype(np.int64) - ord("0")
        ok &= ~active | ((digit >= 0) & (digit <= 9))
        value = np.where(active, value * 10 + digit, value)
    return np.where(negative, -value, value), ok


def _parse_hex(data: np.ndarray, s: np.ndarray, e: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    length = e - s
    ok = length <= 16
    value = np.zeros(s.shape, dtype=np.uint64)
    for j in range(int(length[ok].max(initial=0))):
        active = ok & (length > j)
        nibble = _HEX[data[np.where(active, s + j, 0)]]
        ok &= ~active | (nibble != 255)
        value = np.where(active, (value << np.uint64(4)) | nibble.astype(np.uint64), value)
    return value, ok


def parse_block(block: bytes, first_line: int) -> Tuple[Chunk, int]:
    """Parse the lines of ``block`` (line numbers from ``first_line``); returns
    the chunk and the number of lines it held (blank ones included)."""
    data = np.frombuffer(block, dtype=np.uint8)
    if len(data) and data[-1] != 10:
        data = np.concatenate([data, np.array([10], np.uint8)])
    newlines = np.flatnonzero(data == 10)
    starts = np.concatenate([[0], newlines[:-1] + 1])
    ends = newlines.copy()
    ends -= (ends > starts) & (data[np.maximum(ends - 1, 0)] == 13)  # CRLF
    line = first_line + np.arange(len(starts), dtype=np.int64)
    blank = ends == starts
    non_ascii = _segment_counts(data >= 128, starts, ends) > 0
    tabs_per_line = _segment_counts(data == 9, starts, ends)
    bad = {"bad_encoding": ~blank & non_ascii}
    bad["wrong_field_count"] = ~blank & ~non_ascii & (tabs_per_line != N_FIELDS - 1)
    good = np.flatnonzero(~blank & ~non_ascii & (tabs_per_line == N_FIELDS - 1))
    tabs = np.flatnonzero(data == 9)
    first_tab = np.searchsorted(tabs, starts[good])
    t = tabs[first_tab[:, None] + np.arange(N_FIELDS - 1)]
    fs = np.concatenate([starts[good][:, None], t + 1], axis=1)
    fe = np.concatenate([t, ends[good][:, None]], axis=1)
    label_ok = (fe[:, 0] - fs[:, 0] == 1) & np.isin(data[fs[:, 0]], (ord("0"), ord("1")))
    label = (data[fs[:, 0]] == ord("1")).astype(np.float32)
    ds, de = fs[:, 1:1 + N_DENSE], fe[:, 1:1 + N_DENSE]
    dense, dense_ok = _parse_int(data, ds.ravel(), de.ravel())
    dense, dense_ok = dense.reshape(ds.shape), dense_ok.reshape(ds.shape).all(axis=1)
    cs, ce = fs[:, 1 + N_DENSE:], fe[:, 1 + N_DENSE:]
    sparse, sparse_ok = _parse_hex(data, cs.ravel(), ce.ravel())
    sparse, sparse_ok = sparse.reshape(cs.shape), sparse_ok.reshape(cs.shape).all(axis=1)
    checks = (("bad_label", np.ones(len(good), dtype=bool), label_ok),
              ("bad_integer", label_ok, dense_ok),
              ("bad_categorical", label_ok & dense_ok, sparse_ok))
    for reason, checked, ok in checks:  # each bad line is counted once, by its first fault
        mask = np.zeros(len(starts), dtype=bool)
        mask[good[checked & ~ok]] = True
        bad[reason] = mask
    keep = label_ok & dense_ok & sparse_ok
    chunk = Chunk(
        line=line[good][keep], label=label[keep], dense=dense[keep],
        dense_missing=(de - ds)[keep] == 0, sparse=sparse[keep],
        sparse_missing=(ce - cs)[keep] == 0,
        bad={reason: line[mask] for reason, mask in bad.items()},
    )
    return chunk, len(starts)
