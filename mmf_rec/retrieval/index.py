"""A FAISS index over item vectors, with the metadata that makes it safe to use.

A bare FAISS file is a matrix of numbers: nothing says which model produced
them, which item each row is, or how to compare a query with them. Searching
it with vectors from another model, of another size or under another metric
returns confident nonsense. So an index here is a directory::

    index.faiss    the FAISS index (rows 0..N-1)
    item_ids.npy   int64 (N,): the item id of each row
    meta.json      index type and parameters, metric, dimension, item count,
                   the fingerprint of the model that produced the vectors,
                   and the sha256 of the two files above; written last

and every search states what its queries are (dimension, metric, model
fingerprint); any disagreement is one ``IndexMismatchError`` naming all of
them.

Index types: ``flat`` (exact; the default), ``hnsw`` (graph; params M,
ef_construction, ef_search) and ``ivfpq`` (inverted lists of product-quantised
codes; params nlist, m, nbits, nprobe, and refine: re-score that many times k
candidates exactly, 0 = off). Metrics: ``ip`` (inner product, higher is
better: cosine for unit vectors) and ``l2`` (squared distance, lower is
better); ``scores`` are what FAISS returns under that metric.
"""

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from mmf_rec.files import atomic_path, atomic_write, sha256_file

FORMAT = "mmf_rec.item_index/1"
INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.npy"
META_FILE = "meta.json"
METRICS = ("ip", "l2")
INDEX_TYPES = ("flat", "hnsw", "ivfpq")
DEFAULT_PARAMS = {
    "flat": {},
    "hnsw": {"M": 32, "ef_construction": 200, "ef_search": 128},
    # nlist / m / nbits None: chosen from the catalogue size and dimension
    "ivfpq": {"nlist": None, "m": None, "nbits": 8, "nprobe": 32, "refine": 4},
}
SEARCH_PARAMS = {"hnsw": ("ef_search",), "ivfpq": ("nprobe", "refine"), "flat": ()}
PathLike = Union[str, os.PathLike]


class RetrievalIndexError(ValueError):
    """Base of the index errors (a ValueError: bad input, not a bug)."""


class IndexMismatchError(RetrievalIndexError):
    """A query does not fit the index: other dimension, metric or model."""


class IndexFileError(RetrievalIndexError):
    """An index directory is missing, incomplete, empty or corrupt."""


def _faiss():
    import faiss

    return faiss


@dataclass
class IndexMeta:
    index_type: str
    metric: str
    dim: int
    num_items: int
    params: Dict[str, Any]
    model_fingerprint: Optional[str]
    # free-form provenance: run dir, model name, dataset, ...
    source: Dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    files: Dict[str, str] = field(default_factory=dict)
    faiss_version: str = ""
    build_seconds: Optional[float] = None


def _resolved_params(index_type: str, params: Optional[Dict[str, Any]], dim: int,
                     num_items: int) -> Dict[str, Any]:
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type '{index_type}'; expected one of {list(INDEX_TYPES)}")
    defaults = DEFAULT_PARAMS[index_type]
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"{index_type} index: unknown params {unknown}; "
                         f"it takes {sorted(defaults) or 'none'}")
    out = {**defaults, **{k: v for k, v in params.items() if v is not None}}
    if index_type == "ivfpq":
        if out["nlist"] is None:
            # ~4 sqrt(N) lists, each with at least 39 training points (FAISS's minimum)
            out["nlist"] = int(max(1, min(4 * math.sqrt(num_items), num_items // 39)))
        if out["m"] is None:
            out["m"] = max(1, dim // 4)
        if dim % int(out["m"]) != 0:
            raise ValueError(f"ivfpq index: m={out['m']} must divide the dimension {dim}")
        if num_items < 39 * int(out["nlist"]):
            raise ValueError(
                f"ivfpq index: nlist={out['nlist']} needs at least {39 * int(out['nlist'])} "
                f"training vectors, got {num_items}; lower nlist or use flat / hnsw")
        if num_items < 2 ** int(out["nbits"]):
            raise ValueError(
                f"ivfpq index: nbits={out['nbits']} means {2 ** int(out['nbits'])} centroids per "
                f"sub-quantiser but there are only {num_items} vectors; lower nbits")
    return out


class ItemIndex:
    """Item vectors in a FAISS index, with their item ids and provenance."""

    def __init__(self, index, item_ids: np.ndarray, meta: IndexMeta):
        self.index = index
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.meta = meta
        self._apply_search_params()

    # -- build ----------------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, item_ids: Sequence[int], metric: str = "ip",
              index_type: str = "flat", params: Optional[Dict[str, Any]] = None,
              model_fingerprint: Optional[str] = None, source: Optional[Dict[str, Any]] = None,
              batch_size: int = 65536, progress: bool = True, seed: int = 1) -> "ItemIndex":
        """Index ``vectors`` (N, d); row i is item ``item_ids[i]``."""
        faiss = _faiss()
        vectors = _as_matrix(vectors, "item vectors")
        item_ids = _as_ids(item_ids, len(vectors))
        if len(vectors) == 0:
            raise ValueError("cannot build an index over zero items")
        if metric not in METRICS:
            raise ValueError(f"unknown metric '{metric}'; expected one of {list(METRICS)}")
        dim = vectors.shape[1]
        params = _resolved_params(index_type, params, dim, len(vectors))
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        start = time.perf_counter()
        if index_type == "flat":
            index = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
        elif index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss_metric)
            index.hnsw.efConstruction = int(params["ef_construction"])
        else:
            quantizer = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
            index = faiss.IndexIVFPQ(quantizer, dim, int(params["nlist"]), int(params["m"]),
                                     int(params["nbits"]), faiss_metric)
            index.cp.seed = seed
            index.pq.cp.seed = seed
            if int(params["refine"]) > 0:
                index = faiss.IndexRefineFlat(index)
            index.train(vectors)
        meta = IndexMeta(index_type=index_type, metric=metric, dim=dim, num_items=0,
                         params=params, model_fingerprint=model_fingerprint,
                         source=dict(source or {}), faiss_version=faiss.__version__)
        built = cls(index, np.zeros(0, dtype=np.int64), meta)
        built._add_rows(vectors, item_ids, batch_size, progress)
        built.meta.build_seconds = round(time.perf_counter() - start, 3)
        return built

    def _add_rows(self, vectors: np.ndarray, item_ids: np.ndarray, batch_size: int,
                  progress: bool) -> None:
        starts = range(0, len(vectors), batch_size)
        for start in tqdm(starts, desc=f"adding to {self.meta.index_type} index", unit="batch",
                          disable=not progress or len(starts) < 2):
            self.index.add(np.ascontiguousarray(vectors[start:start + batch_size]))
        self.item_ids = np.concatenate([self.item_ids, item_ids])
        self.meta.num_items = int(self.index.ntotal)

    def add(self, vectors: np.ndarray, item_ids: Sequence[int],
            model_fingerprint: Optional[str] = None, batch_size: int = 65536,
            progress: bool = True) -> None:
        """Add new items without rebuilding; their vectors must come from the
        index's model, and their ids must not be in the index yet."""
        vectors = _as_matrix(vectors, "item vectors")
        item_ids = _as_ids(item_ids, len(vectors))
        self.check_query(vectors.shape[1], self.meta.metric, model_fingerprint, what="new items")
        present = np.intersect1d(item_ids, self.item_ids)
        if present.size:
            raise ValueError(f"items already in the index: {present[:10].tolist()}"
                             f"{' ...' if present.size > 10 else ''}")
        self._add_rows(vectors, item_ids, batch_size, progress)

    # -- search ---------------------------------------------------------------------
    def check_query(self, dim: int, metric: str, model_fingerprint: Optional[str],
                    what: str = "query") -> None:
        """One error naming every way a query disagrees with the index."""
        problems = []
        if int(dim) != self.meta.dim:
            problems.append(f"dimension {dim} != the index's {self.meta.dim}")
        if metric != self.meta.metric:
            problems.append(f"metric '{metric}' != the index's '{self.meta.metric}'")
        if model_fingerprint is not None and model_fingerprint != self.meta.model_fingerprint:
            problems.append(
                f"model fingerprint {model_fingerprint} != the index's "
                f"{self.meta.model_fingerprint} (the index was built from another model or "
                "checkpoint; rebuild it with tools/build_index.py)")
        if problems:
            raise IndexMismatchError(f"{what} does not match the index: " + "; ".join(problems))

    def search(self, queries: np.ndarray, k: int, metric: str = "ip",
               model_fingerprint: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top ``k`` items of each query: (scores, item ids), each (Q, k), best
        first. ``metric`` and ``model_fingerprint`` say what the queries are and
        are checked against the index (a None fingerprint skips that check)."""
        queries = _as_matrix(queries, "queries")
        self.check_query(queries.shape[1], metric, model_fingerprint)
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if self.meta.num_items == 0:
            raise ValueError("the index is empty")
        if k > self.meta.num_items:
            raise ValueError(f"k={k} exceeds the {self.meta.num_items} items in the index")
        scores, rows = self.index.search(np.ascontiguousarray(queries), int(k))
        ids = np.where(rows >= 0, self.item_ids[np.clip(rows, 0, None)], -1)
        return scores, ids

    def set_search_params(self, **params) -> None:
        """Change query-time parameters (ef_search; nprobe, refine)."""
        allowed = SEARCH_PARAMS[self.meta.index_type]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(f"{self.meta.index_type} index: unknown search params {unknown}; "
                             f"it takes {list(allowed) or 'none'}")
        if self.meta.index_type == "ivfpq" and "refine" in params:
            if (int(params["refine"]) > 0) != (int(self.meta.params["refine"]) > 0):
                raise ValueError("ivfpq index: refine can be tuned but not switched on or off "
                                 "after the build (it changes what is stored)")
        self.meta.params.update({k: v for k, v in params.items() if v is not None})
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        faiss = _faiss()
        params = self.meta.params
        if self.meta.index_type == "hnsw":
            faiss.downcast_index(self.index).hnsw.efSearch = int(params["ef_search"])
        elif self.meta.index_type == "ivfpq":
            faiss.extract_index_ivf(self.index).nprobe = int(params["nprobe"])
            if int(params["refine"]) > 0:
                faiss.downcast_index(self.index).k_factor = float(params["refine"])

    # -- files ----------------------------------------------------------------------
    def save(self, directory: PathLike) -> Path:
        """Write the index directory; meta.json last, so a directory with a
        meta.json whose checksums match is complete."""
        faiss = _faiss()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta_path = directory / META_FILE
        if meta_path.exists():
            meta_path.unlink()  # the directory is incomplete until the new one lands
        with atomic_path(directory / INDEX_FILE) as tmp:
            faiss.write_index(self.index, str(tmp))
        with atomic_path(directory / IDS_FILE) as tmp, open(tmp, "wb") as f:
            np.save(f, self.item_ids, allow_pickle=False)
        self.meta.files = {name: sha256_file(directory / name)
                           for name in (INDEX_FILE, IDS_FILE)}
        atomic_write(meta_path, json.dumps(asdict(self.meta), indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: PathLike, verify: bool = True) -> "ItemIndex":
        """Read an index directory, checking it is complete and unchanged."""
        faiss = _faiss()
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not directory.is_dir():
            raise IndexFileError(f"{directory}: no index directory here; build one with "
                                 "tools/build_index.py")
        if not meta_path.is_file():
            raise IndexFileError(f"{meta_path}: missing; {directory} is not a complete index "
                                 "(it is written last; an interrupted save leaves none)")
        try:
            raw = json.loads(meta_path.read_text())
            meta = IndexMeta(**raw)
        except (ValueError, TypeError) as error:
            raise IndexFileError(f"{meta_path}: not a valid index meta.json ({error})") from None
        if meta.format != FORMAT:
            raise IndexFileError(f"{meta_path}: format '{meta.format}', expected '{FORMAT}'")
        for name in (INDEX_FILE, IDS_FILE):
            path = directory / name
            if not path.is_file() or path.stat().st_size == 0:
                raise IndexFileError(f"{path}: missing or empty")
            if verify and meta.files.get(name) != sha256_file(path):
                raise IndexFileError(f"{path}: sha256 does not match meta.json; the file is "
                                     "corrupt or changed after the index was saved")
        try:
            index = faiss.read_index(str(directory / INDEX_FILE))
        except RuntimeError as error:
            raise IndexFileError(f"{directory / INDEX_FILE}: FAISS cannot read it "
                                 f"({str(error).splitlines()[-1]})") from None
        try:
            item_ids = np.load(directory / IDS_FILE, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise IndexFileError(f"{directory / IDS_FILE}: not a readable .npy ({error})") from None
        if not (index.ntotal == len(item_ids) == meta.num_items) or index.d != meta.dim:
            raise IndexFileError(
                f"{directory}: inconsistent: {index.ntotal} vectors of dimension {index.d}, "
                f"{len(item_ids)} item ids, meta.json records {meta.num_items} of "
                f"dimension {meta.dim}")
        return cls(index, item_ids, meta)

    def __len__(self) -> int:
        return self.meta.num_items

    def __repr__(self) -> str:
        return (f"ItemIndex({self.meta.index_type}, {self.meta.metric}, dim={self.meta.dim}, "
                f"items={self.meta.num_items}, model={self.meta.model_fingerprint})")


def _as_matrix(vectors, what: str) -> np.ndarray:
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().cpu().numpy()
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"{what} must be a 2-d (rows, dimension) array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{what} contain NaN or infinity")
    return np.ascontiguousarray(vectors)


def _as_ids(item_ids, rows: int) -> np.ndarray:
    ids = np.asarray(item_ids)
    if ids.shape != (rows,) or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"expected {rows} integer item ids, got shape {ids.shape} "
                         f"dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError("item ids repeat")
    return ids
