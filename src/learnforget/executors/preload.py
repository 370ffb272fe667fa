"""What the forkserver of ``executors.local`` imports once, before it forks any worker: the
run's code and the libraries it loads (torch, transformers, PEFT). Importing it also arms
SIGUSR1's stack dump in the server itself, so that ``kill -USR1 -PGID`` (the whole process group
of ``learnforget run``) leaves the server running, and its workers with it.
"""

from __future__ import annotations

import peft  # noqa: F401  (loaded by every LoRA run)

import learnforget.executors.local  # noqa: F401  (the worker's entry point)
import learnforget.runner  # noqa: F401  (training and measuring)
from learnforget.stacks import dump_stacks_on_sigusr1

dump_stacks_on_sigusr1()
