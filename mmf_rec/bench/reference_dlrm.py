"""The reference DLRM (facebookresearch/dlrm, ``dlrm_s_pytorch.py``), run
from its own checkout beside mmf_rec: its command line for a shape, a
``sitecustomize`` that lets it run on this stack, and its step time.

The reference needs two fixes to run on this stack, applied from outside its
checkout by the ``sitecustomize`` on PYTHONPATH: torch 2.14's profiler no
longer takes ``use_cuda``, and ``torch.utils.tensorboard`` needs the
tensorboard package, which this project does not install (a no-op writer
stands in; the reference only logs scalars with it).
"""

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

SITECUSTOMIZE = '''\
"""Compatibility of the reference DLRM with torch 2.14, from outside its code."""
import sys
import types

import torch.autograd.profiler as _profiler

_profile = _profiler.profile


class _Profile(_profile):
    def __init__(self, *args, use_cuda=None, **kwargs):
        super().__init__(*args, **kwargs)


_profiler.profile = _Profile

try:
    import tensorboard  # noqa: F401
except ImportError:
    class _NoWriter:
        def __init__(self, *args, **kwargs):
            pass

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = _NoWriter
    sys.modules["torch.utils.tensorboard"] = module
'''


def timed(cmd: List[str], env: Dict[str, str], log: Path, cwd: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if code != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}); see {log}:\n{tail}")
    return wall


_MS_PER_IT = re.compile(r"Finished training it (\d+)/\d+ of epoch \d+, ([0-9.]+) ms/it")


def reference_command(checkout: Path, shape: Dict, batch: int, lr: float, batches: int,
                      print_freq: int) -> List[str]:
    return [
        sys.executable, str(checkout / "dlrm_s_pytorch.py"),
        f"--arch-sparse-feature-size={shape['dim']}",
        f"--arch-mlp-bot={shape['dense']}-" + "-".join(map(str, shape["bottom"])),
        "--arch-mlp-top=" + "-".join(map(str, [*shape["top"], 1])),
        "--arch-embedding-size=" + "-".join(map(str, shape["tables"])),
        "--data-generation=random", "--num-indices-per-lookup=1",
        "--num-indices-per-lookup-fixed=True", "--loss-function=bce",
        "--round-targets=True", f"--mini-batch-size={batch}", f"--num-batches={batches}",
        f"--learning-rate={lr}", f"--print-freq={print_freq}", "--print-time",
        "--nepochs=1",
    ]


def run_reference(checkout: Path, shape: Dict, batch: int, lr: float, batches: int,
                  env: Dict[str, str], log: Path, print_freq: int = 10) -> Dict:
    cmd = reference_command(checkout, shape, batch, lr, batches, print_freq)
    wall = timed(cmd, env, log, checkout)
    # Each line averages the step time over the last print_freq iterations;
    # the first interval holds the warm-up.
    intervals = [float(ms) for it, ms in _MS_PER_IT.findall(log.read_text()) if int(it) > print_freq]
    return {"wall_s": wall, "step_ms": statistics.median(intervals) if intervals else None}
