"""Where a study's runs train: side by side in local processes (the default), or as Ray tasks
on this machine or a Ray cluster."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from learnforget.errors import UserError
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


def execute_runs(study: Study, runs: list[RunConfig], out: Path, console: Console,
                 choice: ExecutorChoice | None = None) -> dict[str, str]:
    """Train and measure ``runs`` with the chosen executor; returns {run_id: status}."""
    choice = choice or ExecutorChoice()
    if choice.name == "ray":
        from learnforget.executors.ray_cluster import run_all_ray

        return run_all_ray(study, runs, out, console, choice.ray_address, choice.gpus_per_run)
    from learnforget.executors.local import run_all

    return run_all(study, runs, out, console)
