"""Several processes on CPU as on CUDA, and ``mmf_run``'s launcher.

rc10 reports rank 0 of 1 whenever torch lacks NCCL (CPU-only builds); its
``distributed_init`` runs a CUDA all-reduce and takes the backend as
configured (nccl); ``mmf_run`` with ``distributed.world_size`` > 1 asserts
that many CUDA devices. Here CPU processes use gloo and a CPU
tensor, torchrun's processes their LOCAL_RANK device, and ``mmf_run`` starts
processes through :func:`mmf_rec.distributed.run`; a user error (bad data,
config or checkpoint) ends it with one line (:mod:`mmf_rec.errors`).
"""

from mmf_rec.compat.shims import once
from mmf_rec.plugin import rebind


def install():
    ranks_without_nccl()
    initialise_processes_on_cpu_too()


@once
def ranks_without_nccl():
    """rc10 reports rank 0 of 1 whenever torch lacks NCCL (CPU-only builds),
    even inside a gloo process group: every process would think it is the
    master, log and write checkpoints. Ask torch.distributed itself there."""
    import torch.distributed as dist

    import mmf.utils.distributed as mmf_dist

    if not dist.is_available() or dist.is_nccl_available():
        return

    def initialized():
        return dist.is_available() and dist.is_initialized()

    def get_rank():
        return dist.get_rank() if initialized() else 0

    def get_world_size():
        return dist.get_world_size() if initialized() else 1

    def is_master():
        return get_rank() == 0

    def synchronize():
        if initialized() and dist.get_world_size() > 1:
            dist.barrier()

    for name, fn in (("get_rank", get_rank), ("get_world_size", get_world_size),
                     ("is_master", is_master), ("synchronize", synchronize)):
        rebind(mmf_dist, name, fn)


@once
def initialise_processes_on_cpu_too():
    import mmf.utils.distributed as mmf_dist

    from mmf_rec import distributed

    rebind(mmf_dist, "distributed_init", distributed.distributed_init)


def replace_mmf_run(module):
    """Put mmf_rec's launcher in place of ``mmf_cli.run.run`` once that module
    has loaded (it imports mmf, and so the plugin, before it defines ``run``)."""
    if module is None or not hasattr(module, "run"):
        return
    from mmf_rec import distributed
    from mmf_rec.errors import one_line_user_errors

    if getattr(module.run, "__wrapped__", None) is distributed.run:
        return
    module.run = one_line_user_errors(distributed.run)
    if hasattr(module, "distributed_init"):
        module.distributed_init = distributed.distributed_init
