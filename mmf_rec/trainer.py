"""mmf_rec's trainer: MMF's BaseTrainer, plus what a recommender run needs.

- Results as a file: every final evaluation lands in
  ``<env.save_dir>/metrics.json`` (split -> metric -> value, with the oracle
  AUC where the data knows it and the run's config fingerprint), so scripts
  read numbers without parsing logs; the run ends with the same numbers as a
  table (:mod:`mmf_rec.summary`).
- Runs never overwrite each other: a run stops before it writes into a save
  dir that holds another config's run (:mod:`mmf_rec.run_dir`).
- A quiet console: the model is summarised in one line (the full printout
  at ``training.logger_level=debug``); extra splits are logged by their name.
- Speed: MMF 1.0.0rc10's loop switches on autograd anomaly detection for
  every run, a debugging aid that slows each step; here it is off unless
  ``training.detect_anomaly`` asks for it.
- Throughput: the model step and the training loop (data included) are timed
  and land in metrics.json as ``training_speed`` (:mod:`mmf_rec.train_speed`).
- Extra evaluation splits: a dataset may name more held-out splits (e.g.
  cold-start items); they are evaluated after the test split.
- Several processes, on CPU (gloo) as on CUDA (NCCL): DDP without
  ``device_ids`` on CPU, evaluation metrics over the rows of all ranks,
  mixed precision (``training.amp``) and the embedding tables' gradients and
  optimizer (``optimizer.embeddings``); see :mod:`mmf_rec.distributed`.
"""

import json
import math
import os
import time

import omegaconf
import torch
from mmf.common.meter import Meter
from mmf.common.registry import registry
from mmf.trainers.base_trainer import BaseTrainer
from mmf.utils.build import build_model
from mmf.utils.distributed import get_world_size, is_master
from mmf.utils.general import clip_gradients
from mmf.utils.timer import Timer

from mmf_rec import distributed, sharding, summary
from mmf_rec.errors import UserError
from mmf_rec.run_dir import check_save_dir, config_fingerprint
from mmf_rec.train_speed import TrainSpeed

METRICS_FILE = "metrics.json"


def meter_to_metrics(meter) -> dict:
    """``{"val/kbrec_synthetic/auc": meter}`` -> ``{"auc": value}``.

    Losses are averaged over batches (global_avg); dataset-level metrics are
    computed once over the whole split, so their average is that value.
    """
    out = {}
    for key, smoothed in meter.meters.items():
        name = key.split("/")[-1]
        value = float(smoothed.global_avg)
        out[name] = value if math.isfinite(value) else None
    return out


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
class KBRecTrainer(BaseTrainer):
    def load(self):
        self.results = {}
        self.trained_updates = None
        super().load()
        # checkpoint.resume=True goes on mid-epoch, bit for bit (mmf_rec/resume.py)
        from mmf_rec import resume

        resume.install(self)

    def load_extras(self):
        # before MMF's Checkpoint, which writes <save_dir>/config.yaml
        check_save_dir(self.config)
        super().load_extras()

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

    def _inference_run(self, dataset_type):
        super()._inference_run(dataset_type)
        if self.config.evaluation.predict:
            return
        self.results[dataset_type] = self._last_split_metrics(dataset_type)
        if dataset_type == "test":
            self._evaluate_extra_splits()

    def evaluate(self, loader, use_tqdm=False, single_batch=False):
        gathered = isinstance(self.metrics, distributed.GatheredMetrics)
        if gathered:
            self.metrics.rows = None if single_batch else distributed.rows_of(loader)
        try:
            report, meter = super().evaluate(loader, use_tqdm, single_batch)
        finally:
            if gathered:
                self.metrics.rows = None
        self._last_meter = meter
        return report, meter

    def _last_split_metrics(self, dataset_type):
        metrics = meter_to_metrics(self._last_meter)
        dataset = getattr(self, f"{dataset_type}_loader").current_dataset
        oracle = getattr(dataset, "oracle_auc", None)
        if oracle is not None:
            metrics["oracle_auc"] = oracle
        return metrics

    def _evaluate_extra_splits(self):
        """Evaluate the held-out splits a dataset offers besides its test split."""
        for dataset in self.test_dataset.datasets:
            for split in getattr(dataset, "extra_eval_splits", ()):
                extra = dataset.for_split(split)
                loader = torch.utils.data.DataLoader(
                    extra,
                    batch_size=self.test_loader.loaders[0].batch_size,
                    shuffle=False,
                    sampler=distributed.eval_sampler(extra),
                    collate_fn=self.test_loader.loaders[0].collate_fn,
                )
                loader.dataset_type = "test"
                self.writer.write(f"Starting inference on {split} set")
                report, meter = self.evaluate(loader, use_tqdm=True)
                self._summarize_report(_renamed(meter, "test", split))
                metrics = meter_to_metrics(meter)
                if getattr(extra, "oracle_auc", None) is not None:
                    metrics["oracle_auc"] = extra.oracle_auc
                self.results[split] = metrics

    def write_metrics(self):
        speed = self.train_speed.summary() if getattr(self, "train_speed", None) else None
        if speed is not None and get_world_size() > 1:  # every rank's, in rank order
            peaks = [None] * get_world_size()
            torch.distributed.all_gather_object(peaks, speed["peak_rss_mb"])
            speed["peak_rss_mb_per_process"] = peaks
            speed["processes"] = get_world_size()  # the rates above are per process
        if not is_master() or not (self.results or speed):
            return
        save_dir = self.config.env.save_dir
        os.makedirs(save_dir, exist_ok=True)
        # since the trainer was built: start-up (imports) is not the run's
        wall_s = time.time() - self.total_timer.start / 1000
        payload = {
            **self.results,
            # updates of the evaluated (best, restored) checkpoint
            "num_updates": self.num_updates,
            "trained_updates": self.trained_updates,
            "config_fingerprint": config_fingerprint(self.config),
            "wall_s": round(wall_s, 1),
        }
        if speed is not None:
            payload["training_speed"] = speed
        path = os.path.join(save_dir, METRICS_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
        self.writer.write(self._summary(payload, path, wall_s))

    def _summary(self, payload, metrics_path, wall_s) -> str:
        criteria = self.config.training.early_stop.criteria
        paths = {"metrics": metrics_path, "checkpoint": self._evaluated_checkpoint()}
        log_file = getattr(self.writer, "log_filename", None)
        if log_file:
            paths["log"] = log_file
        return summary.format_summary(
            payload, self.metric_names,
            title=f"Summary: {self.config.model} on {self.config.datasets}",
            best_by=str(criteria).split("/")[-1] if criteria else None,
            wall_s=wall_s, paths=paths)

    def _evaluated_checkpoint(self) -> str:
        """Where the evaluated weights are: the best checkpoint of a training
        run, else the file or zoo key an evaluation run loaded."""
        settings = self.config.checkpoint
        save_dir = self.config.env.save_dir
        best = os.path.join(save_dir, "best.ckpt")
        if self.trained_updates is not None:
            return best if os.path.isfile(best) else os.path.join(save_dir, "current.ckpt")
        if settings.resume_zoo:
            return f"zoo model {settings.resume_zoo}"
        if settings.resume_file:
            return str(settings.resume_file)
        if settings.resume:
            return best if settings.resume_best else os.path.join(save_dir, "current.ckpt")
        return "none (the model was not trained or loaded)"

    # -- several processes, mixed precision, embedding gradients ----------------
    # (mmf_rec/distributed.py; MMF rc10 runs processes only on CUDA devices)
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


def _renamed(meter, old: str, new: str):
    """The meter with its ``<old>/...`` keys as ``<new>/...``: an extra split
    runs through MMF's test loop (its keys say test) but is logged by its name."""
    out = Meter()
    for key, value in meter.meters.items():
        out.meters[new + key[len(old):] if key.startswith(old + "/") else key] = value
    return out
