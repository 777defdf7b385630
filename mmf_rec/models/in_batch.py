"""The two-tower retriever's training objective: an in-batch sampled softmax.

Every user's clicked item is the positive, the other rows' clicked items are
the negatives. In-batch negatives are drawn in proportion to their
popularity, which would teach the model to push popular items down; the
log-Q correction (subtracting log of each item's sampling probability from
its logit) undoes that, so the softmax estimates the full-catalogue one.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from mmf.common.registry import registry
from torch import Tensor, nn

LOGITS_KEY = "in_batch_logits"


def in_batch_logits(users: Tensor, items: Tensor, item_ids: Tensor,
                    item_log_q: Optional[Tensor], temperature: float) -> Tensor:
    """(P, P) logits of P users against the P in-batch items (positives on the
    diagonal): cosine / temperature, minus log q of each in-batch item when
    given (P,), and -inf where another row clicked the same item (it is not
    a negative)."""
    logits = users @ items.t() / temperature
    if item_log_q is not None:
        logits = logits - item_log_q.unsqueeze(0)
    same = item_ids.unsqueeze(1) == item_ids.unsqueeze(0)
    same.fill_diagonal_(False)
    return logits.masked_fill(same, float("-inf"))


@registry.register_loss("in_batch_softmax")
class InBatchSoftmaxLoss(nn.Module):
    """Cross-entropy of each user's row of ``in_batch_logits`` against its own
    (diagonal) item; zero for a batch without clicks."""

    def forward(self, sample_list, model_output):
        if LOGITS_KEY not in model_output:
            raise KeyError(f"in_batch_softmax: the model output has no '{LOGITS_KEY}'")
        logits = model_output[LOGITS_KEY]
        if logits.shape[0] == 0:
            return logits.sum()
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))
