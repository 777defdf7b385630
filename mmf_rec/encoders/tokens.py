"""The interface shared by item-knowledge encoders (text, image).

Each is a backbone (a transformers model, a CNN) followed by a trainable
projection to the model's shared dimension d. The backbone's output is what
the item knowledge cache stores: when the backbone is frozen, it is a pure
function of the item and of the backbone's weights, so it is computed once
per item and identified by :meth:`TokenEncoder.fingerprint`.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch
from mmf.modules.encoders import Encoder
from torch import Tensor, nn


class TokenEncoder(Encoder):
    @dataclass
    class Config(Encoder.Config):
        # shared dimension of the model's token vectors; 0 = no projection
        out_dim: int = 64
        # frozen backbones can be cached; unfrozen ones are fine-tuned end to end
        freeze: bool = True

    # set by subclasses in __init__
    backbone: nn.Module
    backbone_dim: int

    def init_projection(self, out_dim: int) -> None:
        self.out_dim = int(out_dim) or self.backbone_dim
        self.projection = (
            nn.Linear(self.backbone_dim, self.out_dim) if out_dim else nn.Identity()
        )
        if self.config.freeze:
            for param in self.backbone.parameters():
                param.requires_grad_(False)

    def embed(self, inputs: Any) -> Tuple[Tensor, Tensor]:
        """Backbone token vectors (B, T, backbone_dim) and their mask (B, T)."""
        raise NotImplementedError

    def project(self, tokens: Tensor) -> Tensor:
        return self.projection(tokens)

    def forward(self, inputs: Any) -> Tuple[Tensor, Tensor]:
        if self.config.freeze:
            self.backbone.eval()
            with torch.no_grad():
                tokens, mask = self.embed(inputs)
        else:
            tokens, mask = self.embed(inputs)
        return self.project(tokens), mask

    def backbone_identity(self) -> Dict[str, Any]:
        """Everything besides the weights that changes the backbone's output
        (model name, input size, pooling grid, ...); subclasses extend it."""
        return {"encoder": type(self).__name__}

    def fingerprint(self) -> str:
        """Identifies the backbone's output: its identity and its weights."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.backbone_identity(), sort_keys=True).encode())
        for name, tensor in sorted(self.backbone.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]
