"""Post-training row-wise quantization of embedding tables, for inference.

Each row is stored as unsigned integer codes with its own scale and offset
(float16): ``value ~= offset + scale * code``. A row's range is split into
``2**bits - 1`` steps, so one table with a few large rows does not cost the
precision of all the others (as a per-table scale would). Precisions:

- ``int8``: 8-bit codes, ``dim + 4`` bytes per row (fp32: ``4 * dim``);
- ``int4``: 4-bit codes, two per byte, ``ceil(dim / 2) + 4`` bytes per row;
- ``fp16``: the rows in half precision, ``2 * dim`` bytes per row.

Scale and offset are rounded outwards to float16 (offset down, scale up), so
the row's range stays covered and every value is within ``scale / 2`` of its
dequantized code (plus float32 rounding).

:func:`quantize_model` swaps every table of every sparse encoder in a trained
model for its quantized form; lookups dequantize only the rows they gather.
"""

import copy
import math
from typing import NamedTuple, Optional

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from mmf_rec.encoders.tables import RowTable, Table, pool_vectors
from mmf_rec.schema import PAD_ID, Schema

PRECISIONS = {"int8": 8, "int4": 4, "fp16": 16}
_FP16_MAX = float(torch.finfo(torch.float16).max)


class QuantizedRows(NamedTuple):
    """Codes (N, C) uint8 (or the rows in float16), per-row scale and offset (N,)."""

    codes: Tensor
    scale: Optional[Tensor]
    offset: Optional[Tensor]
    bits: int
    dim: int


def _check_precision(precision: str) -> int:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose one of {list(PRECISIONS)}")
    return PRECISIONS[precision]


def _round_fp16(x: Tensor, direction: float) -> Tensor:
    """float32 -> float16, rounded towards ``direction`` (-inf: down, +inf: up)."""
    h = x.half()
    wrong = h.float() > x if direction < 0 else h.float() < x
    return torch.where(wrong, torch.nextafter(h, torch.full_like(h, direction)), h)


def quantize_rows(weight: Tensor, precision: str = "int8") -> QuantizedRows:
    """A (N, dim) float matrix as codes with a scale and an offset per row."""
    bits = _check_precision(precision)
    weight = weight.detach().float()
    if weight.dim() != 2:
        raise ValueError(f"quantize_rows: expected a (rows, dim) matrix, got {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("quantize_rows: the matrix holds NaN or infinite values")
    if bits == 16:
        if weight.abs().max() > _FP16_MAX:
            raise ValueError(f"quantize_rows: values beyond float16's range (+-{_FP16_MAX:g})")
        return QuantizedRows(weight.half(), None, None, bits, weight.shape[1])
    levels = 2**bits - 1
    low, high = weight.aminmax(dim=1)
    if max(low.abs().max(), high.abs().max()) > _FP16_MAX / 2:
        raise ValueError("quantize_rows: values too large for float16 scales and offsets")
    offset = _round_fp16(low, -math.inf)
    scale = _round_fp16((high - offset.float()) / levels, math.inf)
    safe = torch.where(scale > 0, scale.float(), torch.ones_like(scale, dtype=torch.float32))
    codes = ((weight - offset.float()[:, None]) / safe[:, None]).round().clamp_(0, levels)
    codes = codes.to(torch.uint8)
    if bits == 4:
        if codes.shape[1] % 2:
            codes = torch.cat([codes, codes.new_zeros(codes.shape[0], 1)], 1)
        codes = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return QuantizedRows(codes, scale, offset, bits, weight.shape[1])


def dequantize_rows(q: QuantizedRows, rows: Optional[Tensor] = None) -> Tensor:
    """float32 values of the given rows (any shape of row indices; None: all rows)."""
    codes = q.codes if rows is None else q.codes[rows]
    if q.bits == 16:
        return codes.float()
    if q.bits == 4:
        codes = torch.stack([codes & 0xF, codes >> 4], -1).flatten(-2)[..., : q.dim]
    scale = q.scale if rows is None else q.scale[rows]
    offset = q.offset if rows is None else q.offset[rows]
    return offset.float().unsqueeze(-1) + scale.float().unsqueeze(-1) * codes.float()


def max_error(q: QuantizedRows) -> Tensor:
    """The per-row bound on |value - dequantized value| (half a step)."""
    if q.bits == 16:
        raise ValueError("fp16 rows have no per-row step; their error is float16 rounding")
    return q.scale.float() / 2


class QuantizedTable(Table):
    """A trained row table (full, hash, or part of qr / mixed_dim) for inference.

    Keeps the table's id-to-row mapping and replaces its float matrix with
    quantized rows, held as buffers (in the state dict, not trained).
    """

    def __init__(self, table: RowTable, precision: str = "int8"):
        super().__init__(table.feature, table.dim)
        if table.weight is None:
            raise ValueError(
                f"table of '{table.feature.name}' is fused; quantize its encoder "
                "(quantize_encoder), which unfuses it"
            )
        q = quantize_rows(table.weight, precision)
        self.precision, self.bits, self.num_rows = precision, q.bits, table.num_rows
        self.register_buffer("codes", q.codes)
        self.register_buffer("scale", q.scale)
        self.register_buffer("offset", q.offset)
        # The row mapping (e.g. a hash): a copy of the table without its matrix.
        self.index = copy.deepcopy(table, memo={id(table.weight): None})

    @property
    def rows(self) -> QuantizedRows:
        return QuantizedRows(self.codes, self.scale, self.offset, self.bits, self.dim)

    def dequantized(self) -> Tensor:
        """The whole (rows, dim) matrix as the lookups see it."""
        return dequantize_rows(self.rows)

    def vectors(self, ids: Tensor) -> Tensor:
        """Unpooled (B, L, dim) dequantized vectors, zero at padding."""
        valid = ids != PAD_ID
        if bool(valid.all()):
            return dequantize_rows(self.rows, self.index.row_ids(ids))
        rows = self.index.row_ids(torch.where(valid, ids, 0))
        return dequantize_rows(self.rows, rows) * valid.unsqueeze(-1)

    def forward(self, ids: Tensor) -> Tensor:
        return pool_vectors(self.vectors(ids), ids != PAD_ID, self.feature.pooling)

    def extra_repr(self) -> str:
        return f"{self.feature.name}: {self.precision}, rows={self.num_rows}, dim={self.dim}"


def quantize_tables_(module: nn.Module, precision: str = "int8") -> nn.Module:
    """Swap, in place, every row table under ``module`` for a quantized one."""
    _check_precision(precision)
    for name, child in list(module.named_children()):
        if isinstance(child, RowTable):
            setattr(module, name, QuantizedTable(child, precision))
        else:
            quantize_tables_(child, precision)
    return module


def unfused_encoder(encoder):
    """A copy of a sparse encoder with every table looked up on its own, same weights."""
    from mmf_rec.encoders.sparse import SparseEncoder

    if not isinstance(encoder, SparseEncoder):
        raise TypeError(f"expected a SparseEncoder, got {type(encoder).__name__}")
    if any(isinstance(m, QuantizedTable) for m in encoder.modules()):
        raise ValueError("the sparse encoder is quantized already")
    config = OmegaConf.to_container(encoder.config, resolve=True)
    config["fused"] = False
    copy_ = SparseEncoder(config, Schema(sparse=tuple(encoder.features)))
    copy_.load_state_dict(encoder.state_dict())
    return copy_.train(encoder.training).to(_device(encoder))


def quantize_encoder(encoder, precision: str = "int8"):
    """A quantized copy of a trained sparse encoder (unfused; same outputs up to rounding)."""
    _check_precision(precision)
    return quantize_tables_(unfused_encoder(encoder), precision)


def replace_sparse_encoders(model: nn.Module, make) -> nn.Module:
    """Replace, in place, every sparse encoder inside ``model`` by ``make(encoder)``."""
    from mmf_rec.encoders.sparse import SparseEncoder

    found = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SparseEncoder):
                setattr(parent, name, make(child))
                found += 1
    if isinstance(model, SparseEncoder) or not found:
        raise TypeError(
            "no sparse encoder inside the model (for an encoder itself use quantize_encoder)"
        )
    return model


def quantize_model(model: nn.Module, precision: str = "int8") -> nn.Module:
    """Replace, in place, every sparse encoder in a trained model by its quantized copy.

    To load a state dict saved from a quantized model, build the float model,
    pass it through this, then ``load_state_dict``.
    """
    _check_precision(precision)
    return replace_sparse_encoders(model, lambda encoder: quantize_encoder(encoder, precision))


def _device(module: nn.Module):
    tensor = next(iter(module.state_dict().values()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def table_bytes(module: nn.Module) -> int:
    """Bytes of a module's state (parameters and buffers), as stored."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())
