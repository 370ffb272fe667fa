"""The study pipeline: validate every study of a file; for each study lock its output folder,
check that the folder belongs to it and measure the base model; train and measure the runs of
every study (with an executor); judge each study, write its ``claims.json`` and its report;
several studies also get an index of reports.

The command line (``learnforget run`` / ``demo``) calls ``run_studies``; so can any program.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from learnforget.executors import ExecutorChoice
from learnforget.plan import RunConfig
from learnforget.study import Study

if TYPE_CHECKING:  # read for its type only: the report's modules load when a report is written
    from learnforget.analysis.judge import StudyJudgement


@dataclass(frozen=True)
class FailedRun:
    """A run of the study that ended ``failed``: what it was and where its error is."""

    run_id: str
    label: str
    lr: float
    error: str  # the first line
    error_file: Path | None  # the whole traceback, when it could be written


@dataclass
class StudyOutcome:
    """How one study ended: its folder, every run's status, and the failed runs."""

    out: Path
    statuses: dict[str, str]
    failed: list[FailedRun] = field(default_factory=list)


def run_studies(study_file: Path, out: Path | None, executor: ExecutorChoice | None = None,
                console: Console | None = None, force_new_study: bool = False
                ) -> list[StudyOutcome]:
    """Validate every study of the file, then run them (``run_together``: each base measured,
    every run trained, each report written). One study goes to OUT, several to OUT/NAME each
    (and OUT gets an index of their reports)."""
    from learnforget.plan import expand
    from learnforget.preflight import check_output_folder, check_study
    from learnforget.study import load_studies

    console = console or Console(stderr=True)
    studies = load_studies(study_file)
    for study in studies:  # fail on a bad study before OUT is created or anything trains
        expand(study)
        check_study(study)
    check_output_folder(out if out is not None else Path("out"))
    if len(studies) == 1:
        target = out or Path("out") / studies[0].name
        return run_together([(studies[0], target)], executor, console, force_new_study)
    root = out or Path("out") / study_file.stem
    outcomes = run_together([(study, root / study.name) for study in studies], executor,
                            console, force_new_study, index=root / "index.html")
    console.print(f"index of reports: {write_run_index(root, [o.out for o in outcomes])}")
    return outcomes


def run_study(study: Study, out: Path, executor: ExecutorChoice | None = None,
              console: Console | None = None, force_new_study: bool = False,
              index: Path | None = None) -> StudyOutcome:
    """Measure the base, train and measure every run of one study, write its report and print
    its findings (``run_together`` with one study)."""
    return run_together([(study, out)], executor, console, force_new_study, index)[0]


@dataclass
class _Started:
    """A study whose folder is locked and checked and whose base is measured."""

    study: Study
    out: Path
    runs: list[RunConfig]
    finished_before: int


def run_together(studies: list[tuple[Study, Path]], executor: ExecutorChoice | None = None,
                 console: Console | None = None, force_new_study: bool = False,
                 index: Path | None = None) -> list[StudyOutcome]:
    """Run studies, each into its own folder: measure each base, then train and measure the
    runs of every study (local workers take them from one queue, so that none idles between
    studies; under ``search: halving`` round by round, ``halving_rounds``); as soon as a
    study's runs have all ended, write its report (linking back to ``index``, the index of a
    multi-study run) and print its findings.

    Each OUT is locked for the whole time (a second ``run`` on it is a ``UserError`` naming
    this process), and a folder that holds another study is refused unless
    ``force_new_study``."""
    from learnforget.executors import RunJob, execute_jobs, executor_session
    from learnforget.halving_rounds import StudyRounds

    console = console or Console(stderr=True)
    with contextlib.ExitStack() as locks:
        started = [_start_study(study, out, console, force_new_study, locks)
                   for study, out in studies]
        by_out = {s.out: s for s in started}
        rounds = {s.out: StudyRounds(s.study, s.out, s.runs) for s in started}
        outcomes: dict[Path, StudyOutcome] = {}
        report_errors: list[Exception] = []
        training_began = time.time()

        def study_ended(out: Path, statuses: list[str]) -> None:
            ran = by_out[out]
            try:
                outcomes[out] = _end_study(ran, dict(zip([run.run_id for run in ran.runs],
                                                         statuses, strict=True)),
                                           time.time() - training_began, console, index)
            except Exception as exc:  # the other studies' runs go on; raised once they end
                report_errors.append(exc)

        def round_ended(out: Path, statuses: list[str]) -> None:
            search = rounds[out]
            try:
                for stopped in search.round_ended(statuses):
                    console.print(stopped.line(search.study.name), highlight=False,
                                  soft_wrap=True)
            except Exception as exc:  # its runs stay resumable at their rung
                search.end()
                report_errors.append(exc)
                return
            if search.ended:
                study_ended(out, search.final_statuses())

        # grid: one round; halving: one round per rung, then the last budget
        with executor_session(executor):
            while jobs := [RunJob(s.study, run, s.out, s.stop_after())
                           for s in rounds.values() if not s.ended for run in s.current]:
                execute_jobs(jobs, console, executor, round_ended)
        if report_errors:
            raise report_errors[0]
        return [outcomes.get(s.out) or _end_study(s, {}, 0.0, console, index) for s in started]


def _start_study(study: Study, out: Path, console: Console, force_new_study: bool,
                 locks: contextlib.ExitStack) -> _Started:
    """Lock OUT (until ``locks`` closes), check that it holds this study, record the study,
    measure its base and prepare the training data of its unfinished runs."""
    from learnforget.base import load_tokenizer, resolve_source
    from learnforget.data.prepare import prepare_training_data
    from learnforget.measure.base_measurement import measure_base
    from learnforget.outdir import check_same_study, locked
    from learnforget.plan import expand
    from learnforget.terminal_progress import scoring_progress

    runs = expand(study)
    out.mkdir(parents=True, exist_ok=True)
    locks.enter_context(locked(out))
    changed = check_same_study(out, study.model_dump(mode="json"), force_new_study)
    # the search (grid / halving) decides how far runs train, not which runs there are
    fields = sorted({name.split(".")[0] for name in changed} - {"search", "eta"})
    if fields:
        console.print(f"[dim]the study changed since {out} was last run ({', '.join(fields)})"
                      ": runs of its earlier definition stay in the store[/dim]")
    (out / "study.json").write_text(study.model_dump_json(indent=2))
    console.print(f"study [bold]{study.name}[/bold]: {len(runs)} runs → {out}")
    say = lambda m: console.print(f"[dim]{m}[/dim]")  # noqa: E731
    with scoring_progress(console, "base: ") as shown:
        measure_base(study, out, log=say, progress=shown)
    done = _done(out)
    prepare_training_data([run for run in runs if run.run_id not in done],
                          lambda: load_tokenizer(resolve_source(study.base, say)), log=say)
    return _Started(study, out, runs, len(done & {run.run_id for run in runs}))


def _end_study(started: _Started, statuses: dict[str, str], seconds: float,
               console: Console, index: Path | None) -> StudyOutcome:
    """Say how the study's runs ended (``seconds`` after the first run of the queue began),
    write its report and print its findings (while the runs of the studies after it may still
    train)."""
    study, out, runs = started.study, started.out, started.runs
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    if runs and started.finished_before == len(runs):
        console.print(f"nothing to do: all {len(runs)} runs of {study.name} were already "
                      "finished (the report is rewritten from the store)")
    else:
        console.print(f"{study.name} runs: {summary or 'none'} ({seconds:.0f} s since the "
                      "first run started)")
    outcome = StudyOutcome(out, statuses, failed_runs(out, statuses))
    _, judgement = write_study_report(out, index)
    for line in judgement.findings().lines():
        console.print(line, highlight=False, soft_wrap=True)
    return outcome


def _done(out: Path) -> set[str]:
    """The ids of the runs OUT's store holds as finished or diverged."""
    from learnforget.store import Store

    path = out / "results.sqlite"
    if not path.is_file():
        return set()
    store = Store(path)
    try:
        return {r["run_id"] for r in store.runs() if r["status"] in ("finished", "diverged")}
    finally:
        store.close()


def failed_runs(out: Path, statuses: dict[str, str]) -> list[FailedRun]:
    """The runs among ``statuses`` that failed, with their errors from OUT's store."""
    from learnforget.runfailure import ERROR_FILE
    from learnforget.store import Store

    failed_ids = [run_id for run_id, status in statuses.items() if status == "failed"]
    if not failed_ids:
        return []
    store = Store(out / "results.sqlite")
    try:
        known = {r["run_id"]: r for r in store.runs()}
    finally:
        store.close()
    failed = []
    for run_id in failed_ids:
        row = known.get(run_id, {})
        error = (row.get("error") or "no error was recorded").strip().splitlines()
        file = out / "runs" / run_id / ERROR_FILE
        failed.append(FailedRun(
            run_id=run_id, label=row.get("label", run_id),
            lr=float(row.get("config", {}).get("method", {}).get("lr", float("nan"))),
            error=error[-1] if error else "", error_file=file if file.exists() else None))
    return failed


def failure_summary(outcomes: list[StudyOutcome]) -> list[str]:
    """Lines naming each failed run (label, LR, the error's last line, where the whole error
    is); empty when no run failed."""
    lines = []
    for outcome in outcomes:
        for run in outcome.failed:
            where = run.error_file or f"{outcome.out / 'results.sqlite'} (runs.error)"
            lines.append(f"{run.label} lr {run.lr:g} (run {run.run_id}): {run.error} — "
                         f"full error: {where}")
    return lines


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C inside the block (a ``KeyboardInterrupt``), so that a
    stopped study cleans up the same way however it was stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def studies_of_run(root: Path) -> list[Path]:
    """The study folders of a multi-study run (each with a store and its ``study.json``), in
    name order; none when ``root`` is a study's own folder or not a folder."""
    if not root.is_dir() or (root / "results.sqlite").exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "results.sqlite").is_file()
                  and (p / "study.json").is_file())


def rewrite_reports(out: Path) -> list[Path]:
    """Rewrite reports from the stores, returning the pages written: OUT's own when OUT is a
    study's folder, every study's when OUT is a multi-study run's folder; and the run's index
    page (cross-study claims and recommendations) in both cases when OUT belongs to such a run,
    so the index never lags its studies' stores. A store that cannot be read stops everything
    before a page is written."""
    from learnforget.outdir import check_store_for_report

    studies = studies_of_run(out)
    if studies:
        for study in studies:
            check_store_for_report(study)
        return ([write_study_report(study)[0] for study in studies]
                + [write_run_index(out, studies)])
    check_store_for_report(out)
    pages = [write_study_report(out)[0]]
    siblings = studies_of_run(out.parent)
    if (out.parent / "index.html").is_file() and out.resolve() in {s.resolve() for s in siblings}:
        for study in siblings:
            check_store_for_report(study)
        pages.append(write_run_index(out.parent, siblings))
    return pages


def write_study_report(out: Path, index: Path | None = None) -> tuple[Path, StudyJudgement]:
    """Judge the study in OUT from its store, write ``OUT/claims.json`` and its report (linking
    back to ``index``, the index of a multi-study run); returns the report page and the
    judgement."""
    from learnforget.analysis.judge import judge_study, write_claims_json
    from learnforget.report.build import build_report

    judgement = judge_study(out)
    write_claims_json(judgement)
    return build_report(judgement, index=index), judgement


def write_run_index(root: Path, outs: list[Path]) -> Path:
    """Judge what needs the studies of a multi-study run together and write its index page
    ``root/index.html``; returns its path."""
    from learnforget.analysis.judge import judge_run
    from learnforget.report.index import write_index

    return write_index(root, outs, judge_run(outs))
