"""Why this recommendation: Integrated Gradients over the ranker's token vectors.

``dlrm_mm`` scores a (user, item) pair from two sets of d-vectors ("tokens",
see ``mmf_rec/models/dlrm_mm.py``). This module attributes the click logit to
those tokens with Captum's Integrated Gradients (IG), i.e. at the output of
the embedding layers (the layer attribution of every encoder at once), and
sums the token attributions into feature groups:

==============  =====================================================
group           tokens
==============  =====================================================
dense           the bottom MLP's output (all dense features together)
<user feature>  each user categorical's embedding (user_id, region, ...)
history         the user's past items: each one's id embedding (its
                share of the mean-pooled history bag), text vector and
                image vector; also reported per past item
<item feature>  each item attribute's embedding (item_id, category, ...)
text            the description's token vectors (one per word piece,
                summed into words through the tokenizer)
image           the photo's region vectors (one per grid cell)
==============  =====================================================

Baselines (``baseline=``), the input IG integrates from:

* ``"zero"`` (default): every token vector is zero. For this model zero means
  *absent*, exactly: a padding or blanked id is a zero vector, an empty
  history is zeros, and a token group whose vectors are all zero scores as a
  missing one (MaxSim 0, pooled vector 0), so the baseline is "no user
  features, no history, empty text, no image". Attributions answer "how much
  did this feature add to the score compared with not having it".
* ``"mean"``: every token is replaced by its average over a reference
  population (user tokens over up to 1,024 training rows, history and text
  tokens by their mean over valid tokens, item attributes and image cells by
  their per-position mean over the catalogue). Attributions answer "how much
  did this value move the score away from an average user / item".

Padded and masked positions keep their own value in both baselines, so they
get exactly zero attribution.

Completeness: IG's attributions sum to ``score(x) - score(baseline)`` up to
the integration error; every :class:`Explanation` carries Captum's
convergence ``delta`` (sum of attributions minus that difference).
"""

import math
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from mmf_rec.interaction import masked_mean
from mmf_rec.schema import PAD_ID

BASELINES = ("zero", "mean")
# IG's integration points (Gauss-Legendre). MaxSim's max makes the score
# piecewise smooth, so the error halves with each doubling of the steps; at
# 32 the mean |convergence delta| on the default run is 2e-3 (zero baseline)
# to 3.5e-3 (mean baseline) logits, 0.3-0.6% of |score - baseline score|.
N_STEPS = 32
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>")


# -- loading a run --------------------------------------------------------------------
@dataclass
class Run:
    """A trained ranker back from an ``mmf_run`` save dir."""

    model: Any
    config: Any
    data: Any  # mmf_rec.data.prepared.PreparedData
    dataset_name: str
    save_dir: Path
    checkpoint: Path


def load_run(save_dir: Union[str, Path], data_dir: Optional[str] = None) -> Run:
    """The ``dlrm_mm`` ranker of an ``mmf_run`` save dir, in eval mode, with its
    prepared data (:func:`mmf_rec.runs.load_run`; ``data_dir`` replaces the
    run's data dir when the prepared data moved since)."""
    from mmf_rec.data.prepared import load_prepared
    from mmf_rec.runs import load_run as load

    loaded = load(save_dir, expect_model="dlrm_mm", data_dir=data_dir)
    data = load_prepared(loaded.data_root, verify_checksums=False, check_id_ranges=False)
    return Run(loaded.model, loaded.config, data, loaded.dataset_name, Path(save_dir),
               loaded.weights)


def user_sample(data, user_id: int, split: str = "test") -> Dict[str, Tensor]:
    """A one-row batch of a user's features and history, as the model reads
    them: the user's last row in ``split`` (else in the last split that has
    the user), i.e. the user as of the latest interaction we know of."""
    from mmf_rec.data.dataset import KBRecDataset

    order = [split] + [s for s in ("test", "val", "train") if s != split]
    for name in order:
        if name not in data.split_names:
            continue
        users = np.asarray(data.split(name)["user_id"])[:, 0]
        rows = np.flatnonzero(users == int(user_id))
        if rows.size:
            dataset = KBRecDataset(data, name, dataset_name=data.name, dataset_type="test")
            return dataset.__getitems__([int(rows[-1])])
    raise KeyError(f"user {user_id} has no row in splits {order}")


# -- the model's tokens as IG inputs ------------------------------------------------------
@dataclass
class _Inputs:
    """Named token tensors (N, T, d) the score is a function of, their masks
    (N, T) and the history ids (N, L), for one batch of (user, item) pairs."""

    tensors: Dict[str, Tensor]
    masks: Dict[str, Tensor]
    history: Optional[Tensor]


def _user_feature_names(model) -> List[str]:
    return [f for f in model.user_features if f != model.history_feature]


def _history_id_vectors(model, sample, history: Tensor) -> Tensor:
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


def _token_inputs(model, sample, item_ids: Tensor) -> _Inputs:
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
            tensors["history_ids"] = _history_id_vectors(model, sample, history)
        masks["history_ids"] = history >= 0
        for modality, (vectors, valid) in zip(model.history_modalities, user_groups[1:]):
            tensors[f"history_{modality}"], masks[f"history_{modality}"] = vectors, valid
    else:
        tensors["user"], masks["user"] = base, base_mask
    tensors["item"], masks["item"] = item_groups[0]
    for modality, (vectors, mask) in zip(model.modalities, item_groups[1:]):
        tensors[modality], masks[modality] = vectors, mask
    return _Inputs({k: v.detach().float() for k, v in tensors.items()},
                   {k: v.bool() for k, v in masks.items()}, history)


def _score_from_tokens(model, names: Sequence[str], masks: Mapping[str, Tensor], *tensors):
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


# -- baselines ---------------------------------------------------------------------------
@dataclass
class Baseline:
    """Per-input reference tokens: ``kind`` "zero", or "mean" with ``means``
    (name -> (T, d) or (1, d) tensor) from :func:`mean_baseline`."""

    kind: str = "zero"
    means: Dict[str, Tensor] = field(default_factory=dict)

    def tensors(self, inputs: _Inputs) -> Dict[str, Tensor]:
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
        users = _token_inputs(model, sample, torch.zeros(len(rows), dtype=torch.long))
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


# -- explanations ------------------------------------------------------------------------
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
        self.user_groups = ["dense", *_user_feature_names(model)]
        self.item_groups = list(model.item_features)
        self.groups = (self.user_groups + (["history"] if model.history_feature else [])
                       + self.item_groups + list(model.modalities))

    def _forward(self, *tensors):
        # captum scales the inputs along n_steps concatenated in the batch
        # dimension; the masks are repeated to match
        n = tensors[0].shape[0]
        repeat = n // self._masks["user"].shape[0]
        masks = self._masks if repeat == 1 else _expand_masks_tiled(self._masks, repeat)
        return _score_from_tokens(self.model, self._names, masks, *tensors)

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
        inputs = _token_inputs(model, sample, item_ids)
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
        for j, name in enumerate(_user_feature_names(self.model)):
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
    :func:`user_sample`): one :class:`Explanation` per item."""
    return explainer(model, data).explain(user_sample, item_ids, baseline)


# -- global importance ----------------------------------------------------------------------
def sample_pairs(data, users: int = 500, candidates: int = 4, split: str = "test",
                 seed: int = 0) -> Tuple[Dict[str, Tensor], Tensor]:
    """``users`` distinct users of ``split`` (each at their last row there)
    and ``candidates`` items per user drawn uniformly from the catalogue: a
    batch of users * candidates rows and the items (N,) to pair them with."""
    from mmf_rec.data.dataset import KBRecDataset

    rng = np.random.default_rng(seed)
    user_column = np.asarray(data.split(split)["user_id"])[:, 0]
    last_row = {}
    for row, user in enumerate(user_column.tolist()):
        last_row[user] = row
    chosen = rng.choice(sorted(last_row), min(users, len(last_row)), replace=False)
    rows = np.repeat([last_row[u] for u in chosen], candidates)
    dataset = KBRecDataset(data, split, dataset_name=data.name, dataset_type="test")
    sample = dataset.__getitems__(rows.tolist())
    items = torch.from_numpy(rng.integers(0, int(data.items.rows), rows.size))
    return sample, items


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


# -- ground truth on the synthetic data ---------------------------------------------------------
def _within_group_mean(values: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Row i -> the mean of ``values`` over the rows sharing ``key[i]``."""
    out = np.zeros_like(values)
    for k in np.unique(key):
        out[key == k] = values[key == k].mean(0)
    return out


def synthetic_truth(generator, user_ids: Sequence[int],
                    item_ids: Sequence[int]) -> Dict[str, float]:
    """How much each feature group of ``dlrm_mm`` matters to the *true* click
    model of ``kbrec_synthetic`` (``synthetic.click_logit``), over the grid of
    the given users x items.

    Each term of the true logit is split into the parts the model sees through
    different groups: the shared tastes (the mean taste of the user's region
    for category and colour, of the age bucket for style, of everyone for
    material) and the personal rest. For each term, over the grid, its
    standard deviation is decomposed two-way (ANOVA): the user main effect
    goes to the term's user-side carriers, the item main effect to its
    item-side carriers, and the interaction half to each side; within a side
    it is split evenly among the carriers. Carriers are the groups that state
    the information outright:

    ========================  ====================  ======================
    term                      user side             item side
    ========================  ====================  ======================
    category (shared)         region                category, text, image
    category (personal)       user_id, history      category, text, image
    brand quality             -                     brand, text
    price x sensitivity       dense                 price_bucket
    popularity                -                     item_id
    activity, tenure          dense                 -
    colour (shared)           region                text, image
    style (shared)            age_bucket, dense     text, image
    material (shared)         -                     text, image
    colour/material/style     user_id, history      text, image
    (personal)
    ========================  ====================  ======================

    (The description names the category noun and the brand; the picture's
    shape is the category; dense holds age, which gives the age bucket.)
    ``device`` carries nothing: the click model ignores it, so its truth is 0.
    """
    from mmf_rec.data import synthetic as syn

    config = syn.as_config(generator)
    items, users = syn.make_items(config), syn.make_users(config)
    u = np.asarray(user_ids, dtype=np.int64)[:, None]
    i = np.asarray(item_ids, dtype=np.int64)[None, :]
    grid = np.zeros((u.shape[0], i.shape[1]))  # broadcasts one-sided terms

    shared = {
        "category": _within_group_mean(users.category_affinity, users.region),
        "colour": _within_group_mean(users.colour_affinity, users.region),
        "style": _within_group_mean(users.style_affinity, users.age_bucket),
        "material": np.broadcast_to(users.material_affinity.mean(0),
                                    users.material_affinity.shape),
    }
    affinity = {"category": users.category_affinity, "colour": users.colour_affinity,
                "style": users.style_affinity, "material": users.material_affinity}
    attribute = {"category": items.category, "colour": items.colour, "style": items.style,
                 "material": items.material}
    weight = {"category": syn.W_CATEGORY, "colour": syn.W_COLOUR, "style": syn.W_STYLE,
              "material": syn.W_MATERIAL}
    shown = {"category": ["category", "text", "image"]}
    shared_by = {"category": ["region"], "colour": ["region"], "style": ["age_bucket", "dense"],
                 "material": []}
    personal = ["user_id", "history"]
    log_popularity = syn._standardise(np.log(items.popularity))
    log_activity = syn._standardise(np.log(users.activity))
    terms = []  # (values over the grid, user carriers, item carriers)
    for name in ("category", "colour", "style", "material"):
        total = weight[name] * affinity[name][u, attribute[name][i]]
        common = weight[name] * shared[name][u, attribute[name][i]]
        carriers = shown.get(name, ["text", "image"])
        terms.append((common, shared_by[name], carriers))
        terms.append((total - common, personal, carriers))
    terms += [
        (grid + syn.W_BRAND * items.brand_quality[items.brand[i]], [], ["brand", "text"]),
        (-syn.W_PRICE * users.price_sensitivity[u] * items.price_level[i], ["dense"],
         ["price_bucket"]),
        (grid + syn.W_POPULARITY * log_popularity[i], [], ["item_id"]),
        (grid + syn.W_ACTIVITY * log_activity[u] + syn.W_TENURE * users.tenure[u], ["dense"], []),
    ]
    truth = {g: 0.0 for g in ("dense", "user_id", "region", "device", "age_bucket", "history",
                              "item_id", "category", "brand", "price_bucket", "text", "image")}
    for values, user_side, item_side in terms:
        centred = values - values.mean()
        user_main = centred.mean(1, keepdims=True)
        item_main = centred.mean(0, keepdims=True)
        interaction = centred - user_main - item_main
        both = bool(user_side) and bool(item_side)
        for side, main in ((user_side, user_main), (item_side, item_main)):
            share = main.std() + interaction.std() * (0.5 if both else 1.0)
            for group in side:
                truth[group] += share / len(side)
    return truth


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


def check_against_truth(result: Mapping[str, Any], generator) -> Dict[str, Any]:
    """Compare ``global_importance``'s mean |attribution| with
    :func:`synthetic_truth` over the same users and candidate items."""
    truth = synthetic_truth(generator, sorted(set(result["user_ids"])),
                            sorted(set(result["item_ids"])))
    groups = [g for g in result["mean_abs"] if g in truth]
    measured = [result["mean_abs"][g] for g in groups]
    order = sorted(groups, key=lambda g: -result["mean_abs"][g])
    return {
        "groups": groups,
        "truth": {g: truth[g] for g in groups},
        "spearman": spearman(measured, [truth[g] for g in groups]),
        "rank_by_attribution": order,
        "ignored": {g: order.index(g) + 1 for g in groups if truth[g] == 0.0},
    }
