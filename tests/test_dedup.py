"""The custom-data split keeps near-duplicates (rephrasings of one problem) on one side."""

from __future__ import annotations

import random

from learnforget.data.dedup import hashed_heldout, near_duplicate_split, normalise


def _problems(count: int, seed: int = 0) -> list[list[str]]:
    """``count`` distinct word problems, each with three surface rephrasings."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    groups = []
    for _ in range(count):
        body = " ".join(rng.sample(words, 25))
        groups.append([f"Question: {body}?", f"question:   {body.upper()} ?!",
                       f"QUESTION - {body}."])
    return groups


def test_normalise_drops_case_punctuation_and_spacing() -> None:
    assert normalise("  Hello,   World!! ") == "hello world"


def test_rephrasings_land_on_one_side_where_a_plain_hash_splits_them() -> None:
    groups = _problems(400)
    texts = [text for group in groups for text in group]
    split = near_duplicate_split(texts, share=0.05)
    sides = [split.heldout[3 * g:3 * g + 3] for g in range(len(groups))]
    assert all(len(set(side)) == 1 for side in sides)
    assert split.groups_merged == 400 and split.examples_in_groups == 1200
    assert 0.02 < split.heldout_count / len(texts) < 0.09  # about 5% of the problems
    assert split.heldout_with_near_duplicate == 0 and split.near_duplicate_share == 0.0
    plain = [[hashed_heldout(text, 0.05) for text in group] for group in groups]
    assert sum(len(set(side)) > 1 for side in plain) > 10  # the defect the grouping removes
    assert "groups of near-duplicates (1200 examples) kept on one side" in split.describe()


def test_distinct_examples_are_not_grouped() -> None:
    groups = _problems(300, seed=1)
    texts = [group[0] for group in groups]
    split = near_duplicate_split(texts, share=0.05)
    assert split.groups_merged == 0
    assert split.heldout == [hashed_heldout(text, 0.05) for text in texts]
