"""Attributions of one model: :class:`Explainer` runs Captum's Integrated
Gradients over the ranker's tokens, sums them into feature groups and makes
readable :class:`Explanation` records (history items, description words,
image regions) of one user against some items."""

import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from mmf_rec.explain.baselines import BASELINES, Baseline, mean_baseline
from mmf_rec.explain.tokens import score_from_tokens, token_inputs, user_feature_names

# IG's integration points (Gauss-Legendre). MaxSim's max makes the score
# piecewise smooth, so the error halves with each doubling of the steps; at
# 32 the mean |convergence delta| on the default run is 2e-3 (zero baseline)
# to 3.5e-3 (mean baseline) logits, 0.3-0.6% of |score - baseline score|.
N_STEPS = 32
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>")


@dataclass
class Explanation:
    """Why ``item_id`` got ``score`` for one user.

    ``groups``: feature group -> signed attribution (logit units), summing to
    ``score - baseline_score - delta``. ``history``: (past item id,
    attribution of its id, text and image vectors). ``words``: (word,
    attribution) in description order, special tokens included (top_words
    leaves them out). ``regions``: (rows, cols) image cell attributions.
    """

    user_id: Optional[int]
    item_id: int
    score: float
    baseline_score: float
    delta: float
    baseline: str
    groups: Dict[str, float]
    history: List[Tuple[int, float]] = field(default_factory=list)
    words: List[Tuple[str, float]] = field(default_factory=list)
    regions: Optional[np.ndarray] = None
    tokens: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(self.groups.values()))

    @property
    def completeness_error(self) -> float:
        """|sum of attributions - (score - baseline score)|, relative to the
        score difference (absolute when that is below 1e-3)."""
        gap = self.score - self.baseline_score
        return abs(self.total - gap) / max(abs(gap), 1e-3)

    def top_words(self, k: int = 5) -> List[Tuple[str, float]]:
        words = [(w, a) for w, a in self.words if w not in SPECIAL_TOKENS]
        return sorted(words, key=lambda wa: -abs(wa[1]))[:k]

    def top_regions(self, k: int = 3) -> List[Tuple[Tuple[int, int], float]]:
        if self.regions is None:
            return []
        cells = [((r, c), float(v)) for (r, c), v in np.ndenumerate(self.regions)]
        return sorted(cells, key=lambda cv: -abs(cv[1]))[:k]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "user_id": self.user_id, "item_id": self.item_id, "score": self.score,
            "baseline": self.baseline, "baseline_score": self.baseline_score,
            "delta": self.delta, "groups": self.groups,
            "history": [{"item_id": i, "attribution": a} for i, a in self.history],
            "words": [{"word": w, "attribution": a} for w, a in self.words],
            "regions": None if self.regions is None else self.regions.tolist(),
        }


class Explainer:
    """IG attributions of one model; holds what is reused across calls (the
    tokenizer, the descriptions, the mean baseline)."""

    def __init__(self, model, data=None, n_steps: int = N_STEPS):
        from captum.attr import IntegratedGradients

        if data is None:
            from mmf_rec.data.prepared import load_prepared
            from mmf_rec.models.common import dataset_root

            data = load_prepared(dataset_root(), verify_checksums=False, check_id_ranges=False)
        self.model = model
        self.data = data
        self.n_steps = int(n_steps)
        self._ig = IntegratedGradients(self._forward)
        self._names: Tuple[str, ...] = ()
        self._masks: Dict[str, Tensor] = {}
        self._tokenizer = None
        self._baselines: Dict[str, Baseline] = {"zero": Baseline("zero")}
        self.user_groups = ["dense", *user_feature_names(model)]
        self.item_groups = list(model.item_features)
        self.groups = (self.user_groups + (["history"] if model.history_feature else [])
                       + self.item_groups + list(model.modalities))

    def _forward(self, *tensors):
        # captum scales the inputs along n_steps concatenated in the batch
        # dimension; the masks are repeated to match
        n = tensors[0].shape[0]
        repeat = n // self._masks["user"].shape[0]
        masks = self._masks if repeat == 1 else _expand_masks_tiled(self._masks, repeat)
        return score_from_tokens(self.model, self._names, masks, *tensors)

    def baseline(self, kind: Union[str, Baseline]) -> Baseline:
        if isinstance(kind, Baseline):
            return kind
        if kind not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")
        if kind not in self._baselines:
            self._baselines[kind] = mean_baseline(self.model, self.data)
        return self._baselines[kind]

    # -- raw attributions ---------------------------------------------------------
    def attribute(self, sample, item_ids: Tensor, baseline="zero",
                  internal_batch_size: Optional[int] = None):
        """Per-token attributions (name -> (N, T)) of N pairs (row j of
        ``sample`` with ``item_ids[j]``), scores, baseline scores and deltas (N,)."""
        model = self.model
        if model.training:
            raise RuntimeError("explain: put the model in eval mode (model.eval())")
        item_ids = torch.as_tensor(item_ids, dtype=torch.long).reshape(-1)
        inputs = token_inputs(model, sample, item_ids)
        reference = self.baseline(baseline).tensors(inputs)
        self._names = tuple(inputs.tensors)
        self._masks = inputs.masks
        x = tuple(inputs.tensors[k] for k in self._names)
        x0 = tuple(reference[k] for k in self._names)
        attributions, delta = self._ig.attribute(
            x, baselines=x0, n_steps=self.n_steps, method="gausslegendre",
            internal_batch_size=internal_batch_size, return_convergence_delta=True,
        )
        with torch.no_grad():
            score = self._forward(*x)
            base_score = self._forward(*x0)
        per_token = {k: a.detach().sum(-1) for k, a in zip(self._names, attributions)}
        return per_token, score, base_score, delta.detach(), inputs

    def group_totals(self, per_token: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Feature group -> attribution (N,)."""
        totals = {"dense": per_token["user"][:, 0]}
        for j, name in enumerate(user_feature_names(self.model)):
            totals[name] = per_token["user"][:, 1 + j]
        if self.model.history_feature:
            totals["history"] = sum(per_token[k].sum(1) for k in per_token
                                    if k.startswith("history"))
        for j, name in enumerate(self.item_groups):
            totals[name] = per_token["item"][:, j]
        for modality in self.model.modalities:
            totals[modality] = per_token[modality].sum(1)
        return totals

    # -- readable explanations --------------------------------------------------------
    def explain(self, sample, item_ids, baseline="zero") -> List[Explanation]:
        """One user (a one-row batch) against K items: K explanations."""
        item_ids = torch.as_tensor(item_ids, dtype=torch.long).reshape(-1)
        k = item_ids.numel()
        rows = {key: value.repeat_interleave(k, 0) if torch.is_tensor(value) else value
                for key, value in dict(sample).items()}
        per_token, score, base_score, delta, inputs = self.attribute(rows, item_ids, baseline)
        totals = self.group_totals(per_token)
        kind = baseline.kind if isinstance(baseline, Baseline) else baseline
        user = rows.get("sparse_user_id")
        explanations = []
        for j, item in enumerate(item_ids.tolist()):
            explanation = Explanation(
                user_id=int(user[j, 0]) if user is not None else None,
                item_id=item, score=float(score[j]), baseline_score=float(base_score[j]),
                delta=float(delta[j]), baseline=kind,
                groups={g: float(totals[g][j]) for g in self.groups},
                tokens={name: a[j].numpy() for name, a in per_token.items()},
            )
            if inputs.history is not None:
                past = inputs.history[j]
                share = sum(per_token[k][j] for k in per_token if k.startswith("history"))
                explanation.history = [(int(i), float(a)) for i, a in zip(past, share) if i >= 0]
            if "text" in per_token:
                explanation.words = self.words(item, per_token["text"][j])
            if "image" in per_token:
                cells = per_token["image"][j].numpy()
                side = int(round(math.sqrt(cells.size)))
                explanation.regions = (cells.reshape(side, side) if side * side == cells.size
                                       else cells.reshape(1, -1))
            explanations.append(explanation)
        return explanations

    def words(self, item_id: int, attributions: Tensor) -> List[Tuple[str, float]]:
        """Token attributions summed into the description's words (word
        pieces ``##x`` join the word before them); padding dropped."""
        tokenizer = self.tokenizer()
        encoded = tokenizer.tokenize([self.data.descriptions()[item_id]])
        ids = encoded["input_ids"][0].tolist()
        mask = encoded["attention_mask"][0].tolist()
        pieces = tokenizer.tokenizer.convert_ids_to_tokens(ids)
        words: List[List] = []
        for piece, valid, value in zip(pieces, mask, attributions.tolist()):
            if not valid:
                continue
            if piece.startswith("##") and words:
                words[-1][0] += piece[2:]
                words[-1][1] += value
            else:
                words.append([piece, value])
        return [(w, float(a)) for w, a in words]

    def tokenizer(self):
        if self._tokenizer is None:
            from mmf_rec.processors.text import TextTokenizerProcessor

            params = self.model.config.text_encoder.params
            self._tokenizer = TextTokenizerProcessor(
                {"model_path": params.get("model_path") or "",
                 "max_length": int(params.get("max_length") or 32)})
        return self._tokenizer


def _expand_masks_tiled(masks: Mapping[str, Tensor], repeat: int) -> Dict[str, Tensor]:
    """Masks for captum's scaled batch: ``repeat`` copies of the N rows, tiled."""
    return {k: v.repeat(repeat, *([1] * (v.dim() - 1))) for k, v in masks.items()}


_EXPLAINERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def explainer(model, data=None, n_steps: Optional[int] = None) -> Explainer:
    """The model's cached :class:`Explainer` (``n_steps``: IG's integration
    points from now on; more steps, smaller convergence delta)."""
    if model not in _EXPLAINERS:
        _EXPLAINERS[model] = Explainer(model, data)
    engine = _EXPLAINERS[model]
    if n_steps is not None:
        engine.n_steps = int(n_steps)
    return engine


def explain(model, user_sample, item_ids, baseline: Union[str, Baseline] = "zero",
            data=None) -> List[Explanation]:
    """Why ``model`` (a ``dlrm_mm`` in eval mode) scores ``item_ids`` as it
    does for the user of ``user_sample`` (a one-row batch, e.g. from
    :func:`mmf_rec.explain.samples.user_sample`): one :class:`Explanation`
    per item."""
    return explainer(model, data).explain(user_sample, item_ids, baseline)

