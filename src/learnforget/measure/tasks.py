"""The task registry: every evaluation task is data — a name, an item loader, the scoring
primitive that serves it and the metrics it reports (in the spirit of lm-evaluation-harness,
without its class hierarchy).

Built-in tasks of the tiny world:
  source_bpb    bits per byte on held-out English passages                  (forgetting)
  source_cloze  HellaSwag-like cloze on held-out passages, acc / acc_norm   (forgetting)
  code_bpb      bits per byte on held-out standard-library files            (learning, code)
  code_ift_bpb  response bits per byte on held-out docstring → body pairs   (learning, code IFT)
  math_bpb      response bits per byte on held-out generated problems       (learning, math)
  math_em       greedy exact match (strict / flexible) + majority baseline  (learning, math)
  target_bpb    held-out bits per byte of custom data                       (learning, custom)
Real benchmarks (``benchmarks.py``, ``humaneval.py``): humaneval, gsm8k, hellaswag,
arc_challenge, winogrande.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from learnforget.data.items import GenerationItem, TextItem
from learnforget.errors import UserError
from learnforget.study import Study, TargetSpec

TaskKind = Literal["bpb", "choice", "partial_choice", "gsm8k", "humaneval"]
# Long held-out documents are scored in chunks of about this many characters: small enough to
# fit one context window of the tiny models (~300 tokens), plenty of text in total.
CHUNK_CHARS = 1000


@dataclass(frozen=True)
class Task:
    """One evaluation task: how to get its items and how they are scored."""

    name: str
    kind: TaskKind
    load: Callable[[int | None, int], list]  # (limit, seed) -> items
    metrics: tuple[str, ...]
    primary: str
    higher_is_better: bool
    default_limit: int | None = None
    description: str = ""
    generation: dict = field(default_factory=dict)  # max_new_tokens, …


def _seeded_subset(items: list, limit: int | None, seed: int) -> list:
    """A fixed, seeded subset of ``limit`` items (all items when ``limit`` is None)."""
    if limit is None or limit >= len(items):
        return items
    indices = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in indices]


def _chunks(documents: list[str], size: int = CHUNK_CHARS) -> list[TextItem]:
    """Documents cut at line ends into pieces of at most ~``size`` characters."""
    out: list[TextItem] = []
    for doc in documents:
        piece = ""
        for line in doc.splitlines(keepends=True):
            if piece and len(piece) + len(line) > size:
                out.append(TextItem(piece))
                piece = ""
            piece += line
        if piece.strip():
            out.append(TextItem(piece))
    return out


def _pair_items(pairs: list) -> list[TextItem]:
    return [TextItem(text=p.response, prefix=p.prompt) for p in pairs]


def _source_bpb(limit: int | None, seed: int) -> list[TextItem]:
    from learnforget.data.english import english_documents

    return _seeded_subset(_chunks(english_documents("heldout")), limit, seed)


def _source_cloze(limit: int | None, seed: int) -> list:
    from learnforget.data.english import source_cloze_items

    return source_cloze_items(n=limit or 500, seed=seed)


def _code_bpb(limit: int | None, seed: int) -> list[TextItem]:
    from learnforget.data.code import code_documents

    return _seeded_subset(_chunks(code_documents("heldout")), limit, seed)


def _code_ift_bpb(limit: int | None, seed: int) -> list[TextItem]:
    from learnforget.data.code import code_ift_pairs

    return _seeded_subset(_pair_items(code_ift_pairs("heldout")), limit, seed)


def _math_bpb(limit: int | None, seed: int) -> list[TextItem]:
    from learnforget.data.math import math_ift_pairs

    return _pair_items(math_ift_pairs("test", limit or 300, seed))


def _math_em(limit: int | None, seed: int) -> list[GenerationItem]:
    from learnforget.data.math import math_problems, math_prompt

    return [
        GenerationItem(prompt=math_prompt(p.question), answer=p.answer,
                       stop=("\n\n", "Question:"))
        for p in math_problems("test", limit or 100, seed)
    ]


BUILTIN_TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(name="source_bpb", kind="bpb", load=_source_bpb, metrics=("bpb",), primary="bpb",
             higher_is_better=False, default_limit=50,
             description="bits per byte on held-out English passages"),
        Task(name="source_cloze", kind="choice", load=_source_cloze, metrics=("acc", "acc_norm"),
             primary="acc_norm", higher_is_better=True, default_limit=500,
             description="HellaSwag-like cloze: true continuation vs 3 from other passages"),
        Task(name="code_bpb", kind="bpb", load=_code_bpb, metrics=("bpb",), primary="bpb",
             higher_is_better=False, default_limit=50,
             description="bits per byte on held-out standard-library Python"),
        Task(name="code_ift_bpb", kind="bpb", load=_code_ift_bpb, metrics=("bpb",),
             primary="bpb", higher_is_better=False, default_limit=200,
             description="response bits per byte on held-out signature+docstring → body pairs"),
        Task(name="math_bpb", kind="bpb", load=_math_bpb, metrics=("bpb",), primary="bpb",
             higher_is_better=False, default_limit=150,
             description="response bits per byte on held-out generated word problems"),
        Task(name="math_em", kind="gsm8k", load=_math_em,
             metrics=("exact_match_strict", "exact_match_flexible", "majority_baseline"),
             primary="exact_match_strict", higher_is_better=True, default_limit=100,
             description="greedy exact match on held-out generated problems",
             generation={"max_new_tokens": 128}),
    )
}


def _benchmark_tasks() -> dict[str, Task]:
    """The real benchmarks, registered lazily (their packages are optional at import)."""
    from learnforget.measure.benchmarks import BENCHMARKS
    from learnforget.measure.humaneval import load_humaneval

    tasks = {
        "humaneval": Task(name="humaneval", kind="humaneval",
                          load=lambda limit, seed: load_humaneval(limit, seed),
                          metrics=("pass@1",), primary="pass@1", higher_is_better=True,
                          description="HumanEval, greedy pass@1 in the sandbox",
                          generation={"max_new_tokens": 384}),
    }
    for name, spec in BENCHMARKS.items():
        tasks[name] = Task(
            name=name, kind=spec.kind,
            load=lambda limit, seed, s=spec: s.loader(limit=limit, seed=seed),
            metrics=tuple(spec.metrics), primary=spec.metrics[0], higher_is_better=True,
            description=spec.description,
            generation={"max_new_tokens": 256} if spec.kind == "gsm8k" else {},
        )
    return tasks


def _custom_target_task(target: TargetSpec) -> Task:
    def load(limit: int | None, seed: int) -> list[TextItem]:
        from learnforget.data.target import load_target

        data = load_target(target)
        items = _chunks(data.heldout_documents) + _pair_items(data.heldout_pairs)
        if not items:
            raise UserError(f"the custom data {target.data!r} has no held-out examples; "
                            "give more examples (about 5% are held out, near-duplicates "
                            "together)")
        return _seeded_subset(items, limit, seed)

    return Task(name="target_bpb", kind="bpb", load=load, metrics=("bpb",), primary="bpb",
                higher_is_better=False, default_limit=200,
                description="bits per byte on the held-out 5% of the custom data")


def get_task(name: str, target: TargetSpec | None = None) -> Task:
    """The task called ``name`` (``target_bpb`` needs the study's custom target)."""
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    if name == "target_bpb":
        if target is None or target.domain != "custom":
            raise UserError("task target_bpb measures custom data: it needs target.domain custom")
        return _custom_target_task(target)
    benchmarks = _benchmark_tasks()
    if name in benchmarks:
        return benchmarks[name]
    raise UserError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")


def task_names() -> list[str]:
    """Every task name of the registry: the built-in tasks, ``target_bpb``, the benchmarks."""
    return sorted(BUILTIN_TASKS) + ["target_bpb"] + sorted(_benchmark_tasks())


def default_tasks(target: TargetSpec) -> tuple[list[str], list[str]]:
    """(learning tasks, forgetting tasks) for a target when the study names none."""
    forgetting = ["source_bpb", "source_cloze"]
    if target.domain == "custom":
        return ["target_bpb"], forgetting
    if target.domain == "code":
        return (["code_bpb"] if target.regime == "cpt" else ["code_ift_bpb", "code_bpb"],
                forgetting)
    return ["math_bpb", "math_em"], forgetting


@lru_cache(maxsize=64)
def load_items(name: str, limit: int | None, seed: int, target_json: str | None = None) -> list:
    """A task's items (cached per process): ``limit`` or the task's default limit."""
    target = TargetSpec.model_validate_json(target_json) if target_json else None
    task = get_task(name, target)
    return task.load(limit if limit is not None else task.default_limit, seed)


def study_tasks(study: Study) -> tuple[list[str], list[str]]:
    """The study's (learning, forgetting) task names, defaults filled in."""
    learning, forgetting = default_tasks(study.target)
    return (study.evaluation.learning or learning, study.evaluation.forgetting or forgetting)


def validate_tasks(study: Study) -> None:
    """Fail early (before any training) on an unknown task name."""
    learning, forgetting = study_tasks(study)
    for name in learning + forgetting:
        get_task(name, study.target)
    for name in study.evaluation.final_only:
        if name not in learning + forgetting:
            raise UserError(f"evaluation.final_only names {name!r}, which is not one of the "
                            f"study's tasks ({', '.join(learning + forgetting)})")
