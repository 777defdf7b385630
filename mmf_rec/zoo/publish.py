"""Exporting a trained run as a zoo model: its weights and config checked
against the model they build, fingerprinted, archived, and recorded in a zoo file."""

import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from mmf_rec import safe_load
from mmf_rec.files import atomic_path, sha256_file
from mmf_rec.log import log
from mmf_rec.zoo.archive import CONFIG, FORMAT, META, write_tar_gz
from mmf_rec.zoo.entries import parse_key, update_zoo_file, zoo_path
from mmf_rec.zoo.errors import ZooError, ZooFileError, ZooMismatchError
from mmf_rec.zoo.fingerprints import data_fingerprints, knowledge_keys, state_differences
from mmf_rec.zoo.loading import build_model


def _load_checkpoint(path: Path, allow_pickle: bool) -> Dict[str, Any]:
    try:
        ckpt = safe_load.load_checkpoint(path, allow_pickle, opt_in="--allow-pickle")
    except safe_load.CheckpointError as e:
        raise ZooFileError(str(e)) from None
    if not isinstance(ckpt, Mapping):
        raise ZooFileError(f"{path}: holds a {type(ckpt).__name__}, not a checkpoint")
    return ckpt


def export(run_dir: os.PathLike, key: str, out_dir: Optional[os.PathLike] = None,
           zoo_file: Optional[os.PathLike] = None, checkpoint: str = "best",
           allow_pickle: bool = False) -> Dict[str, Any]:
    """Package a trained run as zoo model ``key`` and record it in a zoo file.

    ``allow_pickle`` lets a checkpoint that needs a full unpickle load (it
    runs code stored in the file); the archive then holds plain weights."""
    import torch
    from omegaconf import OmegaConf

    model_name, _ = parse_key(key)
    run_dir = Path(run_dir).absolute()
    config_file = run_dir / CONFIG
    if not config_file.is_file():
        raise ZooFileError(f"{run_dir}: no {CONFIG}: not the save_dir of an mmf_run run")
    config = OmegaConf.load(config_file)
    candidates = {"best": "best.ckpt", "current": "current.ckpt"}
    if checkpoint not in candidates:
        raise ZooError(f"checkpoint must be one of {sorted(candidates)}, got '{checkpoint}'")
    ckpt_file = run_dir / candidates[checkpoint]
    if not ckpt_file.is_file():
        raise ZooFileError(f"{ckpt_file} is missing: has the run written a checkpoint?")
    ckpt = _load_checkpoint(ckpt_file, allow_pickle)
    if isinstance(ckpt.get("config"), Mapping):
        # the config of the run that wrote the weights (a later mmf_predict or
        # test run in the same save_dir rewrites config.yaml)
        config = OmegaConf.create(ckpt["config"])
    if str(config.model) != model_name:
        raise ZooMismatchError(f"{config_file}: the run trained '{config.model}', but the "
                               f"key '{key}' names '{model_name}'")
    state = ckpt.get("model", ckpt)
    state = {k[7:] if k.startswith("module.") else k: v.detach().clone().cpu()
             for k, v in state.items()}

    recorded = {}

    def fingerprint(data):
        name, schema, manifest, root = data
        recorded.update(dataset=name, root=str(root),
                        data=data_fingerprints(schema, manifest))

    model = build_model(model_name, config, check=fingerprint)
    differences = state_differences(model.state_dict(), state)
    if differences:
        raise ZooMismatchError(f"{ckpt_file} does not load into the '{model_name}' model its "
                               f"config builds: " + "; ".join(differences))
    model.load_state_dict(state)
    knowledge = knowledge_keys(model)
    if knowledge:
        recorded["data"]["knowledge"] = knowledge

    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    out_dir = Path(out_dir).absolute() if out_dir is not None else run_dir / "zoo"
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_name = f"{model_name}.pth"
    with tempfile.TemporaryDirectory(prefix=".export.", dir=out_dir) as staging:
        staging = Path(staging)
        OmegaConf.save(config, staging / CONFIG)
        torch.save(state, staging / weights_name)
        files = {CONFIG: sha256_file(staging / CONFIG),
                 weights_name: sha256_file(staging / weights_name)}
        meta = {
            "format": FORMAT, "key": key, "model": model_name,
            "weights": weights_name, "dataset": recorded["dataset"],
            "data": recorded["data"],
            "run": {"save_dir": str(run_dir), "checkpoint": ckpt_file.name,
                    "num_updates": ckpt.get("num_updates"),
                    "metrics": {split: {k: v for k, v in values.items()
                                        if k in ("auc", "log_loss")}
                                for split, values in metrics.items()
                                if isinstance(values, dict)}},
            "files": files,
            "torch": torch.__version__,
        }
        (staging / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        files[META] = sha256_file(staging / META)
        archive_name = f"{key}.tar.gz"
        archive = out_dir / archive_name
        with atomic_path(archive) as tmp:
            write_tar_gz(tmp, {name: staging / name for name in files})
    digest = sha256_file(archive)
    node = {
        "version": f"1.0_{digest[:12]}",
        "resources": [{"url": archive.as_uri(), "file_name": archive_name,
                       "hashcode": digest, "compressed": True}],
        "files": files,
        "model": model_name,
        "dataset": recorded["dataset"],
        "depends_on": {
            "schema": recorded["data"]["schema"]["fingerprint"],
            "vocabulary": recorded["data"]["vocabulary"]["fingerprint"],
            **({"knowledge": knowledge} if knowledge else {}),
        },
        "metrics": meta["run"]["metrics"],
        "exported": datetime.datetime.now().replace(microsecond=0).isoformat(),
        "source": str(run_dir),
    }
    zoo_file = Path(zoo_file).absolute() if zoo_file is not None else zoo_path()
    update_zoo_file(zoo_file, key, node)
    log(f"exported '{key}' to {archive} (sha256 {digest}); entry written to {zoo_file}")
    return {"key": key, "archive": str(archive), "sha256": digest, "zoo_file": str(zoo_file),
            "entry": node}
