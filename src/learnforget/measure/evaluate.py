"""Score a model on a list of registry tasks: one dispatch from task kind to scoring primitive."""

from __future__ import annotations

from collections.abc import Callable

from learnforget.data.items import ChoiceItem
from learnforget.measure.progress import ScoringCallback, ScoringProgress, batch_reporting
from learnforget.measure.tasks import Task, get_task, load_items
from learnforget.measure.uncertainty import mean_with_stderr
from learnforget.study import TargetSpec


def _score_partial_choice(model, tokenizer, items: list, batch_size: int) -> dict[str, float]:
    """WinoGrande-style items: each option completes a different context, the continuation is
    shared; the option whose context gives the continuation the highest likelihood wins."""
    from learnforget.measure.benchmarks import winogrande_requests
    from learnforget.measure.scoring import choice_loglikelihoods

    flat: list[ChoiceItem] = []
    spans = []
    for item in items:
        requests = winogrande_requests(item)
        spans.append((len(flat), len(requests)))
        flat.extend(ChoiceItem(context=c, choices=(cont,), label=0) for c, cont in requests)
    scores = choice_loglikelihoods(model, tokenizer, flat, batch_size=batch_size)
    correct = []
    for item, (start, count) in zip(items, spans, strict=True):
        lls = [scores[start + i][0][0] for i in range(count)]
        correct.append(int(max(range(count), key=lls.__getitem__) == item.label))
    acc = mean_with_stderr({"acc": correct})
    return {**acc, "acc_norm": acc["acc"], "acc_norm_stderr": acc["acc_stderr"]}


def _max_new_tokens(model, tokenizer, task: Task, default: int) -> int:
    """The task's generation length, capped at half the model's context (tiny models have
    short contexts; real ones are never capped by this)."""
    from learnforget.measure.scoring import context_length

    wanted = task.generation.get("max_new_tokens", default)
    return max(8, min(wanted, context_length(model, tokenizer) // 2))


def _score_gsm8k(model, tokenizer, items: list, task: Task, batch_size: int) -> dict[str, float]:
    from learnforget.measure.answers import gsm8k_scores, majority_baseline
    from learnforget.measure.scoring import generate

    completions = generate(
        model, tokenizer, [i.prompt for i in items],
        max_new_tokens=_max_new_tokens(model, tokenizer, task, 256),
        stop=items[0].stop, batch_size=batch_size,
    )
    answers = [i.answer for i in items]
    scores = gsm8k_scores([c[0] for c in completions], answers)
    scores["majority_baseline"] = majority_baseline(answers)
    return scores


def _score_humaneval(model, tokenizer, items: list, task: Task, batch_size: int) -> dict:
    from learnforget.measure.humaneval import score_completions
    from learnforget.measure.scoring import generate

    completions = generate(
        model, tokenizer, [i.prompt for i in items],
        max_new_tokens=_max_new_tokens(model, tokenizer, task, 384),
        stop=items[0].stop, batch_size=batch_size,
    )
    samples = [{"task_id": i.meta["task_id"], "completion": c[0]}
               for i, c in zip(items, completions, strict=True)]
    result = score_completions(samples, ks=[1])
    return {"pass@1": result["pass@1"], "pass@1_stderr": result["pass@1_stderr"]}


def score_task(model, tokenizer, task: Task, items: list, batch_size: int = 16) -> dict:
    """Every metric of ``task`` on ``items``, each (but ``majority_baseline``) with its standard
    error over items in ``<metric>_stderr`` (see ``uncertainty``)."""
    from learnforget.measure import scoring

    if task.kind == "bpb":
        per_item = scoring.bits_per_byte_items(model, tokenizer, items, batch_size=batch_size)
        return scoring.bits_per_byte_scores(per_item)
    if task.kind == "choice":
        return scoring.multiple_choice_scores(model, tokenizer, items, batch_size=batch_size)
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
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """(results {task: {metric: value}}, item counts {task: n}) for ``task_names``; the results
    hold each metric's standard error beside it (``acc`` and ``acc_stderr``). ``progress``
    hears of each task's start, every scored batch and the task's end."""
    results: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
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
            results[name] = score_task(model, tokenizer, task, items, batch_size)
        counts[name] = len(items)
        tell(ScoringProgress(name, index, len(task_names), passes[-1], passes[-1]))
    return results, counts
