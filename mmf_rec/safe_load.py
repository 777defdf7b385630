"""Checkpoints and archives from elsewhere, read without running or misplacing anything.

Unpickling a file runs whatever code the file names, so a checkpoint is
loaded with ``torch.load(weights_only=True)``: tensors and plain containers
only. Everything mmf_rec writes loads that way (:func:`plain` checks what a
checkpoint holds when it is written). A file that needs a full unpickle (an
MMF checkpoint from another project, say) is refused with one line that
says how to opt in; with the opt-in it loads, with a warning.

Archives are unpacked with members checked: nothing lands outside the
target folder (tar's ``data`` filter; zip names checked one by one).
"""

import os
import pickle
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np
import torch

from mmf_rec.errors import UserError
from mmf_rec.log import log

PathLike = os.PathLike


class CheckpointError(UserError):
    """A checkpoint cannot be read, needs an opt-in, or does not fit the model."""


class ArchiveError(UserError):
    """An archive is unreadable or would write outside its target folder."""


# -- checkpoints ------------------------------------------------------------------
def _blocked_global(error: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return f"it names {found.group(1)}" if found else "its pickle holds more than that"


def load_checkpoint(path, allow_pickle: bool = False, opt_in: str = "allow_pickle=True",
                    map_location: Any = "cpu",
                    before_unpickle: Optional[Callable[[], None]] = None) -> Any:
    """``torch.load(path)`` of tensors and plain containers; a file that needs a
    full unpickle only with ``allow_pickle`` (``opt_in`` says how the caller
    sets it)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _blocked_global(error)
    except Exception as error:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                              f"{type(error).__name__}: {str(error).splitlines()[0]}") from None
    if not allow_pickle:
        raise CheckpointError(
            f"{path}: holds more than tensors and plain values ({reason}); loading it "
            f"would run code stored in the file. If you trust it, load it with {opt_in}")
    log(f"{path}: unpickling in full ({reason}), as {opt_in} allows: this runs code "
        "stored in the file", level="warning")
    if before_unpickle is not None:
        before_unpickle()
    return torch.load(path, map_location=map_location, weights_only=False)


def _strip(keys: Iterable[str]) -> set:
    return {k[len("module."):] if k.startswith("module.") else k for k in keys}


def check_keys(model_keys: Iterable[str], state: Mapping[str, Any], where: str,
               how_to_relax: str) -> None:
    """Stop unless ``state`` has exactly the model's parameter names (a
    ``module.`` prefix aside): loading what fits would leave the rest untrained."""
    mine, theirs = _strip(model_keys), _strip(state.keys())
    missing, unexpected = sorted(mine - theirs), sorted(theirs - mine)
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: does not fit the model: {len(missing)} of its {len(mine)} parameters "
            f"missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}; "
            f"{how_to_relax} loads what fits and leaves the rest as initialised")


_LEAVES = (torch.Tensor, str, bytes, bool, int, float, type(None), torch.Size,
           torch.dtype, torch.device)


def plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` as ``torch.load(weights_only=True)`` reads it back: numpy
    numbers become Python numbers, OmegaConf nodes dicts and lists; anything
    else that is not a tensor or a plain value is an error here, when the file
    is written, not when someone loads it. Unchanged containers are returned
    as they are (a state dict keeps its metadata)."""
    if isinstance(value, np.generic):  # before the leaves: np.float64 is a float
        return value.item()
    if isinstance(value, _LEAVES):
        return value
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        out = {k: plain(v, f"{where}[{k!r}]") for k, v in value.items()}
        return value if all(out[k] is value[k] for k in value) else out
    if isinstance(value, (list, tuple)):
        out = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        unchanged = all(a is b for a, b in zip(out, value))
        return value if unchanged else type(value)(out)
    raise TypeError(f"{where}: a {type(value).__name__} cannot be loaded back with "
                    "weights_only=True; store it as tensors, numbers, strings, lists or dicts")


# -- archives ---------------------------------------------------------------------
def _inside(root: Path, name: str) -> bool:
    target = os.path.realpath(os.path.join(root, name))
    return target == str(root) or target.startswith(str(root) + os.sep)


def extract(archive: PathLike, dest: PathLike) -> None:
    """Unpack a tar (any compression) or zip archive into ``dest``, refusing
    members that would land outside it (absolute paths, ``..``, links out)."""
    archive, dest = Path(archive), Path(dest)
    root = Path(os.path.realpath(dest))
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
            return
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                for name in zipped.namelist():
                    if os.path.isabs(name) or not _inside(root, name):
                        raise ArchiveError(f"{archive}: member {name!r} would be written "
                                           f"outside {dest}; refusing to unpack it")
                zipped.extractall(dest)
            return
    except tarfile.FilterError as error:
        raise ArchiveError(f"{archive}: {error}; refusing to unpack it") from None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
        raise ArchiveError(f"{archive}: not a readable archive ({error})") from None
    raise ArchiveError(f"{archive}: neither a tar nor a zip archive")
