"""The evaluation protocol's rules (mmf_rec.data.protocol), each on tiny
hand-made data with a known answer. No files from ../shared/data."""

import numpy as np
import pytest

from mmf_rec.data import interactions as core
from mmf_rec.data import protocol
from mmf_rec.data.prepared import load_prepared
from mmf_rec.data.report import RowReport
from mmf_rec.data.splits import SplitConfig

# (time, user, item), implicit feedback. The periods (train_fraction 0.6,
# val_fraction 0.2 of 10 rows): train t < 70, val 70 <= t < 90, test t >= 90.
# Item 3 is never interacted with; item 4 first appears in validation.
ROWS = [(10, 0, 0), (20, 1, 0), (30, 0, 1), (40, 2, 1), (50, 1, 2), (60, 2, 0),
        (70, 0, 4), (80, 1, 1), (90, 2, 4), (100, 0, 2)]
AGES = [20.0, 30.0, 40.0, 95.0]  # user 3 has no interactions at all


def prepare(tmp_path, protocol_name="time", **config):
    t, u, i = (np.array(c, dtype=np.int64) for c in zip(*ROWS))
    catalogue = core.Catalogue(keys=[f"m{k}" for k in range(5)], categorical={}, vocab={},
                               descriptions=[f"item {k}" for k in range(5)])
    users = core.Population(keys=[f"u{k}" for k in range(4)], categorical={}, vocab={},
                            dense_raw={"age": np.array(AGES)})
    split = SplitConfig(protocol=protocol_name, labels="implicit",
                             negatives_per_positive=2, train_fraction=0.6, val_fraction=0.2,
                             history_len=2, **config)
    root = tmp_path / "prepared"
    core.build_prepared(root, "tiny", catalogue, users, core.Interactions(u, i, t), split,
                        RowReport())
    return load_prepared(root)


def rows_of(data, split):
    table = data.split(split)
    return {"t": np.asarray(table["timestamp"]).tolist(),
            "user": np.asarray(table["user_id"])[:, 0].tolist(),
            "item": np.asarray(table["item_id"])[:, 0].tolist(),
            "label": np.asarray(table["label"]).tolist(),
            "sampled": np.asarray(table["sampled"]).tolist()}


def test_seen_means_an_observed_training_row_not_a_sampled_one():
    item = np.array([0, 1, 2, 2])
    sampled = np.array([False, True, True, False])
    # item 1 appears only as a sampled negative: not seen
    assert protocol.seen_items(item, sampled, 4).tolist() == [True, False, True, False]


def test_cold_items_and_splits_by_period(tmp_path):
    data = prepare(tmp_path)
    # item 3: no interaction; item 4: first seen in validation, so no training row
    assert np.asarray(data.items["is_cold"]).tolist() == [False, False, False, True, True]
    assert [r for r, s in zip(rows_of(data, "train")["t"], rows_of(data, "train")["sampled"])
            if not s] == [10, 20, 30, 40, 50, 60]
    # the validation row of cold item 4 (t=70) is in no split, and counted
    assert rows_of(data, "val")["t"] == [80]
    assert data.manifest["protocol"]["rows_left_out"]["cold_in_val_period"] == 1
    # cold = test-period rows of cold items only
    assert rows_of(data, "cold") == {"t": [90], "user": [2], "item": [4], "label": [1.0],
                                     "sampled": [False]}
    assert rows_of(data, "test")["item"] == [2]


def test_cold_start_scores_only_the_evaluation_period_of_held_out_items(tmp_path):
    data = prepare(tmp_path, "cold_start", cold_item_fraction=0.34)  # 1 of the 3 earlier items
    is_cold = np.asarray(data.items["is_cold"])
    held = [k for k in range(3) if is_cold[k]]
    assert len(held) == 1
    cold = rows_of(data, "cold")
    assert min(cold["t"]) >= 90 and set(cold["item"]) <= {held[0], 4}
    train = rows_of(data, "train")
    assert held[0] not in train["item"]  # not even as a sampled negative
    left = data.manifest["protocol"]["rows_left_out"]
    trained_rows_of_held = sum(1 for t, _, i in ROWS if t < 70 and i == held[0])
    assert left["held_out_in_train_period"] == trained_rows_of_held > 0


def test_negatives_exist_at_the_row_time_and_skip_only_earlier_positives(tmp_path):
    data = prepare(tmp_path)
    train = rows_of(data, "train")
    negatives = {}
    for t, u, i, s in zip(train["t"], train["user"], train["item"], train["sampled"]):
        if s:
            negatives.setdefault((t, u), []).append(i)
    # t=10..30: every item that exists by then is already the user's positive
    # t=40, user 2: item 0 exists and user 2 buys it only later (t=60): allowed
    # t=50, user 1: items 0 and 2 are theirs, so only 1; t=60, user 2: only 2
    assert negatives == {(40, 2): [0, 0], (50, 1): [1, 1], (60, 2): [2, 2]}
    assert data.manifest["repaired"]["interactions.negatives_not_found"] == 2 * 3 + 2 + 2 + 2
    # the sampled column marks exactly the drawn negatives
    assert all(s == (lab == 0.0) for s, lab in zip(train["sampled"], train["label"]))


def test_sampler_weights_and_rejection():
    first_seen = np.array([0, 0, 5, protocol.NEVER])
    positives = (np.array([0, 0]), np.array([0, 2]), np.array([1, 9]))
    rng = np.random.default_rng(0)
    draws = protocol.sample_negatives(np.array([0, 0, 1]), np.array([3, 7, 7]), 4, 50, rng,
                                      first_seen, np.ones(4, bool), positives)
    assert set(draws[0]) == {1}  # item 2 not on sale yet, item 0 already bought
    assert set(draws[1]) == {1, 2}  # item 2 bought only later (t=9): allowed
    assert set(draws[2]) == {0, 1, 2}  # item 3 never exists
    weighted = protocol.sample_negatives(np.array([1]), np.array([7]), 4, 200, rng, first_seen,
                                         np.ones(4, bool), positives,
                                         weight=np.array([0.0, 1.0, 3.0, 1.0]))
    share = (weighted == 2).mean()
    assert set(weighted.ravel()) == {1, 2} and 0.65 < share < 0.85


def test_scaling_statistics_come_from_training_users_only(tmp_path):
    data = prepare(tmp_path)
    stats = data.manifest["dense_stats"]["age"]
    assert stats["mean"] == pytest.approx(30.0)  # users 0-2; user 3 (95) has no training row
    assert stats["std"] == pytest.approx(np.std([20.0, 30.0, 40.0]))
    assert stats["fitted_on"] == 3


def test_standardise_ignores_rows_outside_the_fit():
    scaled, stats = protocol.standardise(np.array([1.0, 3.0, np.nan, 52.0]),
                                         np.array([True, True, True, False]))
    assert stats["mean"] == 2.0 and stats["std"] == 1.0 and stats["missing"] == 1
    assert scaled.tolist() == [-1.0, 1.0, 0.0, 50.0] and stats["clipped"] == 0


def test_models_read_seen_items_from_observed_training_rows():
    """The one helper every model's id blanking uses ignores sampled rows."""
    class Data:
        item_feature = "item_id"

        class items:
            rows = 3

        @staticmethod
        def split(name):
            assert name == "train"
            return {"item_id": np.array([[0], [1], [0]]),
                    "sampled": np.array([False, True, True])}

    assert protocol.seen_in_training(Data()).tolist() == [True, False, False]
