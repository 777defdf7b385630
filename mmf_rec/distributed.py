"""Several processes through MMF's own launcher and trainer: CPU (gloo) or CUDA (NCCL).

MMF 1.0.0rc10 goes multi-process only through CUDA devices: ``mmf_run``
asserts ``distributed.world_size <= torch.cuda.device_count()``, initialises
the process group with a CUDA tensor, and its trainer wraps the model with
``device_ids=[local_rank]``. This module holds the few pieces that make the
same path work on CPU processes, each used in one place:

- :func:`run` replaces ``mmf_cli.run.run`` (installed by ``mmf_rec.compat``):
  MMF's dispatch, except that on CPU it spawns ``world_size`` processes;
  :func:`distributed_init` replaces MMF's (backend and device per process,
  ``LOCAL_RANK`` under ``torchrun``).
- :func:`dataloader_args` gives MMF's loaders their samplers: the training
  split a seeded shard per rank, reseeded every epoch (and the same
  permutation in one process, so a run on N processes with global batch B
  trains on the same batches as one process with batch B); evaluation splits
  an in-order shard, which :class:`GatheredMetrics` puts back together so that
  AUC and log loss are those of the whole split, not means over ranks.
- DDP, mixed precision and the embedding tables' gradients and optimizer
  for the ``kbrec`` trainer.

Nothing here runs unless a config asks for it: one process on CPU trains as
before (apart from its seeded shuffling).
"""

import os
import socket
import warnings
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

from mmf_rec.log import get_logger

logger = get_logger(__name__)

# -- where processes run -------------------------------------------------------


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# -- launch: mmf_run -----------------------------------------------------------


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
                fn=cli.distributed_main, args=(configuration, predict), nprocs=devices
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
            fn=_cpu_process, args=(configuration, predict), nprocs=processes
        )
    else:
        config.device_id = 0
        cli.main(configuration, predict=predict)


def _cpu_process(index: int, configuration, predict: bool) -> None:
    """One spawned CPU process: MMF's ``distributed_main``, then the process
    group torn down once every rank is done. Left to the interpreter's exit,
    TorchRec's sharded runs sometimes abort there ("terminate called without
    an active exception") after their work is written."""
    from mmf_cli import run as cli

    cli.distributed_main(index, configuration, predict)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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


# -- data: who reads which rows ------------------------------------------------


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


# -- the model across processes --------------------------------------------------


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


# -- embedding tables: gradients, optimizer, dtype ---------------------------------


def embedding_tables(model: nn.Module) -> List[Tuple[str, nn.Parameter, nn.Module]]:
    """(name, weight, owner) of every row-addressed embedding matrix in ``model``.

    Fused matrices and full / hash tables of mmf_rec's sparse encoders, and
    plain ``nn.Embedding`` / ``nn.EmbeddingBag`` modules. Compressed tables
    (qr, mixed_dim) are small products of these and keep dense gradients.
    """
    from mmf_rec.encoders.sparse import SparseEncoder
    from mmf_rec.encoders.tables import RowTable

    found, seen = [], set()
    for module_name, module in model.named_modules():
        prefix = module_name + "." if module_name else ""
        if isinstance(module, SparseEncoder):
            for i, weight in enumerate(module.fused_weights):
                found.append((f"{prefix}fused_weights.{i}", weight, module))
        elif isinstance(module, RowTable) and module.weight is not None:
            found.append((f"{prefix}weight", module.weight, module))
        elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            found.append((f"{prefix}weight", module.weight, module))
    unique = []
    for name, weight, owner in found:
        if id(weight) not in seen:
            seen.add(id(weight))
            unique.append((name, weight, owner))
    return unique


def table_bytes(model: nn.Module) -> int:
    return sum(w.numel() * w.element_size() for _, w, _ in embedding_tables(model))


GRADIENT_MODES = ("dense", "sparse", "auto")


def embedding_gradients(model: nn.Module, config) -> str:
    """``optimizer.embeddings.gradients`` resolved for this model: dense or sparse.

    auto: sparse when the tables hold at least ``auto_mb`` MiB. Measured on
    dlrm (README, "Distributed training"): with 0.55 MiB of tables dense
    gradients under Adam train about as fast or faster; sparse gradients
    under SparseAdam were faster in 2 of 3 rounds at 1.5 MiB, and 2-5x faster
    at 3.3 MiB and 8-26x at 31 MiB, on 1 and 2 processes, at the same AUC.
    """
    embeddings = config.optimizer.get("embeddings", None) or {}
    mode = str(embeddings.get("gradients", None) or "dense").lower()
    if mode not in GRADIENT_MODES:
        raise ValueError(
            f"optimizer.embeddings.gradients: '{mode}'; expected one of {list(GRADIENT_MODES)}"
        )
    if mode == "auto":
        limit = float(embeddings.get("auto_mb", None) or 2.0) * 2**20
        mode = "sparse" if table_bytes(model) >= limit else "dense"
    return mode


def use_sparse_gradients(model: nn.Module) -> List[str]:
    """Make every embedding table of ``model`` produce sparse gradients; their names."""
    from mmf_rec.encoders.sparse import SparseEncoder
    from mmf_rec.encoders.tables import RowTable

    for module in model.modules():
        if isinstance(module, SparseEncoder):
            module.sparse_grad = True
        if isinstance(module, RowTable):
            module.sparse_grad = True
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            module.sparse = True
    return [name for name, _, _ in embedding_tables(model)]


def sparse_gradient_tables(model: nn.Module) -> List[str]:
    """Names of the tables that currently produce sparse gradients."""
    names = []
    for name, _, owner in embedding_tables(model):
        sparse = getattr(owner, "sparse_grad", None)
        if sparse is None:
            sparse = getattr(owner, "sparse", False)
        if sparse:
            names.append(name)
    return names


def cast_embedding_tables(model: nn.Module, dtype: torch.dtype) -> int:
    """Store the embedding tables in ``dtype``; the number of tables cast."""
    tables = embedding_tables(model)
    for _, weight, _ in tables:
        weight.data = weight.data.to(dtype)
    return len(tables)


class CombinedOptimizer(torch.optim.Optimizer):
    """Optimizers of disjoint parameter sets stepped as one (as TorchRec's
    CombinedOptimizer): MMF's checkpoints, logging and schedulers see one
    optimizer whose ``param_groups`` are all of theirs."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)
        params = [p for o in self.optimizers for g in o.param_groups for p in g["params"]]
        super().__init__(params, defaults=dict(self.optimizers[0].defaults))
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True):
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict):
        states = state_dict.get("optimizers") if isinstance(state_dict, dict) else None
        if states is None or len(states) != len(self.optimizers):
            raise ValueError(
                "the checkpoint's optimizer state is not this run's split into "
                f"{len(self.optimizers)} optimizers (optimizer.embeddings changed?); "
                "resume with checkpoint.reset.optimizer=True"
            )
        for optimizer, state in zip(self.optimizers, states):
            optimizer.load_state_dict(state)

    def __repr__(self):
        return "CombinedOptimizer(" + ", ".join(type(o).__name__ for o in self.optimizers) + ")"


def _optimizer_class(name: str):
    from mmf.common.registry import registry

    cls = getattr(torch.optim, str(name), None) or registry.get_optimizer_class(str(name))
    if cls is None:
        raise ValueError(f"optimizer type '{name}': neither in torch.optim nor registered")
    return cls


def _plain(value):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


# When optimizer.embeddings.type is unset, tables keep the run's optimizer if
# it takes sparse gradients, and go to SparseAdam with the options it shares
# otherwise.
_TAKE_SPARSE = ("SGD", "Adagrad")
_SPARSE_ADAM_OPTIONS = ("lr", "betas", "eps", "maximize")


def embedding_optimizer(config) -> Tuple[str, Dict]:
    """The tables' optimizer and its options under sparse gradients.

    Unset, it follows ``optimizer.type``: a run that says SGD trains its tables
    with SGD too (as the reference DLRM does), Adagrad with Adagrad, and Adam,
    AdamW and the rest with SparseAdam (their sparse counterpart), lr and
    betas carried over. Weight decay has no sparse form in torch: it stays on
    the other parameters only, and the run log says so.
    """
    embeddings = config.optimizer.get("embeddings", None) or {}
    main_type = str(config.optimizer.type)
    params = dict(_plain(config.optimizer.get("params", None)) or {})
    kind = embeddings.get("type", None)
    if kind is None:
        same = main_type in _TAKE_SPARSE
        kind = main_type if same else "SparseAdam"
        table_params = {k: v for k, v in params.items()
                        if (same or k in _SPARSE_ADAM_OPTIONS) and k != "weight_decay"}
        if params.get("weight_decay"):
            logger.warning("optimizer.params.weight_decay applies to the dense parameters only: "
                           "torch has no weight decay for sparse gradients")
    else:
        table_params = {}
    table_params.update(_plain(embeddings.get("params", None)) or {})
    if table_params.get("lr") is None:
        table_params["lr"] = params.get("lr", 1e-3)
    return str(kind), table_params


def build_optimizer(model: nn.Module, config, split: Sequence[str] = (),
                    trained_elsewhere: Sequence[nn.Parameter] = ()):
    """MMF's optimizer; with ``split`` (names of tables with sparse gradients)
    those tables under :func:`embedding_optimizer` and everything else under
    ``optimizer``, stepped as one. Parameters ``trained_elsewhere`` (sharded
    tables under their fused optimizer) are left out."""
    from mmf.utils.build import build_optimizer as mmf_build_optimizer
    from mmf.utils.general import get_optimizer_parameters

    if not split and not trained_elsewhere:
        return mmf_build_optimizer(model, config)
    named = dict(model.named_parameters())
    tables = [named[name] for name in split]
    table_ids = {id(w) for w in [*tables, *trained_elsewhere]}
    groups = list(get_optimizer_parameters(model, config))
    if groups and isinstance(groups[0], dict):
        rest = [{**g, "params": [p for p in g["params"] if id(p) not in table_ids]}
                for g in groups]
        rest = [g for g in rest if g["params"]]
    else:
        rest = [p for p in groups if id(p) not in table_ids]
    params = dict(_plain(config.optimizer.get("params", None)) or {})
    dense = _optimizer_class(config.optimizer.type)(rest, **params)
    if not tables:
        return dense
    kind, table_params = embedding_optimizer(config)
    sparse = _optimizer_class(kind)([w for w in tables if w.requires_grad], **table_params)
    return CombinedOptimizer([dense, sparse])


# -- mixed precision ---------------------------------------------------------------

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
           "fp16": torch.float16, "half": torch.float16, "float32": torch.float32,
           "fp32": torch.float32}


def _dtype(name, where: str) -> torch.dtype:
    if str(name).lower() not in _DTYPES:
        raise ValueError(f"{where}: unknown dtype '{name}'; one of {sorted(_DTYPES)}")
    return _DTYPES[str(name).lower()]


class MixedPrecision:
    """``training.amp``: autocast for forward and loss, a GradScaler for float16."""

    def __init__(self, config, device):
        amp = config.training.get("amp", None) or {}
        self.enabled = bool(amp.get("enabled", False))
        self.device_type = torch.device(device).type
        self.dtype = _dtype(amp.get("dtype", None) or "bfloat16", "training.amp.dtype")
        self.embedding_dtype = _dtype(
            amp.get("embedding_dtype", None) or "float32", "training.amp.embedding_dtype"
        )
        self.scaler = None
        if self.enabled and self.dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(self.device_type)

    def autocast(self):
        if not self.enabled:
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        if not self.enabled:
            return "mixed precision: off"
        name = str(self.dtype).replace("torch.", "")
        tables = str(self.embedding_dtype).replace("torch.", "")
        scaler = ", loss scaling" if self.scaler is not None else ""
        return f"mixed precision: {name} autocast on {self.device_type}{scaler}; embedding tables {tables}"
