"""The machine a result was measured on, in words: figure captions and the headers of executed notebooks name it."""
from __future__ import annotations

import os
import platform
import resource
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


def memory_figures(device) -> str:
    """Memory in use, at its peak and in all, on a GPU (torch's allocator), or the process's RSS on the CPU."""
    import torch

    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return (f"{device}: {torch.cuda.memory_allocated(device) / 2**30:.2f} GiB allocated, peak "
                f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB, {free / 2**30:.2f} of "
                f"{total / 2**30:.2f} GiB free")
    return f"CPU: RSS {rss_mb()} MB, peak {peak_rss_mb()} MB"


def peak_rss_mb() -> float:
    # the kernel's high-water mark lags the current RSS by a few pages: the peak is at least what is resident now
    return max(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), rss_mb() or 0.0)


def rss_mb() -> float | None:
    """The process's resident memory now (Linux /proc; None elsewhere): flat across checkpoints means no leak."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * resource.getpagesize() / 2**20, 1)
