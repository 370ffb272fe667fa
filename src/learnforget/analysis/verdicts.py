"""What a claim's verdict is and how its parts combine into one: the verdict states, the
claims' texts and thresholds, ``ClaimVerdict`` (what ``OUT/claims.json`` holds for each claim),
``Part`` and ``combine`` (Holm's correction over all of a claim's comparisons).

How a verdict is reached (docs/report.md lists every rule): every part of a claim is a set of
comparisons, each a ``Difference`` oriented so that a positive value supports the claim. A
comparison supports the claim when it lies beyond its critical value (Z = 1.96, or Student's t
when seeds give few degrees of freedom); it counts against the claim only when it lies below 0
beyond the Holm-corrected one-sided threshold over every comparison of the claim; in between, or
without an error estimate, it is within noise. A claim **does not hold** when any part fails; it
is **not testable** when its main part cannot be tested; it is **inconclusive** when a part is
neither settled for nor against; otherwise it **holds**.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from learnforget.analysis.comparison import Difference

Verdict = Literal["holds", "does not hold", "inconclusive", "not testable"]
HOLDS: Verdict = "holds"
FAILS: Verdict = "does not hold"
INCONCLUSIVE: Verdict = "inconclusive"
UNTESTABLE: Verdict = "not testable"
VERDICTS: tuple[Verdict, ...] = (HOLDS, FAILS, INCONCLUSIVE, UNTESTABLE)

SEVERAL = 2.0  # claim 5 (IFT): "several times" = at least twice (the paper reports 4–10×)
CPT_SIMILAR = 4.0  # claim 5 (CPT): best LRs within 4× (the paper: 1× code, 4× math)
FAR_MORE = 10.0  # claim 7: the paper's full-FT ΔW needs 10–100× the LoRA ranks it studies
PARETO_TOLERANCE = 0.10  # claim 3: share of full finetuning's forgetting range
HIGH_EARLY = 0.5  # claim 7: the first checkpoint's rank90 reaches half of the final one
MIN_INTRUDERS = 1.0  # claim 9: "creates intruders" = at least one per matrix on average
FEW_INTRUDERS = 0.5  # claim 9: "few" = at most half of low-rank LoRA's count
ALPHA = 0.025  # one-sided level against a claim (Z = 1.96 two-sided), Holm-corrected

CLAIMS: dict[int, str] = {
    1: "Full finetuning learns at least as much as LoRA at every budget (each at its best LR); "
    "the gap is larger in CPT than in IFT and narrows as the rank grows.",
    2: "LoRA forgets less; forgetting grows with training for both, faster for full finetuning.",
    3: "All checkpoints lie near one learning–forgetting curve.",
    4: "At equal learning, LoRA forgets less than full finetuning with weight decay or dropout.",
    5: "In IFT LoRA's best LR is several times full finetuning's (in CPT about the same), and "
    "LoRA is more sensitive to the LR.",
    6: "Target modules: all > MLP > attention; the modules matter more than the rank.",
    7: "Full finetuning's ΔW needs far more rank for 90% of its variance than the LoRA rank; it "
    "is high early, rises with training and is higher in MLP than in attention.",
    8: "LoRA keeps generations more diverse than full finetuning.",
    9: "Low-rank LoRA creates intruder dimensions; full finetuning creates few.",
}


@dataclass(frozen=True)
class ClaimVerdict:
    """One claim judged: its number (paper.md's list), short text, verdict, the numbers behind
    the verdict (one line per part), what is missing to test the rest, what would settle the
    parts that are inconclusive, which runs stand for "LoRA" (``scope``), how many comparisons
    the verdict made (``comparisons``: the Holm correction's count) and which sources of noise
    their errors count (``noise``), and each part's own verdict (``parts``)."""

    number: int
    claim: str
    verdict: Verdict
    evidence: str
    missing: str = ""
    settle: str = ""
    scope: str = ""
    comparisons: int = 0
    noise: str = ""
    parts: dict[str, str] = field(default_factory=dict)  # each part's name → its verdict

    def to_dict(self) -> dict:
        """A JSON-ready dict of the fields."""
        return asdict(self)


@dataclass(frozen=True)
class Part:
    """One part of a claim: its comparisons (``tests``, each oriented so that a positive
    difference supports the claim; ``strict``: an exact tie 0 ± 0 does not support it), or a
    verdict decided another way (``verdict``: not testable, or an interval rule), the numbers
    behind it, what is missing to test it, what would settle it and whether it is the claim's
    main part."""

    name: str
    verdict: Verdict | None = None
    evidence: str = ""
    missing: str = ""
    main: bool = False
    settle: str = ""
    tests: tuple[Difference, ...] = ()
    strict: bool = True


def holm(p_values: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down procedure: which of ``p_values`` are rejected at family-wise level
    ``alpha`` (NaN never is)."""
    order = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    rejected = [False] * len(p_values)
    for rank, (p, i) in enumerate(order):
        if p > alpha / (len(order) - rank):
            break
        rejected[i] = True
    return rejected


def _judged(part: Part, rejected: list[bool]) -> tuple[Verdict, str]:
    """A part's verdict from its comparisons and which of them Holm rejected, and a note."""
    if part.verdict is not None:
        return part.verdict, ""
    if not part.tests:
        return UNTESTABLE, ""
    if any(rejected):
        return FAILS, ""
    support = [t.exceeds(strict=part.strict) for t in part.tests]
    if all(r is True for r in support):
        return HOLDS, ""
    if any(r is False for r in support):
        return INCONCLUSIVE, (" (a comparison lies below 0 beyond its own error but not beyond "
                              "the Holm-corrected threshold: within noise)")
    if any(not math.isfinite(t.se) for t in part.tests):
        return INCONCLUSIVE, (" (no noise estimate for a comparison: the store has no "
                              "standard errors, or the value is undefined on more than 10% of "
                              "the draws)")
    return INCONCLUSIVE, ""


def combine(number: int, parts: list[Part], scope: str = "", noise: str = "") -> ClaimVerdict:
    """The claim's verdict from its parts (rule in the module docstring): each part's
    comparisons read against Holm's correction over all of the claim's comparisons."""
    pool = [(k, j) for k, part in enumerate(parts) if part.verdict is None
            for j, test in enumerate(part.tests) if math.isfinite(test.se) and test.se > 0]
    rejected = holm([parts[k].tests[j].p_below() for k, j in pool])
    judged = []
    for k, part in enumerate(parts):
        marks = [r for (kk, _), r in zip(pool, rejected, strict=True) if kk == k]
        verdict, note = _judged(part, marks)
        judged.append((part, verdict, note))
    tested = [(p, v, n) for p, v, n in judged if v != UNTESTABLE]
    if any(v == FAILS for _, v, _ in tested):
        verdict = FAILS
    elif not tested or any(p.main and v == UNTESTABLE for p, v, _ in judged):
        verdict = UNTESTABLE
    elif any(v == INCONCLUSIVE for _, v, _ in tested):
        verdict = INCONCLUSIVE
    else:
        verdict = HOLDS
    evidence = "\n".join(f"{p.name} — {v}: {p.evidence}{n}" for p, v, n in tested)
    missing = [f"{p.name}: {p.missing}" for p, v, _ in judged if v == UNTESTABLE and p.missing]
    missing += [p.missing for p, _, _ in tested if p.missing]
    settle = [f"{p.name}: {p.settle}" for p, v, _ in judged if p.settle and v == INCONCLUSIVE]
    if pool:
        noise = (f"{noise}; " if noise else "") + (
            f"{len(pool)} comparison(s): one counts against the claim only beyond Holm's "
            f"threshold over all of them (one-sided {ALPHA:g})")
    return ClaimVerdict(number, CLAIMS[number], verdict, evidence, "; ".join(missing),
                        "; ".join(settle), scope, len(pool), noise,
                        {p.name: v for p, v, _ in judged})


def untestable(number: int, missing: str, scope: str = "") -> ClaimVerdict:
    """Claim ``number`` not testable, for want of ``missing``."""
    return ClaimVerdict(number, CLAIMS[number], UNTESTABLE, "", missing, "", scope)


def interval_verdict(low: float, high: float, lowest: float, highest: float) -> Verdict:
    """An interval rule: the quantity lies in [low, high] (its plausible range); holds when the
    whole range lies in [lowest, highest], fails when none of it does, else inconclusive."""
    if lowest <= low and high <= highest:
        return HOLDS
    if high < lowest or low > highest:
        return FAILS
    return INCONCLUSIVE


def count_verdicts(verdicts: Sequence[ClaimVerdict]) -> dict[str, int]:
    """How many verdicts are in each state, every state present (for summaries)."""
    return {state: sum(v.verdict == state for v in verdicts) for state in VERDICTS}
