"""Training throughput as the trainer sees it, written into metrics.json.

Two numbers answer the two questions people ask of a recommender trainer:
- the model step (forward, loss, backward, optimizer) alone: is the model
  fast? This is what the reference DLRM's ``ms/it`` measures;
- the loop (waiting for the next batch plus the step): does data loading
  keep up?
Evaluation, checkpoints and logging are outside both. With several
processes both are per process, over its share of the batch (metrics.json
then says how many processes, with each one's peak memory). The first
``warmup`` updates are left out (allocator and thread-pool warm-up).
"""

import resource
import statistics
import time
from typing import Dict, Iterable, Iterator, List, Optional


class TrainSpeed:
    def __init__(self, batch_size: int, warmup: int = 5, synchronize=None):
        self.batch_size = int(batch_size)
        # on CUDA, torch.cuda.synchronize: a step ends when its kernels have run
        self.synchronize = synchronize
        self.warmup = int(warmup)
        self.fetch_s: List[float] = []
        self.step_s: List[float] = []
        self._step_start: Optional[float] = None
        self.peak_rss_mb: Optional[float] = None

    def batches(self, loader: Iterable) -> Iterator:
        """``loader``'s batches, timing how long each one took to arrive."""
        iterator = iter(loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.fetch_s.append(time.perf_counter() - start)
            yield batch

    def step_started(self) -> None:
        if self.synchronize is not None:
            self.synchronize()
        self._step_start = time.perf_counter()

    def step_done(self) -> None:
        if self._step_start is not None:
            if self.synchronize is not None:
                self.synchronize()
            self.step_s.append(time.perf_counter() - self._step_start)
            self._step_start = None

    def training_done(self) -> None:
        """Note the process's peak memory (resident set) up to the end of
        training, before the final evaluation and checkpoint."""
        self.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def summary(self) -> Optional[Dict[str, float]]:
        """Medians and throughputs over the steps after warm-up; None if
        there were none (e.g. a run shorter than the warm-up)."""
        steps = self.step_s[self.warmup:]
        fetches = self.fetch_s[self.warmup:len(self.step_s)]
        if not steps or len(fetches) != len(steps):
            return None
        loop_s = sum(steps) + sum(fetches)
        step_ms = 1e3 * statistics.median(steps)
        return {
            "updates_timed": len(steps),
            "batch_size": self.batch_size,
            "step_ms_median": step_ms,
            "fetch_ms_median": 1e3 * statistics.median(fetches),
            "model_samples_per_s": self.batch_size / (step_ms / 1e3),
            "loop_samples_per_s": self.batch_size * len(steps) / loop_s,
            "peak_rss_mb": self.peak_rss_mb,
        }
