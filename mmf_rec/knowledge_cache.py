"""Item knowledge cache: frozen text / image backbones run once per item.

Ranking K candidates must cost K cheap interactions, not K transformer or
CNN passes. With a frozen backbone, an item's token matrix is a function of
the item and of the backbone alone, so it is computed once and stored on
disk, memory-mappable. An entry is keyed by the backbone's fingerprint
(identity + weights) and the source data's fingerprint: a changed encoder
or changed item data is a different key, so a stale entry is never used; an
entry whose files do not match its own record is rebuilt, loudly.
"""

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mmf_rec.files import sha256_file
from mmf_rec.log import log


FORMAT = "mmf_rec.knowledge_cache/1"
META = "meta.json"


@dataclass
class CachedTokens:
    """Backbone token vectors for every item: tokens (N, T, D) float16,
    mask (N, T) bool; memory-mapped from ``path``."""

    tokens: np.ndarray
    mask: np.ndarray
    key: str
    path: Path
    built: bool  # False when read from an existing entry


def source_fingerprint(paths: Sequence[os.PathLike], extra: Any = None) -> str:
    """Hash of the item data an encoder reads (file names and bytes).

    Missing files are part of the fingerprint too: adding a photo later
    changes the key.
    """
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for path in paths:
        path = Path(path)
        digest.update(path.name.encode())
        if path.is_file():
            digest.update(bytes.fromhex(sha256_file(path)))
        else:
            digest.update(b"<missing>")
    return digest.hexdigest()[:16]


def default_dir(cache_root: Optional[os.PathLike] = None) -> Path:
    """``<cache_root>/knowledge_cache``: a cache root (a run's
    ``env.cache_dir``; by default MMF's ``$MMF_CACHE_DIR``, else
    ``~/.cache/torch/mmf``), not the prepared data directory, which may be
    read-only or shared. Entries are keyed by encoder and item data, so one
    root serves every dataset."""
    if not cache_root:
        from mmf.utils.configuration import resolve_cache_dir

        cache_root = resolve_cache_dir("MMF_CACHE_DIR")
    return Path(os.path.expanduser(str(cache_root))) / "knowledge_cache"


def _entry_dir(cache_dir: Path, name: str, key: str) -> Path:
    return Path(cache_dir) / f"{name}-{key}"


def _read_entry(path: Path, key: str, num_items: int):
    """The entry's arrays, or the reason it cannot be used."""
    meta_path = path / META
    if not meta_path.is_file():
        return None, "no entry"
    try:
        meta = json.loads(meta_path.read_text())
        tokens = np.load(path / "tokens.npy", mmap_mode="r")
        mask = np.load(path / "mask.npy", mmap_mode="r")
    except (OSError, ValueError) as error:
        return None, f"unreadable ({error})"
    expected = (meta.get("format"), meta.get("key"), meta.get("num_items"))
    if expected != (FORMAT, key, num_items):
        return None, f"records {expected}, expected {(FORMAT, key, num_items)}"
    if list(tokens.shape) != meta["tokens_shape"] or list(mask.shape) != meta["mask_shape"]:
        return None, (
            f"files have shapes {list(tokens.shape)} / {list(mask.shape)}, "
            f"meta.json records {meta['tokens_shape']} / {meta['mask_shape']}"
        )
    return (tokens, mask), None


def build_or_load(
    name: str,
    encoder: torch.nn.Module,
    num_items: int,
    inputs: Callable[[int, int], Any],
    cache_dir: os.PathLike,
    source_key: str,
    batch_size: int = 64,
) -> CachedTokens:
    """Read the cache entry for (encoder, source), building it if needed.

    ``inputs(start, stop)`` gives the encoder input for items [start, stop);
    ``encoder.embed`` turns it into (tokens, mask).
    """
    key = f"{encoder.fingerprint()}-{source_key}"
    path = _entry_dir(Path(cache_dir), name, key)
    arrays, reason = _read_entry(path, key, num_items)
    if arrays is not None:
        log(f"{name} knowledge cache: hit {path}")
        return CachedTokens(*arrays, key=key, path=path, built=False)
    if reason != "no entry":
        log(f"{name} knowledge cache at {path} is unusable ({reason}); rebuilding", level="warning")
    _build(name, encoder, num_items, inputs, path, key, batch_size)
    arrays, reason = _read_entry(path, key, num_items)
    if arrays is None:
        raise RuntimeError(f"{name} knowledge cache at {path}: just built, but {reason}")
    return CachedTokens(*arrays, key=key, path=path, built=True)


def _build(name, encoder, num_items, inputs, path: Path, key, batch_size) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    was_training = encoder.training
    encoder.eval()
    tokens = mask = None
    try:
        with torch.no_grad():
            starts = range(0, num_items, batch_size)
            for start in tqdm(starts, desc=f"{name} knowledge cache", unit="batch"):
                stop = min(start + batch_size, num_items)
                batch_tokens, batch_mask = encoder.embed(inputs(start, stop))
                if tokens is None:
                    tokens = np.lib.format.open_memmap(
                        tmp / "tokens.npy", mode="w+", dtype=np.float16,
                        shape=(num_items, *batch_tokens.shape[1:]),
                    )
                    mask = np.lib.format.open_memmap(
                        tmp / "mask.npy", mode="w+", dtype=np.bool_,
                        shape=(num_items, batch_mask.shape[1]),
                    )
                tokens[start:stop] = batch_tokens.float().cpu().numpy()
                mask[start:stop] = batch_mask.bool().cpu().numpy()
        tokens.flush()
        mask.flush()
        meta = {
            "format": FORMAT, "key": key, "num_items": num_items,
            "tokens_shape": list(tokens.shape), "mask_shape": list(mask.shape),
            "encoder": type(encoder).__name__,
            "valid_fraction": float(mask.any(axis=1).mean()),
        }
        del tokens, mask
        (tmp / META).write_text(json.dumps(meta, indent=2))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        log(f"{name} knowledge cache: built {path} {meta['tokens_shape']}")
    finally:
        encoder.train(was_training)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def as_tensors(cached: CachedTokens) -> Dict[str, torch.Tensor]:
    """The whole cache in memory as float32 tokens and a bool mask (copies:
    the memory map is read-only)."""
    return {
        "tokens": torch.from_numpy(np.array(cached.tokens, dtype=np.float32)),
        "mask": torch.from_numpy(np.array(cached.mask, dtype=np.bool_)),
    }
