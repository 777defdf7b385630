"""Categorical values -> ids, the same way in every real-data reader.

Id 0 of every vocabulary is ``UNKNOWN``: missing, rare, beyond the size cap
or never seen. The other ids go by descending frequency, so a model's
embedding tables and the saved ``vocab.json`` agree whichever reader wrote
the data.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UNKNOWN = "<unknown>"  # id 0 of every vocabulary: missing, rare or unseen


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


def encode(values: Sequence[Optional[str]], min_count: int, max_vocab: int
           ) -> Tuple[List[str], np.ndarray]:
    """Python strings (None = missing) -> :func:`vocabulary`."""
    return vocabulary(pa.array(list(values), pa.string()), min_count, max_vocab)


def buckets(values: np.ndarray, edges: Sequence[int]) -> Tuple[List[str], np.ndarray]:
    """A number (an age) as a categorical: 0 for NaN, then one id per interval
    of the ascending ``edges`` ("lo-hi", ..., "last+"); returns (names, ids)."""
    bucket = np.searchsorted(np.asarray(edges), np.nan_to_num(values), side="right") + 1
    ids = np.where(np.isnan(values), 0, bucket).astype(np.int64)
    names = [UNKNOWN] + [f"{lo}-{hi - 1}" for lo, hi in zip((0, *edges), edges)] + \
        [f"{edges[-1]}+"]
    return names, ids
