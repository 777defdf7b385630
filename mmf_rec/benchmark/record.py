"""What a results file records about where, when and on what it was made."""

import os
import subprocess
from pathlib import Path
from typing import Any, Dict

from mmf_rec.benchmark.suites import REPO


def git_state() -> Dict[str, Any]:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        # dirty = tracked files changed; untracked ones (results being
        # collected, say) do not change the code that ran
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def machine() -> Dict[str, Any]:
    cpu, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and cpu is None:
                    cpu = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    amx = sorted(f for f in flags if f.startswith("amx"))
    return {"cpu": cpu, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx": bool(amx), "amx_flags": amx}


def shown(path: Path) -> str:
    """A path as results files record it: relative to the repo when inside it
    (committed results name no one's home directory), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)

