"""Score a model on a list of registry tasks: one dispatch from task kind to scoring primitive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from learnforget.measure.scoring_progress import ScoringCallback, ScoringProgress, batch_reporting
from learnforget.measure.tasks import Task, get_task, load_items
from learnforget.measure.uncertainty import ItemValues, mean_with_stderr
from learnforget.study import TargetSpec


@dataclass(frozen=True)
class TaskScore:
    """A task's scores (each metric with its ``_stderr``) and the per-item values behind them
    (``uncertainty.ItemValues``)."""

    scores: dict[str, float]
    per_item: ItemValues


class Evaluation(NamedTuple):
    """What ``evaluate`` returns: scores {task: {metric: value}}, item counts {task: n} and
    per-item values {task: ItemValues}."""

    results: dict[str, dict[str, float]]
    counts: dict[str, int]
    per_item: dict[str, ItemValues]


def _score_partial_choice(model, tokenizer, items: list, batch_size: int) -> TaskScore:
    """WinoGrande-style items: each option completes a different context, the continuation is
    shared; the option whose context gives the continuation the highest likelihood wins. An
    item's requests run the sentence up to the blank once (``shared_context``)."""
    from learnforget.measure.benchmarks import winogrande_requests
    from learnforget.measure.multiple_choice import grouped_requests, request_loglikelihoods

    requests, groups = grouped_requests([winogrande_requests(item) for item in items])
    scores = request_loglikelihoods(model, tokenizer, requests, groups, batch_size)
    correct = []
    for item, group in zip(items, groups, strict=True):
        lls = [scores[i][0] for i in group]
        correct.append(float(max(range(len(group)), key=lls.__getitem__) == item.label))
    acc = mean_with_stderr({"acc": correct})
    return TaskScore({**acc, "acc_norm": acc["acc"], "acc_norm_stderr": acc["acc_stderr"]},
                     {"acc": correct, "acc_norm": correct})


def _max_new_tokens(model, tokenizer, task: Task, default: int) -> int:
    """The task's generation length, capped at half the model's context (tiny models have
    short contexts; real ones are never capped by this)."""
    from learnforget.measure.inference import context_length

    wanted = task.generation.get("max_new_tokens", default)
    return max(8, min(wanted, context_length(model, tokenizer) // 2))


def _score_gsm8k(model, tokenizer, items: list, task: Task, batch_size: int) -> TaskScore:
    from learnforget.measure.answers import gsm8k_correct, majority_baseline
    from learnforget.measure.generation import generate

    completions = generate(
        model, tokenizer, [i.prompt for i in items],
        max_new_tokens=_max_new_tokens(model, tokenizer, task, 256),
        stop=items[0].stop, batch_size=batch_size,
    )
    answers = [i.answer for i in items]
    correct = gsm8k_correct([c[0] for c in completions], answers)
    scores = mean_with_stderr(correct)
    scores["majority_baseline"] = majority_baseline(answers)
    return TaskScore(scores, correct)


def _score_humaneval(model, tokenizer, items: list, task: Task, batch_size: int) -> TaskScore:
    from learnforget.measure.generation import generate
    from learnforget.measure.humaneval import pass_at_k, score_completions

    completions = generate(
        model, tokenizer, [i.prompt for i in items],
        max_new_tokens=_max_new_tokens(model, tokenizer, task, 384),
        stop=items[0].stop, batch_size=batch_size,
    )
    samples = [{"task_id": i.meta["task_id"], "completion": c[0]}
               for i, c in zip(items, completions, strict=True)]
    result = score_completions(samples, ks=[1])
    per_task = result["per_task"]
    passed = [pass_at_k(per_task[i.meta["task_id"]]["n"], per_task[i.meta["task_id"]]["c"], 1)
              for i in items]
    return TaskScore({"pass@1": result["pass@1"], "pass@1_stderr": result["pass@1_stderr"]},
                     {"pass@1": passed})


def score_task(model, tokenizer, task: Task, items: list, batch_size: int = 16) -> TaskScore:
    """Every metric of ``task`` on ``items``, each (but ``majority_baseline``) with its standard
    error over items in ``<metric>_stderr`` (see ``uncertainty``), and the per-item values."""
    from learnforget.measure import bits_per_byte, multiple_choice

    if task.kind == "bpb":
        per_item = bits_per_byte.bits_per_byte_items(model, tokenizer, items, batch_size=batch_size)
        return TaskScore(bits_per_byte.bits_per_byte_scores(per_item),
                         bits_per_byte.bits_per_byte_values(per_item))
    if task.kind == "choice":
        lls = multiple_choice.choice_loglikelihoods(model, tokenizer, items, batch_size=batch_size)
        correct = multiple_choice.choice_correct(items, lls)
        return TaskScore(mean_with_stderr(correct), correct)
    if task.kind == "partial_choice":
        return _score_partial_choice(model, tokenizer, items, batch_size)
    if task.kind == "gsm8k":
        return _score_gsm8k(model, tokenizer, items, task, batch_size)
    return _score_humaneval(model, tokenizer, items, task, batch_size)


def evaluate(
    model,
    tokenizer,
    task_names: list[str],
    limit: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    target: TargetSpec | None = None,
    on_task: Callable[[str], None] = lambda name: None,
    progress: ScoringCallback | None = None,
) -> Evaluation:
    """(results {task: {metric: value}}, item counts {task: n}, per-item values) for
    ``task_names``; the results hold each metric's standard error beside it (``acc`` and
    ``acc_stderr``). ``progress`` hears of each task's start, every scored batch and the task's
    end."""
    results: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    per_item: dict[str, ItemValues] = {}
    target_json = target.model_dump_json() if target is not None else None
    tell = progress or (lambda state: None)
    for index, name in enumerate(task_names):
        on_task(name)
        tell(ScoringProgress(name, index, len(task_names), 0, 0))
        task = get_task(name, target)
        items = load_items(name, limit, seed, target_json)
        passes = [len(items)]  # sequences of the last scoring pass (items if none reported)

        def batch(done: int, total: int, name: str = name, index: int = index,
                  passes: list[int] = passes) -> None:
            passes.append(total)
            tell(ScoringProgress(name, index, len(task_names), done, total))

        with batch_reporting(batch):
            scored = score_task(model, tokenizer, task, items, batch_size)
        results[name], per_item[name] = scored.scores, scored.per_item
        counts[name] = len(items)
        tell(ScoringProgress(name, index, len(task_names), passes[-1], passes[-1]))
    return Evaluation(results, counts, per_item)
