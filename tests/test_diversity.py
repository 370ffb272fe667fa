"""Diversity measures on fixed strings with hand-computed expectations."""

from __future__ import annotations

import math
import random
import time

import pytest

from learnforget.measure.diversity_scores import (
    distinct_n,
    distinct_outputs,
    diversity_summary,
    mean_pairwise_similarity,
    ngram_counts,
    pair_similarity,
    tokenize,
)

# Tokens: [def, f, (, x, ), :, return, x] twice (the second copy differs only in trailing
# whitespace) and [def, g, (, y, ), :, return, y].
CODE = ["def f(x): return x", "def f(x): return x  \n", "def g(y): return y"]


def test_tokenize_and_distinct_outputs() -> None:
    assert tokenize("def f(x): return x") == ["def", "f", "(", "x", ")", ":", "return", "x"]
    assert distinct_outputs(CODE) == 2
    assert distinct_outputs(["a", " a", "a\t"]) == 2  # only trailing whitespace is stripped
    assert distinct_outputs([]) == 0


def test_pair_similarity_by_hand() -> None:
    # SequenceMatcher matches ") : return" (3), then "def" (1) and "(" (1): 5 matches of 8 + 8
    # tokens -> 2·5/16.
    assert pair_similarity(CODE[0], CODE[2]) == pytest.approx(0.625)
    assert pair_similarity(CODE[0], CODE[1]) == 1.0
    assert pair_similarity("a b c", "x y z") == 0.0
    assert mean_pairwise_similarity(CODE) == pytest.approx((1 + 0.625 + 0.625) / 3)
    assert math.isnan(mean_pairwise_similarity(["only one"]))


def test_distinct_2_by_hand() -> None:
    # 3 × 7 bigrams; the first two samples share all 7, the third adds "def g", "g (", "( y",
    # "y )", "return y" -> 12 unique of 21.
    assert ngram_counts(CODE, 2) == (12, 21)
    assert distinct_n(CODE, 2) == pytest.approx(12 / 21)
    assert distinct_n(["a b", "b a"], 2) == 1.0  # n-grams do not cross sample boundaries
    assert math.isnan(distinct_n(["a", "b"], 2))


def test_diversity_summary_by_hand() -> None:
    summary = diversity_summary([CODE, ["a b", "a b", "a b"]])
    assert summary["prompts"] == 2 and summary["samples"] == 6
    assert summary["mean_distinct"] == pytest.approx(1.5)
    assert summary["distinct_fraction"] == pytest.approx(0.5)
    assert summary["mean_pairwise_similarity"] == pytest.approx((0.75 + 1.0) / 2)
    assert summary["distinct_2"] == pytest.approx((12 / 21 + 1 / 3) / 2)
    # a prompt with one sample has no pairs and is left out of the similarity mean
    single = diversity_summary([["x"], ["a", "b"]])
    assert single["mean_pairwise_similarity"] == 0.0 and single["mean_distinct"] == 1.5
    with pytest.raises(ValueError):
        diversity_summary([[], []])


def test_summary_of_twenty_prompts_times_ten_samples_is_fast() -> None:
    rng = random.Random(0)
    words = [f"tok{i}" for i in range(50)] + ["(", ")", ":", "=", "return", "def"]
    prompts = [
        [" ".join(rng.choice(words) for _ in range(200)) for _ in range(10)] for _ in range(20)
    ]
    start = time.perf_counter()
    summary = diversity_summary(prompts)
    elapsed = time.perf_counter() - start
    assert summary["distinct_fraction"] == 1.0
    assert 0.0 < summary["mean_pairwise_similarity"] < 1.0
    assert elapsed < 10.0, f"diversity_summary took {elapsed:.2f} s"


def test_distinct_count_has_a_standard_error_over_prompts() -> None:
    summary = diversity_summary([["a", "a", "a"], ["a", "b", "b"], ["a", "b", "c"]])
    assert summary["mean_distinct"] == 2.0  # 1, 2 and 3 distinct samples
    assert summary["mean_distinct_stderr"] == pytest.approx(1 / math.sqrt(3))  # sd 1, 3 prompts
    assert math.isnan(diversity_summary([["a", "b"]])["mean_distinct_stderr"])
