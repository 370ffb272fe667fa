"""benchmarks/gpu_check.sh, the GPU check in one call: its dry run on the CPU goes through every
check's code (slow: about 2.5 minutes on 2 cores), and each check's judgement is what its goals
say (fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

CHECKS = gpu_check.CHECKS


def _environment() -> dict[str, str]:
    """This interpreter, and this checkout's package first on the path."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHON": sys.executable,
            "PYTHONPATH": str(ROOT / "src") + (os.pathsep + path if path else "")}


def test_script_is_valid_bash_and_lists_pinned_wheels() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    listed = subprocess.run([str(SCRIPT), "--wheels"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "lm-eval==0.4.13" in listed
    assert all("==" in wheel for wheel in listed)
    assert not any(wheel.startswith(("torch==", "learnforget")) for wheel in listed)


def test_unknown_option_is_refused() -> None:
    done = subprocess.run([str(SCRIPT), "--fast"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option: --fast" in done.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is here")
def test_without_a_gpu_the_check_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    done = subprocess.run([str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          env=_environment())
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and "--dry-run" in done.stderr
    assert not list(tmp_path.glob("*.json"))


def _budgets(*options: str) -> dict[str, int]:
    lines = subprocess.run([str(SCRIPT), "--budgets", *options], capture_output=True, text=True,
                           check=True, env={**os.environ, "BUDGET_micro_study": ""}).stdout
    return {name: int(seconds) for name, seconds in (line.split() for line in lines.split("\n")
                                                     if line)}


def test_budgets_keep_the_whole_check_within_eight_minutes() -> None:
    budgets = _budgets()
    assert set(budgets) == {"prepare", *CHECKS, "total"}
    assert budgets["total"] == sum(v for k, v in budgets.items() if k != "total")
    assert budgets["total"] <= 8 * 60 - 15  # and the script's own seconds
    # the dry run's limits stay within the test's time
    assert _budgets("--dry-run")["total"] <= 580


def _train_results(ratio: float, loss_difference: float) -> dict:
    return {"methods": {"full": {"learnforget": {"final_loss": 2.0}, "ratio": ratio,
                                 "loss_difference": loss_difference}}}


def test_training_fails_below_the_goal_only_where_goals_are_judged() -> None:
    slow = gpu_check.judge_train(_train_results(1.1, 0.0), judge_goals=True)
    assert gpu_check.status_of(slow) == "FAIL"
    assert gpu_check.status_of(gpu_check.judge_train(_train_results(1.1, 0.0), False)) == "PASS"
    assert gpu_check.status_of(gpu_check.judge_train(_train_results(1.3, 0.0), True)) == "PASS"
    # losses that differ fail in every mode: the sides did not train alike
    assert gpu_check.status_of(gpu_check.judge_train(_train_results(1.3, 0.5), False)) == "FAIL"


def _choice_run(differing: int) -> dict:
    return {"tasks": {"source_cloze": {"items": 100, "differing_items": list(range(differing)),
                                       "max_ll_difference": 0.01,
                                       "threads": {1: {"ratio": 1.5}}}}}


def test_choice_agreement_is_judged_on_the_correctness_model_only() -> None:
    verdicts = gpu_check.judge_choice({"correctness": _choice_run(3),
                                       "speed": _choice_run(40)})
    assert [v["passed"] for v in verdicts] == [True, None]
    assert gpu_check.status_of(verdicts) == "PASS"
    assert gpu_check.status_of(gpu_check.judge_choice({"correctness": _choice_run(6),
                                                       "speed": _choice_run(0)})) == "FAIL"


def test_generation_agreement_and_memory_tolerance() -> None:
    run = {"tasks": {"math_em": {"prompts": 10, "differing": [0, 1, 2], "ratio": 1.2}}}
    assert gpu_check.status_of(gpu_check.judge_generation({"correctness": run})) == "FAIL"
    run["tasks"]["math_em"]["differing"] = [0]
    assert gpu_check.status_of(gpu_check.judge_generation({"correctness": run})) == "PASS"
    memory = {"runs": [{"method": "full", "recorded_mb": 900.0, "estimated_mb": 1000.0,
                        "difference": -0.1}]}
    assert gpu_check.status_of(gpu_check.judge_memory(memory, judge_goals=True)) == "PASS"
    memory["runs"][0]["difference"] = 0.15
    assert gpu_check.status_of(gpu_check.judge_memory(memory, judge_goals=True)) == "FAIL"
    assert gpu_check.status_of(gpu_check.judge_memory(memory, judge_goals=False)) == "PASS"


def test_a_study_with_an_unfinished_run_fails() -> None:
    results = {"exit_status": 0, "seconds": 5.0, "runs": {"a": "finished", "b": "failed"},
               "measurements": 10, "claims": True, "report": True}
    assert gpu_check.status_of(gpu_check.judge_study(results)) == "FAIL"
    results["runs"]["b"] = "finished"
    assert gpu_check.status_of(gpu_check.judge_study(results)) == "PASS"


def test_nothing_judged_is_not_a_pass() -> None:
    assert gpu_check.status_of([gpu_check._verdict("speed", None, "1.0×")]) == "FAIL"


@pytest.mark.slow
def test_dry_run_goes_through_every_check_on_the_cpu(tmp_path: Path) -> None:
    """The whole script on the CPU at toy sizes: every check passes and prints its line, one
    JSON per check; benchmarks/results is left alone. Slow (about 2.5 minutes on 2 cores)."""
    results = ROOT / "benchmarks" / "results"
    before = {p.name: p.stat().st_mtime for p in results.iterdir()}
    done = subprocess.run([str(SCRIPT), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=_environment(), timeout=580)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.split("== summary", 1)[1]
    for check in CHECKS:
        assert f"\n{check}: PASS" in summary, summary
        record = json.loads((tmp_path / f"{check}_dryrun.json").read_text())
        assert record["status"] == "PASS" and record["dry_run"] is True
        assert record["results"] and record["verdicts"]
    assert (tmp_path / "gpu_check_dryrun.txt").read_text().endswith(summary.split("\n", 1)[1])
    assert {p.name: p.stat().st_mtime for p in results.iterdir()} == before
