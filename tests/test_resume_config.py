"""A checkpoint whose JSON config is damaged is not resumed from as if nothing were wrong: the
run says so and restarts from an earlier checkpoint (or the start), rewriting the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import micro_study

from learnforget.measure.base_measurement import measure_base
from learnforget.plan import expand
from learnforget.runner import execute_run
from learnforget.store import Store
from learnforget.study import parse_study

STUDY = micro_study(
    name="resume-config", budgets={"steps": [4, 8]},
    methods=[{"kind": "full", "lr": [1e-3]}, {"kind": "lora", "r": [4], "lr": [5e-3]}],
    evaluation={"learning": ["code_bpb"], "forgetting": ["source_bpb"], "limit": 4,
                "spectrum": False})


@pytest.mark.parametrize("kind, config", [("full", "config.json"),
                                          ("lora", "adapter_config.json")])
def test_a_damaged_checkpoint_config_is_reported_and_not_resumed_from(
        tmp_path: Path, kind: str, config: str) -> None:
    study = parse_study(STUDY)
    measure_base(study, tmp_path, log=lambda m: None)
    run = next(r for r in expand(study) if r.method.kind == kind)
    assert execute_run(study, run, tmp_path, log=lambda m: None) == "finished"
    store = Store(tmp_path / "results.sqlite")
    store.set_status(run.run_id, "pending")  # as if it had been stopped after step 8
    store.close()
    folder = tmp_path / "runs" / run.run_id / "checkpoint-8"
    (folder / config).write_text("garbage{")
    logged: list[str] = []
    assert execute_run(study, run, tmp_path, log=logged.append) == "finished"
    assert any(str(folder) in m and "unreadable" in m and config in m for m in logged), logged
    assert isinstance(json.loads((folder / config).read_text()), dict)  # written again
