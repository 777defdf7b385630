"""ROC AUC, computed in one place.

The ``auc`` metric of training runs (:mod:`mmf_rec.metrics`) and the oracle
AUC the synthetic generator records in its manifest are the same function,
so a model's AUC and the oracle's are comparable by construction. Pure
numpy: the generator uses it without torch or mmf.
"""

import math
import warnings

import numpy as np


def _vector(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on a GPU or in bfloat16
        values = values.detach().cpu()
        values = values.double().numpy() if values.is_floating_point() else values.numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic, O(n log n).

    Tied scores share their mean rank, so a positive and a negative with the
    same score count half a correctly ordered pair (as in scikit-learn).
    ``scores`` may be logits or probabilities (only their order counts);
    ``labels`` must be 0 or 1 (or bool). Arrays, lists and tensors of any
    shape are read flat.

    Where AUC is undefined (no samples, or only one class) this returns NaN
    with a ``RuntimeWarning`` rather than raising, so that a small or unlucky
    evaluation slice does not abort a training run.
    """
    scores, labels = _vector(scores), _vector(labels)
    if scores.size != labels.size:
        raise ValueError(f"roc_auc: {scores.size} scores but {labels.size} labels; "
                         "expected one score (logit) per label")
    if not np.isfinite(scores).all():
        raise ValueError("roc_auc: scores contain NaN or infinity")
    positive = labels == 1
    if not (positive | (labels == 0)).all():
        raise ValueError("roc_auc: labels must be 0 or 1")
    num_pos = int(positive.sum())
    num_neg = labels.size - num_pos
    if num_pos == 0 or num_neg == 0:
        what = "no samples" if labels.size == 0 else "only one class present"
        warnings.warn(f"roc_auc: {what} ({num_pos} positives, {num_neg} negatives); "
                      "AUC is undefined, returning NaN", RuntimeWarning, stacklevel=2)
        return math.nan
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based, ties share their mean
    rank_sum = float(mean_rank[group][positive].sum())
    return (rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg)
