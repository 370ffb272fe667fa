"""A finished grid store replayed under the successive-halving rule, exactly: rung by rung, each
decision made on what that rung had measured (``learnforget.analysis.halving.rung_decisions`` on
the frame a live halving run would hold at the rung), a stopped run keeping its checkpoints up
to its rung. The result is a truncated copy of the study folder (the later checkpoints'
measurements, checkpoint rows and artifacts removed, the stopped runs' status ``stopped
early``) that the normal judging path reads (``learnforget.analysis.judge.judge_study``), so
that halving's best LRs and verdicts come from the same code as a live run's.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from learnforget.analysis.frame import Frame, load_frame
from learnforget.analysis.halving import (
    DIVERGED,
    ETA,
    STOPPED_EARLY,
    RungDecision,
    rung_decisions,
    rungs,
)
from learnforget.store import Store

COPIED = ("results.sqlite", "results.sqlite-wal", "study.json")  # what judging reads


@dataclass(frozen=True)
class RunStop:
    """One run under the replay: the step it stopped at (None: it went to its last checkpoint)
    and the tokens it trained under halving and under the grid."""

    run_id: str
    label: str
    lr: float
    stop_step: int | None
    tokens: int
    grid_tokens: int


@dataclass(frozen=True)
class Replay:
    """A grid store replayed under halving: the truncated copy (``out``), η, each run's stop and
    every rung's decisions."""

    out: Path
    eta: int
    runs: list[RunStop]
    decisions: dict[int, list[RungDecision]]

    @property
    def tokens(self) -> int:
        """Training tokens under halving (each run to its stop or its last checkpoint)."""
        return sum(run.tokens for run in self.runs)

    @property
    def grid_tokens(self) -> int:
        """Training tokens of the grid (each run to its last checkpoint)."""
        return sum(run.grid_tokens for run in self.runs)

    @property
    def share(self) -> float:
        """Halving's training tokens over the grid's."""
        return self.tokens / self.grid_tokens if self.grid_tokens else float("nan")


def copy_study(out: Path, into: Path) -> Path:
    """Copy what judging reads of the study folder ``out`` (its store and study.json) into
    ``into``; the source is never opened for writing."""
    into.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (Path(out) / name).is_file():
            shutil.copy2(Path(out) / name, into / name)
    return into


def _record_search(study_file: Path, eta: int) -> None:
    """The copy's study.json says the search it now holds: halving with ``eta``."""
    if not study_file.is_file():
        return
    study = json.loads(study_file.read_text())
    if isinstance(study, dict):
        study.update(search="halving", eta=eta)
        study_file.write_text(json.dumps(study, indent=2))


def replay(out: Path, eta: int = ETA, into: Path | None = None) -> Replay:
    """Replay the grid study in ``out`` under the halving rule with ``eta`` (module docstring);
    the truncated copy is written to ``into`` (a new temporary folder when None)."""
    target = copy_study(Path(out), Path(into) if into else Path(tempfile.mkdtemp(
        prefix=f"halving-{Path(out).name}-")))
    grid = load_frame(target)
    steps = sorted(set(grid.checkpoints["step"].astype(int)))
    stops: dict[str, int] = {}
    decisions: dict[int, list[RungDecision]] = {}
    for rung in rungs(steps):
        decisions[rung] = rung_decisions(frame_at_rung(grid, rung, stops), rung, eta)
        for decision in decisions[rung]:
            if decision.goes_on or decision.reason == DIVERGED:
                continue
            for run_id in decision.run_ids:
                stops.setdefault(run_id, rung)
    _truncate(target / "results.sqlite", stops)
    _record_search(target / "study.json", eta)
    runs = []
    for run in grid.runs.itertuples():
        rows = grid.checkpoints[grid.checkpoints["run_id"] == run.run_id]
        grid_tokens = int(rows["tokens"].max()) if len(rows) else 0
        stop = stops.get(run.run_id)
        kept = rows if stop is None else rows[rows["step"].astype(int) <= stop]
        tokens = int(kept["tokens"].max()) if len(kept) else 0
        runs.append(RunStop(str(run.run_id), str(run.label), float(run.lr), stop, tokens,
                            grid_tokens))
    return Replay(target, eta, runs, decisions)


def frame_at_rung(grid: Frame, rung: int, stops: dict[str, int]) -> Frame:
    """The frame a live halving run would hold when deciding at ``rung``: every run's
    checkpoints up to the rung (a run stopped earlier: up to its stop, status ``stopped
    early``); a run that diverged after the rung still running."""
    cp, runs = grid.checkpoints, grid.runs.copy()
    limit = cp["run_id"].map(stops).fillna(rung).astype(int)
    cp = cp[cp["step"].astype(int) <= limit].copy()
    last_step = grid.checkpoints.groupby("run_id")["step"].max()
    reached = runs["run_id"].map(last_step).fillna(-1).astype(int) >= rung
    runs.loc[runs["status"].eq(DIVERGED) & reached, "status"] = "running"
    runs.loc[runs["run_id"].isin(list(stops)), "status"] = STOPPED_EARLY
    status = runs.set_index("run_id")["status"]
    cp["status"] = cp["run_id"].map(status)
    return dataclasses.replace(grid, checkpoints=cp.reset_index(drop=True),
                               runs=runs.reset_index(drop=True), derived={})


def _truncate(db: Path, stops: dict[str, int]) -> None:
    """Remove each stopped run's checkpoints, measurements and artifacts after its stop and set
    its status to ``stopped early``."""
    store = Store(db)
    try:
        for run_id in stops:
            store.set_status(run_id, STOPPED_EARLY)
    finally:
        store.close()
    with sqlite3.connect(db) as connection:
        for run_id, step in stops.items():
            for table in ("checkpoints", "measurements", "artifacts"):
                connection.execute(f"DELETE FROM {table} WHERE run_id=? AND step>?",
                                   (run_id, step))
    connection.close()


def stop_table(result: Replay) -> pd.DataFrame:
    """One row per run: label, LR, stop step (None: not stopped) and tokens under each search."""
    return pd.DataFrame([dataclasses.asdict(run) for run in result.runs])
