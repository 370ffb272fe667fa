"""Tie a worker process's life to its parent's: a worker never outlives the ``learnforget``
process that started it, and leaves stopping to it.

On Linux the kernel sends the worker SIGKILL when its parent dies (``prctl`` with
``PR_SET_PDEATHSIG``); everywhere, a watchdog thread checks once a second that the parent is
still there and ends the worker when it is not.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watchdog still ends the worker


def _watch(parent_pid: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:
            os._exit(1)


def bind_to_parent(parent_pid: int, interval: float = 1.0) -> None:
    """End this process when ``parent_pid`` (its parent) dies; ignore Ctrl-C here, so that the
    parent alone decides how a grid stops (a terminal sends SIGINT to every process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the death signal was set
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid, interval), daemon=True,
                     name="parent-watchdog").start()
