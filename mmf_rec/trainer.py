"""mmf_rec's trainer: MMF's BaseTrainer, plus what a recommender run needs.

- Results as a file: every final evaluation lands in
  ``<env.save_dir>/metrics.json`` (split -> metric -> value, with the oracle
  AUC where the data knows it and the run's config fingerprint), so scripts
  read numbers without parsing logs.
- Speed: MMF 1.0.0rc10's loop switches on autograd anomaly detection for
  every run, a debugging aid that slows each step; here it is off unless
  ``training.detect_anomaly`` asks for it.
- Extra evaluation splits: a dataset may name more held-out splits (e.g.
  cold-start items); they are evaluated after the test split.
"""

import hashlib
import json
import math
import os

import torch
from mmf.common.registry import registry
from mmf.trainers.base_trainer import BaseTrainer
from mmf.utils.distributed import is_master
from mmf.utils.general import print_model_parameters
from mmf.utils.timer import Timer
from omegaconf import OmegaConf

METRICS_FILE = "metrics.json"
# Config sections that say where a run happens, not what it computes.
_VOLATILE_KEYS = ("env", "distributed", "checkpoint", "device_id", "start_rank")


def config_fingerprint(config) -> str:
    container = OmegaConf.to_container(config, resolve=True)
    for key in _VOLATILE_KEYS:
        container.pop(key, None)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


@registry.register_trainer("kbrec")
class KBRecTrainer(BaseTrainer):
    def load(self):
        self.results = {}
        self.trained_updates = None
        super().load()

    def train(self):
        self.writer.write("===== Model =====")
        self.writer.write(self.model)
        print_model_parameters(self.model)

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

        should_break = False
        while self.num_updates < self.max_updates and not should_break:
            self.current_epoch += 1
            registry.register("current_epoch", self.current_epoch)
            self.dataset_loader.seed_sampler("train", self.current_epoch)
            if self.current_epoch > self.max_epochs:
                break
            for batch in self.train_loader:
                self.current_iteration += 1
                report = self._forward_pass(batch)
                self._backward(self._extract_loss(report))
                should_break = self._logistics(report)
                if self.num_updates >= self.max_updates:
                    should_break = True
                if should_break:
                    break
        self.trained_updates = self.num_updates
        self.finalize()
        self.write_metrics()

    def _inference_run(self, dataset_type):
        super()._inference_run(dataset_type)
        if self.config.evaluation.predict:
            return
        self.results[dataset_type] = self._last_split_metrics(dataset_type)
        if dataset_type == "test":
            self._evaluate_extra_splits()

    def evaluate(self, loader, use_tqdm=False, single_batch=False):
        report, meter = super().evaluate(loader, use_tqdm, single_batch)
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
                    batch_size=self.config.training.batch_size,
                    shuffle=False,
                    collate_fn=self.test_loader.loaders[0].collate_fn,
                )
                loader.dataset_type = "test"
                self.writer.write(f"Starting inference on {split} split")
                report, meter = self.evaluate(loader, use_tqdm=True)
                self._summarize_report(meter, extra={"split": split})
                metrics = meter_to_metrics(meter)
                if getattr(extra, "oracle_auc", None) is not None:
                    metrics["oracle_auc"] = extra.oracle_auc
                self.results[split] = metrics

    def write_metrics(self):
        if not is_master() or not self.results:
            return
        save_dir = self.config.env.save_dir
        os.makedirs(save_dir, exist_ok=True)
        payload = {
            **self.results,
            # updates of the evaluated (best, restored) checkpoint
            "num_updates": self.num_updates,
            "trained_updates": self.trained_updates,
            "config_fingerprint": config_fingerprint(self.config),
        }
        path = os.path.join(save_dir, METRICS_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
        self.writer.write(f"Wrote final metrics to {path}")
