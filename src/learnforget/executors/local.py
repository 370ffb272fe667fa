"""Run a study's runs on this machine: one after another, or ``workers`` side by side. The runs
of several studies (a study file with more than one, like the demo's) share one queue, so the
next study's runs start while the last runs of the one before end.

Each run is its own process with ``training.threads`` torch threads — on a small CPU machine, one
thread per run and two runs at once was the robust setting. Each worker sends its progress
through its own pipe; this process draws one progress bar per active run.

Where the platform has it (Linux, macOS), workers come from a ``forkserver`` that imported the
training code once: importing torch, transformers and PEFT costs a fresh process about 10 s of
CPU on a 2-core machine, once per run with ``spawn`` (a demo of 22 runs: almost two minutes of
its wall time). The server only imports, it never runs torch (no thread pool, no CUDA context is
forked), and each run still gets a process of its own. Elsewhere workers are spawned.

Stopping: workers ignore Ctrl-C and die with this process (``lifeline``), and so does the
forkserver, from before its imports on (Linux): no process outlives this one, even one killed
while it starts. On Ctrl-C or SIGTERM this process ends every worker (SIGTERM, then SIGKILL
after a grace period), marks their runs ``pending`` so that the next ``learnforget run`` resumes
them from their last checkpoint, and raises ``KeyboardInterrupt``. A worker that dies on its own
(killed, out of memory) leaves its run ``failed``; the other runs go on, and a rerun resumes it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from rich.console import Console

from learnforget.errors import UserError
from learnforget.executors import RunJob, StudyEnd
from learnforget.executors.lifeline import starting_server
from learnforget.plan import RunConfig
from learnforget.store import ENDED_STATUSES, Store
from learnforget.terminal_progress import RunProgress as _Bars
from learnforget.terminal_progress import progress_bars

STOP_GRACE_S = 2.0  # SIGTERM → SIGKILL
PRELOAD = ["learnforget.executors.preload"]  # what the forkserver imports once for all workers
WORKER_NAME = "learnforget-run"  # a worker's process name (``ps``, ``top``; 15 bytes at most)


def worker_context():
    """The multiprocessing context workers start from: a preloaded forkserver where there is
    one, ``spawn`` elsewhere."""
    if "forkserver" in mp.get_all_start_methods():
        context = mp.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context
    return mp.get_context("spawn")


def _nothing() -> None:
    """The target of the process that warms the forkserver up."""


def _warm_up(context) -> None:
    """Have the forkserver import the training code now (seconds), while Ctrl-C is still heard
    here (starting a worker ignores it for a moment), by starting a process that does nothing.
    The server is launched with Ctrl-C ignored: it and every worker forked from it inherit that,
    as spawned workers do. It dies with this process from its first moment (``lifeline``), its
    imports included: killed or stopped now, this process leaves no server behind."""
    if context.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    with _signals_ignored(signal.SIGINT), _usr1_blocked_for_helpers(), starting_server():
        forkserver.ensure_running()
    probe = context.Process(target=_nothing, name="learnforget-warm-up", daemon=True)
    probe.start()
    probe.join()


@contextlib.contextmanager
def _usr1_blocked_for_helpers() -> Iterator[None]:
    """SIGUSR1 blocked while multiprocessing starts its helper processes, which inherit the
    block: its resource tracker has no handler of its own, so ``kill -USR1 -PGID`` (the stack
    dump) would end it. The forkserver and the workers unblock it when they arm their own dump
    (``stacks``); this thread's mask is put back."""
    number = getattr(signal, "SIGUSR1", None)
    if number is None or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {number})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker(study_json: str, run_json: str, out: str, conn: Connection, parent_pid: int,
            environment: dict[str, str], stop_after: int | None = None) -> None:
    """Process entry point: take the starting process's environment (a forkserver's is that of
    its own start), rebuild the configs, execute the run, send its result."""
    os.environ.clear()
    os.environ.update(environment)
    from learnforget.executors.lifeline import bind_to_parent, name_this_process
    from learnforget.stacks import dump_stacks_on_sigusr1

    bind_to_parent(parent_pid)
    name_this_process(WORKER_NAME)
    dump_stacks_on_sigusr1()
    from learnforget.plan import RunConfig as _Run
    from learnforget.quiet import quiet_warnings
    from learnforget.runner import execute_run
    from learnforget.study import Study as _Study

    quiet_warnings()
    run = _Run.model_validate_json(run_json)
    send = _sender(conn)
    try:
        status = execute_run(_Study.model_validate_json(study_json), run, Path(out),
                             progress=send, log=lambda msg: send({"log": msg}),
                             stop_after=stop_after)
        send({"result": status, "run_id": run.run_id})
    except UserError as exc:
        send({"result": "failed", "run_id": run.run_id, "user_error": str(exc)})
    except Exception as exc:  # before the run could record it (its folder, the store)
        from learnforget.runfailure import first_line

        send({"log": f"run {run.run_id} ({run.label}, lr {run.method.lr:g}) failed: "
                     f"{first_line(exc)}"})
        send({"result": "failed", "run_id": run.run_id,
              "error": "".join(traceback.format_exception(exc))[-4000:]})
    conn.close()


def _sender(conn: Connection):
    """``conn.send``, except that a closed pipe ends this process at once: the main process is
    gone (killed; the kernel or the watchdog is about to end this worker too), so the run is
    neither marked failed nor reported — the next ``run`` resumes it from its last checkpoint."""

    def send(event: dict) -> None:
        try:
            conn.send(event)
        except (BrokenPipeError, ConnectionResetError):
            os._exit(1)

    return send


@dataclass
class _Worker:
    job: RunJob
    key: str  # what its events are filed under: the run id, prefixed by the study's folder
    # when the queue holds several studies (their run ids may coincide)
    process: mp.process.BaseProcess
    conn: Connection
    result: dict | None = None
    error: str | None = None  # the first line of the run's error, when it failed

    @property
    def run(self) -> RunConfig:
        return self.job.run

    def shown(self, event: dict) -> dict:
        """``event`` as the progress display takes it: filed under this worker's key, its run
        named with the study's name when the queue holds several studies."""
        if self.key == self.run.run_id:
            return event
        shown = {**event, "run_id": self.key} if "run_id" in event else dict(event)
        if "label" in shown:
            shown["label"] = f"{self.job.study.name}: {shown['label']}"
        return shown


@contextlib.contextmanager
def _signals_ignored(*numbers: int) -> Iterator[None]:
    """Ignore these signals for a moment (main thread only): Ctrl-C while a spawned worker or
    the forkserver starts, so that it inherits the ignored Ctrl-C; Ctrl-C and SIGTERM while
    workers stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _start(context, study_json: str, job: RunJob, key: str) -> _Worker:
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_worker, name=f"learnforget-{job.run.run_id}", daemon=True,
                              args=(study_json, job.run.model_dump_json(), str(job.out), writer,
                                    os.getpid(), dict(os.environ), job.stop_after))
    # A forkserver's workers are forked from the server, which ignores Ctrl-C (``_warm_up``):
    # nothing to do here, and a Ctrl-C sent to this process while a worker starts is not lost.
    # A spawned worker inherits this process's ignored Ctrl-C until it ignores it itself.
    # A server that died meanwhile is started again by ``process.start()``: bound to this
    # process like the first.
    spawned = context.get_start_method() != "forkserver"
    with _signals_ignored(signal.SIGINT) if spawned else starting_server():
        process.start()
    writer.close()
    return _Worker(job, key, process, reader)


def _drain(worker: _Worker, bars: _Bars) -> None:
    """Handle every event the worker has sent so far (none once its pipe is closed)."""
    with contextlib.suppress(EOFError, OSError):
        while worker.conn.poll():
            event = worker.conn.recv()
            if "result" in event:
                worker.result = event
            else:
                if event.get("event") == "end" and event.get("error"):
                    worker.error = event["error"]
                bars.handle(worker.shown(event))


def _stop(workers: list[_Worker]) -> None:
    """End the workers: SIGTERM, then SIGKILL whatever is left after ``STOP_GRACE_S``."""
    for worker in workers:
        with contextlib.suppress(OSError, ValueError):
            worker.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
    for worker in workers:
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(5)
        worker.conn.close()


def _mark(out: Path, run_ids: list[str], status: str, error: str | None = None,
          unless: tuple[str, ...] = ENDED_STATUSES) -> None:
    """Set runs whose process is gone to ``status``, unless they ended in one of ``unless``."""
    if not run_ids or not (out / "results.sqlite").exists():
        return
    store = Store(out / "results.sqlite")
    try:
        for run_id in run_ids:
            if store.run_status(run_id) not in (None, *unless):
                store.set_status(run_id, status, error)
    finally:
        store.close()


def run_jobs(jobs: list[RunJob], console: Console | None = None,
             on_study_end: StudyEnd | None = None) -> list[str]:
    """Execute ``jobs`` (the runs of one study or of several), each in its own process, as many
    at once as the next job's study allows (``workers``), taking them in order from one queue;
    returns each job's status, in order. ``on_study_end(out, statuses)`` is called as soon as
    every job of the study in ``out`` has ended (with their statuses, in order), while the
    other studies' runs go on.

    Ctrl-C / SIGTERM (a ``KeyboardInterrupt`` here) stops every worker and marks their runs
    ``pending`` before the interrupt goes on; a ``UserError`` in a run does the same and is
    raised here."""
    console = console or Console(stderr=True)
    context = worker_context()
    several = len({job.out for job in jobs}) > 1
    study_json = {job.out: job.study.model_dump_json() for job in jobs}
    waiting = list(enumerate(jobs))
    active: list[_Worker] = []
    statuses: dict[str, str] = {}  # worker key → status
    # two studies may share run ids (and, through the API, a name): their folders tell them apart
    keys = [f"{job.out}/{job.run.run_id}" if several else job.run.run_id for job in jobs]
    left = Counter(job.out for job in jobs)  # jobs not yet ended, per study
    ended: list[Path] = []  # studies whose jobs have all ended, not yet handed to on_study_end
    try:
        if jobs:
            _warm_up(context)
        with progress_bars(console, len(jobs)) as bars:
            while waiting or active or ended:
                while waiting and len(active) < waiting[0][1].study.workers:
                    index, job = waiting.pop(0)
                    active.append(_start(context, study_json[job.out], job, keys[index]))
                for out in ended:  # after the freed slots are taken: a report takes seconds
                    if on_study_end is not None:
                        on_study_end(out, [statuses[key] for key, job in zip(keys, jobs,
                                                                             strict=True)
                                           if job.out == out])
                ended.clear()
                if not active:
                    continue
                wait([w.conn for w in active] + [w.process.sentinel for w in active], 0.5)
                for worker in list(active):
                    _drain(worker, bars)
                    if worker.process.is_alive() and worker.result is None:
                        continue
                    worker.process.join(5)
                    _drain(worker, bars)
                    active.remove(worker)
                    worker.conn.close()
                    _finish(worker, statuses, bars)
                    left[worker.job.out] -= 1
                    if not left[worker.job.out]:
                        ended.append(worker.job.out)
    except BaseException:
        with _signals_ignored(signal.SIGINT, signal.SIGTERM):
            _stop(active)
            for worker in active:
                _mark(worker.job.out, [worker.run.run_id], "pending")
        if active:
            console.print(f"stopped {len(active)} unfinished "
                          f"run{'s' if len(active) > 1 else ''} "
                          f"({', '.join(_named(w) for w in active)}"
                          "): the next run resumes them from their last checkpoint")
        raise
    return [statuses[key] for key in keys]


def _named(worker: _Worker) -> str:
    """A run as messages name it: label and LR (and the study, when the queue holds several)."""
    study = "" if worker.key == worker.run.run_id else f"{worker.job.study.name}: "
    return f"{study}{worker.run.label} lr {worker.run.method.lr:g}"


def _finish(worker: _Worker, statuses: dict[str, str], bars: _Bars) -> None:
    """Record how a worker ended; a ``UserError`` of its run is raised here."""
    run_id, out = worker.run.run_id, worker.job.out
    if worker.result is None:  # the process died before it could report
        code = worker.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        error = f"the worker process of this run ended without a result ({how})"
        _mark(out, [run_id], "failed", error)
        bars.handle(worker.shown({"run_id": run_id, "event": "end", "status": "failed"}))
        bars.handle({"log": f"run {run_id} ({_named(worker)}): {error}"})
        statuses[worker.key] = "failed"
        return
    if worker.result.get("user_error"):
        raise UserError(worker.result["user_error"])
    statuses[worker.key] = worker.result["result"]
    if statuses[worker.key] == "failed":  # the run could not mark itself (a full disk, …)
        with contextlib.suppress(Exception):
            _mark(out, [run_id], "failed", worker.result.get("error") or worker.error)
