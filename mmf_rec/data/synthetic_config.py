"""What the synthetic generator is told: its config, and the seeded random
streams that every part of it draws from.

Everything the generator makes is a deterministic function of this config
(seed included): the same config gives byte-identical files, and
``GENERATOR_VERSION`` changes whenever that would no longer hold.
"""

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from mmf_rec.data import config as configs

# Bumped whenever the generated data would change for the same config, so
# builders regenerate instead of reusing stale files.
GENERATOR_VERSION = 4
CATEGORY_NOUNS = (
    "shirt", "jacket", "dress", "skirt", "sweater", "coat",
    "blouse", "cardigan", "bag", "hat", "scarf", "belt",
)  # one per category: num_categories is at most this many

# Random streams, one per concern, so e.g. changing num_interactions leaves
# the item catalogue unchanged.
ITEMS_STREAM, USERS_STREAM, INTERACTIONS_STREAM = 1, 2, 3
KNOWLEDGE_STREAM, PHOTOS_STREAM, LAUNCH_STREAM = 4, 5, 6


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
        return configs.config_from_mapping(cls, data, source, GeneratorConfigError)

    def validate(self, source: str = "generator") -> None:
        need = configs.requirement(self, source, GeneratorConfigError)
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
    """A config checked as it is, or read from a mapping (a manifest's
    ``generator`` entry too: its ``generator_version`` is not a setting)."""
    return configs.as_config(GeneratorConfig, config, ignore=("generator_version",))


def random_stream(config: GeneratorConfig, stream: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, stream])
