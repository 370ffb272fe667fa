"""Where a study's runs train: side by side in local processes (the default), or as Ray tasks
on this machine or a Ray cluster.

Importing this package loads nothing but the standard library: the forkserver of the local
executor imports ``executors.lifeline`` first, and must arm it before any long import."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from learnforget.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

    from learnforget.plan import RunConfig
    from learnforget.study import Study

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorChoice:
    """The executor and its options (``learnforget run --executor …``)."""

    name: str = "local"
    ray_address: str | None = None  # a running Ray cluster ("auto", "ray://host:10001")
    gpus_per_run: float = 0.0  # GPUs Ray reserves for each run

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise UserError(f"--executor must be one of {', '.join(EXECUTORS)}, not {self.name!r}")
        if self.name != "ray" and (self.ray_address or self.gpus_per_run):
            raise UserError("--ray-address and --gpus-per-run apply to --executor ray only")
        if self.gpus_per_run < 0:
            raise UserError(f"--gpus-per-run must be ≥ 0, not {self.gpus_per_run}")
        if self.name == "ray" and self.ray_address and self.ray_address != "auto":
            check_ray_address(self.ray_address)


RAY_CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster's address before anything starts


def check_ray_address(address: str) -> None:
    """A ``UserError`` unless something listens at ``address`` (``ray://HOST:PORT`` or
    ``HOST:PORT``): checked with one TCP connection before the base model is measured, so an
    unreachable cluster is found in seconds, not after minutes of work."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} is not ray://HOST:PORT, HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)),
                                      timeout=RAY_CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise UserError(
            f"no Ray cluster reachable at {address!r} ({exc.strerror or exc}); start one with "
            "`ray start --head`, check the address, or leave out --ray-address to run Ray on "
            "this machine") from None


StudyEnd = Callable[[Path, list[str]], None]  # (a study's OUT, its runs' statuses)


@dataclass(frozen=True)
class RunJob:
    """One run to execute: its study, its config and the study's output folder; ``stop_after``:
    train only up to the run's N-th checkpoint (a rung of successive halving), None: to the
    end (``runner.execute_run``)."""

    study: Study
    run: RunConfig
    out: Path
    stop_after: int | None = None


def execute_jobs(jobs: list[RunJob], console: Console, choice: ExecutorChoice | None = None,
                 on_study_end: StudyEnd | None = None) -> list[str]:
    """Train and measure the runs of ``jobs`` (of one study or several) with the chosen
    executor; returns each job's final status, in order, and calls ``on_study_end(out,
    statuses)`` as soon as all of one study's runs have ended. Local processes take the jobs of
    every study from one queue, so that no worker idles while one study's last run ends and
    the next study's runs wait; Ray runs one study after another (its cluster schedules
    within each)."""
    choice = choice or ExecutorChoice()
    if choice.name == "ray":
        from learnforget.executors.ray_cluster import run_all_ray

        statuses: dict[int, str] = {}
        for study_jobs in _by_study(jobs):
            first = jobs[study_jobs[0]]
            done = run_all_ray(first.study, [jobs[i].run for i in study_jobs], first.out,
                               console, choice.ray_address, choice.gpus_per_run,
                               [jobs[i].stop_after for i in study_jobs])
            statuses.update({i: done[jobs[i].run.run_id] for i in study_jobs})
            if on_study_end is not None:
                on_study_end(first.out, [statuses[i] for i in study_jobs])
        return [statuses[i] for i in range(len(jobs))]
    from learnforget.executors.local import run_jobs

    return run_jobs(jobs, console, on_study_end)


@contextlib.contextmanager
def executor_session(choice: ExecutorChoice | None = None) -> Iterator[None]:
    """What the executor keeps up over several ``execute_jobs`` calls (the rounds of
    successive halving): Ray, started or joined once; nothing for local processes."""
    if choice is None or choice.name != "ray":
        yield
        return
    from learnforget.executors.ray_cluster import ray_session

    with ray_session(choice.ray_address):
        yield


def _by_study(jobs: list[RunJob]) -> list[list[int]]:
    """Indices of ``jobs`` grouped by output folder (one study each), in first-seen order."""
    groups: dict[Path, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(job.out, []).append(index)
    return list(groups.values())
