"""What every benchmark result records about where and how it ran."""

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch


def machine() -> Dict[str, object]:
    # Allocator and threading settings change CPU timings; record any in force.
    settings = ("MALLOC_", "THP_", "OMP_", "MKL_", "LD_PRELOAD")
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "environment": {k: v for k, v in os.environ.items() if k.startswith(settings)},
    }


def provenance(argv: List[str] = None) -> Dict[str, object]:
    """The command, the commit (and whether the tree had changes), the date
    and the host's CPU and its flags: what a results file needs."""
    from mmf_rec.benchmark import git_state
    from mmf_rec.serving import cpu

    command = ["python", "tools/bench.py", *(sys.argv[1:] if argv is None else argv)]
    return {"command": " ".join(command), "git": git_state(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "host": cpu.describe(),
            "load_average": os.getloadavg()}


def write_json(path: Path, payload: Dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
