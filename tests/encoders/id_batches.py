"""Random id batches for a schema, shared by the sparse encoder tests."""

import torch

from mmf_rec.schema import PAD_ID, Schema, SparseFeature

# one-id and multi-hot features, sum and mean pooling, on both sides
MIXED_SCHEMA = Schema(
    sparse=(
        SparseFeature("user", 50),
        SparseFeature("item", 37, side="item"),
        SparseFeature("tags", 20, side="item", max_len=4),
        SparseFeature("genres", 10, side="item", pooling="mean", max_len=3),
    )
)


def random_id_batch(schema, seed=0, size=16):
    """Random ids with random padding, and an all-padding first sample in each
    multi-hot bag (pooling must give it a zero vector)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for f in schema.sparse:
        ids = torch.randint(0, f.cardinality, (size, f.max_len), generator=g)
        if f.multi_hot:
            lengths = torch.randint(0, f.max_len + 1, (size, 1), generator=g)
            ids[torch.arange(f.max_len) >= lengths] = PAD_ID
            ids[0] = PAD_ID
        out[f.name] = ids
    return out
