"""Claims 7 and 9 of the checklist, from the stored ΔW spectra: the rank of full finetuning's
ΔW and intruder dimensions. Every part is a set of comparisons (``Difference``, oriented so that
a positive value supports the claim) read by ``combine``; nothing is judged from a point
estimate.

Where the errors come from: the per-matrix spectrum artifacts (``[{run_id, step, data:
[per-matrix dict]}]``) of each method's usable best-LR runs at each run's last stored checkpoint
(claim 7's rise: first and last). A run's value is a median (bootstrap over its matrices) or a
mean (standard error over its matrices, Student's t on matrices − 1); pairs are formed within a
run, matrix by matrix, never across seeds; the runs are averaged over seeds with ``seed_mean``
(``learnforget.analysis.estimates`` says how each estimate's error is made). Without per-matrix
spectra the ``spectrum/*`` summaries give the values but there is no noise estimate: the part is
inconclusive and says what would settle it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from learnforget.analysis.claim_data import ClaimData, needs_pair
from learnforget.analysis.comparison import Difference, as_float
from learnforget.analysis.estimates import (
    BOOTSTRAP,
    BOOTSTRAP_SEED,
    Estimate,
    constant_estimate,
    difference_of,
    mean_estimate,
    median_estimate,
    over_seeds,
    seeds_noise,
)
from learnforget.analysis.formatting import fmt, fmt_tokens
from learnforget.analysis.verdicts import (
    FAR_MORE,
    FEW_INTRUDERS,
    HIGH_EARLY,
    MIN_INTRUDERS,
    UNTESTABLE,
    ClaimVerdict,
    Part,
    combine,
    untestable,
)
from learnforget.methods import ATTENTION_MODULES, MLP_MODULES

NO_SPECTRA = ("per-matrix ΔW spectra of full FT's best-LR runs (the store's spectrum artifacts) "
              "give the spread over matrices")


# --- the per-matrix spectra of a label's best-LR runs ------------------------------------------
def _best_runs(s: ClaimData, label: str) -> list[str]:
    """The usable runs (one per seed) of ``label`` at its best LR."""
    return s.at_best.run_ids().get(label, [])


def _records(s: ClaimData, spectra: Sequence[dict] | None, label: str) -> dict[str, list[dict]]:
    """Each best-LR run's spectrum records of ``label``, by step (runs without any left out)."""
    if not spectra:
        return {}
    records: dict[str, list[dict]] = {run: [] for run in _best_runs(s, label)}
    for record in spectra or ():
        if record.get("run_id") in records:
            records[record["run_id"]].append(record)
    return {run: sorted(found, key=lambda r: r["step"]) for run, found in records.items() if found}


def _final_by_run(records: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Per run of ``records`` (``_records``): its matrices at its last stored checkpoint."""
    return {run: list(found[-1]["data"]) for run, found in records.items()}


def _pairs_by_run(records: dict[str, list[dict]]) -> dict[str, list[tuple[float, float]]]:
    """Per run of ``records`` (``_records``) with two or more stored checkpoints: (first, last)
    rank90 of each matrix it holds at both, paired by matrix name within the run (never across
    seeds)."""
    pairs = {}
    for run, found in records.items():
        if found[0]["step"] == found[-1]["step"]:
            continue
        before = {m["name"]: as_float(m.get("rank90")) for m in found[0]["data"] if "name" in m}
        matched = [(before[m["name"]], as_float(m.get("rank90"))) for m in found[-1]["data"]
                   if m.get("name") in before]
        matched = [(a, b) for a, b in matched if math.isfinite(a) and math.isfinite(b)]
        if matched:
            pairs[run] = matched
    return pairs


def _ranks(matrices: list[dict]) -> list[float]:
    """The finite rank90 values of ``matrices``."""
    return [v for m in matrices if math.isfinite(v := as_float(m.get("rank90")))]


# --- 7: rank of ΔW -----------------------------------------------------------------------------
def claim_delta_rank(
    s: ClaimData,
    spectra: Sequence[dict] | None = None,
    far_more: float = FAR_MORE,
    high_early: float = HIGH_EARLY,
) -> ClaimVerdict:
    """Claim 7 on full FT's ΔW at its best LR. Main part: for every judged LoRA rank r that a
    matrix of these shapes can reach (``far_more`` × r ≤ a random matrix's rank90), the median
    rank90 over matrices − ``far_more`` × r > 0 (the paper's full-FT ΔW needs 10–100× the LoRA
    ranks it studies). Also: high early and rising — first − ``high_early`` × last > 0 and
    last − first > 0, paired by run and matrix; MLP above attention in shape-normalised rank
    (rank90 / a random matrix's rank90 of the same shape), means over matrices. Errors: matrices
    resampled (median) or their spread (means) per run, then ``seed_mean`` over seeds; without
    per-matrix spectra there is no noise estimate."""
    if s.ref is None:
        return untestable(7, "a measured full-finetuning run")
    final = s.final(s.ref, "spectrum/rank90")
    if final is None:
        return untestable(7, "ΔW spectra of full finetuning (evaluation.spectrum: true)")
    records = _records(s, spectra, s.ref)
    finals = _final_by_run(records)
    parts = [_far_more(s, finals, final, far_more),
             _high_early_rising(s, _pairs_by_run(records), high_early),
             _mlp_above_attention(finals, final)]
    if finals:
        noise = ("rank90: matrices resampled for each run's median (bootstrap, "
                 f"{BOOTSTRAP} draws), spread over matrices for the means and the paired rises; "
                 + seeds_noise(len(finals)))
    else:
        noise = "no per-matrix spectra: no noise estimate (summaries compared without error)"
    return combine(7, parts, s.scope, noise)


def _rank_estimate(finals: dict[str, list[dict]]) -> Estimate | None:
    """The median rank90 over matrices per run (bootstrap error over its matrices), averaged
    over seeds (``seed_mean``); None without per-matrix ranks."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    per_run = [median_estimate(ranks, rng) for matrices in finals.values()
               if (ranks := _ranks(matrices))]
    return over_seeds(per_run) if per_run else None


def _far_more(s: ClaimData, finals: dict[str, list[dict]], final: pd.Series,
              far_more: float) -> Part:
    """Claim 7's main part "far more than the LoRA rank" (see ``claim_delta_rank``)."""
    name = "far more than the LoRA rank"
    summary = float(final["spectrum/rank90"])
    random_rank = float(final.get("spectrum/random_rank90", math.nan))
    judged = s.judged()
    ranks = sorted({r for lab in judged if (r := s.r(lab)) is not None})
    usable_r = [r for r in ranks if not far_more * r > random_rank]  # NaN baseline keeps all
    if not ranks:
        return Part(name, UNTESTABLE, main=True,
                    missing="LoRA runs (their rank is the comparison)")
    if not usable_r:
        return Part(name, UNTESTABLE, main=True,
                    missing=f"a LoRA rank small enough to be outranked {far_more:g}×: "
                    f"{far_more:g}·r exceeds a random matrix's rank90 ({fmt(random_rank)}) for "
                    f"every r studied ({', '.join(map(str, ranks))}); full FT's rank90 is "
                    f"{fmt(summary)} ({fmt(summary / random_rank)} of random). A wider model or "
                    f"r ≤ {int(random_rank // far_more)} would test it")
    estimate = _rank_estimate(finals) or Estimate(summary, math.nan)
    rank = estimate.value
    tests = tuple(difference_of(estimate, constant_estimate(far_more * r)) for r in usable_r)
    evidence = (
        f"full FT's ΔW needs {fmt(rank)} directions for 90% of Σσ² (median over "
        f"matrices, {fmt_tokens(final['tokens'])} tokens; a random matrix "
        f"{fmt(random_rank)}): " + ", ".join(f"{rank / r:.3g}× r={r}" for r in usable_r)
        + f" (rule: median − {far_more:g}·r > 0 beyond noise for every LoRA r with "
        f"{far_more:g}·r ≤ the random matrix's rank90; the paper: 10–100× the LoRA ranks); "
        + ", ".join(f"r={r}: {t.text()}" for r, t in zip(usable_r, tests, strict=True))
    )
    skipped = [r for r in ranks if r not in usable_r]
    if skipped:
        evidence += (f"; r={', '.join(map(str, skipped))} not judged ({far_more:g}·r above "
                     "the random matrix's rank90)")
    lora_ranks = [f"{s.name(lab)} {fmt(v)}" for lab in judged
                  if math.isfinite(v := s.value(lab, "spectrum/rank90"))]
    if lora_ranks:
        evidence += "; LoRA ΔW rank90: " + ", ".join(lora_ranks)
    matrices = [rank90 for found in finals.values() for rank90 in _ranks(found)]
    if matrices:
        over = sum(v >= far_more * min(usable_r) for v in matrices)
        evidence += (f"; {over} of {len(matrices)} full-FT matrices need "
                     f"≥ {far_more * min(usable_r):g}")
    settle = NO_SPECTRA if not math.isfinite(estimate.se) else "more matrices or seeds"
    return Part(name, evidence=evidence, main=True, settle=settle, tests=tests)


def _high_early_rising(s: ClaimData, pairs: dict[str, list[tuple[float, float]]],
                       high_early: float) -> Part:
    """Claim 7's part "high early and rising" (see ``claim_delta_rank``): each run's matrices
    paired with themselves between its first and last stored checkpoint (``pairs``, from
    ``_pairs_by_run``); per run the mean over matrices of first − ``high_early``·last and of
    last − first with its error sd / √n, then ``seed_mean`` over seeds (a seed's pairs are never
    pooled with another's: the seeds share their matrices)."""
    name = "high early and rising"
    curve = s.curve(s.ref).dropna(subset=["spectrum/rank90"])
    if len(curve) < 2:
        return Part(name, UNTESTABLE, missing="two or more checkpoints of full FT with spectra")
    summary = ("full FT rank90 " + " → ".join(fmt(v) for v in curve["spectrum/rank90"])
               + f" over {fmt_tokens(curve['tokens'].iloc[0])} … "
               f"{fmt_tokens(curve['tokens'].iloc[-1])} tokens (rule: first − "
               f"{high_early:g}·last > 0 and last − first > 0 beyond noise")
    if pairs:
        early = over_seeds([mean_estimate([a - high_early * b for a, b in found])
                             for found in pairs.values()])
        rise = over_seeds([mean_estimate([b - a for a, b in found])
                            for found in pairs.values()])
        first = float(np.mean([np.mean([a for a, _ in found]) for found in pairs.values()]))
        last = float(np.mean([np.mean([b for _, b in found]) for found in pairs.values()]))
        count = sum(len(found) for found in pairs.values())
        detail = (f", each matrix against itself within its run: {count} pairs over "
                  f"{len(pairs)} run(s))")
        settle = "more matrices, seeds or a longer budget"
    else:
        first, last = (float(curve["spectrum/rank90"].iloc[i]) for i in (0, -1))
        early = rise = Estimate(math.nan, math.nan)
        detail = "; no per-matrix spectra of a first and a last checkpoint: no noise estimate)"
        settle = ("per-matrix ΔW spectra of full FT's first and last checkpoints (paired by run "
                  "and matrix) give the spread of the rise")
    tests = (Difference(first, high_early * last, early.se, early.df),
             Difference(last, first, rise.se, rise.df))
    return Part(name, evidence=summary + detail + f"; first − {high_early:g}·last "
                f"{tests[0].text()}, last − first {tests[1].text()}", settle=settle, tests=tests)


def _module_ratios(matrices: list[dict], modules: tuple[str, ...]) -> list[float]:
    """rank90 / random rank90 of the matrices of ``modules`` (those with both)."""
    ratios = [as_float(m.get("rank90")) / as_float(m["random_rank90"]) for m in matrices
              if m.get("module") in modules and as_float(m.get("random_rank90")) > 0]
    return [r for r in ratios if math.isfinite(r)]


def _ratio_difference(matrices: list[dict]) -> tuple[float, float, Estimate] | None:
    """One run's mean shape-normalised rank of MLP and of attention matrices and their
    difference with its error (two independent sets of matrices, Welch); None below two
    matrices of either."""
    mlp, attention = (_module_ratios(matrices, group) for group in (MLP_MODULES, ATTENTION_MODULES))
    if len(mlp) < 2 or len(attention) < 2:
        return None
    diff = difference_of(mean_estimate(mlp), mean_estimate(attention))
    return diff.a, diff.b, Estimate(diff.value, diff.se, diff.df)


def _mlp_above_attention(finals: dict[str, list[dict]], final: pd.Series) -> Part:
    """Claim 7's part "MLP above attention", in shape-normalised rank (rank90 / random): per
    run the mean over MLP matrices − the mean over attention matrices (Welch error), then
    ``seed_mean`` over seeds."""
    name = "MLP above attention"
    mlp, attention = (float(final.get(f"spectrum/rank90_ratio_{m}", math.nan))
                      for m in ("mlp", "attention"))
    if not (math.isfinite(mlp) and math.isfinite(attention)):
        return Part(name, UNTESTABLE, missing="full FT spectra of both attention and MLP matrices")
    per_run = [d for matrices in finals.values() if (d := _ratio_difference(matrices))]
    if per_run:
        spread = over_seeds([d for _, _, d in per_run])
        test = Difference(float(np.mean([a for a, _, _ in per_run])),
                          float(np.mean([b for _, b, _ in per_run])), spread.se, spread.df)
        detail = f"; mean over matrices MLP − attention {test.text()}"
        settle = "more layers, checkpoints or seeds"
    else:
        test = Difference(mlp, attention, math.nan)
        detail = "; no per-matrix spectra of both groups: no noise estimate"
        settle = NO_SPECTRA
    return Part(
        name,
        evidence=f"full FT rank90 / a random matrix's rank90 of the same shape (median): MLP "
        f"{fmt(mlp)} vs attention {fmt(attention)} (raw: "
        f"{fmt(float(final.get('spectrum/rank90_mlp', math.nan)))} vs "
        f"{fmt(float(final.get('spectrum/rank90_attention', math.nan)))}; normalised because "
        f"the shapes alone set a random matrix's rank){detail}",
        settle=settle, tests=(test,),
    )


# --- 9: intruders ------------------------------------------------------------------------------
def _intruder_counts(s: ClaimData, spectra: Sequence[dict] | None,
                     label: str) -> list[list[float]]:
    """Per best-LR run of ``label`` (with any): its matrices' intruder counts at its last
    stored checkpoint."""
    per_run = []
    for matrices in _final_by_run(_records(s, spectra, label)).values():
        found = [v for m in matrices if math.isfinite(v := as_float(m.get("intruders")))]
        if found:
            per_run.append(found)
    return per_run


def _count_estimate(counts: Sequence[float], threshold: float) -> Estimate:
    """The mean of one run's per-matrix ``counts`` for a comparison with ``threshold``: below
    it, with the error the counts would have at the threshold (their variance grows with their
    mean, as for overdispersed Poisson counts: sd / √n × √(threshold / mean); √(threshold / n)
    when every count is 0), since a low mean's own small spread would make a shortfall look
    surer than it is; at or above it with the plain error sd / √n."""
    plain = mean_estimate(counts)
    if not math.isfinite(plain.se) or plain.value >= threshold:
        return plain
    if plain.value <= 0:
        return Estimate(plain.value, math.sqrt(threshold / len(counts)), plain.df)
    return Estimate(plain.value, plain.se * math.sqrt(threshold / plain.value), plain.df)


def _intruder_estimates(s: ClaimData, spectra: Sequence[dict] | None, label: str,
                        summary: float, minimum: float) -> tuple[Estimate, Estimate, str]:
    """``label``'s intruder dimensions per matrix at its last best-LR checkpoints: per run the
    mean over its matrices, then ``seed_mean`` over seeds, with the plain error (sd / √n) and
    with the error for a comparison with ``minimum`` (``_count_estimate``); the ``summary``
    (``spectrum/intruders``) without error when no per-matrix counts are stored. Also a note of
    how many matrices have any."""
    per_run = _intruder_counts(s, spectra, label)
    if not per_run:
        return Estimate(summary, math.nan), Estimate(summary, math.nan), ""
    with_any = sum(v > 0 for found in per_run for v in found)
    total = sum(len(found) for found in per_run)
    return (over_seeds([mean_estimate(found) for found in per_run]),
            over_seeds([_count_estimate(found, minimum) for found in per_run]),
            f" ({with_any} of {total} matrices have any)")


def claim_intruders(
    s: ClaimData,
    spectra: Sequence[dict] | None = None,
    minimum: float = MIN_INTRUDERS,
    few: float = FEW_INTRUDERS,
) -> ClaimVerdict:
    """Claim 9 on intruder dimensions per matrix (top 10 directions, ε = 0.5) at the final
    best-LR checkpoints of the lowest-rank judged LoRA and full FT: LoRA − ``minimum`` > 0
    (it creates intruders) and ``few``·LoRA − full FT > 0 (full FT creates few), each beyond
    noise: means over the per-matrix counts of the spectrum artifacts (error over matrices; a
    mean below ``minimum`` with the error it would have at ``minimum``, ``_count_estimate``),
    ``seed_mean`` over seeds; without per-matrix counts the ``spectrum/intruders`` summaries
    have no noise estimate."""
    column = "spectrum/intruders"
    if (missing := needs_pair(s, 9)) is not None:
        return missing
    summary = {lab: s.value(lab, column) for lab in [s.ref, *s.judged()]}
    loras = [lab for lab, v in summary.items()
             if lab != s.ref and math.isfinite(v) and s.r(lab) is not None]
    if not math.isfinite(summary[s.ref]) or not loras:
        return untestable(9, "intruder counts of full FT and LoRA (evaluation.spectrum: true)",
                          s.scope)
    lowest_r = min(s.r(lab) for lab in loras)
    lowest = [lab for lab in loras if s.r(lab) == lowest_r]
    found = {lab: _intruder_estimates(s, spectra, lab, summary[lab], minimum)
             for lab in [s.ref, *loras]}
    estimates = {lab: estimate for lab, (estimate, _, _) in found.items()}
    creates = tuple(difference_of(found[lab][1], constant_estimate(minimum)) for lab in lowest)
    fewer = tuple(difference_of(estimates[lab], estimates[s.ref], few) for lab in lowest)
    counts = "; ".join(f"{s.name(lab)} {fmt(summary[lab])}{note}"
                       for lab, (_, _, note) in found.items())
    no_error = any(not math.isfinite(t.se) for t in creates + fewer)
    settle = ("per-matrix intruder counts (the store's spectrum artifacts) give the spread over "
              "matrices" if no_error else "more matrices or seeds")
    parts = [
        Part("low-rank LoRA creates intruders", main=True, settle=settle, tests=creates,
             evidence="intruder dimensions per matrix (top 10 directions, ε = 0.5): " + counts
             + f" (rule: the lowest-rank LoRA (r={lowest_r}) − {minimum:g} > 0 beyond noise: "
             + "; ".join(f"{s.name(lab)} {t.text()}"
                         for lab, t in zip(lowest, creates, strict=True)) + ")"),
        Part("full FT creates few", settle=settle, tests=fewer,
             evidence=f"{few:g}·LoRA r={lowest_r} − full FT "
             + "; ".join(t.text() for t in fewer)
             + f" (rule: full FT at most {few:.0%} of the lowest-rank LoRA's count, beyond noise)"),
    ]
    seeds = max(e.seeds for e in estimates.values())
    noise = ("intruders: spread over matrices (per-matrix counts; below the minimum, the spread "
             "scaled to it)" if not no_error
             else "intruders: no per-matrix counts: no noise estimate")
    return combine(9, parts, s.scope, f"{noise}; {seeds_noise(seeds)}")
