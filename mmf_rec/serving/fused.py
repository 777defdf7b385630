"""The ``dlrm_mm`` ranker's scoring of K cached candidates as a few batched
tensor ops, for serving.

``DLRMMultimodal.score`` is written for training: it concatenates tensors per
call, loops over the item's token groups (one MaxSim each), builds every
pairwise dot product and runs the top MLP on all of them. For one user
against K candidates most of that work does not depend on the candidate, or
depends on the candidate alone; here it is done once:

- per catalogue (``FusedCatalogue``, built once from ``encode_catalogue``):
  every item's tokens in one contiguous buffer, each token group padded to
  whole chunks of one length, with the item mask folded into an extra
  coordinate (0 for a valid token, a large negative number for a masked or
  padding one), so a MaxSim is one matmul and a max over a fixed axis; the
  pooled group vectors; and the first top-MLP layer's share of the item-item
  dot products (it depends on the item only);
- per user: the first layer's share of the user's own vector and user-user
  dot products, and the user tokens with their mask folded in;
- per candidate: one gather of its rows, one matmul for all MaxSim groups,
  a max over each chunk and, where a group spans several chunks, over its
  chunks; one matmul for the user-item dot products; the rest of the top MLP.

The scores equal the model's own ``score_candidates`` within 1e-5 in fp32
(tests/serving/test_fused.py compares them, so a change to the model that
breaks the equality is caught). The model is read, never changed: its
``encode_users``, ``encode_catalogue`` and ``top_mlp``. Where the CPU has
native bf16 (AVX-512 BF16 or AMX), ``dtype=torch.bfloat16`` runs the matmuls
in bf16 (``mmf_rec.serving.cpu`` says whether it is there and why not).
"""

import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Added to the score of a masked item token: never the max of a group that
# has a valid token, and finite, so the matmul meets no inf * 0.
MASKED = -1.0e30
# A group max at or below this had no valid token: its MaxSim is 0, as in
# ``mmf_rec.interaction.maxsim``.
EMPTY = -1.0e29


class LayoutError(ValueError):
    """The model's scoring layout is not the one this module reads."""


def chunk_layout(group_sizes: Sequence[int]) -> Tuple[int, List[int]]:
    """(chunk length c, chunks per group) that pads the token groups least.

    Every group is padded to a whole number of chunks of one length c, so a
    max over each chunk is a max over one axis; a group of several chunks
    then takes a second max over its chunks. Small c pads less but makes
    more chunks. The cost counted: 3 per padded token (its gather, matmul and
    max) and 2 per slot of the second max (a gather and a max), about what
    the ops cost per element on this project's machine."""
    sizes = [int(s) for s in group_sizes]
    if not sizes or min(sizes) < 1:
        raise LayoutError(f"token groups must each hold at least one token, got {sizes}")
    best = None
    for c in range(1, max(sizes) + 1):
        chunks = [-(-s // c) for s in sizes]
        cost = 3 * c * sum(chunks) + (2 * len(sizes) * max(chunks) if max(chunks) > 1 else 0)
        if best is None or cost < best[0]:
            best = (cost, c, chunks)
    return best[1], best[2]


@dataclass
class TopLayout:
    """Where each input of the top MLP's first layer comes from."""

    dim: int
    user_groups: int
    item_groups: int
    user_tokens: int
    token_groups: int

    @property
    def vectors(self) -> int:
        return self.user_groups + self.item_groups

    @property
    def width(self) -> int:
        n = self.vectors
        return self.dim + n * (n - 1) // 2 + self.user_tokens * self.token_groups

    def split(self, weight: Tensor) -> Dict[str, Tensor]:
        """The first layer's weight (H, width) split by what its columns read:
        ``own`` (the user's dense vector), ``uu`` / ``ui`` / ``ii`` (dot
        products of user-user, item-user and item-item pooled vectors, the
        ``ui`` columns as (H, item group, user group)) and ``late`` (MaxSim,
        group-major)."""
        if weight.shape[1] != self.width:
            raise LayoutError(
                f"the top MLP reads {weight.shape[1]} inputs, but {self.user_groups} user and "
                f"{self.item_groups} item groups of d={self.dim} with {self.user_tokens} user "
                f"tokens against {self.token_groups} item token groups make {self.width}: the "
                "model's score() has changed, and mmf_rec/serving/fused.py must follow it")
        d, gu, n = self.dim, self.user_groups, self.vectors
        rows, cols = torch.tril_indices(n, n, offset=-1)  # dot_interaction's order
        column = d + torch.arange(len(rows))
        uu = column[rows < gu]
        ii = column[cols >= gu]
        ui_rows, ui_cols = rows >= gu, cols < gu
        ui_mask = ui_rows & ui_cols
        ui = torch.empty(self.item_groups, gu, dtype=torch.long)
        ui[rows[ui_mask] - gu, cols[ui_mask]] = column[ui_mask]
        late = d + len(rows)
        return {
            "own": weight[:, :d],
            "uu": weight[:, uu], "uu_pairs": (rows[rows < gu], cols[rows < gu]),
            "ii": weight[:, ii], "ii_pairs": (rows[cols >= gu] - gu, cols[cols >= gu] - gu),
            "ui": weight[:, ui.reshape(-1)],
            "late": weight[:, late:],
        }


def _linears(top_mlp: nn.Module) -> List[nn.Linear]:
    """The top MLP's Linear layers, checked to be Linear, ReLU, ..., Linear."""
    layers = list(top_mlp)
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    expected = []
    for i in range(len(linears)):
        expected.append(nn.Linear)
        if i < len(linears) - 1:
            expected.append(nn.ReLU)
    if [type(m) for m in layers] != expected:
        raise LayoutError(
            "the top MLP must be Linear, ReLU, ..., Linear (mmf_rec.encoders.dense.mlp), got "
            + ", ".join(type(m).__name__ for m in layers))
    return linears


class FusedCatalogue:
    """The item side of every catalogue item, in the buffers the fused path
    gathers from, built once from the model as it is (eval mode)."""

    def __init__(self, model, dtype: torch.dtype = torch.float32, batch_size: int = 1024):
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                side = model.encode_catalogue(batch_size)
        finally:
            model.train(was_training)
        self.dtype = dtype
        self.num_items, _, self.dim = side.tokens.shape
        self.group_sizes = tuple(int(s) for s in side.group_sizes)
        # A max ignores the order of a group's tokens and never picks a
        # masked one: each group's valid tokens go first, and positions that
        # no item fills are dropped (text padding, mostly)
        groups = []
        for tokens, mask in zip(side.tokens.split(self.group_sizes, 1),
                                side.mask.split(self.group_sizes, 1)):
            mask = mask.bool()
            order = torch.sort(mask.to(torch.uint8), stable=True, dim=1, descending=True).indices
            keep = max(1, int(mask.sum(1).max()))
            order = order[:, :keep]
            groups.append((tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, self.dim)),
                           mask.gather(1, order)))
        self.kept_sizes = tuple(t.shape[1] for t, _ in groups)
        self.chunk, self.chunks = chunk_layout(self.kept_sizes)
        # tokens (N, C * c, d + 1): each group's tokens then padding, per
        # chunk; the last coordinate is 0 for a valid token, MASKED otherwise
        slots = self.chunk * sum(self.chunks)
        buffer = torch.zeros(self.num_items, slots, self.dim + 1)
        buffer[:, :, self.dim] = MASKED
        slot = 0
        for (tokens, mask), chunks in zip(groups, self.chunks):
            rows = slice(slot, slot + tokens.shape[1])
            buffer[:, rows, :self.dim] = tokens
            buffer[:, rows, self.dim] = torch.where(mask, 0.0, MASKED)
            slot += chunks * self.chunk
        self.tokens = buffer.to(dtype).contiguous()
        groups = len(self.group_sizes)
        # the second max: per group, its chunks, repeated to the longest
        # group's count (a repeated chunk leaves a max unchanged)
        most = max(self.chunks)
        index, first = [], 0
        for chunks in self.chunks:
            own = list(range(first, first + chunks))
            index += own + [own[-1]] * (most - chunks)
            first += chunks
        self.most_chunks = most
        self.chunk_index = torch.tensor(index, dtype=torch.long) if most > 1 else None
        # pooled group vectors (N, Gi, d); fp32 as well, for the item-item
        # terms of the top MLP, which are summed once here
        self.pooled32 = side.pooled.float().contiguous()
        self.pooled = self.pooled32.to(dtype).contiguous()
        self.item_groups = side.pooled.shape[1]
        self.token_groups = groups


class FusedRanker:
    """``score(users, candidates)``: the model's click logits of each user's K
    candidates, from a :class:`FusedCatalogue` and the model's top MLP.

    Thread-safe: each thread keeps its own scratch buffers, reused from call
    to call, so a request allocates no large tensor."""

    def __init__(self, model, dtype: torch.dtype = torch.float32,
                 catalogue: Optional[FusedCatalogue] = None, max_rows: int = 1024):
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.model = model
        self.dtype = dtype
        self.max_rows = int(max_rows)
        self.catalogue = catalogue or FusedCatalogue(model, dtype)
        if self.catalogue.dtype != dtype:
            raise ValueError(f"the catalogue is {self.catalogue.dtype}, the ranker {dtype}")
        linears = _linears(model.top_mlp)
        self._layout: Optional[TopLayout] = None
        self._first = linears[0]
        self._rest = [(m.weight.detach().to(dtype), m.bias.detach().to(dtype))
                      for m in linears[1:]]
        self._scratch = threading.local()

    # -- what depends on the model's user side ------------------------------------------
    def _prepare(self, users) -> None:
        """Split the first layer once the user side's shape is known (the
        first call): its user-only columns become a per-user bias, the rest
        one weight over [user-item dots, item-item dots, MaxSim]; the
        item-item dots are summed once per catalogue item."""
        cat = self.catalogue
        layout = TopLayout(dim=cat.dim, user_groups=users.pooled.shape[1],
                           item_groups=cat.item_groups, user_tokens=users.tokens.shape[1],
                           token_groups=cat.token_groups)
        weight = self._first.weight.detach().float()
        parts = layout.split(weight)
        a, b = parts["ii_pairs"]
        pooled = cat.pooled32
        self.item_dots = (pooled[:, a] * pooled[:, b]).sum(-1).to(self.dtype).contiguous()
        self.w_own = parts["own"]
        self.w_uu, self.uu_pairs = parts["uu"], parts["uu_pairs"]
        self.bias = self._first.bias.detach().float()
        self.w_x_t = torch.cat([parts["ui"], parts["ii"], parts["late"]], 1).t().to(
            self.dtype).contiguous()                                    # (X, H)
        self._rest_t = [(w.t().contiguous(), b) for w, b in self._rest]
        self._layout = layout

    def _check(self, users) -> None:
        layout = self._layout
        if (users.pooled.shape[1] != layout.user_groups
                or users.tokens.shape[1] != layout.user_tokens):
            raise LayoutError(
                f"the user side changed shape: {users.pooled.shape[1]} groups and "
                f"{users.tokens.shape[1]} tokens, was {layout.user_groups} and "
                f"{layout.user_tokens}")

    # -- scoring ------------------------------------------------------------------------
    def encode_users(self, fields):
        """The model's own user side of a batch of user fields."""
        with torch.no_grad():
            return self.model.encode_users(fields)

    @torch.no_grad()
    def score(self, users, candidates: Tensor) -> Tensor:
        """Logits (B, K) of B users (a ``Side`` from ``encode_users``) against
        their own K candidates each (B, K) of catalogue item ids >= 0; fp32."""
        if self._layout is None:
            self._prepare(users)
        self._check(users)
        candidates = torch.as_tensor(candidates, dtype=torch.long)
        if candidates.dim() == 1:
            candidates = candidates.unsqueeze(0)
        batch, k = candidates.shape
        if users.tokens.shape[0] != batch:
            raise ValueError(f"{users.tokens.shape[0]} users but candidates for {batch}")
        if k == 0:
            return torch.zeros(batch, 0)
        # users in groups of at most max_rows candidates, so that what a
        # group gathers stays in the core's cache (measured: 3.4 us per
        # candidate for 1,000 at once, 4.8 us for 3,200)
        step = max(1, self.max_rows // k)
        if batch > step:
            return torch.cat([self._score(users.tokens[i:i + step], users.mask[i:i + step],
                                          users.pooled[i:i + step], candidates[i:i + step])
                              for i in range(0, batch, step)])
        return self._score(users.tokens, users.mask, users.pooled, candidates)

    def _score(self, user_tokens: Tensor, user_mask: Tensor, user_pooled: Tensor,
               candidates: Tensor) -> Tensor:
        batch, k = candidates.shape
        cat, dt, layout = self.catalogue, self.dtype, self._layout
        rows, slots, groups = batch * k, cat.tokens.shape[1], cat.token_groups
        tu, gu, gi, d = layout.user_tokens, layout.user_groups, layout.item_groups, cat.dim
        s = self._buffers(rows)
        flat = candidates.reshape(-1)

        # the user: tokens with the mask folded in (a masked token is all
        # zeros: its MaxSim is 0), and the first layer's user-only share
        mask = user_mask.to(user_tokens.dtype)
        query = torch.cat([user_tokens * mask.unsqueeze(-1), mask.unsqueeze(-1)], -1)
        query = query.transpose(1, 2).to(dt)                              # (B, d + 1, Tu)
        own = user_pooled.float()
        a, b = self.uu_pairs
        user_term = torch.addmm(self.bias, own[:, 0], self.w_own.t())   # (B, H)
        if len(a):
            user_term.addmm_((own[:, a] * own[:, b]).sum(-1), self.w_uu.t())
        user_pooled_t = own.transpose(1, 2).to(dt)                        # (B, d, Gu)

        # MaxSim of every user token against every item token group: one
        # matmul, a max over each chunk, then over each group's chunks
        tokens = torch.index_select(cat.tokens, 0, flat, out=s["tokens"][:rows])
        sims = s["sims"][:rows]
        torch.bmm(tokens.view(batch, k * slots, d + 1), query,
                  out=sims.view(batch, k * slots, tu))
        late = _chunk_max(sims, cat.chunk)                                # (rows, C, Tu)
        if cat.chunk_index is not None:
            late = _chunk_max(torch.index_select(late, 1, cat.chunk_index), cat.most_chunks)
        late.masked_fill_(late <= EMPTY, 0.0)  # a group with no valid token

        # user-item dot products of the pooled vectors: one matmul
        pooled = torch.index_select(cat.pooled, 0, flat, out=s["pooled"][:rows])
        cross = s["cross"][:rows]
        torch.bmm(pooled.view(batch, k * gi, d), user_pooled_t, out=cross.view(batch, k * gi, gu))

        # the top MLP: the first layer is the user's bias plus one matmul over
        # [user-item dots, item-item dots, MaxSim]
        x = torch.cat([cross.view(rows, gi * gu), self.item_dots[flat],
                       late.reshape(rows, groups * tu)], 1, out=s["x"][:rows])
        hidden = s["hidden"][:rows].view(batch, k, -1)
        torch.baddbmm(user_term.to(dt).unsqueeze(1), x.view(batch, k, -1),
                      self.w_x_t.expand(batch, -1, -1), out=hidden)
        hidden = hidden.view(rows, -1).relu_()
        for i, (weight_t, bias) in enumerate(self._rest_t):
            out = torch.addmm(bias, hidden, weight_t, out=s[f"layer{i}"][:rows])
            if i < len(self._rest_t) - 1:
                out.relu_()
            hidden = out
        # a copy: the scratch buffers are overwritten by the next call
        return hidden.view(batch, k).to(torch.float32, copy=True)

    def score_fields(self, fields: Dict[str, Tensor], candidates: Tensor) -> Tensor:
        """Logits (B, K) of a batch of user fields against their candidates."""
        return self.score(self.encode_users(fields), candidates)

    def _buffers(self, rows: int) -> Dict[str, Tensor]:
        """This thread's scratch buffers, grown to hold ``rows`` candidates."""
        scratch = self._scratch
        if getattr(scratch, "rows", 0) < rows:
            cat, layout, dt = self.catalogue, self._layout, self.dtype
            size = max(rows, 2 * getattr(scratch, "rows", 0))
            slots, tu = cat.tokens.shape[1], layout.user_tokens
            buffers = {
                "tokens": torch.empty(size, slots, cat.dim + 1, dtype=dt),
                "sims": torch.empty(size, slots, tu, dtype=dt),
                "pooled": torch.empty(size, cat.item_groups, cat.dim, dtype=dt),
                "cross": torch.empty(size, cat.item_groups, layout.user_groups, dtype=dt),
                "x": torch.empty(size, self.w_x_t.shape[0], dtype=dt),
                "hidden": torch.empty(size, self.w_x_t.shape[1], dtype=dt),
            }
            for i, (weight_t, _) in enumerate(self._rest_t):
                buffers[f"layer{i}"] = torch.empty(size, weight_t.shape[1], dtype=dt)
            scratch.buffers, scratch.rows = buffers, size
        return scratch.buffers


def _chunk_max(values: Tensor, chunk: int) -> Tensor:
    """(R, T, Tu) -> (R, T / chunk, Tu): the max over each run of ``chunk``
    rows. A channels-last max pool, which vectorises over Tu (a plain amax
    over the middle axis measured 2.4x slower in fp32, 3.5x in bf16)."""
    r, t, tu = values.shape
    pooled = F.max_pool2d(values.view(r, 1, t, tu).permute(0, 3, 1, 2), (1, chunk), (1, chunk))
    return pooled.permute(0, 2, 3, 1).reshape(r, t // chunk, tu)
