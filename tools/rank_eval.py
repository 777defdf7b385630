"""HR@K / NDCG@K / MRR of a trained run on a leave-last-out split.

    python tools/rank_eval.py --run SAVE_DIR              # the run's best checkpoint
    python tools/rank_eval.py --data PREPARED_DIR --popularity

The split must come from the ``leave_last_out`` protocol (``mmf_rec/data/
interactions.py``): one block of candidates per user, the held-out item first.
Each block is ranked by the model's scores; ties count against the model. The
popularity baseline scores an item by its positive training rows. A run is
labelled by its project config (``dlrm_mm_text``), not only its model class.
"""

import argparse
import json
from pathlib import Path
from typing import Optional

import numpy as np

BATCH_ROWS = 4096


def model_scores(checkpoint: Path, data: Optional[Path], split: str) -> np.ndarray:
    """Scores of every row of ``split``, in row order: the run's model, rebuilt
    outside MMF's trainer (:func:`mmf_rec.runs.load_run`)."""
    import torch

    from mmf_rec.runs import load_run

    run = load_run(checkpoint, data_dir=data)  # makes mmf importable, publishes the schema
    from mmf.common.registry import registry

    from mmf_rec.data.dataset import KBRecDataset
    from mmf_rec.data.prepared import load_prepared

    rows = KBRecDataset(load_prepared(run.data_root, verify_checksums=False), split,
                        dataset_type="test", dataset_name=run.dataset_name,
                        schema=registry.get(f"{run.dataset_name}_schema"))
    scores = []
    with torch.no_grad():
        for start in range(0, len(rows), BATCH_ROWS):
            batch = rows.__getitems__(range(start, min(start + BATCH_ROWS, len(rows))))
            scores.append(run.model.forward(batch)["scores"].reshape(-1).float().numpy())
    return np.concatenate(scores)


def run_label(config) -> str:
    """The project config's name (``dlrm_mm_text``), else the model's."""
    source = config.get("config")
    return Path(str(source)).stem if source else str(config.model)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/rank_eval.py", description=__doc__)
    parser.add_argument("--run", type=Path, help="an mmf_run env.save_dir")
    parser.add_argument("--checkpoint", type=Path, help="default: <run>/best.ckpt")
    parser.add_argument("--data", type=Path, help="prepared dir (default: the run's)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--popularity", action="store_true")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    from mmf_rec.ranking_metrics import sampled_candidates_metrics
    from mmf_rec.data import interactions
    from mmf_rec.data.report import DataInputError

    try:
        if args.popularity:
            if args.data is None:
                parser.error("--popularity needs --data")
            scores = interactions.popularity_scores(args.data, args.split)
            result = {"model": "popularity", **sampled_candidates_metrics(scores, args.k)}
        else:
            if args.run is None:
                parser.error("give --run (or --data with --popularity)")
            if args.split != "test":
                parser.error("--run scores the run's test split only")
            from omegaconf import OmegaConf

            config = OmegaConf.load(args.run / "config.yaml")
            data = args.data or Path(config.dataset_config.kbrec_prepared.data_dir)
            _, items = interactions.split_blocks(data, args.split)
            flat = model_scores(args.checkpoint or args.run / "best.ckpt", args.data, args.split)
            if flat.size != items.size:
                raise DataInputError(f"{flat.size} scores for {items.size} candidates")
            result = {"model": run_label(config),
                      **sampled_candidates_metrics(flat.reshape(items.shape), args.k)}
    except DataInputError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
