"""``mmf_predict``: one score per (user, item) row, written to a file.

MMF rc10's prediction path hands every batch to the dataset's
``format_for_prediction`` and writes what it returns as a VQA-style report;
for a recommender the useful output is the score of every row. The kbrec
trainer's ``predict`` writes, for each split it predicts (``val`` and
``test`` as ``run_type`` says, plus the dataset's extra evaluation splits
after ``test``), ``<env.save_dir>/predictions/<dataset>_<split>.<csv|jsonl>``
with the columns of :data:`COLUMNS`:

- ``row``: the row's index in the split, in the split's order;
- ``user_id``, ``item_id``: the ids the model saw (the prepared data's
  ``user_id`` feature and the row's item; empty when the data has none);
- ``label``: the row's label;
- ``score``: the model's logit; ``probability``: its sigmoid.

``evaluation.predict_file_format``: ``csv``, or ``json`` / ``jsonl`` (JSON
lines). Files are written to a temporary name and renamed, and the path of
each is logged. :func:`read_predictions` reads either back.
"""

import csv
import json
import os
from pathlib import Path
from typing import Dict, List, Optional

import torch

from mmf_rec import distributed
from mmf_rec.files import atomic_path

COLUMNS = ("row", "user_id", "item_id", "label", "score", "probability")
USER_FEATURE = "user_id"
ITEM_FEATURE = "item_id"


def _file_format(config) -> str:
    wanted = str(config.evaluation.get("predict_file_format", "csv") or "csv").lower()
    if wanted == "csv":
        return "csv"
    if wanted in ("json", "jsonl"):
        return "jsonl"
    raise ValueError(f"evaluation.predict_file_format: expected csv, json or jsonl, "
                     f"got '{wanted}'")


def _first_column(report, key: str) -> Optional[torch.Tensor]:
    value = report[key] if key in report else None
    if value is None:
        return None
    return value.reshape(value.shape[0], -1)[:, 0]


def _score_split(trainer, loader) -> Dict[str, torch.Tensor]:
    parts: Dict[str, List[torch.Tensor]] = {"user_id": [], "item_id": [], "label": [],
                                            "score": []}
    with torch.no_grad():
        trainer.model.eval()
        for batch in loader:
            report = trainer._forward_pass(batch)
            scores = report["scores"].detach().float().reshape(-1)
            n = scores.shape[0]
            user = _first_column(report, f"sparse_{USER_FEATURE}")
            item = _first_column(report, "item_index")
            if item is None:
                item = _first_column(report, f"sparse_{ITEM_FEATURE}")
            label = _first_column(report, "targets")
            missing = torch.full((n,), -1, dtype=torch.int64)
            parts["user_id"].append(missing if user is None else user.long().cpu())
            parts["item_id"].append(missing if item is None else item.long().cpu())
            parts["label"].append(torch.full((n,), float("nan")) if label is None
                                  else label.float().cpu())
            parts["score"].append(scores.cpu())
        trainer.model.train()
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()}


def _label(value: float):
    return int(value) if float(value).is_integer() else value


def _write(path: Path, columns: Dict[str, torch.Tensor], file_format: str) -> int:
    n = int(columns["score"].shape[0])
    user = columns["user_id"].tolist()
    item = columns["item_id"].tolist()
    label = columns["label"].tolist()
    score = columns["score"].tolist()
    probability = torch.sigmoid(columns["score"].double()).tolist()
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        if file_format == "csv":
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for i in range(n):
                writer.writerow([
                    i, "" if user[i] < 0 else user[i], "" if item[i] < 0 else item[i],
                    "" if label[i] != label[i] else _label(label[i]),
                    repr(score[i]), repr(probability[i]),
                ])
        else:
            for i in range(n):
                f.write(json.dumps({
                    "row": i, "user_id": None if user[i] < 0 else user[i],
                    "item_id": None if item[i] < 0 else item[i],
                    "label": None if label[i] != label[i] else _label(label[i]),
                    "score": score[i], "probability": probability[i],
                }) + "\n")
    return n


def _in_order(dataset, like, dataset_type: str):
    """A loader over ``dataset`` in row order (MMF shuffles its val loader)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=like.batch_size, shuffle=False,
        sampler=distributed.eval_sampler(dataset), collate_fn=like.collate_fn,
    )
    loader.dataset_type = dataset_type
    return loader


def _split_loaders(trainer, dataset_type: str):
    """(dataset, split, loader) for every split this dataset type predicts."""
    loader = getattr(trainer, f"{dataset_type}_loader")
    datasets = getattr(loader, "datasets", None) or [loader.current_dataset]
    loaders = getattr(loader, "loaders", None) or [loader]
    for dataset, like in zip(datasets, loaders):
        split = str(getattr(dataset, "split", dataset_type))
        yield dataset, split, _in_order(dataset, like, dataset_type)
        if dataset_type != "test":
            continue
        for split in getattr(dataset, "extra_eval_splits", ()):
            extra = dataset.for_split(split)
            yield extra, split, _in_order(extra, like, dataset_type)


def write_predictions(trainer, dataset_type: str) -> List[Path]:
    """Predict every row of ``dataset_type``'s splits; returns the files written."""
    from mmf.utils.distributed import is_master

    file_format = _file_format(trainer.config)
    out_dir = Path(trainer.config.env.save_dir) / "predictions"
    if not getattr(trainer, "checkpoint_loaded", False):
        trainer.writer.write(
            "mmf_predict: no checkpoint was loaded, so these are the scores of an "
            "untrained model; pass checkpoint.resume=True (this save_dir's current.ckpt; "
            "with checkpoint.resume_best=True its best.ckpt), checkpoint.resume_file=PATH "
            "or checkpoint.resume_zoo=KEY", "warning")
    written = []
    for dataset, split, loader in _split_loaders(trainer, dataset_type):
        trainer.writer.write(f"Predicting {dataset.dataset_name}/{split}")
        columns = _score_split(trainer, loader)
        if distributed.world_size() > 1:
            rows = distributed.rows_of(loader)
            columns = {k: distributed.gather_rows(v.to(trainer.device), rows).cpu()
                       for k, v in columns.items()}
        if not is_master():
            continue
        suffix = "csv" if file_format == "csv" else "jsonl"
        path = out_dir / f"{dataset.dataset_name}_{split}.{suffix}"
        n = _write(path, columns, file_format)
        trainer.writer.write(f"Wrote {n} predictions ({dataset.dataset_name}/{split}: "
                             f"{', '.join(COLUMNS)}) to {path}")
        written.append(path)
    return written


def read_predictions(path: os.PathLike) -> List[Dict[str, object]]:
    """Rows of a predictions file (CSV or JSON lines) as dicts of numbers."""
    path = Path(path)
    rows = []
    with open(path, newline="") as f:
        if path.suffix == ".csv":
            for record in csv.DictReader(f):
                rows.append({
                    "row": int(record["row"]),
                    "user_id": int(record["user_id"]) if record["user_id"] else None,
                    "item_id": int(record["item_id"]) if record["item_id"] else None,
                    "label": float(record["label"]) if record["label"] else None,
                    "score": float(record["score"]),
                    "probability": float(record["probability"]),
                })
        else:
            rows = [json.loads(line) for line in f if line.strip()]
    return rows
