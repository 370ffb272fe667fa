"""Workers make no named semaphores of their own: a worker stopped with its study leaves none
for the resource tracker to report as leaked after Ctrl-C."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import multiprocessing as mp
import multiprocessing.resource_tracker as tracker

mp.set_start_method("forkserver")  # as the local executor's workers run
registered = []
tracker.register = lambda name, kind: registered.append(kind)
import learnforget.executors.preload  # what the forkserver loads before forking workers
from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm

for bar in (tqdm(range(3), disable=True), auto_tqdm(range(3), disable=True)):  # as PEFT's merge
    list(bar)
print(registered)
"""


def test_a_workers_tqdm_bars_make_no_named_semaphore() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
