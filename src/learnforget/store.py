"""The results store: one SQLite file, ``OUT/results.sqlite``, holding every number.

Tables: ``runs`` (one row per run, its config and status), ``checkpoints`` (one row per saved
and measured checkpoint), ``measurements`` (run, step, tokens, task, metric, value) and
``artifacts`` (JSON blobs: ΔW spectra, generated samples). A checkpoint's rows are written in
one transaction, and ``(run_id, step, task, metric)`` is unique, so a resumed study never
duplicates a row. Several processes may write at once (WAL mode, busy timeout).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from learnforget.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    method TEXT NOT NULL,
    label TEXT NOT NULL,
    config_json TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    path TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS measurements (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    task TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, step, task, metric)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (run_id, step, kind)
);
"""

STOPPED_EARLY = "stopped early"
"""A run the successive-halving rule stopped at a rung (``search: halving``): its checkpoints up
to there are kept, and a rerun under ``search: grid`` resumes it from the last one."""
RUN_STATUSES = ("pending", "running", "finished", "diverged", "failed", STOPPED_EARLY)
ENDED_STATUSES = ("finished", "diverged", "failed", STOPPED_EARLY)
"""The statuses a run ends in (``set_status`` stamps ``finished_at``)."""


@dataclass(frozen=True)
class Measurement:
    """One number: ``task``/``metric`` of run ``run_id`` after ``step`` steps / ``tokens``."""

    task: str
    metric: str
    value: float | None


def _write_rows(db: sqlite3.Connection, run_id: str, rows: Iterable[tuple[int, int, Measurement]],
                artifacts: dict[tuple[int, str], object]) -> None:
    """Insert (or replace) measurement rows (step, tokens, Measurement) and artifacts
    {(step, kind): payload} of ``run_id`` inside the caller's transaction."""
    db.executemany(
        "INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?)",
        [(run_id, s, t, m.task, m.metric, _finite(m.value)) for s, t, m in rows],
    )
    db.executemany(
        "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?)",
        [(run_id, step, kind, json.dumps(payload)) for (step, kind), payload in artifacts.items()],
    )


class Store:
    """A thin, explicit wrapper over the SQLite file (no ORM: four tables, a dozen queries)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError(f"{self.path} is a folder, not a results file: move it away "
                            "(the next run recreates the store)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=120, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._check_integrity()
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "_db"):
                self._db.close()
            raise UserError(
                f"{self.path} is not a readable results store ({exc}): it is corrupt or "
                "truncated; move it away and run the study again (runs are trained afresh)"
            ) from None

    def _check_integrity(self) -> None:
        """``PRAGMA quick_check`` (reads every page: a truncated or damaged file fails here,
        not in the middle of a study); a ``sqlite3.DatabaseError`` when it fails."""
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(problems[0])

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside happen atomically (BEGIN IMMEDIATE … COMMIT, or ROLLBACK)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- runs -------------------------------------------------------------------------------
    def ensure_run(self, run_id: str, study: str, method: str, label: str, config: dict) -> None:
        """Register a run as ``pending`` unless it is already known."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (run_id, study, method, label, config_json, status)"
                " VALUES (?, ?, ?, ?, ?, 'pending')",
                (run_id, study, method, label, json.dumps(config, sort_keys=True)),
            )

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        """Move a run to ``status``; ``running`` stamps started_at, an end state finished_at."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        now = time.time()
        with self.transaction() as db:
            if status == "running":
                db.execute(
                    "UPDATE runs SET status=?, started_at=COALESCE(started_at, ?), error=NULL"
                    " WHERE run_id=?",
                    (status, now, run_id),
                )
            else:
                finished = now if status in ENDED_STATUSES else None
                db.execute(
                    "UPDATE runs SET status=?, finished_at=?, error=? WHERE run_id=?",
                    (status, finished, error, run_id),
                )

    def run_status(self, run_id: str) -> str | None:
        """The run's status, or None when it is not in the store."""
        row = self._db.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return row["status"] if row else None

    def runs(self) -> list[dict]:
        """Every run as a dict (config parsed); a config that is not a JSON object is a
        ``UserError`` naming the run (a damaged store)."""
        rows = self._db.execute("SELECT * FROM runs ORDER BY rowid").fetchall()
        out = []
        for r in rows:
            config = _decoded(r["config_json"])
            if not isinstance(config, dict):
                raise UserError(
                    f"{self.path}: the settings of run {r['run_id']} (runs.config_json) are not "
                    "a JSON object: the store is damaged; restore it from a copy, or run the "
                    "study into a new folder")
            out.append({**dict(r), "config": config})
        return out

    # --- checkpoints and measurements -------------------------------------------------------
    def record_checkpoint(
        self,
        run_id: str,
        step: int,
        tokens: int,
        path: str | None,
        rows: Iterable[tuple[int, int, Measurement]],
        artifacts: dict[str, object] | None = None,
    ) -> None:
        """Commit a checkpoint with its measurements (and the training rows that led to it)
        in one transaction. ``rows`` are (step, tokens, Measurement); re-recording replaces."""
        with self.transaction() as db:
            _write_rows(db, run_id, rows,
                        {(step, kind): payload for kind, payload in (artifacts or {}).items()})
            db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                (run_id, step, tokens, path, time.time()),
            )

    def checkpoint_steps(self, run_id: str) -> list[int]:
        """Steps of the checkpoints already committed for ``run_id``, ascending."""
        return [c["step"] for c in self.checkpoints(run_id)]

    def checkpoints(self, run_id: str) -> list[dict]:
        """The committed checkpoints of ``run_id`` (step, tokens, path), ascending."""
        rows = self._db.execute(
            "SELECT step, tokens, path FROM checkpoints WHERE run_id=? ORDER BY step", (run_id,)
        ).fetchall()
        return [dict(r) for r in rows]

    def add_measurements(self, run_id: str, rows: Iterable[tuple[int, int, Measurement]],
                         artifacts: dict[tuple[int, str], object] | None = None) -> None:
        """Add (or replace) rows of an existing checkpoint in one transaction."""
        with self.transaction() as db:
            _write_rows(db, run_id, rows, artifacts or {})

    def measurements(self, run_id: str | None = None) -> list[dict]:
        """Measurement rows (all, or one run's) as dicts, ordered by run, step, task, metric."""
        query = "SELECT * FROM measurements"
        args: tuple = ()
        if run_id is not None:
            query += " WHERE run_id=?"
            args = (run_id,)
        query += " ORDER BY run_id, step, task, metric"
        rows = [dict(r) for r in self._db.execute(query, args).fetchall()]
        bad = next((r for r in rows if r["value"] is not None
                    and not isinstance(r["value"], (int, float))), None)
        if bad is not None:
            raise UserError(
                f"{self.path}: measurement {bad['task']}/{bad['metric']} of run {bad['run_id']} "
                f"at step {bad['step']} holds {str(bad['value'])[:40]!r}, not a number: the store "
                "is damaged; restore it from a copy, or measure that run again")
        return rows

    def artifacts_with_prefix(self, prefix: str) -> list[dict]:
        """Artifacts whose kind starts with ``prefix`` (``items:`` gives every task's per-item
        values): dicts with run_id, step, kind and the parsed payload."""
        rows = self._db.execute(
            "SELECT run_id, step, kind, json FROM artifacts WHERE substr(kind, 1, ?) = ? "
            "ORDER BY run_id, step, kind", (len(prefix), prefix)
        ).fetchall()
        return [{"run_id": r["run_id"], "step": r["step"], "kind": r["kind"], "data": data}
                for r in rows if (data := self._artifact(r, r["kind"])) is not _DAMAGED]

    def artifacts(self, kind: str) -> list[dict]:
        """Artifacts of one kind: dicts with run_id, step and the parsed payload."""
        rows = self._db.execute(
            "SELECT run_id, step, json FROM artifacts WHERE kind=? ORDER BY run_id, step", (kind,)
        ).fetchall()
        return [{"run_id": r["run_id"], "step": r["step"], "data": data}
                for r in rows if (data := self._artifact(r, kind)) is not _DAMAGED]

    def _artifact(self, row: sqlite3.Row, kind: str) -> object:
        """An artifact's payload, or ``_DAMAGED`` (with a warning naming it) when it is not
        JSON: a damaged artifact is left out, and what reads it works without it."""
        data = _decoded(row["json"])
        if data is _DAMAGED:
            LOG.warning("%s: artifact %s of run %s at step %s is not JSON (the store is "
                        "damaged): left out", self.path, kind, row["run_id"], row["step"])
        return data


_DAMAGED = object()  # a stored JSON text that does not decode
LOG = logging.getLogger(__name__)


def _decoded(text: object) -> object:
    """``text`` decoded as JSON, or ``_DAMAGED``."""
    try:
        return json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _DAMAGED


def _finite(value: float | None) -> float | None:
    """NaN and ±inf are stored as NULL (SQLite has no NaN); the status says why."""
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None
