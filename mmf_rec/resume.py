"""Resume a killed training run exactly where its last checkpoint was written.

MMF 1.0.0rc10's ``checkpoint.resume=True`` restores the weights, the
optimizer and the update count, then starts a *new* epoch with fresh random
numbers: the rest of the interrupted epoch is skipped and the run no longer
follows the path an uninterrupted run would take. Here every checkpoint also
records (under :data:`STATE_KEY`):

- the random number generators (torch CPU and CUDA, numpy, Python) at the
  moment of the checkpoint, and at the start of the epoch in progress;
- how many batches of that epoch were trained on;
- whether the validation due at that update had already run (a checkpoint
  written just before a scheduled validation says it had not; the resumed
  run then validates first, as the interrupted one would have);
- the learning-rate scheduler's and the mixed-precision loss scaler's state.

On resume the trainer's train loader replays the epoch's start (same random
state, so the same shuffle and worker seeds), skips the batches already
trained on, puts the checkpoint's random state back and goes on. With the
same data, config and thread count on CPU, the resumed run is bit-identical
to one that was never interrupted (``tests/test_resume.py``).

Everything stored is tensors, numbers and lists, so a checkpoint's resume
state loads with ``torch.load(weights_only=True)``.
"""

import random
from typing import Any, Dict, Optional

import numpy as np
import torch

from mmf_rec.log import log

STATE_KEY = "mmf_rec_resume"
FORMAT = 1


# -- random state, as plain tensors and numbers ------------------------------------
def rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state((
        "MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
        numpy["has_gauss"], numpy["cached_gaussian"],
    ))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log(f"resume: the checkpoint holds the random state of {len(cuda)} CUDA "
                f"devices, this machine has {torch.cuda.device_count()}; CUDA random "
                "numbers will differ from the interrupted run", level="warning")


# -- the train loader ----------------------------------------------------------------
class ResumableLoader:
    """The trainer's train loader, plus where in the epoch it is.

    Iterating it is iterating the wrapped loader; it remembers the random
    state at the start of each epoch and counts the batches handed out, and
    after :meth:`resume_from` its next epoch replays the interrupted one.
    Every other attribute is the wrapped loader's.
    """

    def __init__(self, loader, trainer):
        self._loader = loader
        self._trainer = trainer
        self._pending: Optional[Dict[str, Any]] = None
        self.epoch_rng: Optional[Dict[str, Any]] = None
        self.batches = 0

    def __getattr__(self, name):
        return getattr(self.__dict__["_loader"], name)

    def __len__(self):
        return len(self._loader)

    def batches_per_epoch(self) -> int:
        """Batches one epoch really yields (MMF's len() rounds a partial last batch down)."""
        loaders = getattr(self._loader, "loaders", None)
        if loaders:
            return sum(len(loader) for loader in loaders)
        return len(self._loader)

    def resume_from(self, state: Dict[str, Any]) -> None:
        self._pending = state

    def __iter__(self):
        pending, self._pending = self._pending, None
        if pending is not None:
            set_rng_state(pending["epoch_rng"])
        self.epoch_rng = rng_state()
        self.batches = 0
        iterator = iter(self._loader)
        if pending is not None:
            # Batches are drawn (not just their indices) so that every loader
            # consumes randomness exactly as in the interrupted run.
            for _ in range(int(pending["batches_in_epoch"])):
                try:
                    next(iterator)
                except StopIteration:
                    break
                self.batches += 1
            set_rng_state(pending["rng"])
            if pending.get("validation_pending"):
                log(f"resume: running the validation due at update "
                    f"{self._trainer.num_updates}, which the interrupted run had not finished")
                if self._trainer._try_full_validation(force=True):
                    # early stopping fired there: the interrupted run stopped
                    self._trainer.max_updates = self._trainer.num_updates
                    return
        for batch in iterator:
            self.batches += 1
            yield batch


def wrap_train_loader(trainer) -> Optional[ResumableLoader]:
    loader = getattr(trainer, "train_loader", None)
    if loader is None:
        return None
    if not isinstance(loader, ResumableLoader):
        loader = ResumableLoader(loader, trainer)
        trainer.train_loader = loader
    return loader


# -- checkpoint contents -----------------------------------------------------------
def training_state(trainer, update: int) -> Dict[str, Any]:
    """What a checkpoint written now needs to continue exactly from here."""
    state: Dict[str, Any] = {"format": FORMAT, "num_updates": int(update), "rng": rng_state()}
    loader = getattr(trainer, "train_loader", None)
    if isinstance(loader, ResumableLoader) and loader.epoch_rng is not None:
        state["epoch_rng"] = loader.epoch_rng
        state["batches_in_epoch"] = int(loader.batches)
    interval = getattr(trainer, "evaluation_interval", None)
    validating = bool(getattr(trainer, "validating", False))
    state["validation_pending"] = bool(
        not validating and interval and "train" in str(getattr(trainer, "run_type", ""))
        and update % interval == 0
    )
    scheduler = getattr(trainer, "lr_scheduler", None)
    if scheduler is not None and hasattr(scheduler, "state_dict"):
        state["lr_scheduler"] = scheduler.state_dict()
    scaler = getattr(getattr(trainer, "amp", None), "scaler", None)
    if scaler is not None:
        state["grad_scaler"] = scaler.state_dict()
    return state


def install(trainer) -> None:
    """After the trainer has loaded (and maybe resumed from) a checkpoint:
    wrap its train loader and put the checkpoint's training state back."""
    state = trainer.__dict__.pop("_mmf_rec_resume", None)
    loader = None
    if "train" in str(getattr(trainer, "run_type", "")):
        loader = wrap_train_loader(trainer)
    if not state or state.get("format") != FORMAT:
        return
    scheduler = getattr(trainer, "lr_scheduler", None)
    if scheduler is not None and "lr_scheduler" in state:
        scheduler.load_state_dict(state["lr_scheduler"])
    scaler = getattr(getattr(trainer, "amp", None), "scaler", None)
    if scaler is not None and "grad_scaler" in state:
        scaler.load_state_dict(state["grad_scaler"])
    if loader is None or "epoch_rng" not in state:
        set_rng_state(state["rng"])
        return
    loader.resume_from(state)
    # The loop counts an epoch up before iterating: the epoch in progress goes on.
    trainer.current_epoch -= 1
    log(f"resume: continuing at update {trainer.num_updates}, epoch "
        f"{trainer.current_epoch + 1}, after batch {state['batches_in_epoch']} of "
        f"{loader.batches_per_epoch()} of that epoch")


def remember_loaded(checkpoint, ckpt: Dict[str, Any]) -> None:
    """Called with every checkpoint whose counts MMF restores: keep its
    training state for :func:`install`, and restore the early-stopping
    update that rc10 forgets (it restores only the best value)."""
    trainer = checkpoint.trainer
    trainer._mmf_rec_resume = ckpt.get(STATE_KEY)
    best_update = ckpt.get("best_update")
    early_stopping = getattr(trainer, "early_stopping", None)
    if early_stopping is not None and best_update is not None:
        early_stopping.best_monitored_update = best_update
