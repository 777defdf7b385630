"""One modality of item knowledge (description text, images) as token vectors.

With the cache on (the default), the frozen backbone runs once per item
(``mmf_rec.knowledge_cache``) and only its projection to d is trained;
batches gather cached token matrices by item id. With the cache off, the
backbone runs on every batch, which is what fine-tuning it end to end needs.
"""

from typing import Any, Callable, Tuple

import torch
from torch import Tensor, nn

from mmf_rec.encoders.tokens import TokenEncoder
from mmf_rec.interaction import masked_mean
from mmf_rec.knowledge_cache import as_tensors, build_or_load, default_dir, source_fingerprint
from mmf_rec.models.common import build_encoder, node_params, run_cache_root


class ItemKnowledge(nn.Module):
    """One modality's knowledge arch: ``tokens`` and ``pooled`` vectors of
    items of a ``num_items`` catalogue, projected to d by ``encoder``'s
    projection; ``inputs_for(ids)`` gives the encoder's input for items.
    With ``use_cache`` the backbone's output is read from ``cache_dir``
    (built there on a miss), keyed by the encoder and by ``source_key``,
    the identity of the item data it reads."""

    def __init__(
        self,
        name: str,
        encoder: TokenEncoder,
        inputs_for: Callable[[Tensor], Any],
        num_items: int,
        use_cache: bool,
        cache_dir: str,
        source_key: str,
        batch_size: int = 64,
    ):
        super().__init__()
        self.name = name
        self.num_items = num_items
        self.inputs_for = inputs_for
        self.cache_key = None
        if use_cache:
            cached = build_or_load(
                name, encoder, num_items,
                lambda start, stop: inputs_for(torch.arange(start, stop)),
                cache_dir, source_key, batch_size,
            )
            self.cache_key = cached.key
            arrays = as_tensors(cached)
            self.register_buffer("cached_tokens", arrays["tokens"], persistent=False)
            self.register_buffer("cached_mask", arrays["mask"], persistent=False)
            pooled = masked_mean(arrays["tokens"].float(), arrays["mask"]).half()
            self.register_buffer("cached_pooled", pooled, persistent=False)
            # Only the projection is trained; the backbone's work is on disk.
            self.projection = encoder.projection
            self.encoder = None
        else:
            self.encoder = encoder

    def _project(self, tokens: Tensor) -> Tensor:
        if self.encoder is None:
            return self.projection(tokens)
        return self.encoder.project(tokens)

    def _backbone(self, item_ids: Tensor) -> Tuple[Tensor, Tensor]:
        """Backbone tokens (N, T, D) and mask (N, T) for valid item ids."""
        if self.encoder is None:
            return self.cached_tokens[item_ids].float(), self.cached_mask[item_ids]
        inputs = self.inputs_for(item_ids.cpu())
        if self.encoder.config.freeze:
            self.encoder.backbone.eval()
            with torch.no_grad():
                tokens, mask = self.encoder.embed(inputs)
        else:
            tokens, mask = self.encoder.embed(inputs)
        return tokens, mask.to(tokens.device)

    def tokens(self, item_ids: Tensor) -> Tuple[Tensor, Tensor]:
        """Projected token vectors (N, T, d) of items, and their mask (N, T)."""
        tokens, mask = self._backbone(item_ids)
        return self._project(tokens), mask

    def pooled(self, item_ids: Tensor) -> Tuple[Tensor, Tensor]:
        """One projected vector per item, for ids of any shape (-1 = padding):
        (..., d) and a validity mask (...) that is False for padding and for
        items with no usable knowledge (e.g. no photo)."""
        shape = item_ids.shape
        flat = item_ids.reshape(-1)
        present = flat >= 0
        ids = flat.clamp(min=0)
        if self.encoder is None:
            vectors = self.cached_pooled[ids].float()
            valid = self.cached_mask[ids].any(-1)
        else:
            unique, inverse = torch.unique(ids, return_inverse=True)
            tokens, mask = self._backbone(unique)
            vectors, valid = masked_mean(tokens, mask)[inverse], mask.any(-1)[inverse]
        valid = valid & present
        vectors = self._project(vectors) * valid.unsqueeze(-1).to(vectors.dtype)
        return vectors.reshape(*shape, -1), valid.reshape(shape)


class MissingModalityError(ValueError):
    """The config turns a modality on that no item of the catalogue has."""


def require_some(modality: str, data, num_items: int) -> None:
    """Items lacking a modality get a zero vector for it (and are still scored
    from the rest), but a modality that *no* item has is a config mistake."""
    if modality == "text":
        has = any(str(text).strip() for text in data.descriptions())
    else:
        has = any(data.image_path(i).is_file() for i in range(num_items))
    if not has:
        what = "description" if modality == "text" else "image"
        raise MissingModalityError(
            f"modality '{modality}' is on, but none of the {num_items} items of {data.root} "
            f"has a{'n' if what[0] in 'aeiou' else ''} {what}; turn it off with "
            f"model_config.<model>.modalities.{modality}=false")


def build_item_knowledge(config, modality: str, data, dim: int) -> ItemKnowledge:
    """One modality's ItemKnowledge from a model config (``<modality>_encoder``,
    ``knowledge_cache``) and prepared data; every model builds it here, so
    models with the same encoder settings share knowledge-cache entries. With
    no ``knowledge_cache.dir``, entries go under the run's cache root."""
    settings = config[f"{modality}_encoder"]
    params = {**node_params(settings.get("params")), "out_dim": dim}
    encoder = build_encoder(settings.type, params)
    cache = config.knowledge_cache
    num_items = data.items.rows
    require_some(modality, data, num_items)
    if modality == "text":
        from mmf_rec.processors.text import TextTokenizerProcessor

        descriptions = data.descriptions()
        tokenizer = TextTokenizerProcessor(encoder.processor_config()["params"])

        def inputs_for(ids):
            return tokenizer.tokenize([descriptions[i] for i in ids.tolist()])
        source_key = source_fingerprint([], extra=descriptions)
    else:
        from mmf_rec.processors.image import ImageProcessor

        paths = [data.image_path(i) for i in range(num_items)]
        loader = ImageProcessor(encoder.processor_params())

        def inputs_for(ids):
            return loader.load_batch([paths[i] for i in ids.tolist()])
        source_key = source_fingerprint(paths)
    knowledge = ItemKnowledge(
        modality, encoder, inputs_for, num_items,
        use_cache=bool(cache.enabled),
        cache_dir=cache.dir or str(default_dir(run_cache_root())),
        source_key=source_key,
        batch_size=int(cache.batch_size),
    )
    if modality == "image":
        loader.report(log=True)
    return knowledge
