"""Training memory during a run: the peak the training loop records.

The recorded peak (``train/peak_memory_mb``, at every checkpoint, read before the checkpoint is
measured) is ``torch.cuda.max_memory_allocated`` on CUDA and the process's resident high-water
mark on a CPU. ``memory_estimate.py`` estimates it before a run.
"""

from __future__ import annotations

import os
import resource
import sys

import torch

MB = 2**20


def resident_bytes() -> int:
    """The resident memory of this process now (Linux ``/proc``; elsewhere its peak)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The process's peak resident set size (``getrusage``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_memory(device: torch.device | str) -> None:
    """Start the peak over from the memory in use now (the training loop calls this once, so
    that preparing the data before it — tokenising a corpus on a first run — does not count):
    ``reset_peak_memory_stats`` on CUDA; on Linux, ``5`` written to ``/proc/self/clear_refs``
    resets the resident high-water mark (``VmHWM``). Elsewhere nothing is reset."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass


def _high_water_mark() -> int | None:
    """This process's resident high-water mark (``VmHWM``, bytes) on Linux, else None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_memory_mb(device: torch.device | str) -> float:
    """The peak memory since ``reset_peak_memory`` (or the start): ``max_memory_allocated`` on
    CUDA, the resident high-water mark on a Linux CPU (the process's peak RSS elsewhere), in
    MiB."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MB
    return (_high_water_mark() or peak_rss_bytes()) / MB
