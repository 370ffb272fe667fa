"""Fault injection across a micro grid (two runs side by side): SIGKILL of the whole
``learnforget run``, of its main process alone, or of one worker, at random moments; Ctrl-C;
a truncated checkpoint. Every rerun ends with exactly the numbers of a clean run, and no
process is left behind.

The default test injects a random kill during training and a truncated checkpoint. The long
form injects at least 20 faults at random moments of whole studies (startup, base measurement,
training, measuring, report)::

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/test_faults.py -m slow -q -p no:cacheprovider

``LEARNFORGET_FAULT_SEED=N`` replays a sequence (each test prints its seed).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import test_stopping
from test_stopping import (
    assert_same_numbers,
    finish,
    group,
    log_of,
    start,
    statuses,
    wait_for,
    workers_of,
)

# The same micro study and its clean numbers (module fixtures of test_stopping).
study_file = test_stopping.study_file
reference = test_stopping.reference

KINDS = ("kill-group", "kill-main", "kill-worker", "ctrl-c")


def _rng() -> tuple[random.Random, int]:
    seed = int(os.environ.get("LEARNFORGET_FAULT_SEED", time.time_ns() % 1_000_000))
    print(f"fault seed {seed} (LEARNFORGET_FAULT_SEED={seed} replays it)")
    return random.Random(seed), seed


def inject(study_file: Path, out: Path, kind: str, delay: float, after_training: bool,
           rng: random.Random) -> str:
    """Start the study and, ``delay`` seconds after it starts (or after a run starts training),
    inflict ``kind``; returns what happened, for messages."""
    process = start(study_file, out)
    if after_training:
        wait_for(lambda: "running" in statuses(out).values() or process.poll() is not None, 240)
    time.sleep(delay)
    if process.poll() is not None:
        return f"{kind}: the study ended before the fault (exit {process.returncode})"
    if kind == "kill-group":
        os.killpg(process.pid, signal.SIGKILL)
    elif kind == "kill-main":
        os.kill(process.pid, signal.SIGKILL)  # the workers must follow on their own
    elif kind == "ctrl-c":
        os.kill(process.pid, signal.SIGINT)
    elif kind == "kill-worker":
        workers = workers_of(process.pid)
        if workers:
            os.kill(rng.choice(workers), signal.SIGKILL)
    code = process.wait(300)
    assert wait_for(lambda: not group(process.pid), 10), (kind, group(process.pid))
    text = log_of(out)
    assert "Traceback" not in text and "Exception ignored" not in text, text[-3000:]
    if kind == "ctrl-c":
        assert code in (0, 130), text[-3000:]
    elif kind == "kill-worker":
        assert code in (0, 1), text[-3000:]  # 1: the killed run is reported failed
    return f"{kind} after {delay:.1f} s: exit {code}"


def truncate_a_checkpoint(out: Path, rng: random.Random) -> str | None:
    """Cut a random file of a random saved checkpoint to a third of its size."""
    files = sorted(p for p in out.glob("runs/*/checkpoint-*/*")
                   if p.suffix in (".safetensors", ".pt") and p.stat().st_size > 100)
    if not files:
        return None
    victim = rng.choice(files)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    return f"truncated {victim.relative_to(out)}"


def test_a_kill_during_training_and_a_truncated_checkpoint_change_no_number(
        study_file: Path, reference: dict, tmp_path: Path) -> None:
    rng, seed = _rng()
    out = tmp_path / "out"
    kind = rng.choice(("kill-group", "kill-main", "kill-worker"))
    history = [inject(study_file, out, kind, rng.uniform(0.0, 2.0), after_training=True,
                      rng=rng)]
    history.append(truncate_a_checkpoint(out, rng))
    finish(study_file, out)
    assert set(statuses(out).values()) == {"finished"}, (seed, history)
    assert_same_numbers(out, reference)


@pytest.mark.slow
def test_twenty_random_faults_change_no_number(study_file: Path, reference: dict,
                                               tmp_path: Path) -> None:
    rng, seed = _rng()
    faults, study_round, history = 0, 0, []
    out = tmp_path / "round-0"
    while faults < 20:
        kind = rng.choice(KINDS)
        history.append(inject(study_file, out, kind, rng.uniform(0.0, 25.0),
                              after_training=False, rng=rng))
        faults += 1
        if rng.random() < 0.3:
            truncated = truncate_a_checkpoint(out, rng)
            if truncated:
                history.append(truncated)
                faults += 1
        if set(statuses(out).values()) == {"finished"} and rng.random() < 0.5:
            finish(study_file, out)  # nothing left to do: the numbers must be the clean ones
            assert_same_numbers(out, reference)
            study_round += 1
            out = tmp_path / f"round-{study_round}"
    finish(study_file, out)
    assert set(statuses(out).values()) == {"finished"}, (seed, history)
    assert_same_numbers(out, reference)
