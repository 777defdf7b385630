"""MMF builder for ``kbrec_synthetic``: generate on first use, then load.

MMF calls ``build`` once (on the master process), then ``load`` per dataset
type, then ``update_registry_for_model`` so the model can read the schema
(``registry.get("kbrec_synthetic_schema")``) before it builds its tables.
"""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from filelock import FileLock
from mmf.common.registry import registry
from mmf.datasets.base_dataset_builder import BaseDatasetBuilder
from omegaconf import OmegaConf

from mmf_rec import paths
from mmf_rec.data import prepared as fmt
from mmf_rec.data import synthetic
from mmf_rec.data.dataset import KBRecDataset, select_schema
from mmf_rec.data.report import process_alive
from mmf_rec.errors import UserError
from mmf_rec.log import log


DATASET_TYPES = ("train", "val", "test")


class KBRecConfigError(UserError, ValueError):
    """A dataset_config entry is missing or names something that does not exist."""


def _option(config, key: str, default: Any = None) -> Any:
    """A plain-python config value; struct-mode configs may lack optional keys."""
    if config is None or key not in config:
        return default
    value = config[key]
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value




def data_root(config, dataset_name: str) -> Path:
    """``<data_dir>/<data_subdir>`` with ``~`` and environment variables expanded."""
    where = f"dataset_config.{dataset_name}"
    try:
        data_dir = _option(config, "data_dir")
    except Exception as e:  # an unresolvable ${env.data_dir}
        raise KBRecConfigError(f"{where}.data_dir: cannot be resolved ({e})") from None
    if not data_dir:
        raise KBRecConfigError(f"{where}.data_dir: required (usually ${{env.data_dir}})")
    subdir = _option(config, "data_subdir", dataset_name)
    return Path(os.path.expandvars(os.path.expanduser(str(data_dir)))) / str(subdir)


def split_for(config, dataset_type: str, dataset_name: str) -> str:
    """MMF's dataset type -> the prepared split it reads."""
    if dataset_type not in DATASET_TYPES:
        raise KBRecConfigError(
            f"{dataset_name}: unknown dataset type '{dataset_type}'; "
            f"expected one of {list(DATASET_TYPES)}"
        )
    if dataset_type == "test":
        return str(_option(config, "test_split", "test"))
    return dataset_type


def ensure_generated(root: Path, generator: synthetic.GeneratorConfig) -> Dict[str, Any]:
    """Generate ``root`` unless it already holds data from this exact config.

    A lock file serialises concurrent runs on one machine, and generation
    writes next to ``root`` and renames, so nobody reads a half-written tree.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        _remove_stale_generations(root)
        current = _existing_manifest(root)
        wanted = generator.to_dict()
        if current is not None and current.get("generator") == wanted:
            return current
        if current is None:
            log(f"generating {synthetic.NAME} into {root}")
        else:
            log(f"regenerating {synthetic.NAME} in {root}: its generator config changed")
        manifest = synthetic.generate_atomic(root, generator)
        rows = {name: entry["rows"] for name, entry in manifest["splits"].items()}
        oracle = {name: auc if auc is None else round(auc, 4)
                  for name, auc in manifest["oracle_auc"].items()}
        log(f"{synthetic.NAME}: rows {rows}; oracle AUC {oracle}")
        return manifest


def _remove_stale_generations(root: Path) -> None:
    """The generator builds in ``.<name>.tmp-<pid>`` (and moves the old tree to
    ``.<name>.old-<pid>``); a killed run leaves them. Under the lock, those
    whose process is gone are removed."""
    pattern = re.compile(rf"\.{re.escape(root.name)}\.(tmp|old)-(\d+)")
    for path in sorted(root.parent.glob(f".{root.name}.*-*")):
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and not process_alive(int(match.group(2))):
            log(f"removing {path}: left by a generator run (process {match.group(2)}) "
                "that was killed", level="warning")
            shutil.rmtree(path, ignore_errors=True)


def _older_generated(root: Path) -> Optional[Dict[str, Any]]:
    """The manifest of this generator's output in an older prepared format."""
    try:
        with open(root / fmt.MANIFEST) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and \
        manifest.get("name") == synthetic.NAME else None


def _existing_manifest(root: Path) -> Optional[Dict[str, Any]]:
    """The manifest of generated data at ``root``; None if there is nothing.

    Refuses to replace a directory that is not this generator's output.
    """
    if not root.exists():
        return None
    try:
        manifest = fmt.read_manifest(root)
    except fmt.PreparedDataError:
        if root.is_dir() and not any(root.iterdir()):
            return None
        older = _older_generated(root)
        if older is not None:  # an older format of ours: regenerate it
            return older
        raise fmt.PreparedDataError(
            f"{root}: exists but holds no readable {fmt.MANIFEST}; it was not made by "
            f"the {synthetic.NAME} generator (which renames complete directories into "
            "place), so it is left alone: remove it or choose another data_subdir"
        ) from None
    if manifest.get("name") != synthetic.NAME:
        raise fmt.PreparedDataError(
            f"{root / fmt.MANIFEST}: holds dataset '{manifest.get('name')}', not "
            f"{synthetic.NAME}; refusing to overwrite it: choose another data_subdir"
        )
    return manifest


@registry.register_builder("kbrec_synthetic")
class KBRecSyntheticBuilder(BaseDatasetBuilder):
    def __init__(self, dataset_name: str = "kbrec_synthetic"):
        super().__init__(dataset_name)
        self._data: Optional[fmt.PreparedData] = None
        self._schema = None

    @classmethod
    def config_path(cls) -> str:
        return paths.config_path("datasets", "kbrec_synthetic.yaml")

    def _generator_config(self, config) -> synthetic.GeneratorConfig:
        return synthetic.GeneratorConfig.from_mapping(
            _option(config, "generator", {}),
            source=f"dataset_config.{self.dataset_name}.generator",
        )

    def build(self, config, dataset_type: str = "train", *args, **kwargs):
        if not _option(config, "generate", True):
            return
        ensure_generated(data_root(config, self.dataset_name), self._generator_config(config))

    def _open(self, config) -> fmt.PreparedData:
        root = data_root(config, self.dataset_name)
        generate = _option(config, "generate", True)
        try:
            data = fmt.load_prepared(
                root, verify_checksums=bool(_option(config, "verify_checksums", True))
            )
        except fmt.PreparedDataError as e:
            if generate:
                raise fmt.PreparedDataError(
                    f"{e}; remove {root} and the next run regenerates it"
                ) from None
            raise fmt.PreparedDataError(
                f"{e}; (dataset_config.{self.dataset_name}.generate is false, so it is "
                "not generated automatically)"
            ) from None
        if generate:
            wanted = self._generator_config(config).to_dict()
            if data.manifest.get("generator") != wanted:
                raise fmt.PreparedDataError(
                    f"{root / fmt.MANIFEST}: generated from {data.manifest.get('generator')}, "
                    f"but dataset_config.{self.dataset_name}.generator asks for {wanted}; "
                    "build the dataset first (MMF does so before loading)"
                )
        return data

    def load(self, config, dataset_type: str = "train", *args, **kwargs) -> KBRecDataset:
        split = split_for(config, dataset_type, self.dataset_name)
        data = self._open(config)
        where = f"dataset_config.{self.dataset_name}"
        try:
            schema = select_schema(data.schema, _option(config, "sparse_features"))
        except ValueError as e:
            raise KBRecConfigError(f"{where}.sparse_features: {e}") from None
        extra = _option(config, "extra_eval_splits", []) if dataset_type == "test" else []
        if extra is None:  # every held-out split the data has
            extra = [s for s in data.split_names if s not in ("train", "val", split)]
        for name in [split, *extra]:
            if name not in data.splits:
                key = "test_split" if name == split else "extra_eval_splits"
                raise KBRecConfigError(
                    f"{where}.{key}: unknown split '{name}'; {data.root} has "
                    f"{data.split_names}"
                )
        self._data, self._schema = data, schema
        return KBRecDataset(
            data, split, config=config, dataset_type=dataset_type,
            dataset_name=self.dataset_name, schema=schema,
            extra_eval_splits=[s for s in extra if s != split],
        )

    def update_registry_for_model(self, config):
        """Publish what models need to build themselves for this data."""
        if self._data is None:
            self._data = self._open(config)
            self._schema = select_schema(self._data.schema, _option(config, "sparse_features"))
        registry.register(f"{self.dataset_name}_schema", self._schema)
        registry.register(f"{self.dataset_name}_manifest", self._data.manifest)
        registry.register(f"{self.dataset_name}_root", str(self._data.root))


def prepared_root(config, dataset_name: str) -> Path:
    """``data_dir`` (``/data_subdir`` if set): a directory that is already prepared."""
    where = f"dataset_config.{dataset_name}"
    try:
        data_dir = _option(config, "data_dir")
    except Exception as e:  # an unresolvable interpolation
        raise KBRecConfigError(f"{where}.data_dir: cannot be resolved ({e})") from None
    if not data_dir:
        raise KBRecConfigError(
            f"{where}.data_dir: required: the prepared directory to train on; make one "
            "with `python -m mmf_rec.data.hm --src DIR --out DIR` (H&M data), "
            "`python -m mmf_rec.data.synthetic --out DIR` or a reader in tools/ "
            f"(tools/prepare), then pass {where}.data_dir=DIR"
        )
    root = Path(os.path.expandvars(os.path.expanduser(str(data_dir))))
    subdir = _option(config, "data_subdir")
    return root / str(subdir) if subdir else root


@registry.register_builder("kbrec_prepared")
class KBRecPreparedBuilder(KBRecSyntheticBuilder):
    """Any prepared directory (H&M, other readers' output), read as it is.

    Shares loading and registry publishing with ``kbrec_synthetic``; it never
    generates, so the data must exist before the run.
    """

    def __init__(self, dataset_name: str = "kbrec_prepared"):
        super().__init__(dataset_name)

    @classmethod
    def config_path(cls) -> str:
        return paths.config_path("datasets", "kbrec_prepared.yaml")

    def build(self, config, dataset_type: str = "train", *args, **kwargs):
        prepared_root(config, self.dataset_name)  # a missing data_dir fails here, early

    def _open(self, config) -> fmt.PreparedData:
        return fmt.load_prepared(
            prepared_root(config, self.dataset_name),
            verify_checksums=bool(_option(config, "verify_checksums", True)),
        )
