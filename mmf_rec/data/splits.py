"""How interactions become splits: the ``split:`` config and its three protocols.

Protocols (``SplitConfig.protocol``):

* ``time``: train / val / test by timestamp quantiles over all interactions;
  the test-period rows of cold items (no observed training interaction) form
  ``cold``.
* ``cold_start``: as ``time``, and a seeded ``cold_item_fraction`` of the
  items is held out of training entirely; they are cold, and only their
  test-period rows are evaluated (``cold``), never their older ones.
* ``leave_last_out`` (NCF): per user, the latest positive is the test item
  (ties: the larger item id), the latest remaining one the validation item;
  each is scored against ``eval_negatives`` items (99) drawn without
  replacement from the ascending item ids the user has no interaction with
  (test: in all the data; val: in the training data), users in ascending id
  order, with ``numpy.random.default_rng(seed)`` (test) and ``seed + 1``
  (val). The defaults reproduce ``../shared/data/ml-100k-loo`` exactly. Each
  user's candidates are one block of rows, the held-out item first.

Labels come from a rating threshold (``labels: rating``), a label column
(``label``), or every interaction is a positive (``implicit``). ``auto``
takes the label column when there is one, else means implicit for
leave_last_out (the NCF protocol) or without ratings, ratings otherwise.
"""

from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple

import numpy as np

from mmf_rec.data import protocol
from mmf_rec.data.config import requirement
from mmf_rec.data.report import DataInputError, RowReport

PROTOCOLS = ("time", "cold_start", "leave_last_out")
LABELS = ("auto", "rating", "implicit", "label")
# random streams besides the eval lists' (seed and seed + 1)
HELD_OUT_STREAM, TRAIN_NEGATIVES_STREAM = 1, 3


@dataclass(frozen=True)
class SplitConfig:
    protocol: str = "leave_last_out"
    labels: str = "auto"
    positive_rating: float = 4.0  # labels: rating -> rating >= this is positive
    eval_negatives: int = 99  # leave_last_out candidates besides the held-out item
    negatives_per_positive: int = 4  # implicit labels: sampled negatives per positive
    history_len: int = 5
    train_fraction: float = 0.8  # time / cold_start: quantiles of all timestamps
    val_fraction: float = 0.1
    cold_item_fraction: float = 0.1  # cold_start only
    seed: int = 2026
    min_count: int = 1  # categorical values seen fewer times share the unknown id 0
    max_vocab: int = 100_000

    def validate(self, source: str = "config") -> None:
        need = requirement(self, source, DataInputError)
        need(self.protocol in PROTOCOLS, "protocol", f"one of {list(PROTOCOLS)}")
        need(self.labels in LABELS, "labels", f"one of {list(LABELS)}")
        need(self.eval_negatives >= 1, "eval_negatives", ">= 1")
        need(self.negatives_per_positive >= 0, "negatives_per_positive", ">= 0")
        need(self.history_len >= 1, "history_len", ">= 1")
        need(0.0 < self.train_fraction < 1.0, "train_fraction", "in (0, 1)")
        need(0.0 < self.val_fraction < 1.0 - self.train_fraction, "val_fraction",
             "in (0, 1 - train_fraction) so the test period is not empty")
        need(0.0 <= self.cold_item_fraction < 1.0, "cold_item_fraction", "in [0, 1)")
        need(self.seed >= 0, "seed", ">= 0")
        need(self.min_count >= 1, "min_count", ">= 1")
        need(self.max_vocab >= 2, "max_vocab", ">= 2")

    def label_mode(self, has_rating: bool, has_label: bool) -> str:
        mode = self.labels
        if mode == "auto":
            if has_label:
                mode = "label"
            elif self.protocol == "leave_last_out" or not has_rating:
                mode = "implicit"
            else:
                mode = "rating"
        if mode == "rating" and not has_rating:
            raise DataInputError("labels: 'rating' needs a rating column")
        if mode == "label" and not has_label:
            raise DataInputError("labels: 'label' needs a label column")
        return mode

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _keys(user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    return np.unique(user.astype(np.int64) * n_items + item)


def split_by_time(item: np.ndarray, t: np.ndarray, n_items: int, config: SplitConfig,
                  first_seen: np.ndarray
                  ) -> Tuple[Dict[str, np.ndarray], np.ndarray, Dict[str, Any]]:
    """``time`` and ``cold_start``: row indices per split (rows in time order),
    the cold-item mask and what the manifest records; ``first_seen`` is each
    item's first observed time."""
    n = len(t)
    val_start = int(t[min(int(n * config.train_fraction), n - 1)])
    test_start = int(t[min(int(n * (config.train_fraction + config.val_fraction)), n - 1)])
    counts = [int((t < val_start).sum()), int(((t >= val_start) & (t < test_start)).sum()),
              int((t >= test_start).sum())]
    if min(counts) == 0:
        raise DataInputError(
            f"interactions: cannot split by time: train/val/test periods would hold "
            f"{counts} rows (val from {val_start}, test from {test_start}); the data has "
            f"{n} interactions over {len(np.unique(t))} distinct timestamps; change "
            "train_fraction / val_fraction")
    held = np.zeros(n_items, dtype=bool)
    if config.protocol == "cold_start":
        held = protocol.held_out(first_seen, test_start, config.cold_item_fraction,
                                 np.random.default_rng([config.seed, HELD_OUT_STREAM]))
    splits, is_cold, left_out = protocol.time_splits(item, t, n_items, val_start,
                                                     test_start, held)
    reasons = {"held_out": int(held.sum()),
               "no_training_interaction": int((is_cold & ~held).sum())}
    info = {"val_start": val_start, "test_start": test_start, "cold_items": int(is_cold.sum()),
            "cold_item_reasons": reasons, "rows_left_out": left_out}
    return splits, is_cold, info


def _last_positive(user: np.ndarray, item: np.ndarray, t: np.ndarray, candidates: np.ndarray
                   ) -> np.ndarray:
    """Per user, the index (into the arrays) of the latest candidate row; ties -> larger item."""
    rows = np.flatnonzero(candidates)
    order = np.lexsort((item[rows], t[rows], user[rows]))
    rows = rows[order]
    last = np.r_[user[rows][1:] != user[rows][:-1], True] if rows.size else np.zeros(0, bool)
    return rows[last]


def _candidates(users: np.ndarray, exclude: np.ndarray, n_items: int, k: int,
                rng: np.random.Generator) -> Tuple[np.ndarray, int]:
    """(users, k) items drawn without replacement from the ascending items the
    user has no ``exclude`` key for (user * n_items + item); -1 pads short pools."""
    out = np.full((len(users), k), -1, dtype=np.int64)
    short = 0
    all_items = np.arange(n_items, dtype=np.int64)
    start = np.searchsorted(exclude, users * n_items)
    end = np.searchsorted(exclude, (users + 1) * n_items)
    for row, (u, a, b) in enumerate(zip(users, start, end)):
        pool = np.delete(all_items, exclude[a:b] - u * n_items)
        if len(pool) < k:
            short += 1
            out[row, : len(pool)] = pool
        else:
            out[row] = rng.choice(pool, k, replace=False)
    return out, short


def split_leave_last_out(u: np.ndarray, i: np.ndarray, t: np.ndarray, positive: np.ndarray,
                         n_items: int, config: SplitConfig, report: RowReport
                         ) -> Tuple[np.ndarray, Dict[str, Tuple[np.ndarray, np.ndarray]],
                                    Dict[str, Any]]:
    """``leave_last_out``: training row indices, per eval split (held-out row
    indices, their candidate negatives), and what the manifest records."""
    n_positive = np.bincount(u[positive], minlength=int(u.max()) + 1)
    eligible = positive & (n_positive[u] >= 3)
    few = int(((n_positive > 0) & (n_positive < 3)).sum())
    if few:  # such users keep all their interactions in training
        report.repair("interactions.loo_user_too_few_positives", few,
                      detail="fewer than 3 positives: no val/test item, all rows train")
    test_rows = _last_positive(u, i, t, eligible)
    remaining = eligible.copy()
    remaining[test_rows] = False
    val_rows = _last_positive(u, i, t, remaining)
    train = np.ones(len(u), dtype=bool)
    train[test_rows] = False
    train[val_rows] = False
    everything = _keys(u, i, n_items)
    not_test = np.ones(len(u), dtype=bool)
    not_test[test_rows] = False
    in_train = _keys(u[not_test], i[not_test], n_items)
    lists = {}
    for name, rows, exclude, seed in (("test", test_rows, everything, config.seed),
                                      ("val", val_rows, in_train, config.seed + 1)):
        rows = rows[np.argsort(u[rows], kind="stable")]  # users in ascending id order
        negatives, short = _candidates(u[rows], exclude, n_items, config.eval_negatives,
                                       np.random.default_rng(seed))
        if short:
            report.repair(f"interactions.loo_{name}_short_candidate_list", short,
                          detail="fewer unseen items than eval_negatives; all were used")
        lists[name] = (rows, negatives)
    info = {"held_out_users": int(len(test_rows))}
    return np.flatnonzero(train), lists, info
