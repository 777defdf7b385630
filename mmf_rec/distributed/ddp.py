"""The model across processes: DistributedDataParallel on CPU or CUDA, and the
gradients it leaves to us (sparse embedding gradients, averaged and kept sparse)."""

from typing import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from mmf_rec.distributed.gather import gather_rows
from mmf_rec.distributed.processes import world_size


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool = False,
             ignore: Sequence[str] = ()) -> nn.Module:
    """DistributedDataParallel on CPU (``device_ids=None``) or one CUDA device.

    Parameters named in ``ignore`` (embedding tables with sparse gradients,
    which DDP only recognises inside ``nn.Embedding``) are left to
    :func:`all_reduce_gradients`; they are broadcast from rank 0 here, as
    DDP does for the others.
    """
    from torch.nn.parallel import DistributedDataParallel

    if ignore:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, list(ignore))
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name in ignore:
                dist.broadcast(named[name].data, 0)
    cuda = torch.device(device).type == "cuda"
    return DistributedDataParallel(
        model,
        device_ids=[torch.device(device).index] if cuda else None,
        output_device=torch.device(device).index if cuda else None,
        find_unused_parameters=bool(find_unused_parameters),
    )


def all_reduce_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of parameters DDP does not handle; sparse ones stay sparse."""
    size = world_size()
    if size < 2:
        return
    for param in params:
        grad = param.grad
        if grad is None:
            grad = torch.sparse_coo_tensor(
                torch.empty((1, 0), dtype=torch.int64, device=param.device),
                param.new_empty((0, *param.shape[1:])), param.shape,
            )
        if grad.is_sparse:
            param.grad = _all_reduce_sparse(grad, size)
        else:
            dist.all_reduce(grad)
            grad.div_(size)


def _all_reduce_sparse(grad: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of a sparse row gradient over ranks, by gathering rows (any backend)."""
    grad = grad.coalesce()
    indices = gather_rows(grad.indices().t())  # (nnz, sparse dims): one row per entry
    values = gather_rows(grad.values())
    return torch.sparse_coo_tensor(indices.t(), values / size, grad.shape).coalesce()
