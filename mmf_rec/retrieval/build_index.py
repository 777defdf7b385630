"""Encode items with a trained two-tower's item tower and write a FAISS index.

    python tools/build_index.py --retriever save/kbrec_synthetic/two_tower
    python tools/build_index.py --retriever save/kbrec_synthetic/two_tower --type hnsw \\
        --param M=32 --param ef_search=128 --out save/kbrec_synthetic/two_tower/index_hnsw
    python tools/build_index.py --retriever save/kbrec_synthetic/two_tower --add 1990-1999

The index directory (default ``<retriever>/index``) holds the FAISS file,
the item id of each row, and meta.json: index type and parameters, metric,
dimension, and the fingerprint of the model whose vectors it holds, so that
queries from any other model are refused. ``--add`` encodes more items and
adds them to an existing index, without rebuilding it.

The command line behind ``python tools/build_index.py``.
"""

import argparse
import json
from pathlib import Path


def parse_items(text: str, num_items: int):
    """'all', 'a-b' (inclusive), or 'a,b,c'."""
    import numpy as np

    if text == "all":
        return np.arange(num_items)
    out = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = (int(x) for x in part.split("-", 1))
            out.extend(range(low, high + 1))
        elif part:
            out.append(int(part))
    ids = np.asarray(out, dtype=np.int64)
    bad = ids[(ids < 0) | (ids >= num_items)]
    if bad.size:
        raise SystemExit(f"error: item ids {bad[:5].tolist()} are outside the catalogue "
                         f"[0, {num_items})")
    return ids


def parse_params(pairs):
    params = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"error: --param takes NAME=VALUE, got '{pair}'")
        name, value = pair.split("=", 1)
        params[name] = float(value) if "." in value else int(value)
    return params


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--retriever", type=Path, required=True,
                   help="two_tower run dir (env.save_dir) or checkpoint file")
    p.add_argument("--out", type=Path, help="index directory; default <retriever>/index")
    p.add_argument("--type", default="flat", choices=["flat", "hnsw", "ivfpq"],
                   help="flat: exact inner product (default); hnsw, ivfpq: approximate")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="index parameter, repeatable: hnsw M, ef_construction, ef_search; "
                        "ivfpq nlist, m, nbits, nprobe, refine")
    p.add_argument("--items", default="all",
                   help="items to index: all (default), a-b, or a,b,c")
    p.add_argument("--add", metavar="ITEMS",
                   help="add these items (a-b, a,b,c) to the existing index at --out")
    p.add_argument("--data-dir", type=Path, help="replaces the run's env.data_dir")
    p.add_argument("--batch-size", type=int, default=4096)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    import torch

    from mmf_rec.retrieval.index import ItemIndex
    from mmf_rec.runs import load_run

    run = load_run(args.retriever, expect_model="two_tower", data_dir=args.data_dir)
    model = run.model
    run_dir = args.retriever if args.retriever.is_dir() else args.retriever.parent
    out = args.out or run_dir / "index"
    fingerprint = model.fingerprint()
    if args.add:
        index = ItemIndex.load(out)
        items = parse_items(args.add, model.num_items)
        vectors = model.encode_catalogue(torch.from_numpy(items), args.batch_size, progress=True)
        index.add(vectors.numpy(), items, model_fingerprint=fingerprint)
        index.save(out)
        print(f"added {len(items)} items to {out}: now {len(index)} items")
        return 0
    items = parse_items(args.items, model.num_items)
    vectors = model.encode_catalogue(torch.from_numpy(items), args.batch_size, progress=True)
    source = {"retriever": str(args.retriever), "weights": str(run.weights),
              "model": run.model_name, "dataset": run.dataset_name, "data_root": str(run.data_root)}
    index = ItemIndex.build(vectors.numpy(), items, metric="ip", index_type=args.type,
                            params=parse_params(args.param), model_fingerprint=fingerprint,
                            source=source)
    index.save(out)
    meta = index.meta
    print(f"wrote {out}: {meta.index_type} index, {meta.num_items} items, dim {meta.dim}, "
          f"metric {meta.metric}, model {meta.model_fingerprint}, "
          f"built in {meta.build_seconds:.2f} s, params {json.dumps(meta.params)}")
    return 0

