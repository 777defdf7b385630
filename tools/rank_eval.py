"""HR@K / NDCG@K / MRR of a trained run on a leave-last-out split.

    python tools/rank_eval.py --run SAVE_DIR              # the run's best checkpoint
    python tools/rank_eval.py --data PREPARED_DIR --popularity

The split must come from the ``leave_last_out`` protocol (``mmf_rec/data/
interactions.py``): one block of candidates per user, the held-out item first.
Each block is ranked by the model's scores; ties count against the model. The
popularity baseline scores an item by its positive training rows.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tools"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def model_scores(run_dir: Path, checkpoint: Path) -> np.ndarray:
    """Scores of every test row, in row order (the test loader does not shuffle)."""
    import torch
    from quantize import load_trainer

    with tempfile.TemporaryDirectory() as out:
        trainer = load_trainer(run_dir, checkpoint, Path(out))
        scores = []
        with torch.no_grad():
            for batch in trainer.test_loader:
                batch = trainer.dataset_loader.prepare_batch(batch)
                scores.append(trainer.model(batch)["scores"].reshape(-1).float().cpu().numpy())
    return np.concatenate(scores)


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
            flat = model_scores(args.run, args.checkpoint or args.run / "best.ckpt")
            _, items = interactions.split_blocks(data, args.split)
            if flat.size != items.size:
                raise DataInputError(f"{flat.size} scores for {items.size} candidates")
            result = {"model": str(config.model),
                      **sampled_candidates_metrics(flat.reshape(items.shape), args.k)}
    except DataInputError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
