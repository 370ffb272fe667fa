"""The Ray executor trains and measures a micro study exactly as the local process pool does,
and its results store stays one SQLite file written by one actor."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import micro_study, stored_numbers

from learnforget.errors import UserError
from learnforget.executors import ExecutorChoice
from learnforget.pipeline import run_study
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
