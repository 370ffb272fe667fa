"""Run a study's runs on this machine: one after another, or ``workers`` side by side.

Each run is its own process (``spawn``) with ``training.threads`` torch threads — on a small CPU
machine, one thread per run and two runs at once was the robust setting. Workers report
progress through a queue; this process draws one progress bar per active run.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from learnforget.plan import RunConfig
from learnforget.runner import execute_run
from learnforget.study import Study


def _worker(study_json: str, run_json: str, out: str, events) -> tuple[str, str]:
    """Process entry point: rebuild the configs and execute the run."""
    import learnforget.cli  # noqa: F401  (the CLI's warning filters apply in workers too)
    from learnforget.plan import RunConfig as _Run
    from learnforget.study import Study as _Study

    run = _Run.model_validate_json(run_json)
    status = execute_run(_Study.model_validate_json(study_json), run, Path(out),
                         progress=events.put, log=lambda msg: events.put({"log": msg}))
    return run.run_id, status


class _Bars:
    """One rich progress bar per run, fed by worker events."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def handle(self, event: dict) -> None:
        if "log" in event:
            self.progress.console.print(f"[dim]{event['log']}[/dim]")
            return
        run_id, kind = event["run_id"], event["event"]
        if kind == "start":
            name = f"{event['label']} lr={event['lr']:g}"
            self.tasks[run_id] = self.progress.add_task(
                name, total=event["total"], completed=event["step"], info="")
        elif run_id not in self.tasks:
            return
        elif kind == "step":
            info = f"loss {event['loss']:.3f} · {event['tokens_per_s']:,.0f} tok/s"
            self.progress.update(self.tasks[run_id], completed=event["step"], info=info)
        elif kind == "measure":
            self.progress.update(self.tasks[run_id], info=f"measuring step {event['step']}")
        elif kind == "end":
            self.progress.update(self.tasks[run_id], info=event["status"])


@contextlib.contextmanager
def progress_bars(console: Console) -> Iterator[_Bars]:
    """Live progress bars (one per active run) on ``console``, fed by ``handle(event)``."""
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TextColumn(
        "{task.completed}/{task.total}"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, refresh_per_second=2) as progress:
        yield _Bars(progress)


def run_all(study: Study, runs: list[RunConfig], out: Path, console: Console | None = None
            ) -> dict[str, str]:
    """Execute ``runs`` with ``study.workers`` processes; returns {run_id: status}."""
    console = console or Console(stderr=True)
    statuses: dict[str, str] = {}
    context = mp.get_context("spawn")
    with context.Manager() as manager, progress_bars(console) as bars:
        events = manager.Queue()
        with ProcessPoolExecutor(max_workers=study.workers, mp_context=context) as pool:
            futures = [pool.submit(_worker, study.model_dump_json(), r.model_dump_json(),
                                   str(out), events) for r in runs]
            pending = set(futures)
            while pending:
                with contextlib.suppress(queue.Empty):
                    bars.handle(events.get(timeout=0.5))
                for future in [f for f in pending if f.done()]:
                    pending.discard(future)
                    run_id, status = future.result()
                    statuses[run_id] = status
            while True:
                try:
                    bars.handle(events.get_nowait())
                except queue.Empty:
                    break
    return statuses
