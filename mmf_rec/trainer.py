"""mmf_rec's trainer: MMF's BaseTrainer, plus what a recommender run needs.

- Results as a file: ``<env.save_dir>/metrics.json`` and a closing table,
  extra held-out splits evaluated by name (:mod:`mmf_rec.run_results`).
- Checkpoints loaded safely, written atomically, resumed exactly, zoo keys
  (:mod:`mmf_rec.checkpoint`, :mod:`mmf_rec.resume`).
- Runs never overwrite each other: a run stops before it writes into a save
  dir that holds another config's run (:mod:`mmf_rec.run_dir`).
- A quiet console: the model is summarised in one line (the full printout
  at ``training.logger_level=debug``).
- Speed: MMF 1.0.0rc10's loop switches on autograd anomaly detection for
  every run, a debugging aid that slows each step; here it is off unless
  ``training.detect_anomaly`` asks for it. The model step and the loop (data
  included) are timed into ``training_speed`` (:mod:`mmf_rec.train_speed`).
- Several processes, on CPU (gloo) as on CUDA (NCCL): seeded training
  shards and in-order evaluation shards, DDP without ``device_ids`` on CPU,
  evaluation metrics over the rows of all ranks, mixed precision
  (``training.amp``) and the embedding tables' gradients and optimizer
  (``optimizer.embeddings``), see :mod:`mmf_rec.distributed`; TorchRec
  sharding (:mod:`mmf_rec.sharding`).
"""

import contextlib
import math

import omegaconf
import torch
from mmf.common.registry import registry
from mmf.trainers import base_trainer
from mmf.trainers.base_trainer import BaseTrainer
from mmf.utils.build import build_model
from mmf.utils.distributed import get_world_size
from mmf.utils.general import clip_gradients
from mmf.utils.timer import Timer

from mmf_rec import distributed, sharding
from mmf_rec.checkpoint import KBRecCheckpoint
from mmf_rec.errors import UserError
from mmf_rec.run_dir import check_save_dir
from mmf_rec.run_results import RunResults
from mmf_rec.train_speed import TrainSpeed


def parameter_summary(model) -> str:
    """One line: the parameter count, and how it splits over the model's parts."""
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    parts = [(name, sum(p.numel() for p in child.parameters()))
             for name, child in model.named_children()]
    shown = ", ".join(f"{name} {count:,}" for name, count in parts if count)
    frozen = "" if trained == total else f" ({trained:,} trained)"
    return f"model {type(model).__name__}: {total:,} parameters{frozen}" + (
        f": {shown}" if shown else "")


@registry.register_trainer("kbrec")
class KBRecTrainer(RunResults, BaseTrainer):
    def load(self):
        self.results = {}
        self.trained_updates = None
        self.checkpoint_loaded = False  # set by KBRecCheckpoint
        self.validating = False
        self.gathered_state = None  # (update, full state) of sharded tables
        super().load()
        # checkpoint.resume=True goes on mid-epoch, bit for bit (mmf_rec/resume.py)
        from mmf_rec import resume

        resume.install(self)

    def load_datasets(self):
        """MMF's loaders, with mmf_rec's samplers: training rows a seeded
        shard per process, reseeded each epoch; evaluation rows in-order
        shards that :class:`distributed.GatheredMetrics` puts back together
        (rc10 shuffles validation shards, so they could not be)."""
        super().load_datasets()
        for loader in (self.train_loader, self.val_loader, self.test_loader):
            _use_samplers(loader)

    def load_extras(self):
        # before the Checkpoint, which writes <save_dir>/config.yaml
        check_save_dir(self.config)
        # BaseTrainer builds its Checkpoint by this module-level name
        with _replaced(base_trainer, "Checkpoint", KBRecCheckpoint):
            super().load_extras()

    def _try_full_validation(self, force=False):
        self.validating = True  # a checkpoint saved now is not owed a validation
        # MMF calls this every update; it validates every evaluation_interval
        if self.sharded and (force or self.num_updates % self.evaluation_interval == 0):
            self.gathered_state = (self.num_updates, sharding.full_state_dict(self.model))
        try:
            return super()._try_full_validation(force)
        finally:
            self.validating = False

    def train(self):
        model = self.model.module if hasattr(self.model, "module") else self.model
        self.writer.write(parameter_summary(model))
        self.writer.write(model, "debug")

        if "train" not in self.run_type:
            self.inference()
            self.write_metrics()
            return

        if self.max_epochs is None:
            self.max_epochs = math.inf
        else:
            self.max_updates = math.inf

        self.model.train()
        self.train_timer = Timer()
        self.snapshot_timer = Timer()
        torch.autograd.set_detect_anomaly(bool(self.training_config.detect_anomaly))
        self.writer.write("Starting training...")

        # per process: MMF splits training.batch_size across processes
        self.train_speed = TrainSpeed(
            self.training_config.batch_size // get_world_size(),
            synchronize=torch.cuda.synchronize if self.device.type == "cuda" else None)
        should_break = False
        while self.num_updates < self.max_updates and not should_break:
            self.current_epoch += 1
            registry.register("current_epoch", self.current_epoch)
            distributed.set_epoch(self.train_dataset, self.current_epoch)
            if self.current_epoch > self.max_epochs:
                break
            for batch in self.train_speed.batches(self.train_loader):
                self.current_iteration += 1
                self.train_speed.step_started()
                report = self._forward_pass(batch)
                self._backward(self._extract_loss(report))
                self.train_speed.step_done()
                should_break = self._logistics(report)
                if self.num_updates >= self.max_updates:
                    should_break = True
                if should_break:
                    break
        self.trained_updates = self.num_updates
        self.train_speed.training_done()
        self.finalize()
        self.write_metrics()

    def predict(self, dataset_type):
        """mmf_predict: per-(user, item) scores to a file (mmf_rec/predict.py)."""
        from mmf_rec.predict import write_predictions

        write_predictions(self, dataset_type)

    # -- several processes, mixed precision, embedding gradients ----------------
    # (mmf_rec/distributed/; MMF rc10 runs processes only on CUDA devices)
    def _set_device(self):
        super()._set_device()
        if not distributed.uses_cuda(self.config):
            self.device = torch.device("cpu")
            registry.register("current_device", self.device)

    def load_model_and_optimizer(self):
        """BaseTrainer's, plus the embedding tables' dtype, gradients and optimizer."""
        attributes = self.config.model_config[self.config.model]
        if isinstance(attributes, str):
            attributes = self.config.model_config[attributes]
        self.sharded = sharding.uses_torchrec(self.config)
        with omegaconf.open_dict(attributes):
            attributes.model = self.config.model
            if self.sharded:  # TorchRec allocates the tables as it shards them
                attributes.sparse_encoder.params.device = "meta"
        self.model = build_model(attributes)
        if "cuda" in str(self.device):
            name = torch.cuda.get_device_name(self.device)
            self.writer.write(f"CUDA Device {self.config.distributed.rank} is: {name}",
                              log_all=True)
            registry.register("global_device", self.config.distributed.rank)
        if self.sharded:  # the tables stay on the meta device until sharded
            self.model._apply(lambda t: t if t.is_meta else t.to(self.device))
        else:
            self.model = self.model.to(self.device)

        self.amp = distributed.MixedPrecision(self.config, self.device)
        self.writer.write(self.amp.describe(), "info" if self.amp.enabled else "debug")
        if self.sharded:
            self._shard_tables()
        else:
            self._set_up_tables()
        registry.register("data_parallel", False)
        registry.register("distributed", False)
        self.load_extras()
        self.parallelize_model()

    def _set_up_tables(self):
        """The embedding tables' dtype, gradients and optimizer (:mod:`mmf_rec.distributed`)."""
        if self.amp.enabled and self.amp.embedding_dtype != torch.float32:
            distributed.cast_embedding_tables(self.model, self.amp.embedding_dtype)
        if distributed.embedding_gradients(self.model, self.config) == "sparse":
            distributed.use_sparse_gradients(self.model)
        # (a model config may have asked for sparse gradients itself)
        self.sparse_tables = distributed.sparse_gradient_tables(self.model)
        self.optimizer = distributed.build_optimizer(self.model, self.config, self.sparse_tables)
        if self.sparse_tables:
            mb = distributed.table_bytes(self.model) / 2**20
            self.writer.write(f"embedding tables ({mb:.2f} MiB): sparse gradients for "
                              f"{len(self.sparse_tables)} matrices, optimizer {self.optimizer!r}")

    def _shard_tables(self):
        """The TorchRec tables sharded under DistributedModelParallel (which
        also puts the dense part under DDP), trained by their fused
        optimizer; ``optimizer`` trains the rest (:mod:`mmf_rec.sharding`)."""
        if self.amp.enabled and self.amp.embedding_dtype != torch.float32:
            raise UserError("training.amp.embedding_dtype: sharded TorchRec tables are float32")
        self.model = sharding.shard(self.model, self.config, self.device)
        self.sparse_tables, self._ddp_ignored = [], []
        self.optimizer = distributed.build_optimizer(
            self.model, self.config, trained_elsewhere=sharding.table_parameters(self.model))

    def parallelize_model(self):
        if self.sharded:
            # DistributedModelParallel holds the model, its dense part under DDP;
            # registry "distributed" stays False: DMP's keys have no "module."
            return
        if not self.distributed:
            super().parallelize_model()
            return
        registry.register("distributed", True)
        named = dict(self.model.named_parameters())
        # DDP only recognises sparse gradients inside nn.Embedding modules
        self._ddp_ignored = [named[n] for n in self.sparse_tables]
        self.model = distributed.wrap_ddp(
            self.model, self.device,
            find_unused_parameters=self.config.training.find_unused_parameters,
            ignore=self.sparse_tables,
        )

    def load_metrics(self):
        super().load_metrics()
        self.metric_names = list(self.metrics.metrics)
        if get_world_size() > 1:
            self.metrics = distributed.GatheredMetrics(self.metrics)

    def _forward_pass(self, batch):
        with self.amp.autocast():
            return super()._forward_pass(batch)

    def _backward(self, loss):
        scaler = self.amp.scaler
        self.optimizer.zero_grad()
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if self.distributed and self._ddp_ignored:
            distributed.all_reduce_gradients(self._ddp_ignored)
        if self.should_clip_gradients:
            if scaler is not None:
                scaler.unscale_(self.optimizer)
            clip_gradients(self.model, self.num_updates, self.tb_writer, self.config)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self._run_scheduler()
        self.num_updates += 1
        self.profile("Backward time")


def _use_samplers(multi_loader) -> None:
    """Rebuild an MMF MultiDatasetLoader's loaders with
    :func:`distributed.dataloader_args` (the same arguments otherwise)."""
    for i, old in enumerate(multi_loader.loaders):
        dataset = old.dataset
        args = distributed.dataloader_args(
            dataset, {"shuffle": dataset.dataset_type != "test", "batch_size": old.batch_size})
        loader = torch.utils.data.DataLoader(
            dataset, pin_memory=old.pin_memory, collate_fn=old.collate_fn,
            num_workers=old.num_workers, **args)
        loader.dataset_type = dataset.dataset_type
        multi_loader.loaders[i] = loader
        multi_loader.samplers[i] = args.get("sampler")
    multi_loader.current_loader = multi_loader.loaders[multi_loader.current_index]


@contextlib.contextmanager
def _replaced(module, name: str, value):
    """``module.name`` is ``value`` inside the block."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)
