"""Classic recommenders, scored by the same full-catalogue evaluator as the
models, so a benchmark can tell whether a model beats simple, tuned methods.

Every baseline is fitted on the train split's observed positives only (the
models it is compared with train on the train split only) and scores a user
from ``Queries.profile``: the user's observed positives before the period
(train for val; train and val for test, which is how the val period counts
at test time). Hyper-parameters are tuned on the val period only
(``tune``), by warm NDCG@10, never on test.

- ``Popularity``: training positives per item.
- ``ItemKNN``: cosine item-item similarity of the binary user x item
  matrix, each item's top ``neighbours`` kept; score = profile @ S.
- ``EASE`` (Steck, WWW 2019): closed-form linear item-item model,
  B = I - P / diag(P) with P = (X^T X + lambda I)^-1 (diag B = 0).
- ``ALS``: implicit-feedback matrix factorisation (Hu, Koren, Volinsky
  2008) from the ``implicit`` package; a user's factors are solved from
  the profile, so users and positives unseen in training still count.
- ``Oracle``: on ``kbrec_synthetic`` only, the generator's true expected
  clicks of each user on each item (``synthetic.oracle_scores``): the
  ceiling a retriever is measured against.
- ``ContentKNN``: content only (the one baseline that can rank cold items):
  cosine of an item's frozen-encoder vector with the mean (or the closest)
  of the user's profile item vectors.
"""

import itertools
import logging
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from mmf_rec.data.prepared import PreparedData
from mmf_rec.schema import SchemaError
from mmf_rec.evaluation.catalogue import (
    Queries, build_queries, evaluate_scores, num_items, observed_positives, user_feature)

logger = logging.getLogger(__name__)

TUNE_METRIC = ("warm", "ndcg@10")


def train_matrix(data: PreparedData) -> sp.csr_matrix:
    """(n_users, n_items) binary CSR of the train split's observed positives."""
    train = observed_positives(data, "train")
    feature = user_feature(data)
    seen = int(train["user"].max()) + 1 if train["user"].size else 0
    try:
        n_users = max(seen, int(data.schema.sparse_feature(feature).cardinality))
    except SchemaError:  # no user feature in the schema: size by the ids seen
        n_users = seen
    matrix = sp.csr_matrix(
        (np.ones(len(train["user"]), np.float32), (train["user"], train["item"])),
        shape=(n_users, num_items(data)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _binary(matrix: sp.spmatrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


class Baseline:
    """``fit(data, seed)`` then ``score(queries)`` -> (U, num_items) scores."""

    name: ClassVar[str] = "baseline"
    grid: ClassVar[Dict[str, List[Any]]] = {}

    def __init__(self, **params):
        unknown = set(params) - set(self.defaults())
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown parameters {sorted(unknown)}; "
                            f"expected some of {sorted(self.defaults())}")
        self.params = {**self.defaults(), **params}
        self.num_items: Optional[int] = None

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        return {}

    def fit(self, data: PreparedData, seed: int = 0) -> "Baseline":
        self.num_items = num_items(data)
        self._fit(train_matrix(data), data, seed)
        return self

    def _fit(self, train: sp.csr_matrix, data: PreparedData, seed: int) -> None:
        raise NotImplementedError

    def score(self, queries: Queries) -> np.ndarray:
        if self.num_items is None:
            raise RuntimeError(f"{type(self).__name__}: call fit() before score()")
        if queries.num_items != self.num_items:
            raise ValueError(f"{type(self).__name__}: fitted on {self.num_items} items, "
                             f"the queries rank {queries.num_items}")
        return np.asarray(self._score(_binary(queries.profile)), dtype=np.float32)

    def _score(self, profile: sp.csr_matrix) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def candidates(cls) -> List[Dict[str, Any]]:
        """Every combination of the grid's values, in grid order."""
        names = list(cls.grid)
        return [dict(zip(names, values))
                for values in itertools.product(*(cls.grid[n] for n in names))]

    @classmethod
    def tune(cls, data: PreparedData, seed: int = 0, **fixed) -> Tuple[Dict[str, Any], float]:
        """(params, val warm NDCG@10) of the best grid point on the val period
        (the first one on a tie); ``fixed`` params are passed to every point."""
        queries = build_queries(data, "val")
        best: Tuple[Optional[Dict[str, Any]], float] = (None, -np.inf)
        group, metric = TUNE_METRIC
        for params in cls.candidates():
            model = cls(**fixed, **params).fit(data, seed)
            report = evaluate_scores(model.score(queries), queries, ks=(10,), seed=seed)
            value = report[group][metric]
            if value is None:
                raise ValueError(f"{cls.__name__}.tune: the val period of {data.root} has no "
                                 f"user with a {group} relevant item; cannot tune")
            logger.info("%s %s: val %s %s = %.4f", cls.name, params, group, metric, value)
            if value > best[1]:
                best = (params, float(value))
        return best  # type: ignore[return-value]


class Popularity(Baseline):
    name = "popularity"
    grid: ClassVar[Dict[str, List[Any]]] = {}

    def _fit(self, train, data, seed):
        self.counts = np.asarray(train.sum(axis=0), dtype=np.float32).reshape(-1)

    def _score(self, profile):
        return np.broadcast_to(self.counts, (profile.shape[0], self.num_items)).copy()


def keep_top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The k largest entries of each row (others dropped)."""
    matrix = sp.csr_matrix(matrix)
    rows, cols, vals = [], [], []
    for r in range(matrix.shape[0]):
        start, stop = matrix.indptr[r], matrix.indptr[r + 1]
        values = matrix.data[start:stop]
        columns = matrix.indices[start:stop]
        if len(values) > k:
            keep = np.argpartition(-values, k - 1)[:k]
            values, columns = values[keep], columns[keep]
        rows.append(np.full(len(values), r))
        cols.append(columns)
        vals.append(values)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=matrix.shape)


def cosine_similarity(train: sp.csr_matrix) -> sp.csr_matrix:
    """Item x item cosine of the columns of a binary user x item matrix, diagonal 0."""
    norms = np.sqrt(np.asarray(train.multiply(train).sum(axis=0)).reshape(-1))
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    scaled = sp.csr_matrix(train.multiply(inverse[None, :]))
    similarity = sp.csr_matrix(scaled.T @ scaled)
    similarity.setdiag(0.0)
    similarity.eliminate_zeros()
    return similarity


class ItemKNN(Baseline):
    name = "itemknn"
    grid: ClassVar[Dict[str, List[Any]]] = {"neighbours": [20, 100, 400]}

    @classmethod
    def defaults(cls):
        return {"neighbours": 100}

    def _fit(self, train, data, seed):
        self.similarity = keep_top_per_row(cosine_similarity(train), int(self.params["neighbours"]))

    def _score(self, profile):
        return np.asarray((profile @ self.similarity).todense())


def ease_weights(train: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE's (n_items, n_items) item-item weights B: B = I - P / diag(P)
    column-wise, P = (X^T X + l2 I)^-1, which makes diag B exactly 0."""
    gram = np.asarray((train.T @ train).todense(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


class EASE(Baseline):
    name = "ease"
    grid: ClassVar[Dict[str, List[Any]]] = {"l2": [50.0, 200.0, 500.0, 1500.0]}
    max_items: ClassVar[int] = 40_000  # a dense n x n inverse beyond this is impractical

    @classmethod
    def defaults(cls):
        return {"l2": 500.0}

    def _fit(self, train, data, seed):
        if train.shape[1] > self.max_items:
            raise ValueError(f"EASE inverts a dense items x items matrix: expected at most "
                             f"{self.max_items} items, got {train.shape[1]}")
        self.weights = ease_weights(train, float(self.params["l2"])).astype(np.float32)

    def _score(self, profile):
        return np.asarray(profile @ self.weights)


class ALS(Baseline):
    name = "als"
    grid: ClassVar[Dict[str, List[Any]]] = {"factors": [32, 64], "alpha": [1.0, 10.0, 40.0]}

    @classmethod
    def defaults(cls):
        return {"factors": 64, "alpha": 10.0, "regularization": 0.05, "iterations": 15}

    def _model(self, seed):
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=int(self.params["factors"]), alpha=float(self.params["alpha"]),
            regularization=float(self.params["regularization"]),
            iterations=int(self.params["iterations"]), random_state=seed, num_threads=2)

    def _fit(self, train, data, seed):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit's advice: its own threads only
            self.model = self._model(seed)
            self.model.fit(train, show_progress=False)

    def _score(self, profile):
        from threadpoolctl import threadpool_limits

        users = np.arange(profile.shape[0])
        with threadpool_limits(1, "blas"):
            factors = self.model.recalculate_user(users, profile) if len(users) else \
                np.zeros((0, self.model.factors), np.float32)
        return np.asarray(factors).reshape(len(users), -1) @ np.asarray(self.model.item_factors).T


class ContentKNN(Baseline):
    """``embeddings`` (num_items, d) item vectors; by default the frozen text
    backbone's mean token vector of every item (``item_embeddings``)."""

    name = "content_knn"
    grid: ClassVar[Dict[str, List[Any]]] = {"aggregate": ["mean", "max"]}

    @classmethod
    def defaults(cls):
        return {"aggregate": "mean", "embeddings": None, "modalities": ("text",)}

    def _fit(self, train, data, seed):
        vectors = self.params["embeddings"]
        if vectors is None:
            vectors = item_embeddings(data, self.params["modalities"])
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != self.num_items:
            raise ValueError(f"ContentKNN: embeddings must have shape ({self.num_items}, d), "
                             f"got {vectors.shape}")
        if self.params["aggregate"] not in ("mean", "max"):
            raise ValueError(f"ContentKNN: aggregate must be 'mean' or 'max', "
                             f"got {self.params['aggregate']!r}")
        self.vectors = _unit_rows(vectors)

    def _score(self, profile):
        if self.params["aggregate"] == "mean":
            centre = _unit_rows(np.asarray(profile @ self.vectors))
            return centre @ self.vectors.T
        out = np.zeros((profile.shape[0], self.num_items), np.float32)
        for u in range(profile.shape[0]):
            items = profile.indices[profile.indptr[u]:profile.indptr[u + 1]]
            if len(items):
                out[u] = (self.vectors[items] @ self.vectors.T).max(axis=0)
        return out

    @classmethod
    def tune(cls, data, seed=0, **fixed):
        if fixed.get("embeddings") is None:  # encode once for the whole grid
            fixed["embeddings"] = item_embeddings(data, fixed.pop("modalities", ("text",)))
        return super().tune(data, seed, **fixed)


class Oracle(Baseline):
    """The retrieval oracle of generated data: it knows the click model."""

    name = "oracle"

    def _fit(self, train, data, seed):
        if data.manifest.get("name") != "kbrec_synthetic" or "generator" not in data.manifest:
            raise ValueError(f"oracle: {data.root} is not generated kbrec_synthetic data; "
                             "only the generator knows the true click model")
        self.generator = data.manifest["generator"]

    def score(self, queries: Queries) -> np.ndarray:
        from mmf_rec.data import synthetic

        if self.num_items is None:
            raise RuntimeError("Oracle: call fit() before score()")
        return synthetic.oracle_scores(self.generator, queries.users,
                                       queries.split).astype(np.float32)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


# -- content vectors -------------------------------------------------------------
def encoder_settings(overrides: Optional[Mapping[str, Any]] = None):
    """text_encoder / image_encoder / knowledge_cache settings: two_tower's
    (so the baseline reads the models' knowledge-cache entries), with
    ``overrides`` merged in."""
    from omegaconf import OmegaConf

    from mmf_rec.paths import config_path

    model = OmegaConf.load(config_path("models", "two_tower.yaml")).model_config.two_tower
    settings = OmegaConf.create({key: model[key] for key in
                                 ("text_encoder", "image_encoder", "knowledge_cache")})
    if overrides:
        settings = OmegaConf.merge(settings, OmegaConf.create(dict(overrides)))
    return settings


def item_embeddings(data: PreparedData, modalities: Sequence[str] = ("text",),
                    settings: Optional[Mapping[str, Any]] = None) -> np.ndarray:
    """(num_items, d) float32: per modality, each item's mean frozen backbone
    token vector from the knowledge cache (built once, shared with the models),
    scaled to unit length; modalities side by side. An item without knowledge
    (e.g. no photo) gets zeros for that modality."""
    import mmf_rec.encoders  # noqa: F401  (registers the encoders)
    from mmf_rec.models.knowledge import build_item_knowledge

    if isinstance(modalities, str):
        modalities = (modalities,)
    config = encoder_settings(settings)
    parts = []
    for modality in modalities:
        if modality not in ("text", "image"):
            raise ValueError(f"modalities must be 'text' and/or 'image', got {modality!r}")
        if not config.knowledge_cache.enabled:
            raise ValueError("item_embeddings reads the knowledge cache: "
                             "knowledge_cache.enabled must be true")
        knowledge = build_item_knowledge(config, modality, data, dim=8)
        pooled = knowledge.cached_pooled.float().numpy()
        valid = knowledge.cached_mask.any(-1).numpy()
        parts.append(_unit_rows(pooled * valid[:, None]))
    return np.concatenate(parts, axis=1).astype(np.float32)


BASELINES = {"oracle": Oracle, "popularity": Popularity, "itemknn": ItemKNN, "ease": EASE, "als": ALS,
             "content_knn": ContentKNN}
