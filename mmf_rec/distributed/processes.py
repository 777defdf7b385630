"""Where this run's processes are: CUDA or CPU, which backend joins them,
how many there are and which one this is (1 and 0 outside a process group)."""

import torch
import torch.distributed as dist


def uses_cuda(config) -> bool:
    """CUDA when there is one, unless ``training.device`` says cpu."""
    device = str(config.training.get("device", None) or "cuda")
    return torch.cuda.is_available() and not device.startswith("cpu")


def backend_for(config) -> str:
    """``distributed.backend``, or NCCL on CUDA and gloo on CPU when unset.

    NCCL cannot run without CUDA, so asking for it on CPU gets gloo.
    """
    wanted = config.distributed.get("backend", None)
    if uses_cuda(config):
        return wanted or "nccl"
    if wanted in (None, "nccl"):
        return "gloo"
    return wanted


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
