"""``kbrec_synthetic``: interactions drawn from a known click model.

Part of the click signal comes from item attributes that no id or categorical
column carries (colour, material, style): they are visible only in the item's
description and image. What a user is *shown* follows their taste too (an
item's exposure weight is its popularity times exp(``exposure_taste`` x the
user's affinity for it)), so the clicked items of a user carry information a
retriever can learn, and the retrieval oracle (ranking the catalogue by the
true probability of being shown and clicking) is well above popularity. New
items launch at random times during the test period and are shown from then
on. Tastes for them are partly shared (colour by region,
style by age bucket, material across everyone) and partly personal (a
favourite value per user). The shared part is what a model can learn from the
population and carry to items it never saw; a purely personal taste, seen
through a user's few dozen clicks, is barely learnable by any model. So an
ID-only model is capped below the oracle on warm items, and on cold-start items
(held out of training) it has only their category, brand and price to go on,
while a model that reads the item knowledge can close much of the gap. The true click probability is stored beside each
label, so every model's AUC can be reported next to the oracle's.

Everything is a deterministic function of the config (seed included): the same
config gives byte-identical files.
"""

import argparse
import functools
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from mmf_rec.auc import roc_auc
from mmf_rec.data import prepared as fmt
from mmf_rec.data import protocol
from mmf_rec.schema import PAD_ID, DenseFeature, KnowledgeField, Schema, SparseFeature

logger = logging.getLogger(__name__)

# Bumped whenever the generated data would change for the same config, so
# builders regenerate instead of reusing stale files.
GENERATOR_VERSION = 4
NAME = "kbrec_synthetic"

COLOURS = (
    ("red", (200, 40, 40)),
    ("green", (40, 150, 60)),
    ("navy", (30, 50, 130)),
    ("yellow", (230, 200, 50)),
    ("black", (30, 30, 30)),
    ("white", (235, 235, 230)),
    ("orange", (240, 140, 40)),
    ("purple", (130, 60, 160)),
)
MATERIALS = ("cotton", "linen", "wool", "silk", "denim", "leather")
STYLES = ("classic", "relaxed", "sporty", "elegant", "vintage")
CATEGORY_NOUNS = (
    "shirt", "jacket", "dress", "skirt", "sweater", "coat",
    "blouse", "cardigan", "bag", "hat", "scarf", "belt",
)
NUM_DEVICES = 3
NUM_AGE_BUCKETS = 6
DENSE_FEATURES = ("age", "activity", "price_sensitivity", "tenure")
TEMPLATES = (
    "{A_style} {material} {noun} in {colour} by Brand {brand}.",
    "{Colour} {noun} from Brand {brand}, made of {material} with {a_style} look.",
    "Brand {brand} presents {a_style} {noun} in {colour} {material}.",
    "This {colour} {noun} is cut from {material} in {a_style} style. Brand {brand}.",
)

# Click model weights. The hidden terms (colour, material, style) carry more
# than half of the logit's variance; the rest is visible through ids and
# categoricals. Tuned so that the oracle AUC is about 0.8 and a bit under
# half of the impressions are clicked (exposure already follows taste).
BIAS = -3.6
W_COLOUR = 0.9
W_MATERIAL = 0.6
W_STYLE = 0.6
W_CATEGORY = 0.6
W_BRAND = 0.4
W_PRICE = 0.35
W_POPULARITY = 0.25
W_ACTIVITY = 0.2
W_TENURE = 0.2
FAVOURITE_BONUS = 1.0
AFFINITY_NOISE = 0.5

# Random streams, one per concern, so e.g. changing num_interactions leaves
# the item catalogue unchanged.
_ITEMS, _USERS, _INTERACTIONS, _KNOWLEDGE, _PHOTOS, _LAUNCH = 1, 2, 3, 4, 5, 6
_START_TIME = 1_700_000_000
_MEAN_GAP_SECONDS = 30


class GeneratorConfigError(ValueError):
    """The generator config has an unknown key or an impossible value."""


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 1
    num_users: int = 5000
    num_items: int = 2000
    num_interactions: int = 300_000
    cold_item_fraction: float = 0.1
    # New items are promoted: their exposure weight in the test period is
    # multiplied by this, so the cold split is large enough to evaluate on.
    cold_item_boost: float = 3.0
    history_len: int = 5
    image_size: int = 64
    train_fraction: float = 0.8
    val_fraction: float = 0.1
    num_categories: int = 12
    num_brands: int = 40
    num_price_buckets: int = 8
    num_regions: int = 10
    popularity_exponent: float = 0.6
    # Scale of the shared tastes (region -> colour, age bucket -> style, one
    # material appeal for all) in the hidden affinities: learnable from the
    # population and carried to new items.
    shared_taste: float = 0.8
    # Scale of the personal tastes (a favourite value per user plus noise).
    personal_taste: float = 1.0
    # How strongly a user's affinity for an item decides whether it is shown
    # to them (0: exposure follows popularity alone, as in version 3).
    exposure_taste: float = 1.5
    # Share of items written without a photo (real catalogues lack some).
    missing_image_fraction: float = 0.0

    @classmethod
    def from_mapping(cls, data: Optional[Mapping[str, Any]], source: str = "generator"):
        data = dict(data or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise GeneratorConfigError(
                f"{source}: unknown keys {unknown}; expected some of {sorted(known)}"
            )
        defaults = cls()
        values = {}
        for key, value in data.items():
            kind = type(getattr(defaults, key))
            try:
                values[key] = kind(value)
                exact = kind is float or float(value) == values[key]
            except (TypeError, ValueError):
                exact = False
            if not exact or isinstance(value, bool):
                raise GeneratorConfigError(
                    f"{source}.{key}: expected {kind.__name__}, got {value!r}"
                )
        config = cls(**values)
        config.validate(source)
        return config

    def validate(self, source: str = "generator") -> None:
        def need(ok, key, expected):
            if not ok:
                raise GeneratorConfigError(
                    f"{source}.{key}: expected {expected}, got {getattr(self, key)!r}"
                )

        need(self.seed >= 0, "seed", ">= 0")
        for key in ("num_users", "num_items", "num_interactions", "num_brands",
                    "num_price_buckets", "num_regions", "history_len"):
            need(getattr(self, key) >= 1, key, ">= 1")
        need(1 <= self.num_categories <= len(CATEGORY_NOUNS), "num_categories",
             f"1..{len(CATEGORY_NOUNS)}")
        need(0.0 < self.cold_item_fraction < 1.0, "cold_item_fraction", "in (0, 1)")
        need(1 <= self.num_cold_items < self.num_items, "cold_item_fraction",
             "a fraction leaving at least one cold and one warm item")
        need(self.cold_item_boost > 0, "cold_item_boost", "> 0")
        need(self.image_size >= 8, "image_size", ">= 8")
        need(0.0 < self.train_fraction < 1.0, "train_fraction", "in (0, 1)")
        need(0.0 < self.val_fraction < 1.0 - self.train_fraction, "val_fraction",
             "in (0, 1 - train_fraction) so the test period is not empty")
        need(self.popularity_exponent >= 0, "popularity_exponent", ">= 0")
        for key in ("shared_taste", "personal_taste", "exposure_taste"):
            need(getattr(self, key) >= 0, key, ">= 0")
        need(0.0 <= self.missing_image_fraction <= 1.0, "missing_image_fraction", "in [0, 1]")

    @property
    def num_cold_items(self) -> int:
        return int(round(self.num_items * self.cold_item_fraction))

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "generator_version": GENERATOR_VERSION}


ConfigLike = Union[GeneratorConfig, Mapping[str, Any], None]


def as_config(config: ConfigLike) -> GeneratorConfig:
    if isinstance(config, GeneratorConfig):
        config.validate()
        return config
    data = dict(config or {})
    data.pop("generator_version", None)
    return GeneratorConfig.from_mapping(data)


def _rng(config: GeneratorConfig, stream: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, stream])


def _standardise(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / (std if std > 0 else 1.0)


# -- schema ------------------------------------------------------------------
def build_schema(config: ConfigLike = None) -> Schema:
    config = as_config(config)
    return Schema(
        dense=tuple(DenseFeature(name, side="user") for name in DENSE_FEATURES),
        sparse=(
            SparseFeature("user_id", config.num_users, side="user"),
            SparseFeature("region", config.num_regions, side="user"),
            SparseFeature("device", NUM_DEVICES, side="user"),
            SparseFeature("age_bucket", NUM_AGE_BUCKETS, side="user"),
            SparseFeature("item_id", config.num_items, side="item"),
            SparseFeature("category", config.num_categories, side="item"),
            SparseFeature("brand", config.num_brands, side="item"),
            SparseFeature("price_bucket", config.num_price_buckets, side="item"),
            SparseFeature("history", config.num_items, side="user", pooling="mean",
                          max_len=config.history_len),
        ),
        knowledge=(
            KnowledgeField("description", kind="text"),
            KnowledgeField("image", kind="image"),
        ),
        label=fmt.LABEL_COLUMN,
        source=NAME,
    )


# -- items -------------------------------------------------------------------
@dataclass
class Items:
    category: np.ndarray
    brand: np.ndarray
    price_bucket: np.ndarray
    colour: np.ndarray  # hidden: only in description and image
    material: np.ndarray  # hidden
    style: np.ndarray  # hidden
    brand_quality: np.ndarray  # per brand
    price_level: np.ndarray  # price bucket scaled to [-1, 1]
    popularity: np.ndarray  # exposure weight, sums to 1 over all items
    is_cold: np.ndarray

    def __len__(self) -> int:
        return len(self.category)


def make_items(config: ConfigLike) -> Items:
    config = as_config(config)
    rng = _rng(config, _ITEMS)
    n = config.num_items
    brand_tier = rng.random(config.num_brands)
    brand_quality = rng.normal(0.0, 1.0, config.num_brands)
    category = rng.integers(0, config.num_categories, n)
    brand = rng.integers(0, config.num_brands, n)
    top = config.num_price_buckets - 1
    price = np.clip(np.rint(brand_tier[brand] * top + rng.normal(0.0, 1.0, n)), 0, top)
    rank = rng.permutation(n)
    weight = 1.0 / (rank + 1.0) ** config.popularity_exponent
    is_cold = np.zeros(n, dtype=bool)
    is_cold[rng.choice(n, config.num_cold_items, replace=False)] = True
    return Items(
        category=category,
        brand=brand,
        price_bucket=price.astype(np.int64),
        colour=rng.integers(0, len(COLOURS), n),
        material=rng.integers(0, len(MATERIALS), n),
        style=rng.integers(0, len(STYLES), n),
        brand_quality=brand_quality,
        price_level=2.0 * price / max(top, 1) - 1.0,
        popularity=weight / weight.sum(),
        is_cold=is_cold,
    )


# -- users -------------------------------------------------------------------
@dataclass
class Users:
    region: np.ndarray
    device: np.ndarray
    age_bucket: np.ndarray
    dense: np.ndarray  # (U, len(DENSE_FEATURES)) float32, observed
    activity: np.ndarray  # exposure weight, sums to 1
    price_sensitivity: np.ndarray  # true value (dense holds a noisy copy)
    tenure: np.ndarray
    category_affinity: np.ndarray  # (U, categories), partly from region
    colour_affinity: np.ndarray  # hidden tastes (U, colours): shared + personal
    material_affinity: np.ndarray
    style_affinity: np.ndarray

    def __len__(self) -> int:
        return len(self.region)


def _preference(rng: np.random.Generator, n_users: int, n_values: int,
                scale: float) -> np.ndarray:
    """A favourite value with a bonus on top of mild noisy tastes, times ``scale``."""
    favourite = rng.integers(0, n_values, n_users)
    taste = rng.normal(0.0, AFFINITY_NOISE, (n_users, n_values))
    taste[np.arange(n_users), favourite] += FAVOURITE_BONUS
    return scale * taste


def make_users(config: ConfigLike) -> Users:
    config = as_config(config)
    rng = _rng(config, _USERS)
    n = config.num_users
    region = rng.integers(0, config.num_regions, n)
    device = rng.integers(0, NUM_DEVICES, n)
    age_bucket = rng.integers(0, NUM_AGE_BUCKETS, n)
    age = (age_bucket + rng.random(n)) / NUM_AGE_BUCKETS
    log_activity = rng.normal(0.0, 0.8, n)
    activity = np.exp(log_activity)
    price_sensitivity = rng.normal(0.0, 1.0, n) + 0.3 * (age_bucket - 2.5) / 2.5
    tenure = rng.random(n)
    region_taste = rng.normal(0.0, 0.8, (config.num_regions, config.num_categories))
    category_affinity = region_taste[region] + rng.normal(
        0.0, 0.6, (n, config.num_categories)
    )
    shared = config.shared_taste
    shared_colour = shared * rng.normal(0.0, 1.0, (config.num_regions, len(COLOURS)))
    shared_style = shared * rng.normal(0.0, 1.0, (NUM_AGE_BUCKETS, len(STYLES)))
    shared_material = shared * rng.normal(0.0, 1.0, len(MATERIALS))
    personal = config.personal_taste
    dense = np.stack(
        [
            age,
            _standardise(log_activity + rng.normal(0.0, 0.3, n)),
            price_sensitivity + rng.normal(0.0, 0.5, n),
            tenure,
        ],
        axis=1,
    ).astype(np.float32)
    return Users(
        region=region,
        device=device,
        age_bucket=age_bucket,
        dense=dense,
        activity=activity / activity.sum(),
        price_sensitivity=price_sensitivity,
        tenure=tenure,
        category_affinity=category_affinity,
        colour_affinity=shared_colour[region] + _preference(rng, n, len(COLOURS), personal),
        material_affinity=shared_material[None, :] + _preference(
            rng, n, len(MATERIALS), personal),
        style_affinity=shared_style[age_bucket] + _preference(rng, n, len(STYLES), personal),
    )


# -- the click model ---------------------------------------------------------
def affinity(users: Users, items: Items, u: np.ndarray, i: np.ndarray,
             hidden: bool = True) -> np.ndarray:
    """The user-item terms of the true logit (taste for the item's category,
    price and, with ``hidden``, colour / material / style). Broadcasts: (U, 1)
    users against (1, I) items gives the (U, I) matrix."""
    value = (W_CATEGORY * users.category_affinity[u, items.category[i]]
             - W_PRICE * users.price_sensitivity[u] * items.price_level[i])
    if hidden:
        value = value + (
            W_COLOUR * users.colour_affinity[u, items.colour[i]]
            + W_MATERIAL * users.material_affinity[u, items.material[i]]
            + W_STYLE * users.style_affinity[u, items.style[i]]
        )
    return value


def click_logit(
    users: Users, items: Items, u: np.ndarray, i: np.ndarray, hidden: bool = True
) -> np.ndarray:
    """The true logit; ``hidden=False`` drops the colour/material/style terms.

    Without the hidden terms this is the best predictor that ids and
    categoricals alone could approach.
    """
    return (
        BIAS
        + affinity(users, items, u, i, hidden)
        + W_BRAND * items.brand_quality[items.brand[i]]
        + W_POPULARITY * _standardise(np.log(items.popularity))[i]
        + W_ACTIVITY * _standardise(np.log(users.activity))[u]
        + W_TENURE * users.tenure[u]
    )


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# -- interactions ------------------------------------------------------------
@dataclass
class Interactions:
    """All rows in time order (strictly increasing timestamps)."""

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    click_prob: np.ndarray
    label: np.ndarray
    history: np.ndarray  # (N, history_len), most recent first, PAD_ID padded
    splits: Dict[str, np.ndarray]  # split name -> row indices, time ordered
    unseen: np.ndarray  # (items,) no training impression: cold under the protocol
    left_out: Dict[str, int]  # rows in no split, by reason
    launch: np.ndarray  # (items,) when each item goes on sale


def history_matrix(
    user: np.ndarray, item: np.ndarray, counts: np.ndarray, history_len: int
) -> np.ndarray:
    """Each row's user's last ``history_len`` counted items strictly before it.

    Rows must be in time order with distinct timestamps; ``counts`` marks the
    rows that enter history (clicks on warm items). Most recent first.
    """
    n = len(user)
    order = np.argsort(user, kind="stable")  # by user, time order kept within
    sorted_user = user[order]
    sorted_counts = counts[order].astype(np.int64)
    before = np.cumsum(sorted_counts) - sorted_counts  # counted rows before, globally
    counted_items = item[order][sorted_counts.astype(bool)]
    first_of_user = np.searchsorted(sorted_user, sorted_user, side="left")
    user_start = before[first_of_user]
    sorted_history = np.full((n, history_len), PAD_ID, dtype=np.int64)
    for k in range(history_len):
        position = before - 1 - k
        valid = position >= user_start
        sorted_history[valid, k] = counted_items[position[valid]]
    history = np.empty_like(sorted_history)
    history[order] = sorted_history
    return history


def exposure_weights(config: GeneratorConfig, users: Users, items: Items) -> np.ndarray:
    """(U, I) unnormalised chance that an impression of user u shows item i,
    once the item is on sale: popularity (new items promoted by
    ``cold_item_boost``) times exp(``exposure_taste`` x affinity)."""
    u = np.arange(len(users))[:, None]
    i = np.arange(len(items))[None, :]
    boost = np.where(items.is_cold, config.cold_item_boost, 1.0)
    weight = np.log(items.popularity * boost)[None, :] + config.exposure_taste * affinity(
        users, items, u, i)
    return np.exp(weight - weight.max(axis=1, keepdims=True))


def launch_times(config: GeneratorConfig, items: Items, test_start: int,
                 test_end: int) -> np.ndarray:
    """When each item goes on sale: new (cold) items at uniform times of the test
    period, the others before the first impression."""
    rng = _rng(config, _LAUNCH)
    launch = np.full(len(items), _START_TIME, dtype=np.int64)
    cold = np.flatnonzero(items.is_cold)
    launch[cold] = rng.integers(test_start, max(test_end, test_start + 1), len(cold))
    return launch


def _draw_shown(rng: np.random.Generator, weights: np.ndarray, user: np.ndarray,
                time: np.ndarray, launch: np.ndarray) -> np.ndarray:
    """One shown item per impression (user, time), from the user's row of
    exposure ``weights`` (U, I) restricted to items on sale at that time
    (redrawn until one is)."""
    n_users, n_items = weights.shape
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    # every user's cdf shifted by their index: one sorted array, one search
    flat = (cdf + np.arange(n_users)[:, None]).ravel()
    item = np.empty(len(user), dtype=np.int64)
    todo = np.arange(len(user))
    while todo.size:
        u = user[todo]
        position = np.searchsorted(flat, u + rng.random(len(todo)), side="right")
        drawn = np.clip(position - u * n_items, 0, n_items - 1)
        ok = launch[drawn] <= time[todo]
        item[todo[ok]] = drawn[ok]
        todo = todo[~ok]
    return item


def make_interactions(config: ConfigLike, users: Users, items: Items) -> Interactions:
    config = as_config(config)
    rng = _rng(config, _INTERACTIONS)
    n = config.num_interactions
    gaps = rng.integers(1, 2 * _MEAN_GAP_SECONDS, n)
    timestamp = _START_TIME + np.cumsum(gaps)
    user = rng.choice(len(users), n, p=users.activity)

    n_train = int(n * config.train_fraction)
    n_val = int(n * config.val_fraction)
    test_start = n_train + n_val
    launch = launch_times(config, items, int(timestamp[min(test_start, n - 1)]),
                          int(timestamp[-1]))
    item = _draw_shown(rng, exposure_weights(config, users, items), user, timestamp, launch)

    click_prob = sigmoid(click_logit(users, items, user, item)).astype(np.float32)
    label = rng.random(n, dtype=np.float32) < click_prob
    # every row is an impression (observed): seen = shown in training, one
    # protocol for every reader (mmf_rec.data.protocol)
    splits, unseen, left_out = protocol.time_splits(
        item, timestamp, len(items), int(timestamp[n_train]), int(timestamp[test_start]))
    history = history_matrix(user, item, label & ~unseen[item], config.history_len)
    return Interactions(
        user=user, item=item, timestamp=timestamp, click_prob=click_prob,
        label=label, history=history, splits=splits, unseen=unseen, left_out=left_out,
        launch=launch,
    )


@functools.lru_cache(maxsize=1)
def _world(config: GeneratorConfig):
    """Items, users and interactions of a config, made once for the oracle's
    repeated calls (val and test, every seed of a benchmark)."""
    items, users = make_items(config), make_users(config)
    return items, users, make_interactions(config, users, items)


def oracle_scores(config: ConfigLike, user_ids: np.ndarray, period: str = "test") -> np.ndarray:
    """(len(user_ids), I) the true expected number of clicks of each user on
    each item in ``period`` ("val" or "test"), up to a per-user factor:
    exposure weight x share of the period the item is on sale x true click
    probability. Ranking the catalogue by it is the retrieval oracle."""
    config = as_config(config)
    items, users, inter = _world(config)
    splits = {"val": ("val",), "test": ("test", "cold")}[period]
    times = inter.timestamp[np.concatenate([inter.splits[s] for s in splits])]
    start, end = int(times.min()), int(times.max()) + 1
    on_sale = np.clip((end - np.maximum(inter.launch, start)) / (end - start), 0.0, 1.0)
    u = np.asarray(user_ids, np.int64)[:, None]
    i = np.arange(len(items))[None, :]
    exposure = exposure_weights(config, users, items)[u[:, 0]]
    return exposure * on_sale[None, :] * sigmoid(click_logit(users, items, u, i))


# -- item knowledge ----------------------------------------------------------
def describe(items: Items, item_id: int, template: int) -> str:
    colour = COLOURS[items.colour[item_id]][0]
    style = STYLES[items.style[item_id]]
    a_style = ("an " if style[0] in "aeiou" else "a ") + style
    return TEMPLATES[template].format(
        a_style=a_style,
        A_style=a_style.capitalize(),
        material=MATERIALS[items.material[item_id]],
        noun=CATEGORY_NOUNS[items.category[item_id]],
        colour=colour,
        Colour=colour.capitalize(),
        brand=int(items.brand[item_id]),
    )


def _contrast(rgb) -> tuple:
    """A shade that stands out from ``rgb``: darker on light, lighter on dark."""
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    if luminance > 110:
        return tuple(int(c * 0.45) for c in rgb)
    return tuple(int(c + (255 - c) * 0.55) for c in rgb)


def draw_item(items: Items, item_id: int, size: int, noise: np.ndarray):
    """Colour fills the picture; category picks the shape, style the pattern,
    material the grain (noise amplitude). ``noise`` is (size, size) in [-1, 1].
    """
    from PIL import Image, ImageDraw

    fill = COLOURS[items.colour[item_id]][1]
    ink = _contrast(fill)
    image = Image.new("RGB", (size, size), fill)
    draw = ImageDraw.Draw(image)
    step = max(size // 8, 2)
    style = int(items.style[item_id])
    for offset in range(step // 2, 2 * size if style == 4 else size, step):
        if style == 1:
            draw.line([(0, offset), (size, offset)], fill=ink)
        elif style == 2:
            draw.line([(offset, 0), (offset, size)], fill=ink)
        elif style == 3:
            for x in range(step // 2, size, step):
                draw.point((x, offset), fill=ink)
        elif style == 4:
            draw.line([(offset, 0), (0, offset)], fill=ink)
    lo, hi = int(size * 0.3), int(size * 0.7)
    shape = int(items.category[item_id]) % 4
    if shape == 0:
        draw.ellipse([lo, lo, hi, hi], fill=ink)
    elif shape == 1:
        draw.rectangle([lo, lo, hi, hi], fill=ink)
    elif shape == 2:
        draw.polygon([(size // 2, lo), (hi, hi), (lo, hi)], fill=ink)
    else:
        mid = size // 2
        draw.polygon([(mid, lo), (hi, mid), (mid, hi), (lo, mid)], fill=ink)
    amplitude = 3 + 3 * int(items.material[item_id])
    grain = np.rint(noise * amplitude).astype(np.int16)[..., None]
    pixels = np.asarray(image, dtype=np.int16) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_knowledge(root: Path, items: Items, config: GeneratorConfig,
                    progress: bool = True) -> Dict[str, Any]:
    rng = _rng(config, _KNOWLEDGE)
    n = len(items)
    templates = rng.integers(0, len(TEMPLATES), n)
    descriptions = [describe(items, i, templates[i]) for i in range(n)]
    items_dir = root / fmt.ITEMS
    text_sha = fmt.write_json(items_dir / fmt.DESCRIPTIONS_FILE, descriptions)

    image_dir = items_dir / fmt.IMAGES_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    size = config.image_size
    ids = range(n)
    if progress:
        from tqdm import tqdm

        ids = tqdm(ids, desc="item images", unit="img", mininterval=1.0,
                   disable=n < 5000)
    without_photo = _rng(config, _PHOTOS).random(n) < config.missing_image_fraction
    for i in ids:
        noise = rng.uniform(-1.0, 1.0, (size, size))
        if not without_photo[i]:
            draw_item(items, i, size, noise).save(image_dir / f"{i}.png", format="PNG")
    image = {"kind": "image", "path": f"{fmt.ITEMS}/{fmt.IMAGES_DIR}",
             "pattern": "{item_id}.png", "size": [size, size]}
    if without_photo.any():
        image.update(images_may_be_missing=True, missing=int(without_photo.sum()))
    return {
        "description": {"kind": "text", "path": f"{fmt.ITEMS}/{fmt.DESCRIPTIONS_FILE}",
                        "sha256": text_sha},
        "image": image,
    }


# -- writing -----------------------------------------------------------------
def _split_columns(schema: Schema, users: Users, items: Items,
                   inter: Interactions, rows: np.ndarray) -> Dict[str, np.ndarray]:
    u, i = inter.user[rows], inter.item[rows]
    values = {
        "user_id": u,
        "region": users.region[u],
        "device": users.device[u],
        "age_bucket": users.age_bucket[u],
        "item_id": i,
        "category": items.category[i],
        "brand": items.brand[i],
        "price_bucket": items.price_bucket[i],
        "history": inter.history[rows],
    }
    columns = {fmt.DENSE_COLUMN: users.dense[u]}
    for f in schema.sparse:
        columns[f.name] = values[f.name].astype(np.int64).reshape(len(rows), f.max_len)
    columns[schema.label] = inter.label[rows].astype(np.float32)
    columns[fmt.CLICK_PROB_COLUMN] = inter.click_prob[rows]
    columns[fmt.SAMPLED_COLUMN] = np.zeros(len(rows), dtype=bool)  # impressions only
    columns[fmt.TIMESTAMP_COLUMN] = inter.timestamp[rows].astype(np.int64)
    return columns


def _item_columns(schema: Schema, items: Items, unseen: np.ndarray) -> Dict[str, np.ndarray]:
    n = len(items)
    values = {
        "item_id": np.arange(n),
        "category": items.category,
        "brand": items.brand,
        "price_bucket": items.price_bucket,
    }
    columns = {
        f.name: values[f.name].astype(np.int64).reshape(n, f.max_len)
        for f in schema.sparse
        if f.side == "item"
    }
    columns["is_cold"] = unseen
    return columns


def _json_number(x) -> Optional[float]:
    """NaN (e.g. the AUC of a split with one class) is not valid json: None."""
    x = float(x)
    return x if np.isfinite(x) else None


def generate(root: Union[str, os.PathLike], config: ConfigLike = None,
             progress: bool = True) -> Dict[str, Any]:
    """Write a prepared ``kbrec_synthetic`` directory; returns its manifest.

    ``root`` must be absent or empty: mixing files of two runs would pass no
    checksum. The manifest is written last.
    """
    config = as_config(config)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise fmt.PreparedDataError(
            f"{root}: refusing to generate into a non-empty directory; "
            "remove it or choose another --out"
        )
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    schema = build_schema(config)
    items = make_items(config)
    users = make_users(config)
    inter = make_interactions(config, users, items)

    splits, oracle_auc = {}, {}
    for name, rows in inter.splits.items():
        columns = _split_columns(schema, users, items, inter, rows)
        splits[name] = fmt.write_table(root / name, columns)
        oracle_auc[name] = _json_number(roc_auc(inter.click_prob[rows], inter.label[rows]))
    visible = sigmoid(click_logit(users, items, inter.user, inter.item, hidden=False))
    visible_auc = {
        name: _json_number(roc_auc(visible[rows], inter.label[rows]))
        for name, rows in inter.splits.items()
    }
    item_table = fmt.write_table(root / fmt.ITEMS, _item_columns(schema, items, inter.unseen))
    knowledge = write_knowledge(root, items, config, progress)

    manifest = {
        "format": fmt.FORMAT,
        "name": NAME,
        "schema": schema.to_dict(),
        "seed": config.seed,
        "generator": config.to_dict(),
        "splits": splits,
        "items": item_table,
        "item_feature": "item_id",
        "knowledge": knowledge,
        "oracle_auc": oracle_auc,
        # The best AUC reachable without colour/material/style.
        "oracle_auc_without_hidden": visible_auc,
        "cold_items": int(inter.unseen.sum()),
        "protocol": {"name": "time", "labels": "label",
                     "cold_items": int(inter.unseen.sum()),
                     "launched_in_test": int(items.is_cold.sum()),
                     "rows_left_out": inter.left_out},
        "click_rate": {n: _json_number(inter.label[r].mean()) if len(r) else None
                       for n, r in inter.splits.items()},
    }
    fmt.write_manifest(root, manifest)
    logger.info(
        "generated %s in %s (%.1f s): rows %s, oracle AUC %s",
        NAME, root, time.perf_counter() - started,
        {k: v["rows"] for k, v in splits.items()},
        oracle_auc,
    )
    return manifest


def generate_atomic(root: Union[str, os.PathLike], config: ConfigLike = None,
                    progress: bool = True) -> Dict[str, Any]:
    """Generate next to ``root`` and rename into place, replacing what was there.

    Readers see either the old complete directory or the new one; a process
    that still maps the old files keeps them (they are unlinked, not changed).
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        manifest = generate(tmp, config, progress)
        old = None
        if root.exists():
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            os.replace(root, old)
        os.replace(tmp, root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmf_rec.data.synthetic",
        description="Generate the kbrec_synthetic prepared dataset.",
    )
    parser.add_argument("--out", required=True, help="directory to create")
    defaults = GeneratorConfig()
    for f in fields(GeneratorConfig):
        parser.add_argument(
            "--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
            default=getattr(defaults, f.name),
        )
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        manifest = generate(out, GeneratorConfig.from_mapping(args, source="arguments"))
    except ValueError as e:
        parser.error(str(e))
    logger.info("oracle AUC %s; without hidden attributes %s",
                manifest["oracle_auc"], manifest["oracle_auc_without_hidden"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
