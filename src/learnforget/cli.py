"""The ``learnforget`` command line: plan, run, report, demo, eval, score-code, spectrum."""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from learnforget.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="What does finetuning teach a model, what does it make it forget, and "
                       "which method should you use?")
console = Console(stderr=True)


def friendly(func):
    """Turn ``UserError`` into a message and exit status 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted: run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@friendly
def plan(study_file: Path = typer.Argument(..., help="the study YAML")) -> None:
    """List the runs of a study: ids, trainable parameters and token budgets."""
    from learnforget.plan import expand
    from learnforget.planinfo import summarize
    from learnforget.study import load_study

    study = load_study(study_file)
    runs = expand(study)
    table = Table(title=f"study {study.name}: {len(runs)} runs")
    for column in ("run id", "method", "lr", "optimizer", "seed", "trainable", "of total",
                   "budget"):
        table.add_column(column)
    for s in summarize(runs):
        table.add_row(s.run_id, s.label, f"{s.lr:g}", s.optimizer, str(s.seed),
                      f"{s.trainable:,}", f"{s.trainable / s.total:.1%}", s.budget)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def run_study(study_file: Path, out: Path | None) -> Path:
    """Validate, plan, measure the base, train every run, write the report; returns OUT."""
    from learnforget.executors.local import run_all
    from learnforget.plan import expand
    from learnforget.runner import measure_base, validate_tasks
    from learnforget.study import load_study

    study = load_study(study_file)
    out = out or Path("out") / study.name
    validate_tasks(study)
    runs = expand(study)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(study.model_dump_json(indent=2))
    started = time.time()
    console.print(f"study [bold]{study.name}[/bold]: {len(runs)} runs → {out}")
    measure_base(study, out, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    statuses = run_all(study, runs, out, console)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    console.print(f"runs: {counts} in {time.time() - started:.0f} s")
    _write_report(out)
    return out


def _write_report(out: Path) -> None:
    try:
        from learnforget.report.build import build_report
    except ImportError:
        return
    index = build_report(out)
    console.print(f"report: {index}")


@app.command()
@friendly
def run(
    study_file: Path = typer.Argument(..., help="the study YAML"),
    out: Path = typer.Option(None, "--out", "-o", help="output folder (default out/NAME)"),
) -> None:
    """Train and measure every run of a study (resumes if run again), then write the report."""
    run_study(study_file, out)


def main() -> None:  # pragma: no cover - console entry point alias
    """Entry point for ``python -m learnforget``."""
    sys.exit(app())


_ = json  # used by commands added below
