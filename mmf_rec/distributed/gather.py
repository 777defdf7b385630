"""Rows gathered from every rank, so that evaluation metrics (AUC, log loss)
are those of the whole split, not means over ranks."""

import warnings
from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist

from mmf_rec.distributed.processes import world_size


def gather_rows(tensor: torch.Tensor, rows: Optional[int] = None) -> torch.Tensor:
    """Every rank's rows of ``tensor`` (first dimension), on every rank.

    With ``rows`` (the split's size) and equal shards, the result is in the
    split's own order without the repeated rows of :func:`eval_sampler`;
    otherwise the ranks' rows one after another.
    """
    size = world_size()
    if size < 2 or tensor.dim() == 0:
        return tensor
    local = tensor.detach().contiguous()
    if local.dtype == torch.bool:
        return gather_rows(local.to(torch.uint8), rows).to(torch.bool)
    count = torch.tensor([local.shape[0]], dtype=torch.int64, device=local.device)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    counts = [int(c.item()) for c in counts]
    longest = max(counts)
    if local.shape[0] < longest:
        pad = local.new_zeros((longest - local.shape[0], *local.shape[1:]))
        local = torch.cat([local, pad])
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local)
    if rows is not None and counts == [-(-rows // size)] * size:
        # the shards of a DistributedSampler(shuffle=False): row i is rank
        # i % W's (i // W)-th row
        return torch.stack(parts, 1).reshape(-1, *local.shape[1:])[:rows]
    return torch.cat([part[:n] for part, n in zip(parts, counts)])


class GatheredMetrics:
    """MMF's ``Metrics``, computed over the rows of all ranks.

    The report's tensor fields that the metrics need (``required_params``:
    scores, targets, and whatever a registered metric adds) are gathered from
    every process first, so each rank computes the metric of the whole
    evaluation set. The trainer sets ``rows`` to the split's size while it
    evaluates.
    """

    def __init__(self, metrics):
        self._metrics = metrics
        self.rows: Optional[int] = None
        self._warned = False

    def __getattr__(self, name):
        return getattr(self._metrics, name)

    def __call__(self, sample_list, model_output, *args, **kwargs):
        if self.rows is None and not self._warned and sample_list.get("dataset_type") != "train":
            self._warned = True
            warnings.warn(
                "evaluating several datasets at once on several processes: each "
                "rank's last batch may repeat up to one row per process"
            )
        # once per tensor: the report is often both arguments (MMF's evaluate)
        done: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
        sources = [sample_list] if model_output is sample_list else [sample_list, model_output]
        for source in sources:
            for key in sorted(self._metrics.required_params):
                value = source.get(key) if hasattr(source, "get") else None
                if not isinstance(value, torch.Tensor):
                    continue
                if any(value is out for _, out in done.values()):
                    continue
                if id(value) not in done:
                    done[id(value)] = (value, gather_rows(value, self.rows))
                source[key] = done[id(value)][1]
        if hasattr(sample_list, "batch_size") and "targets" in sample_list:
            sample_list.batch_size = int(sample_list["targets"].shape[0])
        return self._metrics(sample_list, model_output, *args, **kwargs)
