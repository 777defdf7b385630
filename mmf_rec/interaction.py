"""Feature-interaction operators, with no parameters: pure tensor functions,
and the arches that models compose them as.

Keeping the operators pure lets them be tested directly against naive
definitions; the arches fix their settings at construction and say how wide
their output is, which is what sizes the over arch that reads it.
"""

from functools import lru_cache
from typing import Iterable, Optional, Tuple

import torch
from torch import Tensor, nn


@lru_cache(maxsize=64)
def _pair_index(num_vectors: int, self_interaction: bool, device: torch.device) -> Tensor:
    """Flat indices into a (n, n) Gram matrix of the pairs (i, j), j < i (j <= i).

    Cached because every batch of a run asks for the same few sizes; building
    the index each step costs more than the gather it feeds.
    """
    offset = 0 if self_interaction else -1
    rows, cols = torch.tril_indices(num_vectors, num_vectors, offset=offset, device=device)
    return rows * num_vectors + cols


def dot_interaction_size(num_sparse: int, dim: int, self_interaction: bool = False) -> int:
    """Width of ``dot_interaction``'s output, for sizing the MLP that reads it."""
    n = num_sparse + 1
    pairs = n * (n + 1) // 2 if self_interaction else n * (n - 1) // 2
    return dim + pairs


def dot_interaction(dense: Tensor, sparse: Tensor, self_interaction: bool = False) -> Tensor:
    """DLRM's pairwise dot interaction.

    The dense vector (B, d) and the F sparse vectors (B, F, d) are stacked into
    n = F + 1 vectors; the output is the dense vector followed by the dot
    products of every pair (i, j) with j < i (j <= i when ``self_interaction``),
    ordered by i then j, where vector 0 is the dense one: (B, d + P).
    """
    if dense.dim() != 2 or sparse.dim() != 3:
        raise ValueError(
            f"dot_interaction expects dense (B, d) and sparse (B, F, d), got "
            f"{tuple(dense.shape)} and {tuple(sparse.shape)}"
        )
    batch, dim = dense.shape
    if sparse.shape[0] != batch or sparse.shape[2] != dim:
        raise ValueError(
            f"dot_interaction: dense {tuple(dense.shape)} and sparse "
            f"{tuple(sparse.shape)} disagree on batch size or vector size"
        )
    vectors = torch.cat([dense.unsqueeze(1), sparse], dim=1)
    n = vectors.shape[1]
    gram = torch.bmm(vectors, vectors.transpose(1, 2)).reshape(batch, n * n)
    pairs = gram.index_select(1, _pair_index(n, bool(self_interaction), gram.device))
    return torch.cat([dense, pairs], dim=1)


def maxsim(
    query: Tensor,
    doc: Tensor,
    query_mask: Optional[Tensor] = None,
    doc_mask: Optional[Tensor] = None,
) -> Tensor:
    """Late interaction (ColBERT's MaxSim), kept per query token.

    For every query token, the largest dot product with any valid doc token:
    query (..., Q, d) and doc (..., D, d) with matching leading dims (or
    broadcastable ones, e.g. one user against K candidates) give (..., Q).
    Masked-out doc tokens never win; a query token that is masked out, or
    whose doc has no valid token at all, scores 0, so padding carries no
    signal into the MLP that reads these features.
    """
    if query.shape[-1] != doc.shape[-1]:
        raise ValueError(
            f"maxsim: query {tuple(query.shape)} and doc {tuple(doc.shape)} "
            "disagree on the vector size"
        )
    scores = torch.matmul(query, doc.transpose(-1, -2))  # (..., Q, D)
    if doc_mask is not None:
        doc_mask = doc_mask.bool().unsqueeze(-2)
        scores = scores.masked_fill(~doc_mask, float("-inf"))
    best = scores.max(dim=-1).values
    best = torch.where(torch.isinf(best), torch.zeros_like(best), best)
    if query_mask is not None:
        best = best * query_mask.to(best.dtype)
    return best


def masked_mean(vectors: Tensor, mask: Tensor) -> Tensor:
    """Mean of the valid vectors: (..., T, d) with mask (..., T) -> (..., d);
    zeros where no vector is valid."""
    weights = mask.to(vectors.dtype).unsqueeze(-1)
    return (vectors * weights).sum(-2) / weights.sum(-2).clamp(min=1.0)


class DotInteraction(nn.Module):
    """DLRM's interaction arch: ``dot_interaction`` of one dense vector and
    ``num_sparse`` sparse vectors of size ``dim``."""

    def __init__(self, num_sparse: int, dim: int, self_interaction: bool = False):
        super().__init__()
        self.num_sparse = int(num_sparse)
        self.dim = int(dim)
        self.self_interaction = bool(self_interaction)

    @property
    def output_size(self) -> int:
        return dot_interaction_size(self.num_sparse, self.dim, self.self_interaction)

    def forward(self, dense: Tensor, sparse: Tensor) -> Tensor:
        if sparse.dim() == 3 and sparse.shape[1] != self.num_sparse:
            raise ValueError(f"DotInteraction: built for {self.num_sparse} sparse vectors, "
                             f"got {sparse.shape[1]}")
        return dot_interaction(dense, sparse, self.self_interaction)

    def extra_repr(self) -> str:
        return f"num_sparse={self.num_sparse}, dim={self.dim}, " \
               f"self_interaction={self.self_interaction}"


class LateInteraction(nn.Module):
    """Late-interaction arch: the ``maxsim`` of every query token against each
    group of doc tokens on its own, so that a token is matched against one
    kind of content at a time (an image vector against image regions, not
    against words). The output (N, groups * Q) is group-major."""

    def __init__(self, num_query_tokens: int, num_groups: int):
        super().__init__()
        self.num_query_tokens = int(num_query_tokens)
        self.num_groups = int(num_groups)

    @property
    def output_size(self) -> int:
        return self.num_query_tokens * self.num_groups

    def forward(self, query: Tensor, query_mask: Optional[Tensor],
                groups: Iterable[Tuple[Tensor, Optional[Tensor]]]) -> Tensor:
        """``query`` (N, Q, d) and its mask (N, Q); ``groups`` the (doc
        tokens (N, D_g, d), doc mask (N, D_g)) of each group."""
        groups = list(groups)
        if len(groups) != self.num_groups or query.shape[-2] != self.num_query_tokens:
            raise ValueError(
                f"LateInteraction: built for {self.num_query_tokens} query tokens against "
                f"{self.num_groups} groups, got {query.shape[-2]} against {len(groups)}")
        return torch.cat([maxsim(query, doc, query_mask, mask) for doc, mask in groups], 1)

    def extra_repr(self) -> str:
        return f"num_query_tokens={self.num_query_tokens}, num_groups={self.num_groups}"
