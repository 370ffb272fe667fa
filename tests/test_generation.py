"""Generation (greedy and sampled, batched, shared preambles, stop sequences) and GSM8K answer
extraction, on a real tiny Llama and a real byte-level BPE (fixtures in conftest)."""

from __future__ import annotations

import math

import pytest
import torch

from learnforget.errors import UserError
from learnforget.measure.answers import (
    exact_match,
    extract_flexible,
    extract_strict,
    gsm8k_scores,
    majority_baseline,
    normalize_number,
)
from learnforget.measure.generation import generate

torch.set_num_threads(1)


# --- generation ----------------------------------------------------------------------------------

PROMPTS = ["The cat", "My sister bought 5 red boxes for", "A", "Every student wrote 257 small"]


def test_greedy_generation_is_deterministic(scoring_model, scoring_tokenizer) -> None:
    first = generate(scoring_model, scoring_tokenizer, PROMPTS, max_new_tokens=12)
    again = generate(scoring_model, scoring_tokenizer, PROMPTS, max_new_tokens=12)
    assert first == again
    assert all(len(texts) == 1 and texts[0] for texts in first)
    twice = generate(scoring_model, scoring_tokenizer, PROMPTS[:1], 12, num_return_sequences=2)
    assert twice == [first[0] * 2]


def test_batched_greedy_equals_one_at_a_time(scoring_model, scoring_tokenizer) -> None:
    batched = generate(scoring_model, scoring_tokenizer, PROMPTS, max_new_tokens=12, batch_size=4)
    single = [
        generate(scoring_model, scoring_tokenizer, [prompt], max_new_tokens=12)[0]
        for prompt in PROMPTS
    ]
    assert batched == single


def test_stop_sequences_truncate(scoring_model, scoring_tokenizer) -> None:
    [[full]] = generate(scoring_model, scoring_tokenizer, ["The cat"], max_new_tokens=16)
    stop = full[len(full) // 2 : len(full) // 2 + 2]  # a string the model does produce
    assert stop and stop in full
    [[cut]] = generate(
        scoring_model, scoring_tokenizer, ["The cat"], max_new_tokens=16, stop=["@@never@@", stop]
    )
    assert cut == full[: full.find(stop)]


def test_greedy_decoding_that_drops_finished_rows_equals_transformers_generate(
    scoring_model, scoring_tokenizer, monkeypatch
) -> None:
    from learnforget.measure import generation, greedy

    prompts = PROMPTS + ["The old king", "Our team found 3", "My", "A farmer sold 7 small boats"]
    [[long]] = generate(scoring_model, scoring_tokenizer, ["The cat"], max_new_tokens=24)
    stops = ["@@never@@", long[5:7], long[12:14]]  # rows stop at different steps
    assert greedy.supports(scoring_model)
    calls: list[int] = []
    original = greedy.greedy_tokens
    monkeypatch.setattr(generation, "greedy_tokens",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    ours = {b: generate(scoring_model, scoring_tokenizer, prompts, 24, stop=stops, batch_size=b)
            for b in (1, 3, 8)}
    assert calls  # the pruning path ran
    monkeypatch.setattr(generation, "greedy_supports", lambda model: False)
    theirs = generate(scoring_model, scoring_tokenizer, prompts, 24, stop=stops, batch_size=8)
    assert any(len(texts[0]) < len(long) for texts in theirs)  # some stopped early
    for batch_size, texts in ours.items():
        assert texts == theirs, batch_size


def test_prompts_sharing_a_preamble_run_it_once_and_decode_as_generate_does(
    scoring_model, scoring_tokenizer, monkeypatch
) -> None:
    from learnforget.measure import generation, greedy

    # a few-shot preamble (as GSM8K's eight examples) before questions of different lengths
    preamble = "The cat bought 12 apples. My sister found 5 red boxes. Our team sold 7 books. "
    questions = ["A farmer", "Every student wrote 257 small", "The old king found", "My"]
    prompts = [preamble + q for q in questions]
    encoded = [scoring_tokenizer(p)["input_ids"] for p in prompts]
    shared = greedy.common_prefix(encoded)
    assert shared >= greedy.MIN_SHARED_PREFIX
    assert max(map(len, encoded)) + 16 <= scoring_model.config.max_position_embeddings  # uncut
    batches: list[tuple[int, int]] = []  # (rows, length) of every forward pass's input
    hook = scoring_model.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True)
    try:
        ours = generate(scoring_model, scoring_tokenizer, prompts, 16, batch_size=4)
    finally:
        hook.remove()
    assert batches[0] == (1, shared)  # the preamble once, then each row's own tokens
    assert batches[1] == (4, max(len(e) for e in encoded) - shared)
    monkeypatch.setattr(generation, "greedy_supports", lambda model: False)
    assert ours == generate(scoring_model, scoring_tokenizer, prompts, 16, batch_size=4)


def test_seeded_sampling_is_reproducible(scoring_model, scoring_tokenizer) -> None:
    def sample(seed: int) -> list[list[str]]:
        return generate(
            scoring_model,
            scoring_tokenizer,
            PROMPTS[:2],
            max_new_tokens=10,
            do_sample=True,
            temperature=1.0,
            top_p=0.95,
            num_return_sequences=3,
            batch_size=2,
            seed=seed,
        )

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = sample(1)
    assert torch.rand(1) == expected_next  # the global RNG is left alone
    assert first == sample(1)
    assert first != sample(2)
    assert all(len(texts) == 3 for texts in first)
    assert len(set(first[0])) > 1  # three different samples


def test_generation_rejects_impossible_lengths(scoring_model, scoring_tokenizer) -> None:
    with pytest.raises(UserError, match="max_new_tokens"):
        generate(scoring_model, scoring_tokenizer, ["The cat"], max_new_tokens=64)


# --- GSM8K answers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("so she has 18 left.\n#### 18", "18", "18"),
        ("#### 1,234", "1234", "1234"),
        ("the loss is 5 dollars\n#### -5", "-5", "-5"),
        ("#### 3.5", "3.5", "3.5"),
        ("It costs $1,200.50 in total.", None, "1200.50"),  # no ####: strict finds nothing
        ("#### 72.", "72", "72"),  # trailing period
        ("#### $72", None, "72"),  # strict's pattern allows no $
        ("#### The answer is 9", None, "9"),  # #### followed by text
        ("First 3 apples, then 12 more, so 15", None, "15"),  # several numbers: the last
        ("We get 4 and #### 6 then 8", "6", "8"),
        ("No digits at all.", None, None),
        ("#### 72.00", "72.00", "72.00"),  # kept as is: 72.00 is not 72 (lm-eval)
    ],
)
def test_extraction(text: str, strict: str | None, flexible: str | None) -> None:
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


def test_normalisation_and_exact_match() -> None:
    assert normalize_number(" $1,234. ") == "1234"
    assert normalize_number("Natalia sold 48/2 = 24 clips.\n#### 72") == "72"  # a full solution
    assert exact_match("72", "72") and exact_match("1234", "1,234")
    assert not exact_match("72.00", "72")
    assert not exact_match(None, "72")


def test_gsm8k_scores_and_majority_baseline() -> None:
    completions = ["#### 18", "I think 3, no 4", "#### 1,000", "#### 5\nand then 6"]
    answers = ["18", "4", "1000", "6"]
    # strict: 18 right, none, 1000 right, 5 wrong; flexible: 18, 4, 1000 right, 6 right
    # per item strict 1, 0, 1, 0: sample std sqrt(1/3), / sqrt(4); flexible 1, 1, 1, 1: 0
    assert gsm8k_scores(completions, answers) == pytest.approx({
        "exact_match_strict": 0.5,
        "exact_match_strict_stderr": math.sqrt(1 / 3) / 2,
        "exact_match_flexible": 1.0,
        "exact_match_flexible_stderr": 0.0,
    })
    assert majority_baseline(["3", "3", "1,000", "1000", "1000", "7"]) == pytest.approx(0.5)
