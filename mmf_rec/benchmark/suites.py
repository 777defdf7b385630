"""What a benchmark suite is (its data, its models, their training
overrides) and the built-in suites."""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
BASELINE_NAMES = ("popularity", "itemknn", "ease", "als", "content_knn")
# the generator's true click model: only generated data has one
ORACLE = "oracle"
# project model -> its experiment config (relative to the repo)
PROJECT_CONFIGS = {
    "dlrm": "projects/kbrec/dlrm.yaml",
    "two_tower": "projects/kbrec/two_tower.yaml",
    "dlrm_mm_text": "projects/kbrec/dlrm_mm_text.yaml",
    "dlrm_mm": "projects/kbrec/dlrm_mm.yaml",
}
# models that read item images: skipped on data without them
NEEDS_IMAGES = ("dlrm_mm",)
# models that read images where there are some: on data without them, the
# image modality is turned off (a modality that no item has is an error)
WITHOUT_IMAGES = {"two_tower": ("model_config.two_tower.modalities.image=false",)}


class BenchmarkError(Exception):
    """Bad input for the runner: reported as one line, exit status 2."""


@dataclass(frozen=True)
class Suite:
    """How a suite gets its data and what it runs.

    ``prepare`` is the command (after the Python interpreter) that writes the
    prepared directory ``{out}``; ``source`` is the raw data it reads, which
    must exist (``how_to_get`` says how to obtain it). ``overrides`` are
    ``mmf_run`` overrides per project model (key ``"*"``: every model).
    """

    name: str
    dataset: str
    prepare: Tuple[str, ...]
    source: Optional[Path] = None
    how_to_get: str = ""
    models: Tuple[str, ...] = BASELINE_NAMES + tuple(PROJECT_CONFIGS)
    configs: Mapping[str, str] = field(default_factory=lambda: dict(PROJECT_CONFIGS))
    overrides: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)

    def known_models(self) -> List[str]:
        oracle = [ORACLE] if ORACLE in self.models else []
        return oracle + list(BASELINE_NAMES) + [m for m in self.configs
                                                if m not in BASELINE_NAMES]

    def model_overrides(self, model: str) -> List[str]:
        return [*self.overrides.get("*", ()), *self.overrides.get(model, ())]


def _yaml_source(config: str) -> Path:
    """The raw data a prepare yaml reads (its ``src``, relative to the yaml)."""
    from omegaconf import OmegaConf

    path = REPO / config
    return (path.parent / str(OmegaConf.load(str(path)).src)).resolve()


def _prepared_with(config: str) -> Tuple[str, ...]:
    return ("tools/prepare.py", "--config", config, "--out", "{out}")


SHARED_README = "see ../shared/data/README.md (the project ships no data)"
# Training shortened for the suites: validate every 200 updates and keep the
# best checkpoint; sizes per suite keep `--seeds 3` within about 15 minutes
# on 2 cores.
SHORT = ("training.max_updates=1000", "training.evaluation_interval=200",
         "training.checkpoint_interval=200", "training.log_interval=100")
SHORT_SMALL_DATA = ("training.max_updates=500", "training.evaluation_interval=50",
                    "training.checkpoint_interval=50", "training.log_interval=50")


def default_suites() -> Dict[str, Suite]:
    movielens = "MovieLens 100K (ml-100k)"
    get_ml = f"MovieLens 100K from GroupLens (files u.data, u.item, u.user); {SHARED_README}"
    return {
        "synthetic": Suite(
            name="synthetic", dataset="kbrec_synthetic (embedded generator, default size)",
            prepare=("-m", "mmf_rec.data.synthetic", "--out", "{out}"),
            models=(ORACLE, *BASELINE_NAMES, *PROJECT_CONFIGS),
            overrides={"*": SHORT}),
        "ml100k-loo": Suite(
            name="ml100k-loo", dataset=movielens,
            prepare=_prepared_with("configs/prepare/movielens_100k.yaml"),
            source=_yaml_source("configs/prepare/movielens_100k.yaml"), how_to_get=get_ml,
            overrides={"*": SHORT}),
        "ml100k-time": Suite(
            name="ml100k-time", dataset=movielens,
            prepare=_prepared_with("configs/prepare/movielens_100k_time.yaml"),
            source=_yaml_source("configs/prepare/movielens_100k_time.yaml"), how_to_get=get_ml,
            overrides={"*": SHORT}),
        "hm-sample": Suite(
            name="hm-sample", dataset="H&M Personalized Fashion sample (with photos)",
            prepare=_prepared_with("configs/prepare/hm_sample.yaml"),
            source=_yaml_source("configs/prepare/hm_sample.yaml"),
            how_to_get=f"the H&M sample (articles, customers, transactions parquet and "
                       f"images/); {SHARED_README}",
            # 18k training rows (36 updates an epoch): fewer updates, validated often
            overrides={"*": SHORT_SMALL_DATA}),
    }



def without_images(suite: Suite) -> Suite:
    """The suite with the image modality turned off where models would read it."""
    overrides = dict(suite.overrides)
    for model, extra in WITHOUT_IMAGES.items():
        overrides[model] = (*overrides.get(model, ()), *extra)
    return dataclasses.replace(suite, overrides=overrides)

