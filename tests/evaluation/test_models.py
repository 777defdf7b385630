"""Full-catalogue scores of trained runs are the models' own logits (dlrm,
dlrm_mm) or retrieval scores (two_tower), for real (user, item) rows."""

import numpy as np
import pytest
import torch

from mmf_rec.data.dataset import KBRecDataset
from mmf_rec.data.prepared import SAMPLED_COLUMN, load_prepared
from mmf_rec.evaluation.catalogue import build_queries
from mmf_rec.evaluation.models import (
    CatalogueScorer, UnsupportedModelError, model_scores, scorer_for)

DATASET = "kbrec_synthetic"


@pytest.fixture(scope="module")
def runs(serving_runs):
    """The session's tiny two_tower and ids-only dlrm_mm runs, plus a tiny dlrm
    trained on the same data."""
    from tiny_runs import SERVING, environment, run

    dlrm = serving_runs / "dlrm"
    if not (dlrm / "metrics.json").is_file():
        run("mmf_run", dlrm, serving_runs / "data", *SERVING,
            env=environment(serving_runs), config="projects/kbrec/dlrm.yaml")
    data = load_prepared(serving_runs / "data" / DATASET, verify_checksums=False)
    return {"dlrm": dlrm, "dlrm_mm": serving_runs / "dlrm_mm",
            "two_tower": serving_runs / "two_tower", "data": data,
            "queries": build_queries(data, "test")}


def forward(model, data, split, rows):
    batch = KBRecDataset(data, split, dataset_name=DATASET,
                         dataset_type="test").__getitems__(list(rows))
    with torch.no_grad():
        return model.forward(batch)["scores"].reshape(-1).numpy()


def query_rows(data, queries, count):
    """(query index, split, row) of the row each of the first ``count``
    queries took its fields from: a positive observed row of the user whose
    model inputs equal the query's."""
    found = []
    for q in range(count):
        for split in ("test", "cold"):
            table = data.split(split)
            match = ((np.asarray(table["user_id"])[:, 0] == queries.users[q])
                     & (np.asarray(table["label"]) > 0.5)
                     & ~np.asarray(table[SAMPLED_COLUMN], dtype=bool))
            for key, values in queries.fields.items():
                column = np.asarray(table["dense" if key == "dense" else key[len("sparse_"):]])
                match &= (column.reshape(len(column), -1)
                          == values[q].numpy().reshape(1, -1)).all(axis=1)
            if match.any():
                found.append((q, split, int(np.nonzero(match)[0][0])))
                break
    assert len(found) == count
    return found


@pytest.mark.parametrize("name", ["dlrm", "dlrm_mm"])
def test_catalogue_scores_are_the_models_forward_logits(runs, name):
    data, queries = runs["data"], runs["queries"]
    scores = model_scores(runs[name], queries, batch_users=3)
    assert scores.shape == (len(queries), data.items.rows) and scores.dtype == np.float32
    model = CatalogueScorer.from_run(runs[name]).model
    for q, split, row in query_rows(data, queries, 4):
        item = int(np.asarray(data.split(split)["item_id"])[row, 0])
        assert scores[q, item] == pytest.approx(forward(model, data, split, [row])[0], abs=1e-4)
    # the item side is read: a user's scores differ across items
    assert (scores.std(axis=1) > 0).all()


@pytest.mark.parametrize("name", ["dlrm", "dlrm_mm"])
def test_candidate_lists_score_like_data_rows(runs, name):
    """Sampled-protocol path: (B, K) candidate ids per user."""
    data = runs["data"]
    scorer = CatalogueScorer.from_run(runs[name])
    rows = np.nonzero(np.asarray(data.split("test")["label"]) > 0.5)[0][:6]
    batch = KBRecDataset(data, "test", dataset_name=DATASET,
                         dataset_type="test").__getitems__(list(rows))
    items = batch["item_index"].numpy()[:, None]
    pairs = scorer.scores(batch, np.concatenate([items, (items + 1) % data.items.rows], 1))
    assert np.allclose(pairs[:, 0], forward(scorer.model, data, "test", rows), atol=1e-4)
    full = scorer.scores(batch)
    assert np.allclose(np.take_along_axis(full, items, 1)[:, 0], pairs[:, 0], atol=1e-4)


def test_two_tower_scores_are_its_retrieval_cosines(runs):
    data, queries = runs["data"], runs["queries"]
    scorer = CatalogueScorer.from_run(runs["two_tower"])
    model = scorer.model
    scores = model_scores(runs["two_tower"], queries)
    assert np.abs(scores).max() <= 1 + 1e-5  # unit vectors: cosines
    for q, split, row in query_rows(data, queries, 3):
        item = int(np.asarray(data.split(split)["item_id"])[row, 0])
        logit = forward(model, data, split, [row])[0]  # cosine / temperature
        assert scores[q, item] == pytest.approx(logit * model.temperature, abs=1e-4)


def test_only_the_project_models_have_a_scorer():
    with pytest.raises(UnsupportedModelError, match="supported.*dlrm.*dlrm_mm.*two_tower"):
        scorer_for(torch.nn.Linear(1, 1), "bert4rec")


def test_candidate_ids_are_checked(runs):
    scorer = CatalogueScorer.from_run(runs["dlrm"])
    fields = {k: v[:2] for k, v in runs["queries"].fields.items()}
    with pytest.raises(ValueError, match="item ids must lie in"):
        scorer.scores(fields, np.array([[0], [runs["data"].items.rows]]))
    with pytest.raises(ValueError, match="shape"):
        scorer.scores(fields, np.zeros((3, 1), np.int64))
