"""Who reads which rows: the samplers of MMF's loaders.

The training split is a seeded shard per rank, reseeded every epoch (and the
same permutation in one process, so a run on N processes with global batch B
trains on the same batches as one process with batch B); evaluation splits
are in-order shards, which :mod:`mmf_rec.distributed.gather` puts back
together.
"""

from typing import Dict, Optional

import torch
import torch.distributed as dist

from mmf_rec.distributed.processes import rank, world_size


def _sampler_seed(config) -> int:
    """``training.seed``, made equal on every rank (MMF draws -1 per process)."""
    seed = int((config.training.get("seed", None) if config is not None else None) or 0)
    if world_size() > 1:
        from mmf.common.registry import registry

        device = registry.get("current_device", no_warning=True)
        if device is None or not str(device).startswith("cuda"):
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        value = torch.tensor([seed], dtype=torch.int64, device=device)
        dist.broadcast(value, 0)
        seed = int(value.item())
    return seed % 2**63


def dataloader_args(dataset, other_args: Dict) -> Dict:
    """MMF's DataLoader arguments with mmf_rec's samplers (see the module doc).

    Training: ``DistributedSampler(shuffle=True, seed=training.seed)`` with
    this run's world size (1 in one process); evaluation: in-order shards
    when there are several processes.
    """
    from mmf.utils.configuration import get_global_config

    train = dataset.dataset_type == "train"
    if train:
        config = get_global_config()
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=world_size(), rank=rank(), shuffle=True,
            seed=_sampler_seed(config),
        )
    elif world_size() > 1:
        sampler = eval_sampler(dataset)
    else:
        return other_args
    other_args.pop("shuffle", None)
    other_args["sampler"] = sampler
    return other_args


def eval_sampler(dataset) -> Optional[torch.utils.data.Sampler]:
    """Rank r reads rows r, r + W, ...; the last shards repeat a few first rows
    so that every rank runs the same number of batches (MMF reduces losses
    per batch). :func:`gather_rows` drops those again. None in one process."""
    if world_size() < 2:
        return None
    return torch.utils.data.DistributedSampler(
        dataset, num_replicas=world_size(), rank=rank(), shuffle=False, drop_last=False
    )


def set_epoch(loader, epoch: int) -> None:
    """Reseed the samplers of an MMF loader (one or several datasets) for an epoch."""
    for sampler in getattr(loader, "samplers", None) or []:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def rows_of(loader) -> Optional[int]:
    """Rows of the one dataset an evaluation loader reads (None: several or unknown)."""
    datasets = getattr(loader, "datasets", None)
    if datasets is not None:
        return len(datasets[0]) if len(datasets) == 1 else None
    dataset = getattr(loader, "dataset", None)
    return len(dataset) if dataset is not None else None
