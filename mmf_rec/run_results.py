"""What a kbrec run reports: every final evaluation in ``metrics.json``.

``<env.save_dir>/metrics.json`` holds split -> metric -> value (with the
oracle AUC where the data knows it), the evaluated checkpoint's updates,
the run's config fingerprint and training speed, so scripts read numbers
without parsing logs; the run ends with the same numbers as a table
(:mod:`mmf_rec.summary`). A dataset may name held-out splits besides its
test split (e.g. cold-start items); they are evaluated after it and logged
by their name. :class:`RunResults` is the kbrec trainer's part that does this.
"""

import json
import math
import os
import time

import torch
from mmf.common.meter import Meter
from mmf.utils.distributed import get_world_size, is_master

from mmf_rec import distributed, summary
from mmf_rec.files import atomic_write
from mmf_rec.run_dir import config_fingerprint

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


class RunResults:
    """Mixed into the kbrec trainer, before MMF's BaseTrainer."""

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
        atomic_write(path, json.dumps(payload, indent=2, sort_keys=True))
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


def _renamed(meter, old: str, new: str):
    """The meter with its ``<old>/...`` keys as ``<new>/...``: an extra split
    runs through MMF's test loop (its keys say test) but is logged by its name."""
    out = Meter()
    for key, value in meter.meters.items():
        out.meters[new + key[len(old):] if key.startswith(old + "/") else key] = value
    return out
