"""How much each feature group of ``dlrm_mm`` matters to ``kbrec_synthetic``'s
true click model: the generator's own answer, against which attributions of
a trained model can be checked (``tools/explain.py --global``).

The generator knows its click model (``synthetic_world.click_logit``), so it
alone can say which feature groups carry which term; numpy only, like the
rest of the generator. The rank correlation that compares a model's
attributions with this answer is the caller's (``mmf_rec.explain.spearman``),
since explanation sits above data.
"""

from typing import Any, Callable, Dict, Mapping, Sequence

import numpy as np

from mmf_rec.data.synthetic_config import ConfigLike, as_config
from mmf_rec.data.synthetic_world import (
    W_ACTIVITY, W_BRAND, W_CATEGORY, W_COLOUR, W_MATERIAL, W_POPULARITY, W_PRICE, W_STYLE,
    W_TENURE, _standardise, make_items, make_users)

GROUPS = ("dense", "user_id", "region", "device", "age_bucket", "history",
          "item_id", "category", "brand", "price_bucket", "text", "image")


def _within_group_mean(values: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Row i -> the mean of ``values`` over the rows sharing ``key[i]``."""
    out = np.zeros_like(values)
    for k in np.unique(key):
        out[key == k] = values[key == k].mean(0)
    return out


def synthetic_truth(generator: ConfigLike, user_ids: Sequence[int],
                    item_ids: Sequence[int]) -> Dict[str, float]:
    """How much each feature group of ``dlrm_mm`` matters to the *true* click
    model of ``kbrec_synthetic`` (``synthetic_world.click_logit``), over the
    grid of the given users x items.

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
    config = as_config(generator)
    items, users = make_items(config), make_users(config)
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
    weight = {"category": W_CATEGORY, "colour": W_COLOUR, "style": W_STYLE,
              "material": W_MATERIAL}
    shown = {"category": ["category", "text", "image"]}
    shared_by = {"category": ["region"], "colour": ["region"], "style": ["age_bucket", "dense"],
                 "material": []}
    personal = ["user_id", "history"]
    log_popularity = _standardise(np.log(items.popularity))
    log_activity = _standardise(np.log(users.activity))
    terms = []  # (values over the grid, user carriers, item carriers)
    for name in ("category", "colour", "style", "material"):
        total = weight[name] * affinity[name][u, attribute[name][i]]
        common = weight[name] * shared[name][u, attribute[name][i]]
        carriers = shown.get(name, ["text", "image"])
        terms.append((common, shared_by[name], carriers))
        terms.append((total - common, personal, carriers))
    terms += [
        (grid + W_BRAND * items.brand_quality[items.brand[i]], [], ["brand", "text"]),
        (-W_PRICE * users.price_sensitivity[u] * items.price_level[i], ["dense"],
         ["price_bucket"]),
        (grid + W_POPULARITY * log_popularity[i], [], ["item_id"]),
        (grid + W_ACTIVITY * log_activity[u] + W_TENURE * users.tenure[u], ["dense"], []),
    ]
    truth = {g: 0.0 for g in GROUPS}
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


def check_against_truth(result: Mapping[str, Any], generator: ConfigLike,
                        spearman: Callable[[Sequence[float], Sequence[float]], float]
                        ) -> Dict[str, Any]:
    """Compare a global importance ``result`` (``mean_abs`` per group over the
    pairs of ``user_ids`` x ``item_ids``, as ``mmf_rec.explain.global_importance``
    returns it) with :func:`synthetic_truth` over the same users and items:
    the ``spearman`` rank correlation of the two, and where the groups the
    click model ignores rank by attribution."""
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
