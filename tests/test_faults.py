"""Fault injection across a micro grid (two runs side by side): SIGKILL of the whole
``learnforget run``, of its main process alone, or of one worker, at random moments; Ctrl-C;
a truncated checkpoint. Every rerun ends with exactly the numbers of a clean run, and no
process is left behind: within 2 s of the main process's end, its whole process group (the
forkserver, multiprocessing's resource tracker, the workers) is gone.

The default tests inject a random kill during training and a truncated checkpoint, and kill the
main process (SIGKILL, SIGTERM, Ctrl-C) in the first seconds of its forkserver, while the server
still imports the training code. The long forms inject at least 20 faults at random moments of
whole studies (startup, base measurement, training, measuring, report), and every signal at
several moments of the forkserver's start::

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/test_faults.py -m slow -q -p no:cacheprovider

``LEARNFORGET_FAULT_SEED=N`` replays a sequence (each test prints its seed).
"""

from __future__ import annotations

import contextlib
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
GONE_WITHIN_S = 2.0  # after the main process ends, until its last process has
SERVER = "from multiprocessing.forkserver import main"  # the forkserver's command line
TRACKER = "from multiprocessing.resource_tracker import main"


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
    assert_group_gone(process.pid, f"{kind} after {delay:.1f} s")
    text = log_of(out)
    assert "Traceback" not in text and "Exception ignored" not in text, text[-3000:]
    if kind == "ctrl-c":
        assert code in (0, 130), text[-3000:]
    elif kind == "kill-worker":
        assert code in (0, 1), text[-3000:]  # 1: the killed run is reported failed
    return f"{kind} after {delay:.1f} s: exit {code}"


def described(pids: list[int]) -> list[str]:
    """Processes as a failure names them: id and role (forkserver, resource tracker, worker)."""
    roles = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        role = ("forkserver" if SERVER in command else "resource tracker" if TRACKER in command
                else name)
        roles.append(f"{pid} ({role})")
    return roles


def assert_group_gone(pgid: int, what: str) -> None:
    """Every process of group ``pgid`` ends within ``GONE_WITHIN_S`` of its leader's end (the
    caller has just reaped it)."""
    assert wait_for(lambda: not group(pgid), GONE_WITHIN_S, step=0.02), \
        (what, described(group(pgid)))


def server_of(pgid: int) -> int | None:
    """The forkserver of the ``learnforget run`` that leads group ``pgid``, once it exists."""
    for pid in group(pgid):
        with contextlib.suppress(OSError):
            if SERVER.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


def stop_while_starting(study_file: Path, out: Path, number: int, delay: float) -> str:
    """Start the study and send its main process signal ``number`` ``delay`` seconds after its
    forkserver appears (while the server imports the training code, for several seconds); the
    process group must be gone within ``GONE_WITHIN_S`` of the main process. Returns what
    happened, for messages."""
    name = signal.Signals(number).name
    process = start(study_file, out)
    assert wait_for(lambda: server_of(process.pid) or process.poll() is not None, 240, 0.01)
    assert process.poll() is None, log_of(out)[-3000:]
    time.sleep(delay)
    before = described(group(process.pid))
    os.kill(process.pid, number)
    code = process.wait(60)
    what = f"{name} {delay:.1f} s after the forkserver appeared ({', '.join(before)})"
    assert_group_gone(process.pid, what)
    text = log_of(out)
    assert "Traceback" not in text and "Exception ignored" not in text, text[-3000:]
    if number != signal.SIGKILL:
        assert code == 130, (what, text[-3000:])
    return f"{what}: exit {code}"


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


def test_stopping_the_main_process_while_the_forkserver_starts_leaves_no_process(
        study_file: Path, tmp_path: Path) -> None:
    """SIGKILL as the server appears, SIGTERM and Ctrl-C a moment later: the server, still
    importing, and the resource tracker end with the main process, not seconds later."""
    out = tmp_path / "out"
    for number, delay in ((signal.SIGKILL, 0.0), (signal.SIGTERM, 0.3), (signal.SIGINT, 1.0)):
        print(stop_while_starting(study_file, out, number, delay))


@pytest.mark.slow
def test_every_signal_at_every_moment_of_the_forkserver_start_leaves_no_process(
        study_file: Path, reference: dict, tmp_path: Path) -> None:
    """SIGKILL, SIGTERM and Ctrl-C, each 0 to 2 s after the forkserver appears; the study then
    finishes with the numbers of a clean run."""
    out = tmp_path / "out"
    for number in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
        for delay in (0.0, 0.2, 0.5, 1.0, 2.0):
            print(stop_while_starting(study_file, out, number, delay))
    finish(study_file, out)
    assert set(statuses(out).values()) == {"finished"}
    assert_same_numbers(out, reference)
