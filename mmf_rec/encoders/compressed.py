"""Table kinds that store fewer numbers than one full row per id.

- ``qr``, compositional quotient-remainder embeddings (Shi et al., KDD 2020):
  id i is looked up as row ``i // collisions`` of a quotient table and row
  ``i % collisions`` of a remainder table, and the two rows are combined.
  No two ids share both rows, so, unlike hashing, every id keeps an
  embedding of its own, from about ``cardinality / collisions`` rows.
- ``mixed_dim``, mixed-dimension embeddings (Ginart et al., 2019): a feature
  gets a narrower table the rarer each of its rows is accessed, and a learned
  projection back to the encoder's shared dimension.

Both are made of ordinary row tables (``RowTable``), so post-training
quantization (:mod:`mmf_rec.encoders.quantize`) applies to their parts.
Neither is fused with other tables, and both produce dense gradients (the
encoder's ``sparse_grad`` applies to full and hash tables only).
"""

import math
from typing import Optional

import torch
from torch import Tensor, nn

from mmf_rec.encoders.tables import FullTable, RowTable, Table, pool_vectors, register_table_kind
from mmf_rec.schema import PAD_ID, SchemaError, SparseFeature

QR_COMBINE = ("multiply", "add", "concat")


def _positive_int(feature: SparseFeature, kind: str, option: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SchemaError(
            f"sparse feature '{feature.name}': {kind} table {option} must be a positive "
            f"integer, got {value!r}"
        )
    return value


class DividedRows(RowTable):
    """One half of a QR table: row ``id // divisor`` (quotient) or ``id % divisor``."""

    def __init__(self, feature: SparseFeature, dim: int, divisor: int, part: str, bound: float):
        self.divisor, self.part, self.bound = int(divisor), part, float(bound)
        rows = math.ceil(feature.cardinality / self.divisor) if part == "quotient" else self.divisor
        super().__init__(feature, dim, rows)

    def reset_parameters(self):
        nn.init.uniform_(self.weight, -self.bound, self.bound)

    def row_ids(self, ids: Tensor) -> Tensor:
        if self.part == "quotient":
            return torch.div(ids, self.divisor, rounding_mode="floor")
        return torch.remainder(ids, self.divisor)

    def extra_repr(self) -> str:
        return f"{self.part} of id by {self.divisor}: rows={self.num_rows}, dim={self.dim}"


@register_table_kind("qr")
class QRTable(Table):
    """``ceil(n / collisions) + collisions`` rows instead of n, each id unique.

    ``combine``: ``multiply`` (elementwise product, the paper's best), ``add``,
    or ``concat`` (the quotient row gives the first ``dim // 2`` entries and
    the remainder row the rest, so the output is still ``dim`` wide).
    Initialised so that a combined vector starts at about the scale of a full
    table's row (uniform in +-sqrt(1/n)), as the dot interaction expects.
    """

    def __init__(self, feature: SparseFeature, dim: int, *, collisions: int,
                 combine: str = "multiply"):
        super().__init__(feature, dim)
        where = f"sparse feature '{feature.name}': qr table"
        collisions = _positive_int(feature, "qr", "collisions", collisions)
        if collisions > feature.cardinality:
            raise SchemaError(
                f"{where} collisions must be at most the cardinality "
                f"({feature.cardinality}), got {collisions}"
            )
        if combine not in QR_COMBINE:
            raise SchemaError(f"{where}: unknown combine '{combine}'; choose one of {list(QR_COMBINE)}")
        if combine == "concat" and dim < 2:
            raise SchemaError(f"{where}: combine 'concat' needs embedding_dim >= 2, got {dim}")
        self.collisions, self.combine = collisions, combine
        bound = math.sqrt(1.0 / feature.cardinality)
        if combine == "concat":
            dims = (dim // 2, dim - dim // 2)
        elif combine == "add":
            dims, bound = (dim, dim), bound / 2
        else:  # a product of two factors in +-sqrt(bound) lies in +-bound
            dims, bound = (dim, dim), math.sqrt(bound)
        self.quotient = DividedRows(feature, dims[0], collisions, "quotient", bound)
        self.remainder = DividedRows(feature, dims[1], collisions, "remainder", bound)

    def vectors(self, ids: Tensor) -> Tensor:
        """Unpooled (B, L, dim) vectors, zero at padding."""
        q, r = self.quotient.vectors(ids), self.remainder.vectors(ids)
        if self.combine == "multiply":
            return q * r
        if self.combine == "add":
            return q + r
        return torch.cat([q, r], -1)

    def forward(self, ids: Tensor) -> Tensor:
        if self.combine == "multiply":
            # The product of pooled rows is not the pooled products: combine first.
            return pool_vectors(self.vectors(ids), ids != PAD_ID, self.feature.pooling)
        # Sum and concatenation commute with pooling: pool each table in one bag call.
        q, r = self.quotient(ids), self.remainder(ids)
        return q + r if self.combine == "add" else torch.cat([q, r], -1)

    def extra_repr(self) -> str:
        return f"{self.feature.name}: collisions={self.collisions}, combine={self.combine}"


def mixed_dimension(cardinality: int, dim: int, temperature: float, reference_rows: int) -> int:
    """Width of a feature's table under the popularity rule.

    A row of a table of n rows is accessed with probability about 1/n, and
    the rule (Ginart et al.'s d ~ popularity ** temperature) gives it
    ``dim * (reference_rows / n) ** temperature`` entries, rounded and kept
    within [1, dim]: tables of up to ``reference_rows`` rows keep the full
    width, larger ones get narrower, faster for a higher temperature
    (0 = always full width).
    """
    width = dim * (reference_rows / cardinality) ** temperature
    return int(min(dim, max(1, round(width))))


@register_table_kind("mixed_dim")
class MixedDimTable(Table):
    """A narrower full table (n, k) and a learned projection (k -> dim).

    ``table_dim`` sets k directly; otherwise :func:`mixed_dimension` picks it
    from the cardinality, ``temperature`` and ``reference_rows``. Pooling
    happens in the narrow space (the projection is linear and has no bias,
    so an all-padding bag still gives zeros).
    """

    def __init__(self, feature: SparseFeature, dim: int, *, temperature: float = 0.3,
                 reference_rows: int = 100, table_dim: Optional[int] = None):
        super().__init__(feature, dim)
        where = f"sparse feature '{feature.name}': mixed_dim table"
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not 0 <= temperature <= 1:
            raise SchemaError(f"{where} temperature must be a number in [0, 1], got {temperature!r}")
        reference_rows = _positive_int(feature, "mixed_dim", "reference_rows", reference_rows)
        if table_dim is None:
            table_dim = mixed_dimension(feature.cardinality, dim, temperature, reference_rows)
        table_dim = _positive_int(feature, "mixed_dim", "table_dim", table_dim)
        if table_dim > dim:
            raise SchemaError(f"{where} table_dim must be at most embedding_dim ({dim}), got {table_dim}")
        self.temperature, self.reference_rows, self.table_dim = temperature, reference_rows, table_dim
        self.table = FullTable(feature, table_dim)
        if table_dim == dim:
            self.projection = None
        else:
            self.projection = nn.Linear(table_dim, dim, bias=False)
            # Variance 1/k per weight: projected vectors keep the table rows' scale.
            bound = math.sqrt(3.0 / table_dim)
            nn.init.uniform_(self.projection.weight, -bound, bound)

    def forward(self, ids: Tensor) -> Tensor:
        pooled = self.table(ids)
        return pooled if self.projection is None else self.projection(pooled)

    def extra_repr(self) -> str:
        return f"{self.feature.name}: table_dim={self.table_dim} -> dim={self.dim}"
