"""kill -9 in the middle of a study, run it again: it resumes from the last checkpoint, no row is
duplicated, and the numbers equal those of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from learnforget.measure.base_measurement import measure_base
from learnforget.plan import expand
from learnforget.runner import execute_run
from learnforget.store import Store
from learnforget.study import parse_study

STUDY = {
    "name": "resume",
    "base": "builtin:micro",
    "target": {"domain": "math", "regime": "ift"},
    "methods": [{"kind": "full", "lr": [1e-3]}],
    "training": {"batch_size": 8, "seq_len": 96},
    "budgets": {"steps": [4, 8, 12]},
    "evaluation": {"learning": ["math_bpb"], "forgetting": ["source_bpb"], "limit": 6},
}


def _committed_checkpoints(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute(
                "SELECT COUNT(*) FROM checkpoints WHERE run_id NOT LIKE 'base-%'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _cli(study_file: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "learnforget", "run", str(study_file), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )


def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "killed"
    db = out / "results.sqlite"

    process = _cli(study_file, out)
    deadline = time.time() + 240
    while _committed_checkpoints(db) < 1 and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the study ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    committed = _committed_checkpoints(db)
    assert 1 <= committed < 3

    resumed = _cli(study_file, out)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()[-2000:]

    # The same study, uninterrupted, in this process.
    study = parse_study(STUDY)
    (run,) = expand(study)
    clean = tmp_path / "clean"
    measure_base(study, clean, log=lambda m: None)
    assert execute_run(study, run, clean, log=lambda m: None) == "finished"

    killed_store, clean_store = Store(db), Store(clean / "results.sqlite")
    assert killed_store.run_status(run.run_id) == "finished"
    assert killed_store.checkpoint_steps(run.run_id) == [4, 8, 12]

    def evaluation_rows(store: Store) -> dict:
        return {(r["step"], r["task"], r["metric"]): r["value"]
                for r in store.measurements(run.run_id) if r["task"] not in ("train",)}

    killed_rows, clean_rows = evaluation_rows(killed_store), evaluation_rows(clean_store)
    assert killed_rows.keys() == clean_rows.keys()
    for key, value in clean_rows.items():
        assert abs(killed_rows[key] - value) < 1e-4, (key, killed_rows[key], value)
    # Training-loss rows: one per logged step, none duplicated.
    loss_steps = [r["step"] for r in killed_store.measurements(run.run_id)
                  if r["task"] == "train" and r["metric"] == "loss"]
    assert loss_steps == sorted(set(loss_steps)) == [4, 8, 10, 12]
