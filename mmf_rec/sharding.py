"""Embedding tables sharded over processes with TorchRec (``distributed.embedding_sharding``).

DLRM's systems idea: the tables are model parallel (each process holds some
of them, or slices), the MLPs data parallel. With
``model_config.<model>.sparse_encoder.params.backend: torchrec`` the tables
are a TorchRec ``EmbeddingBagCollection``
(:mod:`mmf_rec.encoders.torchrec_tables`) and the trainer wraps the model in
``DistributedModelParallel``:

- ``distributed.embedding_sharding``: ``table_wise``, ``row_wise``,
  ``column_wise`` (every table so), ``auto`` (TorchRec's planner chooses
  among these per table) or ``data_parallel`` (every process holds every
  table; the default). Row-wise sharding needs CUDA: TorchRec offers it on
  no other device.
- ``distributed.memory_budget_mb``: what each process may hold of tables
  and their optimizer state. A plan that cannot fit (a table larger than
  every process's budget) stops before training with one line naming it.
- The tables train under a fused optimizer inside FBGEMM's kernels
  (``optimizer.embeddings``: SGD or Adagrad; on CUDA also Adam); the rest of
  the model under ``optimizer`` and DDP, as before.
- The tables' gradients are those of the global batch's mean loss, as DDP's
  are for the dense part (TorchRec averages over processes as it sends the
  pooled vectors' gradients back to the shards): 2 processes with global
  batch B take the same steps as 1 process with batch B
  (``tests/test_sharding.py``).
- Checkpoints hold whole tables under the native keys
  (``...tables.<feature>.weight``): :func:`full_state_dict` gathers the
  shards on rank 0, and loading copies a whole table's rows into whichever
  shards a process holds, so sharded and unsharded runs read each other's
  checkpoints.
"""

import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from mmf_rec.errors import UserError
from mmf_rec.log import get_logger

logger = get_logger(__name__)

SHARDING_TYPES = ("data_parallel", "table_wise", "row_wise", "column_wise", "auto")
MODEL_PARALLEL = ("table_wise", "row_wise", "column_wise")
# What FBGEMM's fused kernels train tables with, by the name
# optimizer.embeddings.type takes; CPU kernels have no Adam.
_FUSED_OPTIMIZERS = {"SGD": "SGD", "Adagrad": "Adagrad", "RowWiseAdagrad": "RowWiseAdagrad",
                     "Adam": "Adam", "SparseAdam": "Adam"}
_CPU_OPTIMIZERS = ("SGD", "Adagrad", "RowWiseAdagrad")
# bytes of optimizer state per table byte
_STATE = {"SGD": 0.0, "Adagrad": 1.0, "RowWiseAdagrad": 0.0, "Adam": 2.0}


# -- what the config asks for -------------------------------------------------------


def requested(config) -> str:
    """``distributed.embedding_sharding``, checked."""
    kind = str(config.distributed.get("embedding_sharding", None) or "data_parallel")
    if kind not in SHARDING_TYPES:
        raise UserError(f"distributed.embedding_sharding: '{kind}'; expected one of "
                        f"{list(SHARDING_TYPES)}")
    return kind


def _encoder_params(config):
    attributes = config.model_config[config.model]
    if isinstance(attributes, str):
        attributes = config.model_config[attributes]
    encoder = attributes.get("sparse_encoder", None) or {}
    return encoder.get("params", None) or {}


def uses_torchrec(config) -> bool:
    """True when the model's sparse encoder asks for the torchrec backend;
    a sharding other than data_parallel without it is an error."""
    backend = str(_encoder_params(config).get("backend", None) or "native")
    sharding = requested(config)
    if backend != "torchrec" and sharding != "data_parallel":
        raise UserError(
            f"distributed.embedding_sharding={sharding} shards TorchRec tables: add "
            f"model_config.{config.model}.sparse_encoder.params.backend=torchrec")
    return backend == "torchrec"


def table_optimizer(config, device_type: str) -> Tuple[str, Dict]:
    """The fused optimizer of the tables, from ``optimizer.embeddings``
    (:func:`mmf_rec.distributed.embedding_optimizer`): unset, Adam and its
    kin become Adagrad on CPU, whose kernels have no Adam, and say so."""
    from mmf_rec.distributed import embedding_optimizer

    kind, params = embedding_optimizer(config)
    explicit = (config.optimizer.get("embeddings", None) or {}).get("type", None)
    fused = _FUSED_OPTIMIZERS.get(kind)
    if fused is None:
        raise UserError(f"optimizer.embeddings.type={kind}: FBGEMM's fused tables train with "
                        f"one of {sorted(_FUSED_OPTIMIZERS)}")
    if device_type != "cuda" and fused not in _CPU_OPTIMIZERS:
        if explicit:
            raise UserError(f"optimizer.embeddings.type={explicit}: FBGEMM's CPU kernels train "
                            f"tables with one of {list(_CPU_OPTIMIZERS)}")
        logger.warning(f"embedding tables: FBGEMM's CPU kernels have no {kind}; the tables "
                       "train with Adagrad (set optimizer.embeddings.type to choose)")
        fused = "Adagrad"
        params = {"lr": params.get("lr", 1e-3)}
    allowed = {"lr", "momentum", "weight_decay", "eps", "betas", "initial_accumulator_value"}
    return fused, {k: v for k, v in params.items() if k in allowed}


def _optimizer_class(name: str):
    if name == "RowWiseAdagrad":
        from torchrec.optim import RowWiseAdagrad

        return RowWiseAdagrad
    return getattr(torch.optim, name)


def memory_budget(config) -> Optional[int]:
    """``distributed.memory_budget_mb`` in bytes (None: no budget)."""
    mb = config.distributed.get("memory_budget_mb", None)
    return None if mb in (None, "") else int(float(mb) * 2**20)


# -- the model's tables ---------------------------------------------------------------


def torchrec_tables(model: nn.Module):
    from mmf_rec.encoders.torchrec_tables import TorchRecTables

    return [m for m in model.modules() if isinstance(m, TorchRecTables)]


def table_sizes(model: nn.Module) -> Dict[str, int]:
    """Bytes of each TorchRec table (fp32), by feature name."""
    return {f.name: int(f.cardinality) * t.dim * 4
            for t in torchrec_tables(model) for f in t.features}


def check_plan(sizes: Dict[str, int], sharding: str, world: int, budget: Optional[int],
               device_type: str, optimizer: str) -> None:
    """Fail before training on what cannot run: row-wise off CUDA, a table
    (with its optimizer state) larger than any process may hold, or tables
    that do not fit all processes' budgets together."""
    if sharding == "row_wise" and device_type != "cuda":
        raise UserError("distributed.embedding_sharding=row_wise: TorchRec shards tables "
                        "row-wise on CUDA only; on CPU use table_wise or column_wise")
    if budget is None or not sizes:
        return
    scale = 1.0 + _STATE.get(optimizer, 0.0)
    need = {name: int(size * scale) for name, size in sizes.items()}
    # what one process must hold of a table, at best
    pieces = {"data_parallel": 1, "table_wise": 1}.get(sharding, world)
    name, largest = max(need.items(), key=lambda item: item[1])
    if math.ceil(largest / pieces) > budget:
        raise UserError(
            f"embedding table '{name}' needs {largest / 2**20:.1f} MiB{_with_state(optimizer)}, "
            f"over the {budget / 2**20:.1f} MiB each of {world} "
            f"process(es) may hold (distributed.memory_budget_mb) under "
            f"embedding_sharding={sharding}")
    total = sum(need.values()) * (world if sharding == "data_parallel" else 1)
    if total > budget * world:
        raise UserError(
            f"embedding tables need {total / 2**20:.1f} MiB{_with_state(optimizer)} "
            f"under embedding_sharding={sharding}, over the {world} x "
            f"{budget / 2**20:.1f} MiB the processes may hold (distributed.memory_budget_mb)")


def _with_state(optimizer: str) -> str:
    return f" with its {optimizer} state" if _STATE.get(optimizer) else ""


# -- sharding -----------------------------------------------------------------------


def ensure_process_group() -> None:
    """TorchRec shards through a process group; one process gets a group of one."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


def shard(model: nn.Module, config, device: torch.device) -> nn.Module:
    """``model`` (its TorchRec tables on the meta device) wrapped in
    ``DistributedModelParallel`` under the configured sharding, with each
    table under its fused optimizer; the shards filled as
    :class:`~mmf_rec.encoders.torchrec_tables.TorchRecTables` initialises."""
    from mmf_rec.encoders.torchrec_tables import keep_root_logger

    with keep_root_logger():  # TorchRec's planner and FBGEMM log through the root logger
        wrapped, plan = _shard(model, config, device)
    logger.info(plan)
    return wrapped


def _shard(model: nn.Module, config, device: torch.device) -> nn.Module:
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import (
        EmbeddingShardingPlanner,
        ParameterConstraints,
        Topology,
    )
    from torchrec.distributed.planner.types import PlannerError
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    ensure_process_group()
    world = dist.get_world_size()
    sharding = requested(config)
    tables = torchrec_tables(model)
    optimizer, params = table_optimizer(config, device.type)
    budget = memory_budget(config)
    check_plan(table_sizes(model), sharding, world, budget, device.type, optimizer)

    for module in tables:
        apply_optimizer_in_backward(_optimizer_class(optimizer),
                                    module.collection.parameters(), params)
    sharder = EmbeddingBagCollectionSharder()
    if sharding == "auto":
        kinds = [k for k in sharder.sharding_types(device.type) if k in MODEL_PARALLEL]
    else:
        kinds = [sharding]
    kernels = ["dense"] if sharding == "data_parallel" else ["fused"]
    constraints = {f.name: ParameterConstraints(sharding_types=kinds, compute_kernels=kernels)
                   for module in tables for f in module.features}
    topology_args = {"world_size": world, "compute_device": device.type}
    if budget is not None:
        topology_args["hbm_cap" if device.type == "cuda" else "ddr_cap"] = budget
    planner = EmbeddingShardingPlanner(topology=Topology(**topology_args),
                                       constraints=constraints)
    try:
        plan = planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
    except PlannerError as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"TorchRec found no plan for embedding_sharding={sharding}"
                        f"{'' if budget is None else f' within {budget / 2**20:.0f} MiB per process'}: "
                        f"{first}") from None
    wrapped = DistributedModelParallel(model, device=device, plan=plan, sharders=[sharder])
    for module in tables:
        module.initialize()
    return wrapped, describe_plan(plan, world, optimizer, params)


def describe_plan(plan, world: int, optimizer: str, params: Dict) -> str:
    """One line per table: how it is sharded and on which ranks."""
    lines = [f"embedding tables over {world} process(es), fused {optimizer} {params}:"]
    for module_plan in plan.plan.values():
        for name, spec in module_plan.items():
            ranks = sorted(set(spec.ranks or []))
            lines.append(f"  {name}: {spec.sharding_type} on ranks {ranks}")
    return "\n".join(lines)


def is_sharded(model: nn.Module) -> bool:
    from torchrec.distributed.model_parallel import DistributedModelParallel

    return isinstance(model, DistributedModelParallel)


def inner(model: nn.Module) -> nn.Module:
    """The model inside DistributedModelParallel (and its DDP)."""
    return model.module if is_sharded(model) else model


def full_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The model's state dict with every sharded table whole, on rank 0
    (other ranks get None). Every rank must call it: the gather is collective."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    state = inner(model).state_dict()
    rank = dist.get_rank() if dist.is_initialized() else 0
    out = {}
    for key, value in state.items():
        if isinstance(value, ShardedTensor):
            full = torch.empty(value.size(), dtype=value.dtype) if rank == 0 else None
            value.gather(dst=0, out=full)
            value = full
        out[key] = value.detach().cpu() if isinstance(value, torch.Tensor) else value
    return out if rank == 0 else None


def table_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The TorchRec tables' parameters (trained inside their kernels)."""
    return [p for module in torchrec_tables(inner(model)) for p in module.collection.parameters()]
