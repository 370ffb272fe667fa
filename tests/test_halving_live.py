"""Successive halving on real micro runs (``search: halving``): the rule's losers stop at the
first rung as ``stopped early`` with their checkpoints up to there, the survivors' numbers are
the grid's at every checkpoint, a rerun under halving trains nothing and a rerun under grid
completes the stopped runs to the grid's store; the settings leave the run ids alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import MACHINE_METRICS, micro_study

from learnforget.analysis.frame import load_frame
from learnforget.analysis.halving import rung_decisions
from learnforget.analysis.halving_replay import replay
from learnforget.checkpoint_files import STATE_FILE
from learnforget.errors import UserError
from learnforget.executors import ExecutorChoice
from learnforget.measure.base_measurement import measure_base
from learnforget.pipeline import run_study
from learnforget.plan import expand
from learnforget.runfiles import read_run_file
from learnforget.runner import PAUSED, execute_run
from learnforget.store import STOPPED_EARLY, Store
from learnforget.study import parse_study

# LRs far apart, so that the rule stops the weak LR of each method at the first rung (step 3)
SWEEP = micro_study(
    name="micro-halving", workers=2, eta=2,
    methods=[{"kind": "full", "lr": [1e-6, 1e-3]},
             {"kind": "lora", "lr": [1e-5, 5e-3], "r": [4], "targets": ["all"]}],
    budgets={"steps": [3, 6, 9]})
GRID = parse_study(SWEEP)
HALVING = parse_study({**SWEEP, "search": "halving"})


def numbers(out: Path) -> dict[tuple, float]:
    """{(run id, step, task, metric): value} of OUT's store, without the machine readings."""
    store = Store(out / "results.sqlite")
    try:
        return {(m["run_id"], m["step"], m["task"], m["metric"]): m["value"]
                for m in store.measurements() if m["metric"] not in MACHINE_METRICS}
    finally:
        store.close()


def statuses(out: Path) -> dict[str, str]:
    """{run id: status} of the study's runs (the base's row left out)."""
    store = Store(out / "results.sqlite")
    try:
        return {r["run_id"]: r["status"] for r in store.runs() if r["label"] != "base"}
    finally:
        store.close()


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> tuple[Path, Path]:
    """The sweep trained under grid and under halving, each in its own folder."""
    root = tmp_path_factory.mktemp("halving")
    run_study(GRID, root / "grid")
    run_study(HALVING, root / "halving")
    return root / "grid", root / "halving"


def test_the_rule_stops_its_losers_at_the_first_rung(studies) -> None:
    grid, halving = studies
    replayed = rung_decisions(load_frame(grid), 3, eta=2)  # the rule on the grid's checkpoints
    expected = {run_id for d in replayed if not d.goes_on for run_id in d.run_ids}
    assert expected, "the sweep should give the rule a run to stop"
    ran = statuses(halving)
    assert {run_id for run_id, s in ran.items() if s == STOPPED_EARLY} == expected
    assert {s for run_id, s in ran.items() if run_id not in expected} == {"finished"}
    store = Store(halving / "results.sqlite")
    for run_id in expected:
        assert store.checkpoint_steps(run_id) == [3]
        assert sorted(p.name for p in (halving / "runs" / run_id).glob("checkpoint-*")) == [
            "checkpoint-3"]
        assert (halving / "runs" / run_id / "checkpoint-3" / STATE_FILE).exists()  # resumable
        assert read_run_file(halving / "runs" / run_id)["status"] == STOPPED_EARLY
    store.close()


def test_a_replay_of_the_grid_stops_the_runs_the_live_search_stopped(studies, tmp_path) -> None:
    grid, halving = studies
    replayed = replay(grid, eta=2, into=tmp_path / "replay")
    stops = {run.run_id: run.stop_step for run in replayed.runs}
    store = Store(halving / "results.sqlite")
    live = {run_id: (store.checkpoint_steps(run_id)[-1] if status == STOPPED_EARLY else None)
            for run_id, status in statuses(halving).items()}
    store.close()
    assert stops == live


def test_every_halving_number_is_the_grids(studies) -> None:
    grid, halving = studies
    on_grid, halved = numbers(grid), numbers(halving)
    assert halved.keys() < on_grid.keys()  # the stopped runs lack their later checkpoints
    assert {key: on_grid[key] for key in halved} == halved


def test_a_rerun_under_halving_trains_nothing(studies, tmp_path) -> None:
    _, halving = studies
    again = tmp_path / "again"
    shutil.copytree(halving, again)
    run_study(HALVING, again)
    assert statuses(again) == statuses(halving)
    assert numbers(again) == numbers(halving)


def test_a_rerun_under_grid_completes_the_stopped_runs(studies, tmp_path) -> None:
    grid, halving = studies
    completed = tmp_path / "completed"
    shutil.copytree(halving, completed)
    outcome = run_study(GRID, completed)
    assert set(outcome.statuses.values()) == {"finished"}
    assert set(statuses(completed).values()) == {"finished"}
    assert numbers(completed) == numbers(grid)


def test_a_run_stops_after_a_given_checkpoint_resumable_there(tmp_path) -> None:
    study = parse_study(micro_study(name="micro-stop"))
    run = expand(study)[0]
    measure_base(study, tmp_path, log=lambda m: None)
    assert execute_run(study, run, tmp_path, log=lambda m: None, stop_after=1) == PAUSED
    store = Store(tmp_path / "results.sqlite")
    assert store.checkpoint_steps(run.run_id) == [3]
    assert store.run_status(run.run_id) == "pending"
    store.close()
    assert (tmp_path / "runs" / run.run_id / "checkpoint-3" / STATE_FILE).exists()
    assert execute_run(study, run, tmp_path, log=lambda m: None, stop_after=1) == PAUSED
    assert execute_run(study, run, tmp_path, log=lambda m: None) == "finished"


def test_search_and_eta_leave_the_run_ids_alone() -> None:
    ids = [run.run_id for run in expand(GRID)]
    assert [run.run_id for run in expand(HALVING)] == ids
    eta_5 = parse_study({**SWEEP, "search": "halving", "eta": 5})
    assert [run.run_id for run in expand(eta_5)] == ids
    plain = parse_study(micro_study())  # the study every training test runs, ids from before
    assert [run.run_id for run in expand(plain)] == [
        run.run_id for run in expand(parse_study(micro_study(search="grid", eta=3)))]


@pytest.mark.parametrize(("change", "message"), [
    ({"search": "asha"}, "search: Input should be 'grid' or 'halving' (got 'asha')"),
    ({"eta": 1}, "eta: Input should be greater than or equal to 2 (got 1)"),
    ({"eta": 2.5}, "eta: Input should be a valid integer"),
    ({"eta": "three"}, "eta: Input should be a valid integer"),
])
def test_bad_search_settings_are_refused_naming_field_and_value(change, message) -> None:
    with pytest.raises(UserError, match="not a valid study") as caught:
        parse_study(micro_study(**change))
    assert message in str(caught.value)


@pytest.mark.slow  # starting Ray takes most of a minute on 2 cores
def test_halving_on_ray_matches_the_local_executor(studies, tmp_path) -> None:
    pytest.importorskip("ray", reason="needs pip install 'learnforget[ray]'")
    _, halving = studies
    run_study(HALVING, tmp_path / "ray", ExecutorChoice("ray"))
    assert statuses(tmp_path / "ray") == statuses(halving)
    local, ray = numbers(halving), numbers(tmp_path / "ray")
    assert local.keys() == ray.keys()
    for key, value in local.items():
        assert ray[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_plan_states_the_grids_tokens_and_halvings_range() -> None:
    from learnforget.planinfo import search_cost, search_cost_lines

    study = parse_study({**SWEEP, "methods": [{"kind": "full", "lr": [1e-5, 1e-4, 1e-3]}],
                         "training": {"batch_size": 8, "seq_len": 64, "seeds": [0, 1]},
                         "budgets": {"tokens": [1024, 3072, 9216]}, "eta": 3})
    cost = search_cost(expand(study), study.eta)
    assert cost.grid == 6 * 9216  # 3 LRs × 2 seeds, each to the last budget
    # 3 LRs to 1024, then ⌈3/3⌉ = 1 to 3072 and on to 9216; 2 seeds each
    assert cost.halving_least == 2 * (3 * 1024 + 1 * (3072 - 1024) + 1 * (9216 - 3072))
    assert cost.halving_most == cost.grid
    grid_line, halving_line = search_cost_lines(cost, "grid", 3)
    assert grid_line == "training in all, grid: 55,296 tokens"
    assert halving_line.startswith("search: halving (eta 3) would train between 22,528 tokens "
                                   "(41% of the grid")
