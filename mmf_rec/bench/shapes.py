"""The training benchmarks' shapes, and their random data and configs on disk.

``reference`` is the reference DLRM's small benchmark shape; the Criteo
shape uses Criteo Kaggle's table sizes, capped. Every benchmark that trains
(``train``, ``trajectory``, ``data``, ``shard``) draws from these.
"""

from pathlib import Path
from typing import Dict

import numpy as np

from mmf_rec.bench import REPO


# Criteo Kaggle (display advertising challenge) table sizes after DLRM's
# preprocessing, capped to keep the tables in memory here.
CRITEO_KAGGLE_SIZES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
    3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105,
    142572,
)

CONFIGS = {
    # The reference's small benchmark shape (see the issue / its README).
    "reference": {
        "tables": [1_000_000] * 8,
        "dim": 16,
        "bottom": [512, 256, 64, 16],
        "top": [512, 256],
        "dense": 13,
    },
    "criteo-kaggle-100k": {
        "tables": [min(n, 100_000) for n in CRITEO_KAGGLE_SIZES],
        "dim": 16,
        "bottom": [512, 256, 64, 16],
        "top": [512, 256],
        "dense": 13,
    },
}


def write_random_prepared(root: Path, shape: Dict, rows: int, seed: int = 0) -> Path:
    """A prepared directory of random rows (train, plus small val and test
    splits: MMF loads all three even for run_type=train)."""
    from mmf_rec.data import prepared as fmt
    from mmf_rec.schema import DenseFeature, Schema, SparseFeature

    if (root / fmt.MANIFEST).is_file():
        manifest = fmt.read_manifest(root)
        if manifest.get("bench_shape") == {**shape, "rows": rows, "seed": seed, "splits": 3,
                                           "sampled": True}:
            return root
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    schema = Schema(
        dense=tuple(DenseFeature(f"d{i}") for i in range(shape["dense"])),
        sparse=tuple(SparseFeature(f"c{i}", n) for i, n in enumerate(shape["tables"])),
        label=fmt.LABEL_COLUMN,
        source="bench_train",
    )
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", rows), ("val", 4096), ("test", 4096)):
        columns = {fmt.DENSE_COLUMN: rng.random((n, shape["dense"]), dtype=np.float32)}
        for i, size in enumerate(shape["tables"]):
            columns[f"c{i}"] = rng.integers(0, size, (n, 1), dtype=np.int64)
        columns[schema.label] = rng.integers(0, 2, n).astype(np.float32)
        columns[fmt.SAMPLED_COLUMN] = np.zeros(n, dtype=bool)  # every row observed
        splits[split] = fmt.write_table(root / split, columns)
    fmt.write_manifest(root, {
        "format": fmt.FORMAT,
        "name": "bench_train",
        "schema": schema.to_dict(),
        "splits": splits,
        "bench_shape": {**shape, "rows": rows, "seed": seed, "splits": 3, "sampled": True},
    })
    return root


def ours_config(work: Path, name: str, shape: Dict, data: Path, batch: int, lr: float,
                sparse_grad: bool) -> Path:
    import yaml

    body = {
        "includes": [str(REPO / "projects" / "kbrec" / "dlrm.yaml")],
        "datasets": "kbrec_prepared",
        "run_type": "train",
        "dataset_config": {"kbrec_prepared": {
            "data_dir": str(data), "verify_checksums": False, "extra_eval_splits": [],
        }},
        "model_config": {"dlrm": {
            "embedding_dim": shape["dim"],
            "dense_encoder": {"params": {"hidden_dims": shape["bottom"]}},
            "top_mlp": shape["top"],
            "sparse_encoder": {"params": {"sparse_grad": sparse_grad}},
        }},
        "optimizer": {"type": "SGD", "params": {"lr": lr}},
        "training": {
            "batch_size": batch, "log_interval": 10**9,
            "evaluation_interval": 10**9, "checkpoint_interval": 10**9,
        },
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path
