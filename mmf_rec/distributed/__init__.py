"""Several processes through MMF's own launcher and trainer: CPU (gloo) or CUDA (NCCL).

MMF 1.0.0rc10 goes multi-process only through CUDA devices: ``mmf_run``
asserts ``distributed.world_size <= torch.cuda.device_count()``, initialises
the process group with a CUDA tensor, and its trainer wraps the model with
``device_ids=[local_rank]``. This package holds the few pieces that make the
same path work on CPU processes, each used in one place:

- :mod:`.launch`: :func:`run` replaces ``mmf_cli.run.run`` (installed once
  ``mmf_cli.run`` loads): MMF's dispatch, except that on CPU it spawns
  ``world_size`` processes; :func:`distributed_init` replaces MMF's (backend
  and device per process, ``LOCAL_RANK`` under ``torchrun``).
- :mod:`.samplers`: :func:`dataloader_args` gives MMF's loaders their
  samplers: the training split a seeded shard per rank, evaluation splits an
  in-order shard, which :class:`GatheredMetrics` (:mod:`.gather`) puts back
  together so that AUC and log loss are those of the whole split.
- :mod:`.ddp`, :mod:`.tables`, :mod:`.optimizers`, :mod:`.precision`: DDP,
  the embedding tables' gradients and optimizer, and mixed precision for the
  ``kbrec`` trainer; :mod:`.processes`: device, backend, rank and world size.

Nothing here runs unless a config asks for it: one process on CPU trains as
before (apart from its seeded shuffling).
"""

from mmf_rec.distributed.ddp import all_reduce_gradients, wrap_ddp
from mmf_rec.distributed.gather import GatheredMetrics, gather_rows
from mmf_rec.distributed.launch import distributed_init, run
from mmf_rec.distributed.optimizers import (CombinedOptimizer, build_optimizer,
                                            embedding_optimizer)
from mmf_rec.distributed.precision import MixedPrecision, cast_embedding_tables
from mmf_rec.distributed.processes import backend_for, rank, uses_cuda, world_size
from mmf_rec.distributed.samplers import dataloader_args, eval_sampler, rows_of, set_epoch
from mmf_rec.distributed.tables import (GRADIENT_MODES, embedding_gradients, embedding_tables,
                                        sparse_gradient_tables, table_bytes,
                                        use_sparse_gradients)

__all__ = [
    "GRADIENT_MODES", "CombinedOptimizer", "GatheredMetrics", "MixedPrecision",
    "all_reduce_gradients", "backend_for", "build_optimizer", "cast_embedding_tables",
    "dataloader_args", "distributed_init", "embedding_gradients", "embedding_optimizer",
    "embedding_tables", "eval_sampler", "gather_rows", "rank", "rows_of", "run", "set_epoch",
    "sparse_gradient_tables", "table_bytes", "use_sparse_gradients", "uses_cuda", "wrap_ddp",
    "world_size",
]
