"""Claim 8 of the checklist: LoRA keeps its generations more diverse than full finetuning.

Reads each run's ``diversity/mean_distinct`` (distinct samples per prompt) and its standard
error over prompts (``diversity/mean_distinct_stderr``) at each method's final best-LR
checkpoint; the seeds share their prompts, so each side is a ``seed_estimate`` (the runs' mean
error over prompts plus the seeds' spread, ``learnforget.analysis.estimates``). The comparison
is a ``Difference`` read by ``combine``; nothing is judged from a point estimate.
"""

from __future__ import annotations

import math

import pandas as pd

from learnforget.analysis.claim_data import ClaimData, needs_pair
from learnforget.analysis.comparison import as_float
from learnforget.analysis.estimates import difference_of, seed_estimate, seeds_noise
from learnforget.analysis.formatting import fmt
from learnforget.analysis.verdicts import UNTESTABLE, ClaimVerdict, Part, combine, untestable


def _at(row: pd.Series, column: str) -> float:
    """``row[column]`` as a float (NaN when absent)."""
    return as_float(row.get(column, math.nan))


def claim_diversity(s: ClaimData) -> ClaimVerdict:
    """Claim 8: every judged LoRA (best LR, final) keeps more distinct samples per prompt than
    full FT: LoRA − full FT > 0 beyond noise, each side a seed mean whose seeds share their
    prompts (``seed_estimate``: the runs' standard errors over prompts, not divided by √seeds,
    plus the seeds' spread). The mean pairwise similarity of the samples is reported beside it,
    not judged."""
    distinct, similar = "diversity/mean_distinct", "diversity/mean_pairwise_similarity"
    if (missing := needs_pair(s, 8)) is not None:
        return missing
    rows = {lab: row for lab in [s.ref, *s.judged()]
            if (row := s.final(lab, distinct)) is not None}
    loras = [lab for lab in rows if lab != s.ref]
    if s.ref not in rows or not loras:
        return untestable(8, "diversity of full FT and LoRA (evaluation.diversity: true)", s.scope)
    per_prompt = _at(rows[s.ref], "diversity/samples") / _at(rows[s.ref], "diversity/prompts")
    counts = {lab: _at(row, distinct) for lab, row in rows.items()}
    if all(count >= per_prompt - 1e-9 for count in counts.values()):
        shown = "; ".join(f"{s.name(lab)} {fmt(count)} (similarity {fmt(_at(rows[lab], similar))})"
                          for lab, count in counts.items())
        return combine(8, [Part("LoRA more diverse", UNTESTABLE, main=True, missing=(
            f"a distinct-samples count below its ceiling: every method kept all {fmt(per_prompt)} "
            f"samples of every prompt distinct ({shown}), so the count cannot tell them apart; "
            "more samples per prompt or a lower temperature"))], s.scope)
    estimates = {lab: seed_estimate(s, lab, distinct, "diversity/prompts")
                 for lab in [s.ref, *loras]}
    tests = tuple(difference_of(estimates[lab], estimates[s.ref]) for lab in loras)
    parts = [f"{s.name(lab)} {fmt(count)} distinct (similarity {fmt(_at(rows[lab], similar))})"
             for lab, count in counts.items()]
    base = s.frame.base.get(similar)
    lines = [f"{s.name(lab)} − full FT {t.text()}" for lab, t in zip(loras, tests, strict=True)]
    evidence = (
        f"distinct samples per prompt ({fmt(per_prompt)} samples each): " + "; ".join(parts)
        + (f"; base model similarity {fmt(float(base))}" if base is not None and pd.notna(base)
           else "")
        + f". Differences: {'; '.join(lines)} (rule: more distinct samples than full FT beyond "
        "noise over prompts and seeds; similarity reported, not judged)"
    )
    no_error = any(not math.isfinite(t.se) for t in tests)
    settle = ("standard errors over prompts (diversity/mean_distinct_stderr)" if no_error
              else "more prompts, samples per prompt or seeds")
    seeds = max(e.seeds for e in estimates.values())
    noise = ("distinct samples: standard errors over prompts" if not no_error else
             "distinct samples: no standard errors over prompts stored: no noise estimate")
    return combine(8, [Part("LoRA more diverse", evidence=evidence, main=True, settle=settle,
                            tests=tests)], s.scope, f"{noise}; {seeds_noise(seeds)}")
