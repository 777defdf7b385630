"""Per-feature embedding tables, one small module per kind of table.

A table turns one sparse feature's padded ids (B, L) into pooled vectors
(B, dim). Kinds that are a single (rows, dim) matrix addressed by a row
mapping (``RowTable``: full, hash) can also lend that mapping to the sparse
encoder, which then stacks their matrices and looks them up together; kinds that are
more than that (quotient-remainder, mixed-dimension, int8) implement
``forward`` themselves and are looked up on their own.

New kinds register with :func:`register_table_kind`; their keyword-only
constructor arguments are their config options. The compressed kinds (``qr``,
``mixed_dim``) live in :mod:`mmf_rec.encoders.compressed`, and are registered
the first time a table is built.
"""

import importlib
import inspect
import math
from typing import Any, Dict, Mapping, Optional, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmf_rec.schema import PAD_ID, SchemaError, SparseFeature

TABLE_KINDS: Dict[str, Type["Table"]] = {}
# Modules defining built-in kinds beyond full and hash; imported on first use,
# not here: they import this module (and this one loads alone, without mmf).
BUILTIN_KIND_MODULES = ("mmf_rec.encoders.compressed",)


def register_table_kind(name: str):
    def wrap(cls):
        if not (isinstance(cls, type) and issubclass(cls, Table)):
            raise TypeError(f"table kind '{name}': {cls!r} must subclass Table")
        TABLE_KINDS[name] = cls
        return cls

    return wrap


def build_table(feature: SparseFeature, dim: int, options: Optional[Mapping[str, Any]]):
    """The table a feature's config entry asks for (a full table when it asks nothing)."""
    for module in BUILTIN_KIND_MODULES:
        importlib.import_module(module)
    options = dict(options or {})
    kind = options.pop("kind", "full")
    where = f"sparse feature '{feature.name}'"
    if kind not in TABLE_KINDS:
        raise SchemaError(
            f"{where}: unknown table kind '{kind}'; known kinds: {sorted(TABLE_KINDS)}"
        )
    cls = TABLE_KINDS[kind]
    params = inspect.signature(cls.__init__).parameters.values()
    accepted = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    required = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    unknown = sorted(set(options) - set(accepted))
    missing = [name for name in required if name not in options]
    if unknown or missing:
        raise SchemaError(
            f"{where}: table kind '{kind}' takes options {accepted} "
            f"(required: {required}); unknown: {unknown}, missing: {missing}"
        )
    return cls(feature, dim, **options)


# -- lookups -------------------------------------------------------------------
def jagged(rows: Tensor, valid: Tensor):
    """The non-padding entries of (B, L) rows, and the offset of each row's bag."""
    counts = valid.sum(1)
    return rows[valid], torch.cumsum(counts, 0) - counts


def pooled_lookup(
    rows: Tensor, valid: Optional[Tensor], weight: Tensor, pooling: str, sparse: bool = False
) -> Tensor:
    """Bags of rows of ``weight`` pooled per sample; ``valid`` None means no padding.

    An all-padding bag pools to a zero vector, under sum and mean alike.
    """
    if valid is None and rows.shape[1] == 1:
        # One id per sample: a plain lookup, whose backward is cheaper than a bag's.
        return F.embedding(rows[:, 0], weight, sparse=sparse)
    if valid is None:
        return F.embedding_bag(rows, weight, mode=pooling, sparse=sparse)
    values, offsets = jagged(rows, valid)
    return F.embedding_bag(values, weight, offsets, mode=pooling, sparse=sparse)


def pool_vectors(vectors: Tensor, valid: Tensor, pooling: str) -> Tensor:
    """(B, L, dim) per-id vectors, zero at padding, pooled per sample.

    For kinds whose vectors are not rows of one matrix (a product of two
    tables' rows, dequantized codes). An all-padding bag pools to zeros.
    """
    pooled = vectors.sum(1)
    if pooling == "mean":
        pooled = pooled / valid.sum(1, keepdim=True).clamp(min=1).to(pooled.dtype)
    return pooled


# -- hashing -------------------------------------------------------------------
_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # so that seed 0 does not leave small ids unmixed by the high word


def _mul32(x: Tensor, constant: int) -> Tensor:
    """(x * constant) mod 2**32 for x < 2**32, never overflowing int64."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    """A bijective 32-bit integer finaliser (xor-shift / multiply, 'lowbias32')."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash_ids(ids: Tensor, num_buckets: int, seed: int = 0) -> Tensor:
    """Bucket of each int64 id, the same in every process, run and platform.

    Python's ``hash()`` is salted per process for strings and is not meant to
    spread integers; this uses exact integer arithmetic in torch ops instead,
    so a checkpoint's hashed rows mean the same thing wherever it is loaded.
    """
    ids = ids.long()
    low = ids & _MASK32
    high = (ids >> 32) & _MASK32
    mixed = _mix32(low ^ _mix32(high ^ ((seed ^ _GOLDEN) & _MASK32)))
    return mixed % num_buckets


# -- kinds ---------------------------------------------------------------------
class Table(nn.Module):
    """One feature's embeddings: padded ids (B, L) -> pooled vectors (B, dim)."""

    def __init__(self, feature: SparseFeature, dim: int):
        super().__init__()
        self.feature = feature
        self.dim = int(dim)

    def forward(self, ids: Tensor) -> Tensor:
        raise NotImplementedError


class RowTable(Table):
    """A table that is one (num_rows, dim) matrix and a map from ids to its rows.

    The sparse encoder may take the matrix away (``weight`` becomes None) into
    its fused matrix and use ``row_ids`` alone. ``sparse_grad`` makes the
    lookup return sparse gradients (for optimizers that accept them).
    """

    sparse_grad = False

    def __init__(self, feature: SparseFeature, dim: int, num_rows: int):
        super().__init__(feature, dim)
        self.num_rows = int(num_rows)
        self.weight = nn.Parameter(torch.empty(self.num_rows, self.dim))
        self.reset_parameters()

    def reset_parameters(self):
        # DLRM's initialisation: small enough that dot interactions start near 0.
        bound = math.sqrt(1.0 / self.num_rows)
        nn.init.uniform_(self.weight, -bound, bound)

    def row_ids(self, ids: Tensor) -> Tensor:
        """Row of each id; values at padding positions are unspecified."""
        raise NotImplementedError

    def _check_not_fused(self):
        if self.weight is None:
            raise RuntimeError(
                f"table of '{self.feature.name}' is fused into its encoder's matrix; "
                "look it up through the encoder"
            )

    def vectors(self, ids: Tensor) -> Tensor:
        """Unpooled (B, L, dim) vectors of padded ids (B, L), zero at padding."""
        self._check_not_fused()
        valid = ids != PAD_ID
        rows = self.row_ids(torch.where(valid, ids, 0))
        out = F.embedding(rows, self.weight, sparse=self.sparse_grad)
        return out * valid.unsqueeze(-1).to(out.dtype)

    def forward(self, ids: Tensor) -> Tensor:
        self._check_not_fused()
        valid = ids != PAD_ID
        if bool(valid.all()):
            valid = None
        return pooled_lookup(
            self.row_ids(ids), valid, self.weight, self.feature.pooling, self.sparse_grad
        )

    def extra_repr(self) -> str:
        return f"{self.feature.name}: rows={self.num_rows}, dim={self.dim}"


@register_table_kind("full")
class FullTable(RowTable):
    """One row per id."""

    def __init__(self, feature: SparseFeature, dim: int):
        super().__init__(feature, dim, feature.cardinality)

    def row_ids(self, ids: Tensor) -> Tensor:
        return ids


@register_table_kind("hash")
class HashTable(RowTable):
    """``num_buckets`` rows shared by colliding ids (the hashing trick)."""

    def __init__(self, feature: SparseFeature, dim: int, *, num_buckets: int, seed: int = 0):
        if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) or num_buckets < 1:
            raise SchemaError(
                f"sparse feature '{feature.name}': hash table num_buckets must be a "
                f"positive integer, got {num_buckets!r}"
            )
        super().__init__(feature, dim, num_buckets)
        self.seed = int(seed)

    def row_ids(self, ids: Tensor) -> Tensor:
        return hash_ids(ids, self.num_rows, self.seed)
