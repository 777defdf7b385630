"""A model's embedding tables, and whether they train with dense or sparse
gradients (``optimizer.embeddings.gradients``)."""

from typing import List, Tuple

from torch import nn


def embedding_tables(model: nn.Module) -> List[Tuple[str, nn.Parameter, nn.Module]]:
    """(name, weight, owner) of every row-addressed embedding matrix in ``model``.

    Fused matrices and full / hash tables of mmf_rec's sparse encoders, and
    plain ``nn.Embedding`` / ``nn.EmbeddingBag`` modules. Compressed tables
    (qr, mixed_dim) are small products of these and keep dense gradients.
    """
    from mmf_rec.encoders.sparse import SparseEncoder
    from mmf_rec.encoders.tables import RowTable

    found, seen = [], set()
    for module_name, module in model.named_modules():
        prefix = module_name + "." if module_name else ""
        if isinstance(module, SparseEncoder):
            for i, weight in enumerate(module.fused_weights):
                found.append((f"{prefix}fused_weights.{i}", weight, module))
        elif isinstance(module, RowTable) and module.weight is not None:
            found.append((f"{prefix}weight", module.weight, module))
        elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            found.append((f"{prefix}weight", module.weight, module))
    unique = []
    for name, weight, owner in found:
        if id(weight) not in seen:
            seen.add(id(weight))
            unique.append((name, weight, owner))
    return unique


def table_bytes(model: nn.Module) -> int:
    return sum(w.numel() * w.element_size() for _, w, _ in embedding_tables(model))


GRADIENT_MODES = ("dense", "sparse", "auto")


def embedding_gradients(model: nn.Module, config) -> str:
    """``optimizer.embeddings.gradients`` resolved for this model: dense or sparse.

    auto: sparse when the tables hold at least ``auto_mb`` MiB. Measured on
    dlrm (README, "Distributed training"): with 0.55 MiB of tables dense
    gradients under Adam train about as fast or faster; sparse gradients
    under SparseAdam were faster in 2 of 3 rounds at 1.5 MiB, and 2-5x faster
    at 3.3 MiB and 8-26x at 31 MiB, on 1 and 2 processes, at the same AUC.
    """
    embeddings = config.optimizer.get("embeddings", None) or {}
    mode = str(embeddings.get("gradients", None) or "dense").lower()
    if mode not in GRADIENT_MODES:
        raise ValueError(
            f"optimizer.embeddings.gradients: '{mode}'; expected one of {list(GRADIENT_MODES)}"
        )
    if mode == "auto":
        limit = float(embeddings.get("auto_mb", None) or 2.0) * 2**20
        mode = "sparse" if table_bytes(model) >= limit else "dense"
    return mode


def use_sparse_gradients(model: nn.Module) -> List[str]:
    """Make every embedding table of ``model`` produce sparse gradients; their names."""
    from mmf_rec.encoders.sparse import SparseEncoder
    from mmf_rec.encoders.tables import RowTable

    for module in model.modules():
        if isinstance(module, SparseEncoder):
            module.sparse_grad = True
        if isinstance(module, RowTable):
            module.sparse_grad = True
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            module.sparse = True
    return [name for name, _, _ in embedding_tables(model)]


def sparse_gradient_tables(model: nn.Module) -> List[str]:
    """Names of the tables that currently produce sparse gradients."""
    names = []
    for name, _, owner in embedding_tables(model):
        sparse = getattr(owner, "sparse_grad", None)
        if sparse is None:
            sparse = getattr(owner, "sparse", False)
        if sparse:
            names.append(name)
    return names
