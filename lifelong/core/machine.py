"""The machine a result was measured on, in words: figure captions and the headers of executed notebooks name it."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model as the kernel reports it (platform.processor() is empty on most Linux machines)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    """Physical memory in GiB, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def hardware(detailed: bool = False) -> str:
    """The accelerator, or the CPU count and model; `detailed` adds memory and the torch version."""
    import torch

    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        text = f"GPU {', '.join(names)} (x{torch.cuda.device_count()})"
    else:
        text = f"CPU, {os.cpu_count()} cores ({cpu_name()})"
    if detailed:
        memory = memory_gib()
        text += (f", {memory:.0f} GiB memory" if memory else "") + f"; torch {torch.__version__}"
    return text
