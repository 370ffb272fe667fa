"""``kill -USR1 PID`` prints where a ``learnforget`` process is: every thread's Python stack, on
its standard error (the terminal, or the log it writes to). For a command that seems stuck, the
stacks of the main process and of each worker (one signal to the process group reaches them all:
``kill -USR1 -PGID``) say what each is waiting for. The dump is the standard library's
``faulthandler`` (it writes from the signal handler itself, so it works while the process is
blocked in C code too); this module only arms it.
"""

from __future__ import annotations

import contextlib
import io
import signal
import sys


def dump_stacks_on_sigusr1() -> None:
    """Arm SIGUSR1 to print every thread's stack to standard error (no-op where there is no
    SIGUSR1, e.g. Windows, or no standard error with a file descriptor)."""
    import faulthandler

    number = getattr(signal, "SIGUSR1", None)
    stream = sys.__stderr__
    if number is None or stream is None:
        return
    with contextlib.suppress(ValueError, AttributeError, OSError, RuntimeError,
                             io.UnsupportedOperation):
        faulthandler.register(number, file=stream, all_threads=True)
        if hasattr(signal, "pthread_sigmask"):  # a helper may have inherited it blocked
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {number})
