"""Starting the processes: ``mmf_run``'s dispatch, which also spawns CPU
processes, and MMF's ``distributed_init`` for CPU (gloo) and CUDA (NCCL) alike.

rc10 goes multi-process only through CUDA devices: it asserts
``distributed.world_size <= torch.cuda.device_count()`` and initialises the
process group with a CUDA tensor. :func:`run` takes the place of
``mmf_cli.run.run`` once that module loads, and :func:`distributed_init` of MMF's.
"""

import os
import socket
import warnings
from typing import List, Optional

import torch
import torch.distributed as dist

from mmf_rec.distributed.processes import backend_for, uses_cuda


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run(opts: Optional[List[str]] = None, predict: bool = False):
    """``mmf_cli.run.run``, which also runs several processes on CPU.

    MMF's own dispatch, reusing its ``main`` and ``distributed_main``; what
    differs: CUDA devices are counted only when the run uses CUDA, and
    without CUDA ``distributed.world_size`` processes are spawned (gloo,
    rendezvous on a free local port). ``torchrun`` (env://) and Slurm go
    through MMF's ``infer_init_method`` as before.
    """
    import argparse

    from mmf_cli import run as cli
    from mmf.utils.configuration import Configuration
    from mmf.utils.distributed import infer_init_method
    from mmf.utils.flags import flags

    cli.setup_imports()
    if opts is None:
        args = flags.get_parser().parse_args()
    else:
        args = argparse.Namespace(config_override=None)
        args.opts = opts
    configuration = Configuration(args)
    configuration.args = args
    config = configuration.get_config()
    config.start_rank = 0
    if config.distributed.init_method is None:
        infer_init_method(config)

    devices = torch.cuda.device_count() if uses_cuda(config) else 0
    if config.distributed.init_method is not None:
        if devices > 1 and not config.distributed.no_spawn:
            config.start_rank = config.distributed.rank
            config.distributed.rank = None
            torch.multiprocessing.spawn(
                fn=_spawned_process, args=(configuration, predict), nprocs=devices
            )
        else:
            cli.distributed_main(0, configuration, predict)
    elif config.distributed.world_size > 1:
        processes = int(config.distributed.world_size)
        if devices and processes > devices:
            raise ValueError(
                f"distributed.world_size={processes}, but this machine has {devices} "
                "CUDA device(s): one process per device. Run fewer processes, or "
                "training.device=cpu for CPU processes."
            )
        if not devices and torch.cuda.is_available():
            # CPU processes on a GPU machine (training.device=cpu): MMF's main
            # would select CUDA device <local rank> in each of them
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        config.distributed.init_method = f"tcp://localhost:{_free_port()}"
        config.distributed.rank = None
        torch.multiprocessing.spawn(
            fn=_spawned_process, args=(configuration, predict), nprocs=processes
        )
    else:
        config.device_id = 0
        cli.main(configuration, predict=predict)


def _spawned_process(index: int, configuration, predict: bool) -> None:
    """One spawned process: MMF's ``distributed_main``, then the process group
    torn down once every rank is done, and the process ended without tearing
    its interpreter down (:func:`exit_without_teardown`). An exception ends it
    the usual way, through ``torch.multiprocessing``'s report to the parent."""
    from mmf_cli import run as cli

    cli.distributed_main(index, configuration, predict)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    exit_without_teardown(0)


def exit_without_teardown(code: int) -> None:
    """What a normal exit does first (wait for non-daemon threads, run the
    exit handlers: log files, ``multiprocessing``'s), flush, then
    ``os._exit``: the interpreter is not finalised, as in a forked child.

    A model wrapped in DDP keeps its process group alive in C++ past
    ``destroy_process_group`` and past the wrapper's own collection, so gloo's
    worker threads are still running when the interpreter is finalised.
    Rarely (1 in about 100 sharded ``mmf_predict`` runs here) one of them
    aborted the rank there ("terminate called without an active exception",
    from a thread with no Python frame) after all its work was written.
    """
    import atexit
    import sys
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def distributed_init(config) -> int:
    """MMF's ``distributed_init`` for CPU and CUDA processes alike.

    Picks the backend (:func:`backend_for`), the process's CUDA device
    (``LOCAL_RANK`` under ``torchrun``, whose processes MMF would all put on
    device 0) and, on CPU, a share of the cores unless OMP_NUM_THREADS says.
    """
    from mmf.utils.distributed import is_master, suppress_output

    if config.distributed.world_size == 1:
        raise ValueError("Cannot initialize distributed with distributed_world_size=1")
    if config.distributed.init_method == "env://" and "LOCAL_RANK" in os.environ:
        config.device_id = int(os.environ["LOCAL_RANK"])
    cuda = uses_cuda(config)
    backend = backend_for(config)
    config.distributed.backend = backend
    if cuda:
        torch.cuda.set_device(config.device_id)
    elif "OMP_NUM_THREADS" not in os.environ:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", config.distributed.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))

    if dist.is_initialized():
        warnings.warn("Distributed is already initialized, cannot initialize twice!")
    else:
        print(
            f"Distributed Init (Rank {config.distributed.rank}): "
            f"{config.distributed.init_method}, backend {backend}",
            flush=True,
        )
        dist.init_process_group(
            backend=backend,
            init_method=config.distributed.init_method,
            world_size=config.distributed.world_size,
            rank=config.distributed.rank,
        )
        print(
            f"Initialized Host {socket.gethostname()} as Rank {config.distributed.rank}",
            flush=True,
        )
        # a first collective sets up the communicator before any real one
        device = torch.device("cuda", config.device_id) if cuda else torch.device("cpu")
        dist.all_reduce(torch.zeros(1, device=device))
        suppress_output(is_master())
    config.distributed.rank = dist.get_rank()
    return config.distributed.rank
