"""The sparse encoder: one pooled embedding per categorical feature.

Embedding lookups dominate DLRM-style models, so tables of the fusable kinds
(full, hash) are by default stacked into shared matrices (as TorchRec's fused
EmbeddingBagCollection does) and each matrix serves all its features in one
call: ``embedding_bag`` with sum- and mean-pooled bags mixed, or a plain
``embedding`` when every feature has one id per sample. The state dict is laid
out per table either way, so a checkpoint written fused loads unfused and back.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmf.common.registry import registry
from mmf.modules.encoders import Encoder
from omegaconf import OmegaConf
from torch import Tensor, nn

from mmf_rec.encoders.tables import FullTable, RowTable, build_table
from mmf_rec.schema import PAD_ID, Schema, SchemaError, SparseFeature
from mmf_rec.structured_config import structured_config


class _Layout(NamedTuple):
    """Per-column facts of a fused group's concatenated id matrix."""

    feature: Tensor  # (W,) index of the column's feature within the group
    row_offset: Tensor  # (W,) first row of that feature's table in the group matrix
    cardinality: Tensor  # (W,)
    mean: Tensor  # (F,) bool: that feature is mean-pooled
    single: bool  # every feature has one id per sample


class FusedGroup:
    """Tables whose matrices are stacked into one, looked up in one call."""

    def __init__(self, tables: List[RowTable]):
        self.tables = tables
        self.names = [t.feature.name for t in tables]
        self.rows: Dict[str, slice] = {}
        start = 0
        for table in tables:
            self.rows[table.feature.name] = slice(start, start + table.num_rows)
            start += table.num_rows
        self.num_rows = start
        self.identity_rows = all(type(t) is FullTable for t in tables)
        self._layouts: Dict[Tuple, _Layout] = {}

    def layout(self, widths: Tuple[int, ...], device) -> _Layout:
        key = (widths, str(device))
        if key not in self._layouts:
            as_tensor = lambda values: torch.tensor(values, device=device)  # noqa: E731
            feature = torch.repeat_interleave(
                torch.arange(len(widths), device=device), as_tensor(widths)
            )
            row_offset = as_tensor([s.start for s in self.rows.values()])
            cardinality = as_tensor([t.feature.cardinality for t in self.tables])
            self._layouts[key] = _Layout(
                feature=feature,
                row_offset=row_offset[feature],
                cardinality=cardinality[feature],
                mean=as_tensor([t.feature.pooling == "mean" for t in self.tables]),
                single=all(w == 1 for w in widths),
            )
        return self._layouts[key]

    def lookup(self, weight: Tensor, ids: List[Tensor], check_ids: bool, sparse: bool) -> Tensor:
        """(B, len(tables), dim) from each table's padded ids (B, L_f)."""
        batch, count = ids[0].shape[0], len(ids)
        layout = self.layout(tuple(x.shape[1] for x in ids), ids[0].device)
        raw = torch.cat(ids, 1) if count > 1 else ids[0]
        if check_ids and bool(((raw < PAD_ID) | (raw >= layout.cardinality)).any()):
            for table, x in zip(self.tables, ids):
                _check_ids(table.feature, x)
        if self.identity_rows:
            rows = raw + layout.row_offset
        else:
            rows = torch.cat([t.row_ids(x) for t, x in zip(self.tables, ids)], 1)
            rows = rows + layout.row_offset
        valid = raw != PAD_ID
        if layout.single and bool(valid.all()):
            # One id per feature: a plain lookup, whose backward is cheaper than a bag's.
            return F.embedding(rows, weight, sparse=sparse)
        # The kept entries, in (sample, feature) bag order, and the bag of each
        # (index_select rather than [] indexing: several times faster on CPU).
        kept = valid.view(-1).nonzero().squeeze(1)
        width = raw.shape[1]
        column_feature = layout.feature.index_select(0, kept % width)
        bag = torch.div(kept, width, rounding_mode="floor") * count + column_feature
        counts = torch.bincount(bag, minlength=batch * count)
        offsets = torch.cumsum(counts, 0) - counts
        # Sum and mean pooling mix in one call: mean bags weigh each entry 1/count.
        scale = None
        if bool(layout.mean.any()):
            inverse = 1.0 / counts.clamp(min=1).to(weight.dtype)
            is_mean = layout.mean.index_select(0, column_feature)
            scale = torch.where(is_mean, inverse.index_select(0, bag), 1.0)
        pooled = F.embedding_bag(
            rows.view(-1).index_select(0, kept), weight, offsets, mode="sum", per_sample_weights=scale,
            sparse=sparse,
        )
        return pooled.view(batch, count, -1)


def group_tables(tables: List[RowTable], max_bytes: float) -> List[FusedGroup]:
    """Consecutive tables packed into groups of at most ``max_bytes`` (<= 0: one group).

    The cap is about memory allocation, not lookups: glibc reuses freed blocks
    of up to 32 MiB but maps larger ones afresh at every allocation, so the
    dense gradient of one big matrix pays page faults every step, which cost
    more than fusing saves (see ``tools/bench.py embedding``).
    """
    groups: List[List[RowTable]] = []
    size = 0.0
    for table in tables:
        table_bytes = table.num_rows * table.dim * table.weight.element_size()
        if not groups or (max_bytes > 0 and size + table_bytes > max_bytes):
            groups.append([])
            size = 0.0
        groups[-1].append(table)
        size += table_bytes
    return [FusedGroup(g) for g in groups]


BACKENDS = ("native", "torchrec")


@registry.register_encoder("sparse")
class SparseEncoder(Encoder):
    """Sparse features -> (B, F, embedding_dim), in the order of ``features``."""

    @dataclass
    class Config(Encoder.Config):
        name: str = "sparse"
        embedding_dim: int = 16
        # Schema sparse features to embed, in output order; None = all of them.
        features: Optional[List[str]] = None
        # Per-feature table options, e.g. {"user_id": {"kind": "hash", "num_buckets": 1000}};
        # features not named get a full table.
        tables: Dict[str, Any] = field(default_factory=dict)
        # Look up the tables of fusable kinds (full, hash) together, from
        # matrices of at most fused_group_mb MiB each (<= 0: one matrix).
        fused: bool = True
        fused_group_mb: float = 32.0
        # Sparse gradients for the tables: far cheaper for large tables, but
        # only some optimizers (SGD, SparseAdam, Adagrad) accept them.
        sparse_grad: bool = False
        # One range comparison per feature per batch; off saves it on trusted data.
        check_ids: bool = True
        # native: the tables above; torchrec: full tables in a TorchRec
        # EmbeddingBagCollection, which distributed.embedding_sharding shards
        # and FBGEMM looks up (mmf_rec.encoders.torchrec_tables)
        backend: str = "native"
        # meta: the torchrec tables without memory, for sharding to allocate
        # (set by the trainer when it shards)
        device: Optional[str] = None

    def __init__(self, config, schema: Schema):
        super().__init__()
        config = structured_config(self.Config, config, "sparse encoder")
        if isinstance(schema, Mapping):
            schema = Schema.from_dict(schema)
        if config.embedding_dim < 1:
            raise SchemaError(
                f"sparse encoder: embedding_dim must be >= 1, got {config.embedding_dim}"
            )
        self.config = config
        self.embedding_dim = int(config.embedding_dim)
        self.check_ids = bool(config.check_ids)
        self.sparse_grad = bool(config.sparse_grad)
        self.features: List[SparseFeature] = _selected(schema, config.features)
        tables = _table_options(config.tables, self.features, schema)
        self.backend = str(config.backend)
        self.torchrec_tables = None
        if self.backend not in BACKENDS:
            raise SchemaError(
                f"sparse encoder: backend '{self.backend}'; expected one of {list(BACKENDS)}")
        if self.backend == "torchrec":
            from mmf_rec.encoders import torchrec_tables

            torchrec_tables.check_supported(tables)
            self.tables = nn.ModuleDict()
            self.fused_groups, self.fused_weights = [], nn.ParameterList()
            self.torchrec_tables = torchrec_tables.TorchRecTables(
                self.features, self.embedding_dim, config.device)
            self.torchrec_tables.keep_per_table_state(self)
            self._order = None
            return
        self.tables = nn.ModuleDict(
            {f.name: build_table(f, self.embedding_dim, tables.get(f.name)) for f in self.features}
        )
        for table in self.tables.values():
            if isinstance(table, RowTable):
                table.sparse_grad = self.sparse_grad
        fusable = [t for t in self.tables.values() if isinstance(t, RowTable)]
        self.fused_groups: List[FusedGroup] = []
        self.fused_weights = nn.ParameterList()
        if config.fused and fusable:
            self._fuse(group_tables(fusable, config.fused_group_mb * 2**20))
        self._order = self._output_order()

    def extra_repr(self) -> str:
        groups = [g.num_rows for g in self.fused_groups]
        fused = f", fused groups (rows)={groups}" if groups else ""
        return f"dim={self.embedding_dim}, features={len(self.features)}{fused}"

    @classmethod
    def from_params(cls, schema: Schema, **kwargs):
        return cls(OmegaConf.structured(cls.Config(**kwargs)), schema)

    @property
    def feature_names(self) -> List[str]:
        return [f.name for f in self.features]

    def table_weight(self, name: str) -> Tensor:
        """The (rows, dim) matrix of one feature's table, a view when fused."""
        if self.torchrec_tables is not None:
            return self.torchrec_tables.collection.embedding_bags[name].weight
        for weight, group in zip(self.fused_weights, self.fused_groups):
            if name in group.rows:
                return weight[group.rows[name]]
        return self.tables[name].weight

    # -- fusing ------------------------------------------------------------------
    def _fuse(self, groups: List[FusedGroup]):
        # Taken from the tables as initialised, so fused and unfused encoders
        # built from the same seed hold the same weights.
        self.fused_weights = nn.ParameterList(
            [nn.Parameter(torch.cat([t.weight.detach() for t in g.tables])) for g in groups]
        )
        for group in groups:
            for table in group.tables:
                table.weight = None
        self.fused_groups = groups
        self.register_state_dict_post_hook(_split_fused_state)
        self.register_load_state_dict_pre_hook(_join_fused_state)

    def _output_order(self) -> Optional[Tensor]:
        """Where each feature's vector sits among the concatenated lookups, if not in order."""
        looked_up = [n for g in self.fused_groups for n in g.names]
        looked_up += [f.name for f in self.features if f.name not in looked_up]
        if looked_up == self.feature_names:
            return None
        return torch.tensor([looked_up.index(n) for n in self.feature_names])

    # -- forward -----------------------------------------------------------------
    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        ids = {f.name: _ids(features, f.name) for f in self.features}
        batch = {x.shape[0] for x in ids.values()}
        if len(batch) != 1:
            raise ValueError(
                "sparse encoder: features disagree on batch size: "
                f"{ {name: x.shape[0] for name, x in ids.items()} }"
            )
        if self.torchrec_tables is not None:
            if self.check_ids:
                for feature in self.features:
                    _check_range(feature, ids[feature.name])
            return self.torchrec_tables(ids)
        pieces = [
            group.lookup(weight, [ids[n] for n in group.names], self.check_ids, self.sparse_grad)
            for weight, group in zip(self.fused_weights, self.fused_groups)
        ]
        fused = {n for g in self.fused_groups for n in g.names}
        for feature in self.features:
            if feature.name not in fused:
                pieces.append(self._lookup_one(feature, ids[feature.name]).unsqueeze(1))
        out = torch.cat(pieces, 1) if len(pieces) > 1 else pieces[0]
        if self._order is not None:
            out = out.index_select(1, self._order.to(out.device))
        return out

    def _lookup_one(self, feature: SparseFeature, ids: Tensor) -> Tensor:
        if self.check_ids:
            _check_range(feature, ids)
        return self.tables[feature.name](ids)


# -- fused state dict, laid out per table ------------------------------------------
def _split_fused_state(module: SparseEncoder, state_dict, prefix, local_metadata):
    for i, group in enumerate(module.fused_groups):
        weight = state_dict.pop(f"{prefix}fused_weights.{i}")
        for name, rows in group.rows.items():
            state_dict[f"{prefix}tables.{name}.weight"] = weight[rows]


def _join_fused_state(module: SparseEncoder, state_dict, prefix, local_metadata, strict,
                      missing_keys, unexpected_keys, error_msgs):
    for i, group in enumerate(module.fused_groups):
        keys = {name: f"{prefix}tables.{name}.weight" for name in group.names}
        if not all(key in state_dict for key in keys.values()):
            continue  # load_state_dict then names what is missing
        mismatched = False
        for name, key in keys.items():
            rows = group.rows[name]
            expected = (rows.stop - rows.start, module.embedding_dim)
            if tuple(state_dict[key].shape) != expected:
                mismatched = True
                error_msgs.append(
                    f"size mismatch for {key}: copying a param with shape "
                    f"{tuple(state_dict[key].shape)} from checkpoint, the shape in "
                    f"current model is {expected}."
                )
        if not mismatched:
            parts = [state_dict.pop(key) for key in keys.values()]
            state_dict[f"{prefix}fused_weights.{i}"] = torch.cat(parts)


# -- config and input checks ------------------------------------------------------
def _selected(schema: Schema, names: Optional[Sequence[str]]) -> List[SparseFeature]:
    features = schema.select_sparse(list(names) if names is not None else None)
    if not features:
        raise SchemaError(f"{schema.source}: sparse encoder has no sparse features to embed")
    seen = [f.name for f in features]
    repeated = sorted({n for n in seen if seen.count(n) > 1})
    if repeated:
        raise SchemaError(f"sparse encoder: features listed more than once: {repeated}")
    return features


def _table_options(tables, features: List[SparseFeature], schema: Schema) -> Dict[str, Any]:
    options = OmegaConf.to_container(tables, resolve=True) if tables is not None else {}
    encoded = [f.name for f in features]
    for name, entry in options.items():
        if name not in encoded:
            schema.sparse_feature(name)  # unknown to the schema: say so first
            raise SchemaError(
                f"sparse encoder: tables configures '{name}', which is not among "
                f"the encoded features {encoded}"
            )
        if entry is not None and not isinstance(entry, Mapping):
            raise SchemaError(
                f"sparse encoder: tables.{name} must be a mapping of table options "
                f"such as {{kind: hash, num_buckets: 1000}}, got {entry!r}"
            )
    return options


def _ids(features: Mapping[str, Tensor], name: str) -> Tensor:
    if name not in features:
        raise KeyError(
            f"sparse encoder: the batch has no feature '{name}'; it has {sorted(features.keys())}"
        )
    ids = torch.as_tensor(features[name])
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise TypeError(f"sparse encoder: feature '{name}' must hold integer ids, got {ids.dtype}")
    if ids.dim() == 1:
        ids = ids.unsqueeze(1)
    if ids.dim() != 2:
        raise ValueError(
            f"sparse encoder: feature '{name}' must be (batch, max_len), got {tuple(ids.shape)}"
        )
    return ids.long()


def _check_range(feature: SparseFeature, ids: Tensor) -> None:
    if ids.numel():
        low, high = torch.aminmax(ids)
        if low < PAD_ID or high >= feature.cardinality:
            _check_ids(feature, ids)


def _check_ids(feature: SparseFeature, ids: Tensor) -> None:
    bad = ids[(ids < PAD_ID) | (ids >= feature.cardinality)]
    if bad.numel() == 0:
        return
    raise ValueError(
        f"sparse feature '{feature.name}': {bad.numel()} ids out of range (e.g. "
        f"{int(bad[0])}); expected {PAD_ID} (padding) or an id in "
        f"[0, {feature.cardinality})"
    )
