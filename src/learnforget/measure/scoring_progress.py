"""Progress of scoring, from the batch loops of the scoring primitives up to whoever shows it.

``evaluate(..., progress=callback)`` calls ``callback(ScoringProgress(...))`` when a task starts,
after every batch the scoring primitives run, and when the task ends. The primitives do not
take a callback argument each: they call ``report_batch(done, total)``, which reaches the
callback that ``batch_reporting`` installed for the current task (a context variable, so
nothing is reported when no one listens).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class ScoringProgress:
    """Where scoring stands: task ``index`` (0-based) of ``tasks``, and within it ``done`` of
    ``total`` sequences of the current scoring pass (0 of 0 when the task starts)."""

    task: str
    index: int
    tasks: int
    done: int
    total: int


ScoringCallback = Callable[[ScoringProgress], None]
BatchCallback = Callable[[int, int], None]

_listener: ContextVar[BatchCallback | None] = ContextVar("learnforget_batch_progress",
                                                         default=None)


def report_batch(done: int, total: int) -> None:
    """Called by a scoring loop after each batch: ``done`` of ``total`` sequences scored."""
    listener = _listener.get()
    if listener is not None:
        listener(done, total)


@contextlib.contextmanager
def batch_reporting(listener: BatchCallback | None) -> Iterator[None]:
    """Send ``report_batch`` calls made inside the block to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


@contextlib.contextmanager
def reporting_within(before: int, total: int) -> Iterator[None]:
    """Report the batches of an inner scoring pass as part of a larger one, of ``total``
    sequences of which ``before`` were scored already."""
    outer = _listener.get()
    with batch_reporting(None if outer is None else
                         lambda done, _total: outer(before + done, total)):
        yield
