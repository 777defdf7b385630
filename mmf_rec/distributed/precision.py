"""Mixed precision (``training.amp``): autocast, loss scaling for float16,
and the dtype the embedding tables are stored in."""

import torch
from torch import nn

from mmf_rec.distributed.tables import embedding_tables


def cast_embedding_tables(model: nn.Module, dtype: torch.dtype) -> int:
    """Store the embedding tables in ``dtype``; the number of tables cast."""
    tables = embedding_tables(model)
    for _, weight, _ in tables:
        weight.data = weight.data.to(dtype)
    return len(tables)


_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
           "fp16": torch.float16, "half": torch.float16, "float32": torch.float32,
           "fp32": torch.float32}


def _dtype(name, where: str) -> torch.dtype:
    if str(name).lower() not in _DTYPES:
        raise ValueError(f"{where}: unknown dtype '{name}'; one of {sorted(_DTYPES)}")
    return _DTYPES[str(name).lower()]


class MixedPrecision:
    """``training.amp``: autocast for forward and loss, a GradScaler for float16."""

    def __init__(self, config, device):
        amp = config.training.get("amp", None) or {}
        self.enabled = bool(amp.get("enabled", False))
        self.device_type = torch.device(device).type
        self.dtype = _dtype(amp.get("dtype", None) or "bfloat16", "training.amp.dtype")
        self.embedding_dtype = _dtype(
            amp.get("embedding_dtype", None) or "float32", "training.amp.embedding_dtype"
        )
        self.scaler = None
        if self.enabled and self.dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(self.device_type)

    def autocast(self):
        if not self.enabled:
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        if not self.enabled:
            return "mixed precision: off"
        name = str(self.dtype).replace("torch.", "")
        tables = str(self.embedding_dtype).replace("torch.", "")
        scaler = ", loss scaling" if self.scaler is not None else ""
        return f"mixed precision: {name} autocast on {self.device_type}{scaler}; embedding tables {tables}"
