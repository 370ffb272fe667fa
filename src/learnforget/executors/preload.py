"""What the forkserver of ``executors.local`` imports once, before it forks any worker: the
run's code and the libraries it loads (torch, transformers, PEFT). Before those imports (seconds)
the server binds its life to the process that started it (``lifeline``): killed or stopped in
those seconds, that process takes the server with it. Importing this module also arms SIGUSR1's
stack dump in the server itself, so that ``kill -USR1 -PGID`` (the whole process group of
``learnforget run``) leaves the server running, and its workers with it.
"""

from __future__ import annotations

from learnforget.executors.lifeline import bind_server_to_starter

bind_server_to_starter()  # first: every import below takes time

import peft  # noqa: E402, F401  (loaded by every LoRA run)

import learnforget.executors.local  # noqa: E402, F401  (the worker's entry point)
import learnforget.runner  # noqa: E402, F401  (training and measuring)
from learnforget.stacks import dump_stacks_on_sigusr1  # noqa: E402

dump_stacks_on_sigusr1()

import threading  # noqa: E402

from tqdm import tqdm  # noqa: E402

# tqdm's default write lock holds a multiprocessing lock: a named semaphore, made the first time
# any bar is created (PEFT's merge_and_unload makes one, disabled, at every LoRA measurement).
# A worker stopped with its study leaves it to the resource tracker, which then warns of "leaked
# semaphore objects". Workers draw no tqdm bars to share, so a thread lock serves.
tqdm.set_lock(threading.RLock())
