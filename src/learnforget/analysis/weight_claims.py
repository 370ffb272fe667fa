"""Claims 7–9 of the checklist: the rank of full finetuning's ΔW, the diversity of generations
and intruder dimensions. Verdicts come from the ``spectrum/*`` and ``diversity/*`` summaries of the
``Frame``; the per-matrix spectrum artifacts, when given, add per-matrix counts to the evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from learnforget.analysis.claim_data import (
    FAILS,
    FAR_MORE,
    FEW_INTRUDERS,
    HIGH_EARLY,
    HOLDS,
    INCONCLUSIVE,
    MIN_INTRUDERS,
    RISE,
    UNTESTABLE,
    ClaimData,
    ClaimVerdict,
    Part,
    combine,
    fmt,
    fmt_tokens,
    needs_pair,
    tri_state,
    untestable,
)
from learnforget.analysis.summary import ATTENTION, MLP
from learnforget.analysis.uncertainty import Difference, Z, difference


# --- 7: rank of ΔW -----------------------------------------------------------------------------
def _final_matrices(s: ClaimData, spectra: Sequence[dict] | None, label: str) -> list[dict]:
    """Per-matrix spectra of ``label``'s best-LR runs at each run's last stored checkpoint."""
    if not spectra or label not in s.best:
        return []
    runs = s.frame.runs
    ids = set(
        runs.loc[
            (runs["label"] == label)
            & np.isclose(runs["lr"], s.best[label])
            & ~runs["status"].isin(["diverged", "failed"]),
            "run_id",
        ]
    )
    last: dict[str, dict] = {}
    for record in spectra:
        if (
            record["run_id"] in ids
            and record["step"] >= last.get(record["run_id"], {"step": -1})["step"]
        ):
            last[record["run_id"]] = record
    return [matrix for record in last.values() for matrix in record["data"]]


def _first_matrices(s: ClaimData, spectra: Sequence[dict] | None, label: str) -> list[dict]:
    """Per-matrix spectra of ``label``'s best-LR runs at each run's first stored checkpoint."""
    if not spectra or label not in s.best:
        return []
    runs = s.frame.runs
    ids = set(runs.loc[(runs["label"] == label) & np.isclose(runs["lr"], s.best[label]),
                       "run_id"])
    first: dict[str, dict] = {}
    for record in spectra:
        if record["run_id"] in ids and record["step"] < first.get(
                record["run_id"], {"step": math.inf})["step"]:
            first[record["run_id"]] = record
    return [matrix for record in first.values() for matrix in record["data"]]


def _paired_rise(first: list[dict], last: list[dict]) -> Difference | None:
    """The mean rise of rank90 from the first to the last checkpoint over the matrices both
    hold, with its standard error over matrices (paired: each matrix against itself)."""
    before = {m["name"]: float(m["rank90"]) for m in first if "name" in m}
    pairs = [(before[m["name"]], float(m["rank90"])) for m in last if m.get("name") in before]
    if len(pairs) < 2:
        return None
    rises = np.array([b - a for a, b in pairs])
    se = float(rises.std(ddof=1) / math.sqrt(len(rises)))
    return Difference(float(np.mean([b for _, b in pairs])), float(np.mean([a for a, _ in pairs])),
                      se)


def _module_ratios(matrices: list[dict], modules: set[str]) -> list[float]:
    """rank90 / random rank90 of the matrices of ``modules``."""
    return [float(m["rank90"]) / float(m["random_rank90"]) for m in matrices
            if m.get("module") in modules and m.get("random_rank90")]


def claim_delta_rank(
    s: ClaimData,
    spectra: Sequence[dict] | None = None,
    far_more: float = FAR_MORE,
    high_early: float = HIGH_EARLY,
) -> ClaimVerdict:
    """Claim 7 from full FT's ``spectrum/rank90*`` summaries (median over matrices) at its best
    LR. Main part: the final rank90 ≥ ``far_more`` × every judged LoRA rank r that a matrix of
    these shapes can reach (``far_more`` × r ≤ a random matrix's rank90): the paper's full-FT ΔW
    needs 10–100× the LoRA ranks it studies. Also: high early and rising — the first
    checkpoint's rank90 ≥ ``high_early`` × the final and the rise larger than noise (paired over
    matrices when the per-matrix spectra are given, else more than ``RISE`` of the first value);
    MLP above attention in shape-normalised rank (rank90 / a random matrix's rank90 of the same
    shape), beyond the spread over matrices when they are given."""
    if s.ref is None:
        return untestable(7, "a measured full-finetuning run")
    final = s.final(s.ref, "spectrum/rank90")
    if final is None:
        return untestable(7, "ΔW spectra of full finetuning (evaluation.spectrum: true)")
    rank = float(final["spectrum/rank90"])
    random_rank = float(final.get("spectrum/random_rank90", math.nan))
    ranks = sorted({r for lab in s.judged() if (r := s.r(lab)) is not None})
    usable_r = [r for r in ranks if not far_more * r > random_rank]  # NaN baseline keeps all
    name = "far more than the LoRA rank"
    if not ranks:
        main = Part(name, UNTESTABLE, main=True, missing="LoRA runs (their rank is the comparison)")
    elif not usable_r:
        main = Part(name, UNTESTABLE, main=True,
                    missing=f"a LoRA rank small enough to be outranked {far_more:g}×: "
                    f"{far_more:g}·r exceeds a random matrix's rank90 ({fmt(random_rank)}) for "
                    f"every r studied ({', '.join(map(str, ranks))}); full FT's rank90 is "
                    f"{fmt(rank)} ({fmt(rank / random_rank)} of random). A wider model or "
                    f"r ≤ {int(random_rank // far_more)} would test it")
    else:
        ok = all(rank >= far_more * r for r in usable_r)
        evidence = (
            f"full FT's ΔW needs {fmt(rank)} directions for 90% of Σσ² (median over "
            f"matrices, {fmt_tokens(final['tokens'])} tokens; a random matrix "
            f"{fmt(random_rank)}): " + ", ".join(f"{rank / r:.3g}× r={r}" for r in usable_r)
            + f" (rule: ≥ {far_more:g}× every LoRA r with {far_more:g}·r ≤ the random "
            "matrix's rank90; the paper: 10–100× the LoRA ranks)"
        )
        skipped = [r for r in ranks if r not in usable_r]
        if skipped:
            evidence += (f"; r={', '.join(map(str, skipped))} not judged ({far_more:g}·r above "
                         "the random matrix's rank90)")
        lora_ranks = [f"{s.name(lab)} {fmt(s.value(lab, 'spectrum/rank90'))}"
                      for lab in s.judged() if math.isfinite(s.value(lab, "spectrum/rank90"))]
        if lora_ranks:
            evidence += "; LoRA ΔW rank90: " + ", ".join(lora_ranks)
        matrices = _final_matrices(s, spectra, s.ref)
        if matrices:
            over = sum(m["rank90"] >= far_more * min(usable_r) for m in matrices)
            evidence += (f"; {over} of {len(matrices)} full-FT matrices need "
                         f"≥ {far_more * min(usable_r):g}")
        main = Part(name, HOLDS if ok else FAILS, evidence, main=True)
    return combine(7, [main, _high_early_rising(s, spectra, high_early),
                       _mlp_above_attention(s, spectra, final)], s.scope)


def _high_early_rising(s: ClaimData, spectra: Sequence[dict] | None, high_early: float) -> Part:
    """Claim 7's part "high early and rising" (see ``claim_delta_rank``)."""
    name = "high early and rising"
    curve = s.curve(s.ref).dropna(subset=["spectrum/rank90"])
    if len(curve) < 2:
        return Part(name, UNTESTABLE, missing="two or more checkpoints of full FT with spectra")
    first, last = (float(curve["spectrum/rank90"].iloc[i]) for i in (0, -1))
    rise = _paired_rise(_first_matrices(s, spectra, s.ref), _final_matrices(s, spectra, s.ref))
    if rise is not None:
        rising = rise.exceeds()
        noise = (f"mean rise over matrices {rise.text()} (± {Z} standard errors, each matrix "
                 "against itself)")
    else:
        rising = True if last > first * (1 + RISE) else False if last < first else None
        noise = f"rule without per-matrix spectra: a rise of more than {RISE:.0%}"
    early = first >= high_early * last
    verdict = FAILS if not early or rising is False else INCONCLUSIVE if rising is None else HOLDS
    return Part(
        name, verdict,
        "full FT rank90 " + " → ".join(fmt(v) for v in curve["spectrum/rank90"])
        + f" over {fmt_tokens(curve['tokens'].iloc[0])} … {fmt_tokens(curve['tokens'].iloc[-1])}"
        f" tokens (rule: first ≥ {high_early:.0%} of the final; the rise larger than noise: "
        f"{noise})",
        settle="more checkpoints or a longer budget" if verdict == INCONCLUSIVE else "",
    )


def _mlp_above_attention(s: ClaimData, spectra: Sequence[dict] | None, final: pd.Series) -> Part:
    """Claim 7's part "MLP above attention", in shape-normalised rank (rank90 / random)."""
    name = "MLP above attention"
    mlp, attention = (float(final.get(f"spectrum/rank90_ratio_{m}", math.nan))
                      for m in ("mlp", "attention"))
    if not (math.isfinite(mlp) and math.isfinite(attention)):
        return Part(name, UNTESTABLE, missing="full FT spectra of both attention and MLP matrices")
    matrices = _final_matrices(s, spectra, s.ref)
    mlp_ratios, attention_ratios = (_module_ratios(matrices, group) for group in (MLP, ATTENTION))
    if len(mlp_ratios) >= 2 and len(attention_ratios) >= 2:
        diff = difference(float(np.mean(mlp_ratios)),
                          float(np.std(mlp_ratios, ddof=1) / math.sqrt(len(mlp_ratios))),
                          float(np.mean(attention_ratios)),
                          float(np.std(attention_ratios, ddof=1)
                                / math.sqrt(len(attention_ratios))))
        above = diff.exceeds()
        detail = (f"; mean over matrices MLP − attention {diff.text()} (± {Z} standard errors "
                  "over matrices)")
    else:
        above, detail = mlp > attention, "; no per-matrix spread: compared without noise"
    verdict = HOLDS if above is True else FAILS if above is False else INCONCLUSIVE
    return Part(
        name, verdict,
        f"full FT rank90 / a random matrix's rank90 of the same shape (median): MLP {fmt(mlp)} vs "
        f"attention {fmt(attention)} (raw: {fmt(float(final.get('spectrum/rank90_mlp', math.nan)))}"
        f" vs {fmt(float(final.get('spectrum/rank90_attention', math.nan)))}; normalised because "
        f"the shapes alone set a random matrix's rank){detail}",
        settle="more layers or checkpoints" if verdict == INCONCLUSIVE else "",
    )


# --- 8: diversity --------------------------------------------------------------------------------
def claim_diversity(s: ClaimData) -> ClaimVerdict:
    """Claim 8: every judged LoRA (best LR, final) keeps more distinct samples per prompt than
    full FT, the difference beyond noise (standard error over prompts). The mean pairwise
    similarity of the samples is reported beside it, not judged."""
    distinct, similar = "diversity/mean_distinct", "diversity/mean_pairwise_similarity"
    if (missing := needs_pair(s, 8)) is not None:
        return missing
    loras = [lab for lab in s.judged() if math.isfinite(s.value(lab, distinct))]
    if not math.isfinite(s.value(s.ref, distinct)) or not loras:
        return untestable(8, "diversity of full FT and LoRA (evaluation.diversity: true)", s.scope)
    per_prompt = s.value(s.ref, "diversity/samples") / s.value(s.ref, "diversity/prompts")
    counts = {lab: s.value(lab, distinct) for lab in [s.ref, *loras]}
    if all(count >= per_prompt - 1e-9 for count in counts.values()):
        shown = "; ".join(f"{s.name(lab)} {fmt(count)} (similarity {fmt(s.value(lab, similar))})"
                          for lab, count in counts.items())
        return combine(8, [Part("LoRA more diverse", UNTESTABLE, main=True, missing=(
            f"a distinct-samples count below its ceiling: every method kept all {fmt(per_prompt)} "
            f"samples of every prompt distinct ({shown}), so the count cannot tell them apart; "
            "more samples per prompt or a lower temperature"))], s.scope)
    results, lines = [], []
    for label in loras:
        diff = difference(s.value(label, distinct), s.error(label, distinct),
                          s.value(s.ref, distinct), s.error(s.ref, distinct))
        results.append(diff.exceeds())
        lines.append(f"{s.name(label)} − full FT {diff.text()}")
    parts = [f"{s.name(lab)} {fmt(s.value(lab, distinct))} distinct "
             f"(similarity {fmt(s.value(lab, similar))})" for lab in [s.ref, *loras]]
    base = s.frame.base.get(similar)
    evidence = (
        f"distinct samples per prompt ({fmt(per_prompt)} samples each): " + "; ".join(parts)
        + (f"; base model similarity {fmt(float(base))}" if base is not None and pd.notna(base)
           else "")
        + f". Differences: {'; '.join(lines)} (rule: more distinct samples than full FT beyond "
        f"{Z} standard errors over prompts; similarity reported, not judged)"
    )
    verdict = tri_state(results)
    settle = ""
    if verdict == INCONCLUSIVE:
        settle = "more prompts or more samples per prompt"
    return combine(8, [Part("LoRA more diverse", verdict, evidence, main=True, settle=settle)],
                   s.scope)


# --- 9: intruders ------------------------------------------------------------------------------
def claim_intruders(
    s: ClaimData,
    spectra: Sequence[dict] | None = None,
    minimum: float = MIN_INTRUDERS,
    few: float = FEW_INTRUDERS,
) -> ClaimVerdict:
    """Claim 9 from ``spectrum/intruders`` (mean per matrix; top 10 directions, ε = 0.5) at the
    final best-LR checkpoint: the lowest-rank judged LoRA has at least ``minimum``, full FT at
    most ``few`` × its count. ``spectra`` (optional) adds how many matrices have any."""
    column = "spectrum/intruders"
    if (missing := needs_pair(s, 9)) is not None:
        return missing
    full = s.value(s.ref, column)
    loras = {lab: s.value(lab, column) for lab in s.judged()}
    loras = {lab: v for lab, v in loras.items() if math.isfinite(v) and s.r(lab) is not None}
    if not math.isfinite(full) or not loras:
        return untestable(9, "intruder counts of full FT and LoRA (evaluation.spectrum: true)",
                          s.scope)
    lowest_r = min(s.r(lab) for lab in loras)
    low = min(v for lab, v in loras.items() if s.r(lab) == lowest_r)
    holds = low >= minimum and full <= few * low
    detail = []
    for label in [s.ref, *loras]:
        matrices = _final_matrices(s, spectra, label)
        with_any = [m for m in matrices if m.get("intruders")]
        detail.append(
            f"{s.name(label)} {fmt(s.value(label, column))}"
            + (f" ({len(with_any)} of {len(matrices)} matrices have any)" if matrices else "")
        )
    evidence = (
        "intruder dimensions per matrix (top 10 directions, ε = 0.5): " + "; ".join(detail)
        + f" (rule: the lowest-rank LoRA (r={lowest_r}) ≥ {minimum:g}, full FT ≤ {few:.0%} of "
        "it)"
    )
    return combine(9, [Part("LoRA creates intruders, full FT few", HOLDS if holds else FAILS,
                            evidence, main=True)], s.scope)
