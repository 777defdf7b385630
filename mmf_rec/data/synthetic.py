"""``kbrec_synthetic``: interactions drawn from a known click model.

Part of the click signal comes from item attributes that no id or categorical
column carries (colour, material, style): they are visible only in the item's
description and image. What a user is *shown* follows their taste too (an
item's exposure weight is its popularity times exp(``exposure_taste`` x the
user's affinity for it)), so the clicked items of a user carry information a
retriever can learn, and the retrieval oracle (ranking the catalogue by the
true probability of being shown and clicking) is well above popularity. New
items launch at random times during the test period and are shown from then
on. Tastes for them are partly shared (colour by region, style by age bucket,
material across everyone) and partly personal (a favourite value per user).
The shared part is what a model can learn from the population and carry to
items it never saw; a purely personal taste, seen through a user's few dozen
clicks, is barely learnable by any model. So an ID-only model is capped below
the oracle on warm items, and on cold-start items (held out of training) it
has only their category, brand and price to go on, while a model that reads
the item knowledge can close much of the gap. The true click probability is
stored beside each label, so every model's AUC can be reported next to the
oracle's.

Everything is a deterministic function of the config (seed included): the same
config gives byte-identical files. The config lives in ``synthetic_config``,
items, users, the click model and the impressions in ``synthetic_world``,
the descriptions and pictures in ``synthetic_knowledge``; this module writes
them as a prepared directory.
"""

import argparse
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from mmf_rec.auc import roc_auc
from mmf_rec.data.cli import add_config_flags
from mmf_rec.data.prepared_layout import (
    CLICK_PROB_COLUMN, DENSE_COLUMN, FORMAT, ITEMS, LABEL_COLUMN, SAMPLED_COLUMN,
    TIMESTAMP_COLUMN, PreparedDataError, write_manifest, write_table)
from mmf_rec.data.synthetic_config import ConfigLike, GeneratorConfig, as_config
from mmf_rec.data.synthetic_config import GENERATOR_VERSION  # noqa: F401  (the data's version)
from mmf_rec.data.synthetic_knowledge import write_knowledge
from mmf_rec.data.synthetic_world import (
    DENSE_FEATURES, NUM_AGE_BUCKETS, NUM_DEVICES, Interactions, Items, Users, click_logit,
    make_interactions, make_items, make_users, sigmoid)
from mmf_rec.data.synthetic_world import oracle_scores  # noqa: F401  (the click model's oracle)
from mmf_rec.schema import DenseFeature, KnowledgeField, Schema, SparseFeature

logger = logging.getLogger(__name__)

NAME = "kbrec_synthetic"


# -- schema ------------------------------------------------------------------
def build_schema(config: ConfigLike = None) -> Schema:
    config = as_config(config)
    return Schema(
        dense=tuple(DenseFeature(name, side="user") for name in DENSE_FEATURES),
        sparse=(
            SparseFeature("user_id", config.num_users, side="user"),
            SparseFeature("region", config.num_regions, side="user"),
            SparseFeature("device", NUM_DEVICES, side="user"),
            SparseFeature("age_bucket", NUM_AGE_BUCKETS, side="user"),
            SparseFeature("item_id", config.num_items, side="item"),
            SparseFeature("category", config.num_categories, side="item"),
            SparseFeature("brand", config.num_brands, side="item"),
            SparseFeature("price_bucket", config.num_price_buckets, side="item"),
            SparseFeature("history", config.num_items, side="user", pooling="mean",
                          max_len=config.history_len),
        ),
        knowledge=(
            KnowledgeField("description", kind="text"),
            KnowledgeField("image", kind="image"),
        ),
        label=LABEL_COLUMN,
        source=NAME,
    )


# -- writing -----------------------------------------------------------------
def _split_columns(schema: Schema, users: Users, items: Items,
                   inter: Interactions, rows: np.ndarray) -> Dict[str, np.ndarray]:
    u, i = inter.user[rows], inter.item[rows]
    values = {
        "user_id": u,
        "region": users.region[u],
        "device": users.device[u],
        "age_bucket": users.age_bucket[u],
        "item_id": i,
        "category": items.category[i],
        "brand": items.brand[i],
        "price_bucket": items.price_bucket[i],
        "history": inter.history[rows],
    }
    columns = {DENSE_COLUMN: users.dense[u]}
    for f in schema.sparse:
        columns[f.name] = values[f.name].astype(np.int64).reshape(len(rows), f.max_len)
    columns[schema.label] = inter.label[rows].astype(np.float32)
    columns[CLICK_PROB_COLUMN] = inter.click_prob[rows]
    columns[SAMPLED_COLUMN] = np.zeros(len(rows), dtype=bool)  # impressions only
    columns[TIMESTAMP_COLUMN] = inter.timestamp[rows].astype(np.int64)
    return columns


def _item_columns(schema: Schema, items: Items, unseen: np.ndarray) -> Dict[str, np.ndarray]:
    n = len(items)
    values = {
        "item_id": np.arange(n),
        "category": items.category,
        "brand": items.brand,
        "price_bucket": items.price_bucket,
    }
    columns = {
        f.name: values[f.name].astype(np.int64).reshape(n, f.max_len)
        for f in schema.sparse
        if f.side == "item"
    }
    columns["is_cold"] = unseen
    return columns


def _json_number(x) -> Optional[float]:
    """NaN (e.g. the AUC of a split with one class) is not valid json: None."""
    x = float(x)
    return x if np.isfinite(x) else None


def generate(root: Union[str, os.PathLike], config: ConfigLike = None,
             progress: bool = True) -> Dict[str, Any]:
    """Write a prepared ``kbrec_synthetic`` directory; returns its manifest.

    ``root`` must be absent or empty: mixing files of two runs would pass no
    checksum. The manifest is written last.
    """
    config = as_config(config)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise PreparedDataError(
            f"{root}: refusing to generate into a non-empty directory; "
            "remove it or choose another --out"
        )
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    schema = build_schema(config)
    items = make_items(config)
    users = make_users(config)
    inter = make_interactions(config, users, items)

    splits, oracle_auc = {}, {}
    for name, rows in inter.splits.items():
        columns = _split_columns(schema, users, items, inter, rows)
        splits[name] = write_table(root / name, columns)
        oracle_auc[name] = _json_number(roc_auc(inter.click_prob[rows], inter.label[rows]))
    visible = sigmoid(click_logit(users, items, inter.user, inter.item, hidden=False))
    visible_auc = {
        name: _json_number(roc_auc(visible[rows], inter.label[rows]))
        for name, rows in inter.splits.items()
    }
    item_table = write_table(root / ITEMS, _item_columns(schema, items, inter.unseen))
    knowledge = write_knowledge(root, items, config, progress)

    manifest = {
        "format": FORMAT,
        "name": NAME,
        "schema": schema.to_dict(),
        "seed": config.seed,
        "generator": config.to_dict(),
        "splits": splits,
        "items": item_table,
        "item_feature": "item_id",
        "knowledge": knowledge,
        "oracle_auc": oracle_auc,
        # The best AUC reachable without colour/material/style.
        "oracle_auc_without_hidden": visible_auc,
        "cold_items": int(inter.unseen.sum()),
        "protocol": {"name": "time", "labels": "label",
                     "cold_items": int(inter.unseen.sum()),
                     "launched_in_test": int(items.is_cold.sum()),
                     "rows_left_out": inter.left_out},
        "click_rate": {n: _json_number(inter.label[r].mean()) if len(r) else None
                       for n, r in inter.splits.items()},
    }
    write_manifest(root, manifest)
    logger.info(
        "generated %s in %s (%.1f s): rows %s, oracle AUC %s",
        NAME, root, time.perf_counter() - started,
        {k: v["rows"] for k, v in splits.items()},
        oracle_auc,
    )
    return manifest


def generate_atomic(root: Union[str, os.PathLike], config: ConfigLike = None,
                    progress: bool = True) -> Dict[str, Any]:
    """Generate next to ``root`` and rename into place, replacing what was there.

    Readers see either the old complete directory or the new one; a process
    that still maps the old files keeps them (they are unlinked, not changed).
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        manifest = generate(tmp, config, progress)
        old = None
        if root.exists():
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            os.replace(root, old)
        os.replace(tmp, root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmf_rec.data.synthetic",
        description="Generate the kbrec_synthetic prepared dataset.",
    )
    parser.add_argument("--out", required=True, help="directory to create")
    add_config_flags(parser, GeneratorConfig)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        manifest = generate(out, GeneratorConfig.from_mapping(args, source="arguments"))
    except ValueError as e:
        parser.error(str(e))
    logger.info("oracle AUC %s; without hidden attributes %s",
                manifest["oracle_auc"], manifest["oracle_auc_without_hidden"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
