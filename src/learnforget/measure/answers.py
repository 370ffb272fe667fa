"""GSM8K-style answer extraction and scoring, as lm-evaluation-harness's ``gsm8k`` task does it.

Two extractions of the model's number from a completion:

- strict: the number right after the first ``#### `` (regex ``#### (\\-?[0-9\\.\\,]+)``);
- flexible: the last number-like run in the text (regex ``(-?[$0-9.,]{2,})|(-?[0-9]+)``).

Both the extracted number and the reference answer are then normalised the way lm-eval's
``exact_match`` metric is configured for gsm8k (``regexes_to_ignore``: ``,``, ``\\$``,
``(?s).*#### `` and ``\\.$``; ``ignore_case``) and compared as strings. The comparison is exact
after that normalisation: "72.00" is not "72", and "5.." keeps one of its periods. This is what
lm-eval reports, so scores stay comparable with published ones.
"""

from __future__ import annotations

import re
from collections import Counter

from learnforget.measure.uncertainty import ItemValues, mean_with_stderr

STRICT_PATTERN = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_PATTERN = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# lm-eval gsm8k's exact_match regexes_to_ignore, applied in this order.
_IGNORED = tuple(re.compile(p) for p in (r",", r"\$", r"(?s).*#### ", r"\.$"))


def normalize_number(s: str) -> str:
    """``s`` stripped of surrounding whitespace, commas, dollar signs, everything up to a
    ``#### `` marker and one trailing period, lower-cased: lm-eval gsm8k's normalisation
    (so a full reference solution ``"... #### 1,234"`` normalises to ``"1234"``)."""
    s = s.strip()
    for pattern in _IGNORED:
        s = pattern.sub("", s)
    return s.lower().strip()


def extract_strict(text: str) -> str | None:
    """The normalised number after the first ``#### `` in ``text``, or None when there is none
    (``"#### $5"`` and ``"#### five"`` have none, as in lm-eval)."""
    match = STRICT_PATTERN.search(text)
    return normalize_number(match.group(1)) if match else None


def extract_flexible(text: str) -> str | None:
    """The normalised last number-like run in ``text`` (digits with ``$ , .`` and a sign, or a
    single digit), or None when there is none: lm-eval's flexible-extract."""
    matches = FLEXIBLE_PATTERN.findall(text)
    if not matches:
        return None
    last = next(group for group in matches[-1] if group)
    return normalize_number(last)


def exact_match(prediction: str | None, answer: str) -> bool:
    """Whether an extracted prediction (already normalised by ``extract_strict`` or
    ``extract_flexible``; None when nothing was extracted) equals the normalised reference."""
    return prediction is not None and prediction == normalize_number(answer)


def gsm8k_correct(completions: list[str], answers: list[str]) -> ItemValues:
    """``{"exact_match_strict": [...], "exact_match_flexible": [...]}``: 1.0 for each completion
    whose strictly / flexibly extracted number equals the reference answer, else 0.0."""
    if len(completions) != len(answers):
        raise ValueError(f"{len(completions)} completions for {len(answers)} answers")
    if not answers:
        raise ValueError("GSM8K scoring needs at least one completion")
    pairs = list(zip(completions, answers, strict=True))
    return {
        "exact_match_strict": [float(exact_match(extract_strict(c), a)) for c, a in pairs],
        "exact_match_flexible": [float(exact_match(extract_flexible(c), a)) for c, a in pairs],
    }


def gsm8k_scores(completions: list[str], answers: list[str]) -> dict[str, float]:
    """``{"exact_match_strict", "exact_match_flexible"}``: the share of completions whose
    strictly / flexibly extracted number equals the reference answer, each with its standard
    error over items in ``<metric>_stderr`` (lm-eval's ``mean_stderr``)."""
    return mean_with_stderr(gsm8k_correct(completions, answers))


def majority_baseline(answers: list[str]) -> float:
    """The share of items whose (normalised) answer is the most common one: the score of always
    answering that number."""
    if not answers:
        raise ValueError("a majority baseline needs at least one answer")
    counts = Counter(normalize_number(a) for a in answers)
    return counts.most_common(1)[0][1] / len(answers)
