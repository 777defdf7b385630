"""The ranker's token vectors as Integrated Gradients inputs, and its score
as a function of them.

IG differentiates the click logit with respect to the vectors that come out
of ``dlrm_mm``'s embedding layers (its "tokens", see
``mmf_rec/models/dlrm_mm.py``): :func:`token_inputs` computes them for a batch
of (user, item) pairs and :func:`score_from_tokens` rebuilds the model's
logit from them exactly, so the attributions are those of the model itself.
"""

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch import Tensor

from mmf_rec.interaction import masked_mean
from mmf_rec.schema import PAD_ID


@dataclass
class TokenInputs:
    """Named token tensors (N, T, d) the score is a function of, their masks
    (N, T) and the history ids (N, L), for one batch of (user, item) pairs."""

    tensors: Dict[str, Tensor]
    masks: Dict[str, Tensor]
    history: Optional[Tensor]


def user_feature_names(model) -> List[str]:
    return [f for f in model.user_features if f != model.history_feature]


def history_id_vectors(model, sample, history: Tensor) -> Tensor:
    """Each past item's id embedding (N, L, d): the mean-pooled history bag
    of that item alone, so their masked mean is the bag itself."""
    from mmf_rec.models.common import sparse_inputs

    n, length = history.shape
    features = sparse_inputs(sample, model.user_features)
    single = torch.full((n, length, length), PAD_ID, dtype=history.dtype)
    index = torch.arange(length)
    single[:, index, index] = history
    repeated = {name: ids.repeat_interleave(length, 0) for name, ids in features.items()}
    repeated[model.history_feature] = single.reshape(n * length, length)
    column = model.user_features.index(model.history_feature)
    vectors = model.user_sparse(repeated)[:, column].reshape(n, length, -1)
    return vectors * (history >= 0).unsqueeze(-1).to(vectors.dtype)


def token_inputs(model, sample, item_ids: Tensor) -> TokenInputs:
    """Token tensors of N (user, item) pairs: row j of ``sample`` with item j."""
    with torch.no_grad():
        users = model.encode_users(sample)
        items = model.encode_items(item_ids)
    user_groups = list(users.groups())
    item_groups = list(items.groups())
    tensors, masks = {}, {}
    base, base_mask = user_groups[0]
    history = None
    if model.history_feature:
        history = sample[f"sparse_{model.history_feature}"]
        tensors["user"], masks["user"] = base[:, :-1], base_mask[:, :-1]
        with torch.no_grad():
            tensors["history_ids"] = history_id_vectors(model, sample, history)
        masks["history_ids"] = history >= 0
        for modality, (vectors, valid) in zip(model.history_modalities, user_groups[1:]):
            tensors[f"history_{modality}"], masks[f"history_{modality}"] = vectors, valid
    else:
        tensors["user"], masks["user"] = base, base_mask
    tensors["item"], masks["item"] = item_groups[0]
    for modality, (vectors, mask) in zip(model.modalities, item_groups[1:]):
        tensors[modality], masks[modality] = vectors, mask
    return TokenInputs({k: v.detach().float() for k, v in tensors.items()},
                   {k: v.bool() for k, v in masks.items()}, history)


def score_from_tokens(model, names: Sequence[str], masks: Mapping[str, Tensor], *tensors):
    """The model's logit (N,) as a function of the token tensors, rebuilding
    its ``Side``s exactly as ``encode_users`` / ``encode_items`` do (pooled
    vectors are masked means of the tokens)."""
    from mmf_rec.models.dlrm_mm import Side

    x = dict(zip(names, tensors))
    n = x["user"].shape[0]
    user = x["user"]
    if "history_ids" in x:
        bag = masked_mean(x["history_ids"], masks["history_ids"]).unsqueeze(1)
        base = torch.cat([user, bag], 1)
    else:
        base = user
    known = torch.ones(base.shape[:2], dtype=torch.bool, device=base.device)
    groups, pooled = [(base, known)], [base[:, :1], base[:, 1:]]
    for modality in model.history_modalities:
        vectors, valid = x[f"history_{modality}"], masks[f"history_{modality}"]
        groups.append((vectors, valid))
        pooled.append(masked_mean(vectors, valid).unsqueeze(1))
    users = Side.from_groups(groups, pooled)
    attrs = x["item"]
    # the item's attribute tokens keep the model's mask (a blanked id is masked)
    groups, pooled = [(attrs, masks["item"])], [attrs]
    for modality in model.modalities:
        vectors, mask = x[modality], masks[modality]
        groups.append((vectors, mask))
        pooled.append(masked_mean(vectors, mask).unsqueeze(1))
    items = Side.from_groups(groups, pooled)
    return model.score(users, items).reshape(n)

