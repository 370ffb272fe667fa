"""Claims 7–9 of the checklist: the rank of full finetuning's ΔW, the diversity of generations
and intruder dimensions. Every part is a set of comparisons (``Difference``, oriented so that a
positive value supports the claim) read by ``combine``; nothing is judged from a point estimate.

Where the errors come from:

- Claims 7 and 9 read the per-matrix spectrum artifacts (``[{run_id, step, data: [per-matrix
  dict]}]``) of each method's usable best-LR runs at each run's last stored checkpoint (claim 7's
  rise: first and last). A run's value is a median (bootstrap over its matrices) or a mean
  (standard error over its matrices, Student's t on matrices − 1); pairs are formed within a run,
  matrix by matrix, never across seeds. Without per-matrix spectra the ``spectrum/*`` summaries
  give the values but there is no noise estimate: the part is inconclusive and says what would
  settle it.
- Claim 8 reads each run's ``diversity/mean_distinct`` and its standard error over prompts.
- Seeds share their items (the same matrices, the same prompts), so a seed mean's error is not
  the runs' errors shrunk by √seeds: ``seed_mean`` takes their mean standard error and adds the
  between-seed variance sd² / k (k − 1 degrees of freedom), combined Welch–Satterthwaite style.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from learnforget.analysis.claim_data import ClaimData, needs_pair
from learnforget.analysis.comparison import Difference, as_float
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
from learnforget.measure.uncertainty import stderr_name
from learnforget.methods import ATTENTION_MODULES, MLP_MODULES

BOOTSTRAP = 400  # draws over matrices for the standard error of a median
BOOTSTRAP_SEED = 0  # the bootstrap's generator is seeded: a verdict does not change between calls
NO_SPECTRA = ("per-matrix ΔW spectra of full FT's best-LR runs (the store's spectrum artifacts) "
              "give the spread over matrices")


# --- a seed mean when the seeds share their items ----------------------------------------------
class Estimate(NamedTuple):
    """A value with its standard error (NaN: no noise estimate), degrees of freedom (∞ when only
    item noise with a known error moves it) and how many seeds it averages."""

    value: float
    se: float
    df: float = math.inf
    seeds: int = 1


def welch_df(components: Sequence[tuple[float, float]]) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of variance components ``(variance, df)``:
    (Σv)² / Σ(v² / df); ∞ when no component with finite df contributes or the sum is unknown."""
    total = sum(v for v, _ in components)
    tail = sum(v * v / df for v, df in components if v > 0 and math.isfinite(df))
    if not math.isfinite(total) or tail <= 0:
        return math.inf
    return max(total * total / tail, 1.0)


def seed_mean(values: Sequence[float], errors: Sequence[float],
              item_df: float = math.inf) -> Estimate:
    """The mean over seeds of ``values`` (one per seed) whose standard errors over items are
    ``errors``, when the seeds share their items (the same prompts, the same matrices): the item
    part of the error is the mean of the runs' standard errors (the seeds' item errors move
    together; √Σse² / k would shrink as if each seed had items of its own), and with k ≥ 2 seeds
    the between-seed variance sd² / k (k − 1 degrees of freedom) is added, the degrees of freedom
    combined Welch–Satterthwaite style (``item_df`` for the item part). Duplicating a seed leaves
    the error as it is. Conservative: the seeds' spread also holds the item noise they do not
    share. An unknown error (NaN) gives NaN: no noise estimate."""
    pairs = [(as_float(v), as_float(e)) for v, e in zip(values, errors, strict=True)]
    pairs = [(v, e) for v, e in pairs if math.isfinite(v)]
    if not pairs:
        return Estimate(math.nan, math.nan, math.inf, 0)
    k = len(pairs)
    mean = float(np.mean([v for v, _ in pairs]))
    item = float(np.mean([e for _, e in pairs]))
    if k < 2:
        return Estimate(mean, item, item_df, 1)
    between = float(np.var([v for v, _ in pairs], ddof=1)) / k
    se = math.sqrt(item * item + between)
    return Estimate(mean, se, welch_df([(item * item, item_df), (between, k - 1.0)]), k)


def difference_of(a: Estimate, b: Estimate, scale: float = 1.0) -> Difference:
    """``scale``·a − b for independent estimates: error √(scale²·se_a² + se_b²), degrees of
    freedom Welch–Satterthwaite."""
    va, vb = (scale * a.se) ** 2, b.se**2
    return Difference(scale * a.value, b.value, math.sqrt(va + vb),
                      welch_df([(va, a.df), (vb, b.df)]))


def _constant(value: float) -> Estimate:
    """A threshold: a value without error."""
    return Estimate(float(value), 0.0)


def _mean_estimate(values: Sequence[float]) -> Estimate:
    """The mean of ``values`` (one per matrix) with its standard error sd / √n and n − 1 degrees
    of freedom (no error below two values)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(math.nan, math.nan)
    if x.size < 2:
        return Estimate(float(x[0]), math.nan)
    return Estimate(float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)), x.size - 1.0)


def _median_estimate(values: Sequence[float], rng: np.random.Generator) -> Estimate:
    """The median of ``values`` (one per matrix) with its standard error from ``BOOTSTRAP``
    resamplings of the matrices and n − 1 degrees of freedom (no error below two values)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(math.nan, math.nan)
    if x.size < 2:
        return Estimate(float(x[0]), math.nan)
    draws = np.median(x[rng.integers(0, x.size, size=(BOOTSTRAP, x.size))], axis=1)
    return Estimate(float(np.median(x)), float(draws.std(ddof=1)), x.size - 1.0)


def _over_seeds(estimates: Sequence[Estimate]) -> Estimate:
    """``seed_mean`` of per-run estimates (item degrees of freedom: the smallest of theirs)."""
    if not estimates:
        return Estimate(math.nan, math.nan, math.inf, 0)
    return seed_mean([e.value for e in estimates], [e.se for e in estimates],
                     min(e.df for e in estimates))


def _seeds_noise(seeds: int) -> str:
    """How seeds enter the errors, in words."""
    if seeds >= 2:
        return (f"seeds: up to {seeds} per method, their spread added to the item error (not "
                "divided by √seeds: the seeds share their items; Student's t on "
                "Welch–Satterthwaite degrees of freedom)")
    return "one seed per run: seed noise unmeasured"


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
                 + _seeds_noise(len(finals)))
    else:
        noise = "no per-matrix spectra: no noise estimate (summaries compared without error)"
    return combine(7, parts, s.scope, noise)


def _rank_estimate(finals: dict[str, list[dict]]) -> Estimate | None:
    """The median rank90 over matrices per run (bootstrap error over its matrices), averaged
    over seeds (``seed_mean``); None without per-matrix ranks."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    per_run = [_median_estimate(ranks, rng) for matrices in finals.values()
               if (ranks := _ranks(matrices))]
    return _over_seeds(per_run) if per_run else None


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
    tests = tuple(difference_of(estimate, _constant(far_more * r)) for r in usable_r)
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
        early = _over_seeds([_mean_estimate([a - high_early * b for a, b in found])
                             for found in pairs.values()])
        rise = _over_seeds([_mean_estimate([b - a for a, b in found])
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
    diff = difference_of(_mean_estimate(mlp), _mean_estimate(attention))
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
        spread = _over_seeds([d for _, _, d in per_run])
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


# --- 8: diversity ------------------------------------------------------------------------------
def _final_rows(s: ClaimData, label: str, column: str) -> pd.DataFrame:
    """The rows of ``label``'s usable best-LR runs (one per seed) at its last checkpoint holding
    ``column``."""
    row = s.final(label, column)
    if row is None:
        return pd.DataFrame(columns=[column])
    chosen = s.at_best.checkpoints(label)
    return chosen[chosen["step"] == row["step"]].dropna(subset=[column])


def _at(row: pd.Series, column: str) -> float:
    """``row[column]`` as a float (NaN when absent)."""
    return as_float(row.get(column, math.nan))


def seed_estimate(s: ClaimData, label: str, column: str, count: str | None = None) -> Estimate:
    """``column`` of ``label`` at its last best-LR checkpoint, averaged over seeds that share
    their items (``seed_mean``), its item error from ``<column>_stderr`` with ``count`` − 1
    degrees of freedom (``count``: the column holding the number of items; ∞ when None)."""
    rows = _final_rows(s, label, column)
    se_column = stderr_name(column)
    errors = rows[se_column] if se_column in rows else [math.nan] * len(rows)
    items = as_float(rows[count].min()) if count and count in rows and len(rows) else math.nan
    return seed_mean(list(rows[column]), list(errors),
                     items - 1.0 if math.isfinite(items) and items > 1 else math.inf)


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
                            tests=tests)], s.scope, f"{noise}; {_seeds_noise(seeds)}")


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
    plain = _mean_estimate(counts)
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
    return (_over_seeds([_mean_estimate(found) for found in per_run]),
            _over_seeds([_count_estimate(found, minimum) for found in per_run]),
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
    creates = tuple(difference_of(found[lab][1], _constant(minimum)) for lab in lowest)
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
    return combine(9, parts, s.scope, f"{noise}; {_seeds_noise(seeds)}")
