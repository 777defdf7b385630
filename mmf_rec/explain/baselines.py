"""The input Integrated Gradients integrates from: every token absent
("zero") or the average user and item ("mean"); see :mod:`mmf_rec.explain`."""

from dataclasses import dataclass, field
from typing import Dict

import numpy as np
import torch
from torch import Tensor

from mmf_rec.explain.tokens import TokenInputs, token_inputs
from mmf_rec.interaction import masked_mean

BASELINES = ("zero", "mean")


@dataclass
class Baseline:
    """Per-input reference tokens: ``kind`` "zero", or "mean" with ``means``
    (name -> (T, d) or (1, d) tensor) from :func:`mean_baseline`."""

    kind: str = "zero"
    means: Dict[str, Tensor] = field(default_factory=dict)

    def tensors(self, inputs: TokenInputs) -> Dict[str, Tensor]:
        out = {}
        for name, x in inputs.tensors.items():
            if self.kind == "zero":
                reference = torch.zeros_like(x)
            else:
                reference = self.means[name].to(x.dtype).expand_as(x)
            # masked / padded positions keep their value: zero attribution
            out[name] = torch.where(inputs.masks[name].unsqueeze(-1), reference, x)
        return out


def mean_baseline(model, data, max_users: int = 1024, seed: int = 0) -> Baseline:
    """The "mean" baseline: average tokens of training users and of the catalogue."""
    from mmf_rec.data.dataset import KBRecDataset

    train = KBRecDataset(data, "train", dataset_name=data.name, dataset_type="test")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(train), min(max_users, len(train)), replace=False))
    sample = train.__getitems__(rows.tolist())
    item_ids = torch.arange(int(data.items.rows))
    means = {}
    with torch.no_grad():
        users = token_inputs(model, sample, torch.zeros(len(rows), dtype=torch.long))
        item_side = model.encode_items(item_ids)
    for name, vectors in users.tensors.items():
        if name == "user":
            means[name] = vectors.mean(0)
        elif name.startswith("history"):  # one mean past item
            means[name] = masked_mean(vectors.reshape(1, -1, vectors.shape[-1]),
                                      users.masks[name].reshape(1, -1))
    groups = list(item_side.groups())
    means["item"] = groups[0][0].float().mean(0)
    for modality, (vectors, mask) in zip(model.modalities, groups[1:]):
        vectors, mask = vectors.float(), mask.bool()
        if modality == "text":  # positions hold different words: one mean token
            means[modality] = masked_mean(vectors.reshape(1, -1, vectors.shape[-1]),
                                          mask.reshape(1, -1))
        else:  # grid cells are positions in the picture: a mean per cell
            weight = mask.float().unsqueeze(-1)
            means[modality] = (vectors * weight).sum(0) / weight.sum(0).clamp(min=1.0)
    return Baseline("mean", means)

