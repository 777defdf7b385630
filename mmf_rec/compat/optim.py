"""transformers' AdamW, which MMF registers as ``adam_w``, rebuilt on torch's."""

import torch


class AdamW(torch.optim.AdamW):
    """torch's AdamW with transformers' defaults: no weight decay unless asked.

    transformers' ``correct_bias=False`` (no bias correction) has no torch
    equivalent, so it is refused rather than silently ignored.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6,
                 weight_decay=0.0, correct_bias=True, **kwargs):
        if not correct_bias:
            raise ValueError(
                "adam_w: correct_bias=False is not supported by torch.optim.AdamW"
            )
        super().__init__(params, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, **kwargs)
