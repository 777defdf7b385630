"""What matters to a model overall: mean |attribution| per feature group
over many sampled (user, item) pairs, and the rank correlation that compares
such an order with a reference one."""

from typing import Any, Dict, List, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from mmf_rec.explain.baselines import Baseline
from mmf_rec.explain.attributions import explainer
from mmf_rec.explain.samples import sample_pairs


def global_importance(model, data, users: int = 500, candidates: int = 4,
                      baseline: Union[str, Baseline] = "zero", split: str = "test",
                      seed: int = 0, chunk: int = 256) -> Dict[str, Any]:
    """Mean |attribution| per feature group over sampled (user, candidate)
    pairs, with the signed mean, the completeness check and the pairs used."""
    engine = explainer(model, data)
    sample, items = sample_pairs(data, users, candidates, split, seed)
    totals: Dict[str, List[Tensor]] = {g: [] for g in engine.groups}
    gaps, deltas = [], []
    for start in range(0, items.numel(), chunk):
        part = {k: v[start:start + chunk] if torch.is_tensor(v) else v for k, v in sample.items()}
        per_token, score, base_score, delta, _ = engine.attribute(
            part, items[start:start + chunk], baseline)
        for group, values in engine.group_totals(per_token).items():
            totals[group].append(values)
        gaps.append(score - base_score)
        deltas.append(delta)
    values = {g: torch.cat(v) for g, v in totals.items()}
    gap, delta = torch.cat(gaps), torch.cat(deltas)
    return {
        "baseline": baseline.kind if isinstance(baseline, Baseline) else baseline,
        "pairs": int(items.numel()),
        "users": int(sample["sparse_user_id"][:, 0].unique().numel()),
        "mean_abs": {g: float(v.abs().mean()) for g, v in values.items()},
        "mean": {g: float(v.mean()) for g, v in values.items()},
        "completeness": {
            "mean_abs_score_minus_baseline": float(gap.abs().mean()),
            "mean_abs_delta": float(delta.abs().mean()),
            "max_abs_delta": float(delta.abs().max()),
        },
        "user_ids": sample["sparse_user_id"][:, 0].tolist(),
        "item_ids": items.tolist(),
    }



def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(x):
        x = np.asarray(x, dtype=np.float64)
        order = np.argsort(x, kind="stable")
        r = np.empty_like(x)
        r[order] = np.arange(len(x), dtype=np.float64)
        for value in np.unique(x):
            tied = x == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra ** 2).sum() * (rb ** 2).sum()))

