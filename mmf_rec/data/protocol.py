"""The evaluation protocol, defined once for every reader.

Every quality number the project reports rests on these rules; the readers
(synthetic, MovieLens and bring-your-own catalogues, H&M) call these
functions rather than restating them:

* **Seen and cold.** An item is *seen* when it has at least one *observed*
  training interaction: a positive, or a negative that really happened (a low
  rating, an impression without a click). An item met in training only as a
  *sampled* negative is not seen; in fact a cold item never enters training
  at all, not even as a sampled negative. Every other item is *cold*: models
  blank (and mask) its id.
* **Splits by period.** ``train`` holds the training-period rows of the
  items not held out; ``val`` and ``test`` the val- and test-period rows of
  seen items; ``cold`` the **test-period** rows of cold items. Val-period rows
  of cold items and training-period rows of held-out items belong to no split:
  they are counted in the manifest (``protocol.rows_left_out``), never
  silently lost.
* **Negatives without a look into the future.** The sampled negatives of a
  row at time t are items that exist at t (first observed interaction at or
  before t) and exclude only the user's positives up to t. Warm splits draw
  from seen items, the cold split from cold items.
* **History only from the past.** A row's ``history`` holds the user's
  latest positives strictly before the row's time, never a cold item's.
* **Sampled rows are marked.** Every prepared split has a boolean ``sampled``
  column beside ``label``.
* **Scaling statistics** (mean and standard deviation of dense features)
  come from the users with a training row only.
"""

from typing import Dict, Optional, Tuple

import numpy as np

from mmf_rec.schema import PAD_ID

NEVER = np.iinfo(np.int64).max  # first-observed time of an item nobody touched


def first_observed(item: np.ndarray, time: np.ndarray, n_items: int) -> np.ndarray:
    """(n_items,) time of each item's first observed interaction; NEVER if none."""
    first = np.full(n_items, NEVER, dtype=np.int64)
    np.minimum.at(first, np.asarray(item, np.int64), np.asarray(time, np.int64))
    return first


def seen_items(item: np.ndarray, sampled: Optional[np.ndarray], n_items: int) -> np.ndarray:
    """(n_items,) bool: items with at least one observed (not sampled) training row."""
    item = np.asarray(item, np.int64).reshape(-1)
    observed = item if sampled is None else item[~np.asarray(sampled, bool)]
    seen = np.zeros(n_items, dtype=bool)
    seen[observed] = True
    return seen


def held_out(first_seen: np.ndarray, test_start: int, fraction: float,
             rng: np.random.Generator) -> np.ndarray:
    """(n_items,) bool: a seeded ``fraction`` of the items first observed
    before the test period, withheld from training (the ``cold_start`` protocol)."""
    earlier = np.flatnonzero(first_seen < test_start)
    held = np.zeros(len(first_seen), dtype=bool)
    held[rng.choice(earlier, int(round(len(earlier) * fraction)), replace=False)] = True
    return held


def time_splits(item: np.ndarray, time: np.ndarray, n_items: int, val_start: int,
                test_start: int, held_out: Optional[np.ndarray] = None
                ) -> Tuple[Dict[str, np.ndarray], np.ndarray, Dict[str, int]]:
    """Row indices per split, the cold-item mask and the rows left out.

    ``held_out`` (n_items,) marks items withheld from training on purpose
    (the ``cold_start`` protocol); they are cold whatever their history.
    Every row is observed here: sampled negatives are drawn afterwards.
    """
    item = np.asarray(item, np.int64)
    time = np.asarray(time, np.int64)
    held = np.zeros(n_items, bool) if held_out is None else np.asarray(held_out, bool)
    in_train, in_test = time < val_start, time >= test_start
    in_val = ~in_train & ~in_test
    train = in_train & ~held[item]
    is_cold = ~seen_items(item[train], None, n_items)
    cold_row = is_cold[item]
    rows = np.arange(len(item))
    splits = {"train": rows[train], "val": rows[in_val & ~cold_row],
              "test": rows[in_test & ~cold_row], "cold": rows[in_test & cold_row]}
    left_out = {"held_out_in_train_period": int((in_train & held[item]).sum()),
                "cold_in_val_period": int((in_val & cold_row).sum())}
    return splits, is_cold, left_out


def _earliest_positive(user, item, time, n_items) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted keys user * n_items + item of positive pairs, and each pair's first time."""
    keys = np.asarray(user, np.int64) * n_items + np.asarray(item, np.int64)
    order = np.lexsort((np.asarray(time, np.int64), keys))
    keys, times = keys[order], np.asarray(time, np.int64)[order]
    first = np.r_[True, keys[1:] != keys[:-1]] if keys.size else np.zeros(0, bool)
    return keys[first], times[first]


def sample_negatives(user: np.ndarray, time: np.ndarray, n_items: int, k: int,
                     rng: np.random.Generator, first_seen: np.ndarray, pool: np.ndarray,
                     positives: Tuple[np.ndarray, np.ndarray, np.ndarray],
                     weight: Optional[np.ndarray] = None, rounds: int = 100) -> np.ndarray:
    """(rows, k) sampled negatives of rows (user, time); -1 where none was found.

    Candidates are the ``pool`` items (n_items bool) that exist at the row's
    time (``first_seen <= time``), drawn uniformly or in proportion to
    ``weight`` (n_items); a draw is rejected when the user had a positive on
    that item at or before the row's time (``positives`` = user, item, time
    arrays of every positive). Later positives do not count: excluding them
    would tell the model which items the user turns to next.
    """
    user = np.asarray(user, np.int64)
    time = np.asarray(time, np.int64)
    out = np.full((len(user), k), -1, dtype=np.int64)
    candidates = np.flatnonzero(np.asarray(pool, bool) & (first_seen < NEVER))
    if k == 0 or len(user) == 0 or candidates.size == 0:
        return out
    candidates = candidates[np.argsort(first_seen[candidates], kind="stable")]
    born = first_seen[candidates]
    w = np.ones(len(candidates)) if weight is None else np.asarray(weight, float)[candidates]
    cumulative = np.cumsum(w)
    existing = np.searchsorted(born, time, side="right")  # per row: how many exist
    pos_keys, pos_time = _earliest_positive(*positives, n_items)
    todo = np.flatnonzero(np.repeat(existing > 0, k))
    owner = todo // k
    for _ in range(rounds):
        if todo.size == 0:
            break
        limit = cumulative[existing[owner] - 1]
        at = np.searchsorted(cumulative, rng.random(todo.size) * limit, side="right")
        draw = candidates[np.minimum(at, existing[owner] - 1)]
        keys = user[owner] * n_items + draw
        where = np.minimum(np.searchsorted(pos_keys, keys), max(len(pos_keys) - 1, 0))
        taken = (pos_keys[where] == keys) & (pos_time[where] <= time[owner]) \
            if pos_keys.size else np.zeros(todo.size, bool)
        out.flat[todo[~taken]] = draw[~taken]
        todo, owner = todo[taken], owner[taken]
    return out


def history_before(user: np.ndarray, time: np.ndarray,
                   positives: Tuple[np.ndarray, np.ndarray, np.ndarray],
                   history_len: int) -> np.ndarray:
    """(rows, history_len) each row's user's latest ``positives`` (user, item,
    time arrays; only those that count, e.g. no cold item) strictly before
    the row's time, most recent first, PAD_ID padded.

    Positives at the row's own time are left out, so neither a row nor its
    negatives see that moment's basket; ties keep the positives' order.
    """
    source_user, source_item, source_time = positives
    base = int(min(time.min(initial=0), source_time.min(initial=0)))
    span = int(max(time.max(initial=0), source_time.max(initial=0))) - base + 1
    shifted = source_time - base
    order = np.lexsort((shifted, source_user))  # stable: input order kept within a time
    keys = source_user[order] * span + shifted[order]
    items = source_item[order]
    end = np.searchsorted(keys, user * span + (time - base), side="left")
    start = np.searchsorted(keys, user * span, side="left")
    history = np.full((len(user), history_len), PAD_ID, dtype=np.int64)
    for k in range(history_len):
        position = end - 1 - k
        ok = position >= start
        history[ok, k] = items[position[ok]]
    return history


EXTREME_IQRS = 100.0  # this many interquartile ranges beyond a quartile is an entry error
FLOAT32_MAX = float(np.finfo(np.float32).max)


def plausible_range(known: np.ndarray) -> Tuple[float, float]:
    """Bounds outside which a value is an entry error: ``EXTREME_IQRS``
    interquartile ranges beyond the quartiles of ``known`` (its range when half
    of it is one value), never beyond float32. One value such as 1e308 would
    otherwise make the standard deviation inf, or so large that the feature is
    the same for every other user."""
    known = np.clip(known, -FLOAT32_MAX, FLOAT32_MAX)
    if known.size == 0:
        return -FLOAT32_MAX, FLOAT32_MAX
    q1, q3 = (float(q) for q in np.percentile(known, [25, 75]))
    if q3 == q1:
        return float(known.min()), float(known.max())
    spread = EXTREME_IQRS * (q3 - q1)
    return max(q1 - spread, -FLOAT32_MAX), min(q3 + spread, FLOAT32_MAX)


def standardise(values: np.ndarray, fit: np.ndarray) -> Tuple[np.ndarray, Dict[str, float]]:
    """(x - mean) / std with the statistics of the ``fit`` rows; missing -> 0.

    Only training users are fitted: users seen first in validation or test
    must not shift the scale the model trains on. Values outside the fitted
    rows' :func:`plausible_range` are clipped to it first (counted as
    ``clipped``), so the statistics stay finite and meaningful.
    """
    values = np.asarray(values, dtype=np.float64)
    missing = ~np.isfinite(values)
    low, high = plausible_range(values[np.asarray(fit, bool) & ~missing])
    clipped = ~missing & ((values < low) | (values > high))
    values = np.where(missing, np.nan, np.clip(values, low, high))
    known = values[np.asarray(fit, bool) & ~missing]
    mean = float(known.mean()) if known.size else 0.0
    std = float(known.std()) if known.size > 1 and known.std() > 0 else 1.0
    scaled = np.where(missing, 0.0, (values - mean) / std)
    return scaled, {"mean": mean, "std": std, "missing": int(missing.sum()),
                    "clipped": int(clipped.sum()), "fitted_on": int(known.size)}


def seen_in_training(data) -> np.ndarray:
    """(n_items,) bool: the seen items of a prepared directory (``PreparedData``),
    from its train split's observed rows. Every model blanks the rest."""
    from mmf_rec.data.prepared import SAMPLED_COLUMN

    train = data.split("train")
    return seen_items(np.asarray(train[data.item_feature][:, 0]),
                      np.asarray(train[SAMPLED_COLUMN]), data.items.rows)
