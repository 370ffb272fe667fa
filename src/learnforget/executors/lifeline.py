"""Tie a worker process's life to the ``learnforget`` process that started it: a worker never
outlives it, and leaves stopping to it.

A worker's parent is that process (``spawn``) or its forkserver, which ends as soon as that
process does. On Linux the kernel sends the worker SIGKILL when its parent dies (``prctl`` with
``PR_SET_PDEATHSIG``); everywhere, a watchdog thread checks once a second that the parent is
still there and that the starting process lives, and ends the worker when not.

The forkserver is bound the same way (``bind_server_to_starter``), first thing, before it
imports the training code: that import takes seconds, and multiprocessing's server only notices
its starter's end once it is done and serving. Unbound, a server whose starter was killed (or
stopped by Ctrl-C) in those seconds went on importing, forked the worker asked for, and kept
multiprocessing's resource tracker alive with it (its pipe rode in the pending request).
Importing this module loads only the standard library, so that it is armed within moments.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PR_SET_NAME = 15
SERVER_STARTER = "LEARNFORGET_SERVER_STARTER"  # the environment variable a forkserver reads the
# process id of its starter from (``starting_server``); set only while the server starts


def _prctl(option: int, argument) -> None:
    """``prctl(option, argument)`` on Linux; nothing elsewhere or where libc cannot be called."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, argument, 0, 0, 0)


def _set_parent_death_signal() -> None:
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))  # elsewhere the watchdog ends the worker


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _descends_from(parent: int, main_pid: int) -> bool:
    """Whether ``parent`` is ``main_pid`` or its child (the forkserver), with ``main_pid``
    alive; where ``/proc`` cannot tell the parent's parent, whether ``main_pid`` lives."""
    if parent == main_pid:
        return True
    try:
        stat = Path(f"/proc/{parent}/stat").read_text()
    except OSError:
        return _alive(main_pid) and parent != 1
    return int(stat[stat.rindex(")") + 2:].split()[1]) == main_pid


def _watch(parent: int, main_pid: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent or not _alive(main_pid):
            os._exit(1)


def bind_to_parent(main_pid: int, interval: float = 1.0) -> None:
    """End this process when ``main_pid`` (the process that started it) or this process's
    parent (that process, or its forkserver) dies; ignore Ctrl-C here, so that the main
    process alone decides how a grid stops (a terminal sends SIGINT to every process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_parent_death_signal()
    parent = os.getppid()
    if not _descends_from(parent, main_pid):  # orphaned before the death signal was set
        os._exit(1)
    threading.Thread(target=_watch, args=(parent, main_pid, interval), daemon=True,
                     name="parent-watchdog").start()


@contextlib.contextmanager
def starting_server() -> Iterator[None]:
    """Around the start of a forkserver (``forkserver.ensure_running``): tell it this process's
    id, so that it dies with this process (``bind_server_to_starter``). Only from the main
    thread: the kernel's parent-death signal follows the thread that started the server, and
    another thread may end while this process goes on; from another thread the server is left
    unbound (it ends once it serves, as multiprocessing makes it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    os.environ[SERVER_STARTER] = str(os.getpid())
    try:
        yield
    finally:
        os.environ.pop(SERVER_STARTER, None)


def bind_server_to_starter() -> None:
    """In a forkserver started within ``starting_server``: die (SIGKILL, from the kernel) when
    the process that started it does, and end now if it already has. Its workers, bound to
    it, follow. Elsewhere (another process, another platform) nothing changes."""
    starter = os.environ.pop(SERVER_STARTER, None)
    if starter is None or not starter.isdigit():
        return
    _set_parent_death_signal()
    if os.getppid() != int(starter):  # the starter ended before the death signal was set
        os._exit(1)


def name_this_process(name: str) -> None:
    """Show this process as ``name`` in ``ps`` and ``top`` (Linux: at most 15 bytes; elsewhere
    nothing changes)."""
    _prctl(PR_SET_NAME, name.encode()[:15])
