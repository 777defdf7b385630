"""The ``kbrec`` trainer's optimizer: MMF's, or one for the embedding tables
with sparse gradients and one for the rest, stepped as one."""

from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from mmf_rec.log import get_logger

logger = get_logger(__name__)


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
