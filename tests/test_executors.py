"""The executors: Ray trains and measures a micro study exactly as the local process pool does,
its results store staying one SQLite file written by one actor; local workers take the runs of
several studies from one queue, each into its own study's store."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import micro_study, stored_numbers

from learnforget.errors import UserError
from learnforget.executors import ExecutorChoice
from learnforget.pipeline import run_study, run_together
from learnforget.plan import expand
from learnforget.store import Store
from learnforget.study import parse_study

MICRO = micro_study(name="micro-executors", workers=2)  # a full-FT and a LoRA run


@pytest.mark.slow  # starting Ray takes most of a minute on 2 cores
def test_ray_executor_matches_the_local_one(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="needs pip install 'learnforget[ray]'")
    study = parse_study(MICRO)
    run_study(study, tmp_path / "local", ExecutorChoice("local"))
    run_study(study, tmp_path / "ray", ExecutorChoice("ray"))
    local, ray = stored_numbers(tmp_path / "local"), stored_numbers(tmp_path / "ray")
    assert local.keys() == ray.keys()
    assert {key[0] for key in local} == {"base", "full", "lora-r4-all"}
    for key, value in local.items():
        assert ray[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    store = Store(tmp_path / "ray" / "results.sqlite")
    assert {r["label"]: r["status"] for r in store.runs()} == {
        "base": "finished", "full": "finished", "lora-r4-all": "finished"}
    assert [c["step"] for c in store.checkpoints(store.runs()[1]["run_id"])] == [3, 6]
    store.close()
    assert (tmp_path / "ray" / "report" / "index.html").exists()


def test_two_studies_share_one_queue_and_each_run_lands_in_its_own_store(tmp_path: Path) -> None:
    """Two studies whose runs have the same ids (the same configs under other names): one
    queue of local workers trains all four runs, each into its own study's store, and both
    stores hold the same numbers."""
    first = parse_study(micro_study(name="first", workers=2))
    second = parse_study(micro_study(name="second", workers=2))
    outcomes = run_together([(first, tmp_path / "first"), (second, tmp_path / "second")])
    assert [o.statuses for o in outcomes] == [{run.run_id: "finished" for run in expand(first)}] * 2
    assert stored_numbers(tmp_path / "first") == stored_numbers(tmp_path / "second")


def test_a_failing_report_lets_the_other_studies_runs_finish(tmp_path: Path,
                                                             monkeypatch) -> None:
    """When writing one study's report fails while the next study's runs train, those runs go
    on to the end and get their report; the error is raised once the queue is done."""
    import learnforget.report.build as report_build

    write_report = report_build.build_report

    def failing_for_first(judgement, **options):
        if judgement.out.name == "first":
            raise OSError("no space left on device")
        return write_report(judgement, **options)

    monkeypatch.setattr(report_build, "build_report", failing_for_first)
    first = parse_study(micro_study(name="first", workers=2))
    second = parse_study(micro_study(name="second", workers=2))
    with pytest.raises(OSError, match="no space left"):
        run_together([(first, tmp_path / "first"), (second, tmp_path / "second")])
    store = Store(tmp_path / "second" / "results.sqlite")
    assert {r["run_id"]: r["status"] for r in store.runs() if r["method"] != "base"} == {
        run.run_id: "finished" for run in expand(second)}
    store.close()
    assert (tmp_path / "second" / "report" / "index.html").exists()
    assert stored_numbers(tmp_path / "first") == stored_numbers(tmp_path / "second")


@pytest.mark.parametrize(("choice", "message"), [
    ({"name": "slurm"}, "--executor must be one of local, ray"),
    ({"name": "local", "ray_address": "auto"}, "apply to --executor ray only"),
    ({"name": "ray", "gpus_per_run": -1}, "--gpus-per-run must be ≥ 0"),
])
def test_bad_executor_options_are_named(choice: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ExecutorChoice(**choice)


def test_a_worker_whose_main_process_is_gone_ends_quietly() -> None:
    """A worker that finds its pipe to the main process closed (the main process was killed)
    ends at once with status 1: no traceback, nothing recorded."""
    import subprocess
    import sys

    code = ("from multiprocessing import Pipe\n"
            "from learnforget.executors.local import _sender\n"
            "reader, writer = Pipe(duplex=False)\n"
            "reader.close()\n"
            "_sender(writer)({'log': 'still here'})\n"
            "print('went on')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
