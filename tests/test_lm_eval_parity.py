"""Our multiple-choice scores equal lm-evaluation-harness's on the same model and items.

lm-eval runs its own ``hf`` model class on the tiny model saved to disk, with a local task file
and a local JSONL dataset; we score the same items in memory and compare acc, acc_norm and every
per-choice log-likelihood.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from learnforget.data.items import ChoiceItem
from learnforget.measure.multiple_choice import choice_loglikelihoods, multiple_choice_scores
from learnforget.measure.uncertainty import mean_stderr

TASK_NAME = "learnforget_scoring_parity"

TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
output_type: multiple_choice
test_split: test
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
target_delimiter: "{delimiter}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def _parity_items() -> list[ChoiceItem]:
    """20 items covering lm-eval's encoding cases: plain contexts, contexts ending in spaces
    (moved to the continuation), empty contexts (conditioned on the start token), contexts
    longer than the model's 64 positions (cut from the left), choices of different lengths."""
    rng = random.Random(7)
    subjects = ["The cat", "A farmer", "My sister", "The old king", "Every student"]
    verbs = [" bought", " counted", " sold", " painted", " wrote"]
    objects = [" 12 apples", " books", " red boxes for the market", " 7 coins", " small boats"]
    items = []
    for index in range(20):
        subject, verb = rng.choice(subjects), rng.choice(verbs)
        choices = tuple(rng.sample(objects, k=rng.choice([2, 3, 4])))
        if index % 5 == 1:
            context = f"{subject}{verb} "  # trailing space: moves to the continuation
            choices = tuple(c.lstrip() for c in choices)
        elif index % 5 == 2:
            context = ""
            choices = tuple(c.lstrip() for c in choices)
        elif index % 5 == 3:
            context = " ".join(f"{subject}{verb}{o}." for o in objects * 3) + f" {subject}{verb}"
        else:
            context = f"{subject}{verb}"
        items.append(ChoiceItem(context, choices, label=rng.randrange(len(choices))))
    return items


def _standard_items() -> list[ChoiceItem]:
    """The same items in lm-eval's standard layout (HellaSwag, ARC): choices without their
    leading space, joined to the context by the target delimiter " " — acc_norm then divides
    by the length of the choice without the delimiter."""
    return [
        ChoiceItem(item.context, tuple(c.lstrip() for c in item.choices), item.label, " ")
        for item in _parity_items()
        if not item.context.endswith(" ") and item.context
    ]


def _write_task(folder: Path, items: list[ChoiceItem]) -> Path:
    data = folder / "items.jsonl"
    with data.open("w") as handle:
        for item in items:
            row = {"context": item.context, "choices": list(item.choices), "label": item.label}
            handle.write(json.dumps(row) + "\n")
    tasks = folder / "tasks"
    tasks.mkdir()
    (tasks / "parity.yaml").write_text(
        TASK_YAML.format(task=TASK_NAME, data=data, cache=folder / "datasets-cache",
                         delimiter=items[0].target_delimiter)
    )
    return tasks


@pytest.mark.parametrize(
    ("tokenizer_fixture", "layout"),
    [("scoring_tokenizer", "literal"), ("scoring_bos_tokenizer", "literal"),
     ("scoring_tokenizer", "standard")],
)
def test_acc_and_loglikelihoods_equal_lm_eval(
    tokenizer_fixture: str,
    layout: str,
    scoring_model,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    tokenizer = request.getfixturevalue(tokenizer_fixture)
    model_dir = tmp_path / "model"
    scoring_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    items = _parity_items() if layout == "literal" else _standard_items()
    tasks = _write_task(tmp_path, items)

    output = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float32",
        tasks=[TASK_NAME],
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
        batch_size=1,
        device="cpu",
        log_samples=True,
    )

    ours = choice_loglikelihoods(scoring_model, tokenizer, items, batch_size=8)
    theirs: list[list[tuple[float, bool]]] = [[] for _ in items]
    for sample in output["samples"][TASK_NAME]:
        theirs[sample["doc_id"]] = [tuple(resp[0]) for resp in sample["resps"]]
    for our_choices, their_choices in zip(ours, theirs, strict=True):
        assert len(our_choices) == len(their_choices)
        for (our_ll, our_greedy), (their_ll, their_greedy) in zip(
            our_choices, their_choices, strict=True
        ):
            assert our_ll == pytest.approx(their_ll, abs=1e-4)
            assert our_greedy == their_greedy
    scores = multiple_choice_scores(scoring_model, tokenizer, items, batch_size=8)
    results = output["results"][TASK_NAME]
    assert scores["acc"] == pytest.approx(results["acc,none"], abs=1e-12)
    assert scores["acc_norm"] == pytest.approx(results["acc_norm,none"], abs=1e-12)
    # lm-eval's standard errors (sample std / sqrt(n) over items)
    assert results["acc_stderr,none"] > 0 and results["acc_norm_stderr,none"] > 0
    assert scores["acc_stderr"] == pytest.approx(results["acc_stderr,none"], abs=1e-12)
    assert scores["acc_norm_stderr"] == pytest.approx(results["acc_norm_stderr,none"], abs=1e-12)


def test_mean_stderr_is_lm_evals() -> None:
    """The standard error of a mean is lm-eval's ``mean_stderr``, on 0/1 and on fractional
    values (per-problem pass@k); NaN below two values, where lm-eval reports N/A."""
    metrics = pytest.importorskip("lm_eval.api.metrics")
    rng = random.Random(3)
    for n in (2, 3, 17, 500):
        for values in ([rng.random() < 0.3 for _ in range(n)], [rng.random() for _ in range(n)]):
            assert mean_stderr(values) == pytest.approx(metrics.mean_stderr(values), abs=1e-15)
    assert math.isnan(mean_stderr([1.0]))
