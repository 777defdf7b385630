"""Whole-evaluation-set CTR metrics: pure functions, and their MMF wrappers.

MMF's evaluation loop gathers the scores and targets of the whole evaluation
set into one report and calls each metric once, so AUC and log loss here are
computed over the whole set, not averaged over batches.

Scores are logits: the models return ``scores`` of shape (B, 1) before the
sigmoid, and these metrics take them as they come. ``roc_auc`` lives in
:mod:`mmf_rec.auc` (pure numpy, shared with the synthetic generator's oracle
AUC) and is imported here.
"""

import math
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from mmf.common.registry import registry
from mmf.modules.metrics import BaseMetric
from torch import Tensor

from mmf_rec.auc import roc_auc

ArrayLike = Union[Tensor, np.ndarray, list]


def _vector(values: ArrayLike) -> Tensor:
    return torch.as_tensor(values).detach().reshape(-1).to(torch.float64)


def _checked_pair(scores: ArrayLike, labels: ArrayLike, what: str):
    scores = _vector(scores)
    labels = _vector(labels).to(scores.device)
    if scores.numel() != labels.numel():
        raise ValueError(
            f"{what}: {scores.numel()} scores but {labels.numel()} labels; "
            "expected one score (logit) per label"
        )
    if scores.numel() == 0:
        raise ValueError(f"{what}: no samples")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{what}: scores contain NaN or infinity")
    return scores, labels


def log_loss(logits: ArrayLike, labels: ArrayLike, eps: float = 0.0) -> float:
    """Mean binary cross-entropy of sigmoid(logits) against labels in [0, 1].

    Computed from logits with log-sigmoid, so it is exact where the
    probability would round to 0 or 1. ``eps`` > 0 clips the probabilities to
    [eps, 1 - eps] first, as scikit-learn does; the default 0 does not clip.
    """
    logits, labels = _checked_pair(logits, labels, "log_loss")
    if not ((labels >= 0) & (labels <= 1)).all():
        raise ValueError("log_loss: labels must lie in [0, 1]")
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"log_loss: eps must lie in [0, 0.5), got {eps}")
    low = math.log(eps) if eps > 0 else -math.inf
    high = math.log1p(-eps)
    log_p = F.logsigmoid(logits).clamp(low, high)
    log_not_p = F.logsigmoid(-logits).clamp(low, high)
    return float(-(labels * log_p + (1 - labels) * log_not_p).mean())


# -- MMF metrics ------------------------------------------------------------------
def _scores_and_targets(sample_list, model_output, name: str):
    scores, targets = model_output["scores"], sample_list["targets"]
    if scores.numel() != targets.numel():
        raise ValueError(
            f"{name}: expects one logit per target, scores (B, 1) and targets (B, 1); "
            f"got scores {tuple(scores.shape)} and targets {tuple(targets.shape)}"
        )
    return scores.reshape(-1), targets.reshape(-1)


@registry.register_metric("auc")
class AUC(BaseMetric):
    """ROC AUC of the logits in ``scores`` against 0/1 ``targets``; NaN if one class."""

    def __init__(self):
        super().__init__("auc")

    def calculate(self, sample_list, model_output, *args, **kwargs):
        scores, targets = _scores_and_targets(sample_list, model_output, self.name)
        return torch.tensor(roc_auc(scores, targets), dtype=torch.float)


@registry.register_metric("log_loss")
class LogLoss(BaseMetric):
    """Mean binary cross-entropy of the logits in ``scores`` against ``targets``."""

    def __init__(self, eps: float = 0.0):
        super().__init__("log_loss")
        self.eps = float(eps)

    def calculate(self, sample_list, model_output, *args, **kwargs):
        scores, targets = _scores_and_targets(sample_list, model_output, self.name)
        return torch.tensor(log_loss(scores, targets, self.eps), dtype=torch.float)
