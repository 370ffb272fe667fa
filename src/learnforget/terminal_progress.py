"""What the terminal shows while work goes on: rich progress bars on a terminal, and log lines
at a steady pace (every ``LINE_INTERVAL_S``) when the output is a file or a pipe.

- ``progress_bars``: a study's grid of runs, fed by the executors' run events — one bar per
  active run and an overall "run k of N" row with an estimate of the time left.
- ``scoring_progress``: scoring a model (the base measurement, ``learnforget eval``), fed by
  ``measure.evaluate``'s scoring events (``measure.scoring_progress.ScoringProgress``, read
  through the ``ScoringState`` protocol) — one bar per task, moving per batch.
- ``step_progress``: one long loop (pretraining a built-in base), step by step.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console
from rich.errors import LiveError
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

LINE_INTERVAL_S = 10.0


class ScoringState(Protocol):
    """What a scoring event says (``measure.scoring_progress.ScoringProgress``): task ``index``
    (0-based) of ``tasks``, and ``done`` of ``total`` sequences of its current pass."""

    task: str
    index: int
    tasks: int
    done: int
    total: int


def remaining_seconds(elapsed: float, fraction: float) -> float | None:
    """Seconds left when ``fraction`` of the work took ``elapsed`` seconds (None: unknown)."""
    if fraction <= 0 or elapsed <= 0:
        return None
    return elapsed * (1.0 - min(fraction, 1.0)) / fraction


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``1 h 05 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class Pacer:
    """Says when the next log line is due: every ``interval`` seconds from its creation."""

    interval: float = LINE_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    last: float | None = None

    def __post_init__(self) -> None:
        if self.last is None:
            self.last = self.clock()

    def due(self) -> bool:
        """True (and restart the interval) when ``interval`` has passed since the last line."""
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False


class _EtaColumn(TimeRemainingColumn):
    """Rich's time-remaining column, or the task's own ``eta`` text when it has one."""

    def render(self, task) -> Text:
        eta = task.fields.get("eta")
        return Text(eta, style="progress.remaining") if eta is not None else super().render(task)


class _CountColumn(ProgressColumn):
    """``done/total`` (the overall row of a grid: a percentage), empty while the total is not
    known yet."""

    def render(self, task) -> Text:
        if task.total is None:
            return Text("")
        if "eta" in task.fields:
            return Text(f"{task.completed / max(task.total, 1):.0%}")
        return Text(f"{task.completed:g}/{task.total:g}")


def _bars(console: Console) -> Progress:
    columns = (TextColumn("{task.description:<28}"), BarColumn(), _CountColumn(), _EtaColumn(),
               TextColumn("{task.fields[info]}"))
    return Progress(*columns, console=console, refresh_per_second=2)


def _live(progress: Progress) -> bool:
    """Start ``progress``; False when another live display is already on (then: lines)."""
    try:
        progress.start()
    except LiveError:
        return False
    return True


class RunProgress:
    """Draws run events (``start``, ``step``, ``measure``, ``end``, ``log``) of a grid of
    ``total_runs`` runs, as bars (``progress`` given) or as paced lines on ``console``."""

    def __init__(self, console: Console, total_runs: int | None = None,
                 progress: Progress | None = None, pacer: Pacer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.total_runs, self.progress = console, total_runs, progress
        self.pacer, self.clock = pacer or Pacer(), clock
        self.started_at = clock()
        self.runs: dict[str, dict] = {}  # run id → name, step, total, info
        self.ended: dict[str, str] = {}  # run id → status
        self.tasks: dict[str, int] = {}  # run id → bar
        self.overall: int | None = None
        if progress is not None and total_runs:
            self.overall = progress.add_task(self.position(), total=total_runs, info="", eta="")

    # --- the numbers ------------------------------------------------------------------
    def position(self) -> str:
        """``run k of N``: k counts the runs begun so far (finished before included)."""
        begun = len(self.runs.keys() | self.ended.keys())
        return f"run {max(begun, 1)} of {self.total_runs}"

    def fraction(self) -> float:
        """Share of this session's work done: ended runs plus the steps of active ones, over
        the runs that train here (runs found finished do not count)."""
        trained = list(self.runs)
        skipped = len(self.ended.keys() - self.runs.keys())
        todo = (self.total_runs or len(trained)) - skipped
        if todo <= 0:
            return 1.0
        done = sum(1.0 if run_id in self.ended else
                   min(1.0, self.runs[run_id]["step"] / max(self.runs[run_id]["total"], 1))
                   for run_id in trained)
        return done / todo

    def estimate(self) -> str:
        """``about 4 min left`` (or ``estimating…`` before any progress)."""
        left = remaining_seconds(self.clock() - self.started_at, self.fraction())
        return "estimating…" if left is None else f"about {duration(left)} left"

    # --- events -------------------------------------------------------------------------
    def handle(self, event: dict) -> None:
        """Draw one run event."""
        if "log" in event:
            self._print(f"[dim]{event['log']}[/dim]")
            return
        run_id, kind = event.get("run_id"), event.get("event")
        if kind == "start":
            name = f"{event['label']} lr={event['lr']:g}"
            self.runs[run_id] = {"name": name, "step": event["step"], "total": event["total"],
                                 "info": ""}
            if self.progress is not None:
                self.tasks[run_id] = self.progress.add_task(
                    name, total=event["total"], completed=event["step"], info="")
            else:
                where = f"{self.position()}: " if self.total_runs else ""
                self._print(f"{where}{name} starts at step {event['step']} of {event['total']}")
        elif kind == "end":
            self.ended[run_id] = event["status"]
            if run_id in self.runs:
                self.runs[run_id]["info"] = event["status"]
                if self.progress is None:
                    self._print(f"{self.runs[run_id]['name']}: {event['status']}")
        elif run_id in self.runs:
            state = self.runs[run_id]
            if kind == "step":
                state["step"] = event["step"]
                state["info"] = (f"loss {event['loss']:.3f} · "
                                 f"{event['tokens_per_s']:,.0f} tok/s")
            elif kind == "measure":
                task = f" ({event['task']})" if event.get("task") else ""
                state["info"] = f"measuring step {event['step']}{task}"
        self._refresh(run_id)

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress is not None else self.console).print(
            text, highlight=False)

    def _refresh(self, run_id: str | None) -> None:
        if self.progress is not None:
            if run_id in self.tasks:
                state = self.runs[run_id]
                self.progress.update(self.tasks[run_id], completed=state["step"],
                                     info=state["info"])
            if self.overall is not None:
                self.progress.update(self.overall, description=self.position(),
                                     completed=self.fraction() * (self.total_runs or 0),
                                     eta=self.estimate())
            return
        if self.pacer.due():
            for run_id_, state in self.runs.items():
                if run_id_ not in self.ended:
                    self._print(f"  {state['name']}: step {state['step']}/{state['total']}"
                                + (f" · {state['info']}" if state["info"] else ""))
            if self.total_runs:
                self._print(f"{self.position()} · {self.fraction():.0%} done · "
                            f"{self.estimate()}")


@contextlib.contextmanager
def progress_bars(console: Console, total_runs: int | None = None) -> Iterator[RunProgress]:
    """A ``RunProgress`` for a grid of ``total_runs`` runs: live bars on a terminal, paced
    lines otherwise."""
    if console.is_terminal:
        progress = _bars(console)
        if _live(progress):
            try:
                yield RunProgress(console, total_runs, progress)
            finally:
                progress.stop()
            return
    yield RunProgress(console, total_runs)


class ScoringDisplay:
    """Draws scoring events (``ScoringState``): one bar per task (started on the first event,
    so that a display that comes before — pretraining the base — is over), or paced lines."""

    def __init__(self, console: Console, label: str = "", bars: bool | None = None,
                 pacer: Pacer | None = None) -> None:
        self.console, self.label, self.pacer = console, label, pacer or Pacer()
        self.bars = console.is_terminal if bars is None else bars
        self.progress: Progress | None = None
        self.tasks: dict[str, int] = {}
        self.last_line: tuple[str, int] | None = None

    def __call__(self, state: ScoringState) -> None:
        """Show one scoring event."""
        name = f"{self.label}{state.task}"
        if self.bars and self.progress is None:
            self.progress = _bars(self.console)
            if not _live(self.progress):
                self.progress, self.bars = None, False
        if self.progress is not None:
            if state.task not in self.tasks:
                self.tasks[state.task] = self.progress.add_task(name, total=None, info="")
            info = f"task {state.index + 1} of {state.tasks}"
            self.progress.update(self.tasks[state.task], completed=state.done,
                                 total=state.total or None, info=info)
            return
        if state.done == 0 and state.total == 0:
            self.console.print(f"scoring {name} (task {state.index + 1} of {state.tasks})",
                               highlight=False)
        elif (state.done == state.total or self.pacer.due()) and (
                (name, state.done) != self.last_line):  # a task's end is reported twice
            self.console.print(f"  {name}: {state.done}/{state.total}", highlight=False)
            self.last_line = (name, state.done)

    def close(self) -> None:
        """Stop the bars."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@contextlib.contextmanager
def scoring_progress(console: Console, label: str = "") -> Iterator[ScoringDisplay]:
    """A ``ScoringDisplay`` (a scoring-progress callback) for the block."""
    display = ScoringDisplay(console, label)
    try:
        yield display
    finally:
        display.close()


@contextlib.contextmanager
def step_progress(description: str, total: int, log: Callable[[str], None] = print,
                  console: Console | None = None, pacer: Pacer | None = None
                  ) -> Iterator[Callable[[int, str], None]]:
    """``update(step, info)`` for a loop of ``total`` steps: a bar when this (main) process
    writes to a terminal, else a line through ``log`` every ``LINE_INTERVAL_S`` and at the
    last step."""
    console = console or Console(stderr=True)
    main = multiprocessing.parent_process() is None
    if main and console.is_terminal:
        progress = _bars(console)
        if _live(progress):
            task = progress.add_task(description, total=total, info="")
            try:
                yield lambda step, info="": progress.update(task, completed=step, info=info)
            finally:
                progress.stop()
            return
    pacer = pacer or Pacer()

    def line(step: int, info: str = "") -> None:
        if pacer.due() or step in (1, total):
            log(f"{description}: step {step}/{total}" + (f" · {info}" if info else ""))

    yield line
