"""What this CPU can do natively, read from the machine, never assumed.

bf16 matmuls are fast only with native support (AVX-512 BF16 or AMX); on a
CPU without it torch emulates them, several times slower than fp32 (README,
"Performance"). Results files record the CPU model and flags with every
timing, since the same command gives other numbers on another host.
"""

import platform
from pathlib import Path
from typing import Dict, List, Tuple

import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni",
                  "amx_tile", "amx_bf16", "amx_int8", "avx512_fp16")


def _cpuinfo() -> Dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    fields: Dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> List[str]:
    return _cpuinfo().get("flags", "").split()


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def native_bf16() -> Tuple[bool, str]:
    """(available, why): native bf16 matmuls on this CPU, and the evidence."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = set(cpu_flags())
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return True, f"CPU flags {' and '.join(found)} (torch CPU capability {capability})"
    if "AMX" in capability.upper():
        return True, f"torch CPU capability {capability}"
    if not flags:
        return False, (f"no /proc/cpuinfo flags to read, and torch CPU capability {capability} "
                       "names no AMX: bf16 would be emulated")
    return False, (f"the CPU has neither {' nor '.join(BF16_FLAGS)} (torch CPU capability "
                   f"{capability}): bf16 matmuls would be emulated, slower than fp32")


def describe() -> Dict[str, object]:
    """The host, for results files: CPU model, the flags that matter for
    these kernels, core count and torch's view of the CPU."""
    import os

    flags = set(cpu_flags())
    bf16, why = native_bf16()
    return {"cpu_model": cpu_model(), "cpus": os.cpu_count(),
            "flags": [f for f in REPORTED_FLAGS if f in flags],
            "torch": torch.__version__, "torch_cpu_capability":
                torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(),
            "native_bf16": bf16, "native_bf16_why": why}
