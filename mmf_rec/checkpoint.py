"""The kbrec trainer's checkpoints: MMF's ``Checkpoint``, safe and exact.

MMF 1.0.0rc10's ``Checkpoint`` unpickles files in full (running any code a
file names) and loads weights non-strictly (a file that does not fit leaves
the model untrained while the log says "Checkpoint loaded"); it writes files
in place (a run killed mid-write leaves half a file); its resume restarts
the interrupted epoch from a new random state; and every process of a run
writes ``config.yaml``. :class:`KBRecCheckpoint`, which the ``kbrec``
trainer uses, changes exactly that:

- loading: tensors and plain values only unless
  ``checkpoint.allow_pickle=True``; parameter names must match unless
  ``checkpoint.strict=False`` (:mod:`mmf_rec.safe_load`);
- saving: written atomically on rank 0, with what an exact resume needs
  (:mod:`mmf_rec.resume`), TorchRec-sharded tables gathered whole
  (:mod:`mmf_rec.sharding`);
- ``checkpoint.resume_zoo=kbrec.<model>.<name>``: mmf_rec's zoo keys load
  offline, checked against the data (:mod:`mmf_rec.zoo`); other keys go to
  MMF's zoo as before;
- ``config.yaml``: written once, by rank 0, with ``OmegaConf.to_yaml``
  (rc10's ``cfg.pretty()`` warns on every run).
"""

import io
import os

import torch
from mmf.common.registry import registry
from mmf.utils.checkpoint import Checkpoint, _hack_imports
from mmf.utils.distributed import is_master
from mmf.utils.file_io import PathManager
from omegaconf import OmegaConf

from mmf_rec import resume, safe_load, sharding, zoo
from mmf_rec.files import atomic_write


class KBRecCheckpoint(Checkpoint):
    # -- loading -------------------------------------------------------------------
    def _torch_load(self, file):
        settings = self.config.checkpoint
        device = self.device if "cuda" in str(self.device) else "cpu"
        ckpt = safe_load.load_checkpoint(
            file, allow_pickle=bool(settings.get("allow_pickle", False)),
            opt_in="checkpoint.allow_pickle=True", map_location=device,
            before_unpickle=_hack_imports)
        # checkpoint.pretrained_state_mapping copies some parameters on purpose
        partial = settings.get("resume_pretrained") and settings.get("pretrained_state_mapping")
        if settings.get("strict", True) and not partial:
            state = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
            safe_load.check_keys(self.trainer.model.state_dict().keys(), state, str(file),
                                 "checkpoint.strict=False")
        return ckpt

    def _load(self, *args, **kwargs):
        result = super()._load(*args, **kwargs)
        self.trainer.checkpoint_loaded = True  # mmf_predict warns without
        return result

    def _load_counts(self, ckpt):
        super()._load_counts(ckpt)
        resume.remember_loaded(self, ckpt)

    def _load_from_zoo(self, file):
        if zoo.owns(file) and not self.trainer.config.checkpoint.zoo_config_override:
            state = zoo.load_for_trainer(self.trainer, file)
            return self.upgrade_state_dict(state), True
        return super()._load_from_zoo(file)

    # -- saving ----------------------------------------------------------------------
    def save_config(self):
        if is_master():
            with PathManager.open(os.path.join(self.ckpt_foldername, "config.yaml"), "w") as f:
                f.write(OmegaConf.to_yaml(self.config, resolve=True))

    def save(self, update, iteration=None, update_best=False):
        trainer = self.trainer
        # every rank gathers sharded tables; only rank 0 writes
        model_state = self._gathered_state(update) if trainer.sharded else None
        if not is_master():
            return
        model = trainer.model
        if registry.get("data_parallel", no_warning=True) is True or \
                registry.get("distributed", no_warning=True) is True:
            model = model.module
        early_stopping = trainer.early_stopping
        ckpt = {
            "model": model_state if model_state is not None else model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "best_iteration": early_stopping.best_monitored_iteration,
            "current_iteration": iteration or update,
            "current_epoch": trainer.current_epoch,
            "num_updates": update,
            "best_update": early_stopping.best_monitored_update,
            "best_metric_value": early_stopping.best_monitored_value,
            "config": OmegaConf.to_container(self.config, resolve=True),
            resume.STATE_KEY: resume.training_state(trainer, update),
        }
        if self.git_repo:
            ckpt.update(self._get_vcs_fields())
        buffer = io.BytesIO()
        torch.save(safe_load.plain(ckpt), buffer)  # loads back with weights_only=True
        data = buffer.getvalue()
        paths = [os.path.join(self.models_foldername, "model_%d.ckpt" % update)]
        if update_best:
            paths.append(os.path.join(self.ckpt_foldername, self.ckpt_prefix + "best.ckpt"))
        paths.append(os.path.join(self.ckpt_foldername, self.ckpt_prefix + "current.ckpt"))
        for path in paths:  # a killed run leaves the previous file, never half a file
            atomic_write(path, data)

    def _gathered_state(self, update):
        """Sharded tables gathered whole, which every rank must do together;
        early stopping saves from rank 0 alone, so each validation gathers
        first, on every rank (:meth:`KBRecTrainer._try_full_validation`), and
        a save at that update uses it."""
        stash = self.trainer.gathered_state
        if stash is not None and stash[0] == update:
            return stash[1]
        return sharding.full_state_dict(self.trainer.model)

    def finalize(self):
        if not self.trainer.sharded:
            return super().finalize()
        state = sharding.full_state_dict(self.trainer.model)
        if is_master():
            torch.save(state, self.pth_filepath)
