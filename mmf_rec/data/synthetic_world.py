"""The synthetic world: items, users, the click model and the impressions.

Part of the click signal comes from item attributes that no id or
categorical column carries (colour, material, style): they are visible only
in the item's description and image (``synthetic_knowledge.py``). What a
user is *shown* follows their taste too (an item's exposure weight is its
popularity times exp(``exposure_taste`` x the user's affinity for it)).
Tastes for the hidden attributes are partly shared (colour by region, style
by age bucket, material across everyone) and partly personal (a favourite
value per user). The true click probability of every impression is known,
and ``oracle_scores`` ranks the catalogue by the true expected clicks.
"""

import functools
from dataclasses import dataclass
from typing import Dict

import numpy as np

from mmf_rec.data import protocol
from mmf_rec.data.synthetic_config import (
    INTERACTIONS_STREAM, ITEMS_STREAM, LAUNCH_STREAM, USERS_STREAM, ConfigLike,
    GeneratorConfig, as_config, random_stream)

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
NUM_DEVICES = 3
NUM_AGE_BUCKETS = 6
DENSE_FEATURES = ("age", "activity", "price_sensitivity", "tenure")

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

_START_TIME = 1_700_000_000
_MEAN_GAP_SECONDS = 30


def _standardise(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / (std if std > 0 else 1.0)


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
    rng = random_stream(config, ITEMS_STREAM)
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
    rng = random_stream(config, USERS_STREAM)
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
    rng = random_stream(config, LAUNCH_STREAM)
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
    rng = random_stream(config, INTERACTIONS_STREAM)
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
    counted = label & ~unseen[item]  # clicks on warm items enter history
    history = protocol.history_before(
        user, timestamp, (user[counted], item[counted], timestamp[counted]), config.history_len)
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
