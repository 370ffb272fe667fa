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
