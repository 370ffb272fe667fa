"""A run that fails on a full disk says so, and says truly whether its failure was recorded."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from conftest import micro_study

from learnforget.measure.base_measurement import measure_base
from learnforget.plan import expand
from learnforget.runner import execute_run
from learnforget.store import Store
from learnforget.study import parse_study

STUDY = micro_study(name="full-disk", methods=[{"kind": "lora", "r": [4], "lr": [5e-3]}],
                    evaluation={"learning": ["code_bpb"], "forgetting": ["source_bpb"],
                                "limit": 4, "spectrum": False})


def _prepared(tmp_path: Path):
    study = parse_study(STUDY)
    measure_base(study, tmp_path, log=lambda m: None)
    return study, expand(study)[0]


def test_torchs_short_write_on_a_full_disk_is_named_as_a_full_disk(tmp_path: Path,
                                                                   monkeypatch) -> None:
    # torch.save on a full disk raises "RuntimeError: [enforce fail …] . unexpected pos …";
    # the disk's fullness (a condition that needs privileges to create) is the probe's answer
    study, run = _prepared(tmp_path)

    def short_write(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 576 vs 470")

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr("learnforget.train.save_checkpoint", short_write)
    monkeypatch.setattr("learnforget.runfailure.shutil.disk_usage",
                        lambda path: usage._replace(free=4096))
    logged: list[str] = []
    assert execute_run(study, run, tmp_path, log=logged.append) == "failed"
    assert any(f"the disk holding {tmp_path} is full" in m and "unexpected pos" in m
               for m in logged), logged


def test_a_failure_recorded_in_the_store_is_not_called_unrecorded(tmp_path: Path,
                                                                  monkeypatch) -> None:
    # the store's row is written; only run.json beside it fails (the disk filled up between)
    study, run = _prepared(tmp_path)
    import learnforget.runfiles as runfiles

    original = runfiles.write_run_file

    def full_on_failure(folder: Path, record: dict) -> Path:
        if record.get("status") == "failed":
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(folder, record)

    def broken(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "checkpoint")

    monkeypatch.setattr(runfiles, "write_run_file", full_on_failure)
    monkeypatch.setattr("learnforget.train.save_checkpoint", broken)
    logged: list[str] = []
    execute_run(study, run, tmp_path, log=logged.append)
    store = Store(tmp_path / "results.sqlite")
    assert store.run_status(run.run_id) == "failed"
    store.close()
    assert any("is recorded in the store, but its run.json could not be updated" in m
               for m in logged), logged
    assert not any("could not record the failure" in m for m in logged)
