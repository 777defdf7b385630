"""The sparse encoder's tables as a TorchRec ``EmbeddingBagCollection``.

``sparse_encoder.params.backend: torchrec`` puts the tables here so that
TorchRec can shard them over processes (``distributed.embedding_sharding``,
:mod:`mmf_rec.sharding`) and look them up with FBGEMM's table-batched kernels
under a fused optimizer. The module keeps the encoder's contract (padded ids
in, ``(B, F, dim)`` out) and the native backend's state dict layout
(``tables.<feature>.weight``), so a checkpoint moves between the backends and
between sharded and unsharded runs.

Initialisation does not depend on where a table ends up: every table is
uniform in +-sqrt(1/rows) (DLRM's, as the native tables), drawn in blocks of
rows from seeds fixed at construction, so a shard fills itself from the blocks
it overlaps without ever holding the whole table, and one process and several
hold the same weights.
"""

import contextlib
import logging
import math
from typing import List, Mapping, Optional

import torch
from torch import Tensor, nn

from mmf_rec.schema import PAD_ID, SchemaError, SparseFeature

BLOCK_ROWS = 1 << 16


def init_rows_(out: Tensor, seed: int, rows: int, dim: int, row_offset: int = 0,
               col_offset: int = 0) -> Tensor:
    """Fill ``out`` with rows ``[row_offset, +len)`` and columns
    ``[col_offset, +width)`` of the table that ``seed`` defines (``rows`` x
    ``dim``, uniform in +-sqrt(1/rows)). Memory: one block of rows at a time."""
    count, width = out.shape
    if count == 0 or width == 0:
        return out
    bound = math.sqrt(1.0 / rows)
    first, last = row_offset // BLOCK_ROWS, (row_offset + count - 1) // BLOCK_ROWS
    with torch.no_grad():
        for block in range(first, last + 1):
            start, stop = block * BLOCK_ROWS, min((block + 1) * BLOCK_ROWS, rows)
            generator = torch.Generator().manual_seed(seed + block)
            values = torch.empty(stop - start, dim).uniform_(-bound, bound, generator=generator)
            low, high = max(start, row_offset), min(stop, row_offset + count)
            out[low - row_offset:high - row_offset].copy_(
                values[low - start:high - start, col_offset:col_offset + width])
    return out


@contextlib.contextmanager
def keep_root_logger():
    """FBGEMM logs through ``logging.info`` on import and when it builds its
    kernels; before anyone configures logging, that installs a root handler,
    which doubles every line of MMF's log. Handlers added inside go again."""
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)


def import_torchrec():
    with keep_root_logger():
        import torchrec
    return torchrec


def _leave(tensor: Tensor) -> Tensor:
    """TorchRec's init_fn: nothing; :meth:`TorchRecTables.initialize` fills
    each shard, which TorchRec's init_fn cannot (it sees no offsets)."""
    return tensor


class TorchRecTables(nn.Module):
    """One full table per feature in an ``EmbeddingBagCollection``.

    ``device="meta"`` builds it without memory: TorchRec's
    ``DistributedModelParallel`` then allocates each process's shards, and
    :meth:`initialize` fills them.
    """

    def __init__(self, features: List[SparseFeature], dim: int, device: Optional[str] = None):
        super().__init__()
        torchrec = import_torchrec()
        EmbeddingBagConfig, PoolingType = torchrec.EmbeddingBagConfig, torchrec.PoolingType

        self.features = list(features)
        self.dim = int(dim)
        # seeds drawn from torch's generator: the run's seed fixes the tables
        self.seeds = [int(torch.randint(0, 2**40, (1,))) * BLOCK_ROWS for _ in self.features]
        configs = [
            EmbeddingBagConfig(
                name=f.name, embedding_dim=self.dim, num_embeddings=int(f.cardinality),
                feature_names=[f.name], init_fn=_leave,
                pooling=PoolingType.MEAN if f.pooling == "mean" else PoolingType.SUM,
            )
            for f in self.features
        ]
        self.collection = torchrec.EmbeddingBagCollection(
            tables=configs, device=torch.device(device or "cpu"))
        if str(device or "cpu") != "meta":
            self.initialize()

    def keep_per_table_state(self, owner: nn.Module) -> None:
        """State dict hooks on ``owner`` (the encoder holding this module as
        ``torchrec_tables``): its keys become ``tables.<feature>.weight``,
        the native backend's, and such keys load into this module's tables
        or shards. (On the owner: a module's load hooks see only its own keys.)"""
        owner._register_state_dict_hook(_per_table_state)
        owner._register_load_state_dict_pre_hook(
            lambda *args: _collection_state(self, *args[1:]), with_module=True)

    @property
    def names(self) -> List[str]:
        return [f.name for f in self.features]

    def initialize(self) -> None:
        """Fill every table, or every local shard of a sharded one."""
        state = self.collection.state_dict()
        for feature, seed in zip(self.features, self.seeds):
            weight = state[_weight_key(feature.name)]
            for tensor, rows, cols in local_pieces(weight):
                init_rows_(tensor, seed, int(feature.cardinality), self.dim, rows, cols)

    def forward(self, ids: Mapping[str, Tensor]) -> Tensor:
        """Padded ids (B, L_f) per feature -> (B, F, dim); PAD_ID entries are
        left out, so an all-padding bag pools to zeros."""
        from torchrec import KeyedJaggedTensor

        padded = [ids[name] for name in self.names]
        valid = [x != PAD_ID for x in padded]
        values = torch.cat([x[v] for x, v in zip(padded, valid)])
        lengths = torch.cat([v.sum(1) for v in valid])
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=self.names, values=values, lengths=lengths)
        pooled = self.collection(features)
        # a sharded collection returns its features in its own order
        if list(pooled.keys()) == self.names:
            values = pooled.values().view(padded[0].shape[0], len(self.names), self.dim)
        else:
            by_name = pooled.to_dict()
            values = torch.stack([by_name[name] for name in self.names], 1)
        return values


def local_pieces(weight):
    """(tensor, row offset, column offset) of each piece of ``weight`` this
    process holds: the tensor itself, or a sharded tensor's local shards."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    if isinstance(weight, ShardedTensor):
        return [(s.tensor, *s.metadata.shard_offsets) for s in weight.local_shards()]
    to_local = getattr(weight, "to_local", None)  # DTensor
    if to_local is not None:
        raise SchemaError("sparse encoder (backend torchrec): DTensor tables are not supported")
    return [(weight, 0, 0)]


_PREFIX = "torchrec_tables.collection.embedding_bags."


def _weight_key(name: str) -> str:
    """A table's key in the collection's state dict."""
    return f"embedding_bags.{name}.weight"


def _per_table_state(owner, state_dict, prefix, local_metadata):
    """``torchrec_tables.collection.embedding_bags.<f>.weight`` ->
    ``tables.<f>.weight``."""
    for key in [k for k in state_dict if k.startswith(prefix + _PREFIX)]:
        name = key[len(prefix + _PREFIX):-len(".weight")]
        state_dict[f"{prefix}tables.{name}.weight"] = state_dict.pop(key)


def _collection_state(module, state_dict, prefix, local_metadata, strict, missing_keys,
                      unexpected_keys, error_msgs):
    """Full per-table tensors into this process's tables or shards."""
    current = module.collection.state_dict()
    for feature in module.features:
        key = f"{prefix}tables.{feature.name}.weight"
        if key not in state_dict:
            continue
        full = state_dict.pop(key)
        expected = (int(feature.cardinality), module.dim)
        if tuple(full.shape) != expected:
            error_msgs.append(
                f"size mismatch for {key}: copying a param with shape {tuple(full.shape)} "
                f"from checkpoint, the shape in current model is {expected}.")
            continue
        target = current[_weight_key(feature.name)]
        with torch.no_grad():
            for tensor, rows, cols in local_pieces(target):
                tensor.copy_(full[rows:rows + tensor.shape[0], cols:cols + tensor.shape[1]])
        # already in place: load_state_dict finds nothing left to copy
        state_dict[f"{prefix}torchrec_tables.collection.{_weight_key(feature.name)}"] = target


def check_supported(options: Mapping[str, Optional[Mapping]]) -> None:
    """The torchrec backend holds full tables only; name any other kind."""
    kinds = {name: (entry or {}).get("kind", "full") for name, entry in options.items()}
    other = {name: kind for name, kind in kinds.items() if kind != "full"}
    if other:
        raise SchemaError(
            "sparse encoder: backend torchrec builds full tables only; "
            f"these ask for other kinds: {other} (use backend: native for them)")
