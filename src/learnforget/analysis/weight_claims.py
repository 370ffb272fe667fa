"""Claims 7–9 of the checklist: the rank of full finetuning's ΔW, the diversity of generations
and intruder dimensions. Verdicts come from the ``spectrum/*`` and ``diversity/*`` summaries of the
``Frame``; the per-matrix spectrum artifacts, when given, add per-matrix counts to the evidence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from learnforget.analysis.claim_data import (
    FAILS,
    FEW_INTRUDERS,
    HIGH_EARLY,
    HOLDS,
    MIN_INTRUDERS,
    SEVERAL,
    UNTESTABLE,
    ClaimData,
    ClaimVerdict,
    Part,
    combine,
    fmt,
    fmt_tokens,
    needs_pair,
    untestable,
)


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


def claim_delta_rank(
    s: ClaimData,
    spectra: Sequence[dict] | None = None,
    several: float = SEVERAL,
    high_early: float = HIGH_EARLY,
) -> ClaimVerdict:
    """Claim 7 from full FT's ``spectrum/rank90*`` summaries (median over matrices) at its best
    LR. Main part: the final rank90 ≥ ``several`` × every LoRA rank r studied that a matrix of
    these shapes can outrank (``several`` × r ≤ a random matrix's rank90). Also: the first
    checkpoint's rank90 ≥ ``high_early`` × the final's and the final is larger; MLP's is above
    attention's. ``spectra`` (artifact records, optional) adds a per-matrix count."""
    need = "ΔW spectra of full finetuning (evaluation.spectrum: true)"
    if s.ref is None:
        return untestable(7, "a measured full-finetuning run")
    final = s.final(s.ref, "spectrum/rank90")
    if final is None:
        return untestable(7, need)
    rank = float(final["spectrum/rank90"])
    random_rank = float(final.get("spectrum/random_rank90", math.nan))
    ranks = sorted(
        {
            int(r)
            for lab in s.loras()
            for r in s.frame.runs.loc[s.frame.runs["label"] == lab, "r"].dropna()
        }
    )
    usable_r = [r for r in ranks if not several * r > random_rank]  # NaN baseline keeps all
    if not ranks:
        main = Part(
            "far more than the LoRA rank",
            UNTESTABLE,
            main=True,
            missing="LoRA runs (their rank is the comparison)",
        )
    elif not usable_r:
        main = Part(
            "far more than the LoRA rank",
            UNTESTABLE,
            main=True,
            missing=f"LoRA ranks small enough to be outranked: {several:g}·r exceeds "
            f"a random matrix's rank90 ({fmt(random_rank)}) for every r studied",
        )
    else:
        ok = all(rank >= several * r for r in usable_r)
        evidence = (
            f"full FT's ΔW needs {fmt(rank)} directions for 90% of Σσ² (median over "
            f"matrices, {fmt_tokens(final['tokens'])} tokens; a random matrix "
            f"{fmt(random_rank)}): "
            + ", ".join(f"{rank / r:.3g}× r={r}" for r in usable_r)
            + f" (rule: ≥ {several:g}× every LoRA r with {several:g}·r ≤ the random "
            "matrix's rank90)"
        )
        skipped = [r for r in ranks if r not in usable_r]
        if skipped:
            evidence += (
                f"; r={', '.join(map(str, skipped))} not judged ({several:g}·r above the "
                "random matrix's rank90)"
            )
        lora_ranks = [
            f"{s.name(lab)} {fmt(s.value(lab, 'spectrum/rank90'))}"
            for lab in s.loras()
            if math.isfinite(s.value(lab, "spectrum/rank90"))
        ]
        if lora_ranks:
            evidence += "; LoRA ΔW rank90: " + ", ".join(lora_ranks)
        matrices = _final_matrices(s, spectra, s.ref)
        if matrices:
            over = sum(m["rank90"] >= several * min(usable_r) for m in matrices)
            evidence += (
                f"; {over} of {len(matrices)} full-FT matrices need ≥ {several * min(usable_r):g}"
            )
        main = Part("far more than the LoRA rank", HOLDS if ok else FAILS, evidence, main=True)
    curve = s.curve(s.ref).dropna(subset=["spectrum/rank90"])
    if len(curve) < 2:
        early = Part(
            "high early and rising",
            UNTESTABLE,
            missing="two or more checkpoints of full FT with spectra",
        )
    else:
        first, last = (float(curve["spectrum/rank90"].iloc[i]) for i in (0, -1))
        ok = first >= high_early * last and last > first
        early = Part(
            "high early and rising",
            HOLDS if ok else FAILS,
            "full FT rank90 "
            + " → ".join(fmt(v) for v in curve["spectrum/rank90"])
            + f" over {fmt_tokens(curve['tokens'].iloc[0])} … "
            f"{fmt_tokens(curve['tokens'].iloc[-1])} tokens (rule: first ≥ "
            f"{high_early:.0%} of the final, final above the first)",
        )
    mlp, attention = (
        float(final.get(f"spectrum/rank90_{m}", math.nan)) for m in ("mlp", "attention")
    )
    if not (math.isfinite(mlp) and math.isfinite(attention)):
        modules = Part(
            "MLP above attention",
            UNTESTABLE,
            missing="full FT spectra of both attention and MLP matrices",
        )
    else:
        modules = Part(
            "MLP above attention",
            HOLDS if mlp > attention else FAILS,
            f"full FT rank90 MLP {fmt(mlp)} vs attention {fmt(attention)}",
        )
    return combine(7, [main, early, modules])


# --- 8: diversity --------------------------------------------------------------------------------
def claim_diversity(s: ClaimData) -> ClaimVerdict:
    """Claim 8: every LoRA (best LR, final) has at least full FT's mean number of distinct
    samples per prompt and a lower mean pairwise similarity of its samples."""
    distinct, similar = "diversity/mean_distinct", "diversity/mean_pairwise_similarity"
    if (missing := needs_pair(s, 8)) is not None:
        return missing
    full = (s.value(s.ref, distinct), s.value(s.ref, similar))
    loras = {lab: (s.value(lab, distinct), s.value(lab, similar)) for lab in s.loras()}
    loras = {lab: v for lab, v in loras.items() if all(map(math.isfinite, v))}
    if not all(map(math.isfinite, full)) or not loras:
        return untestable(8, "diversity of full FT and LoRA (evaluation.diversity: true)")
    per_prompt = s.value(s.ref, "diversity/samples") / s.value(s.ref, "diversity/prompts")
    more = all(d >= full[0] and sim < full[1] for d, sim in loras.values())
    parts = [
        f"{s.name(lab)} {fmt(d)} distinct, similarity {fmt(sim)}"
        for lab, (d, sim) in [(s.ref, full), *loras.items()]
    ]
    base = s.frame.base.get(similar)
    evidence = (
        f"per prompt ({fmt(per_prompt)} samples each): "
        + "; ".join(parts)
        + (
            f"; base model similarity {fmt(float(base))}"
            if base is not None and pd.notna(base)
            else ""
        )
        + " (rule: at least as many distinct samples and a lower mean similarity)"
    )
    return combine(8, [Part("LoRA more diverse", HOLDS if more else FAILS, evidence, main=True)])


# --- 9: intruders ------------------------------------------------------------------------------
def claim_intruders(
    s: ClaimData,
    spectra: Sequence[dict] | None = None,
    minimum: float = MIN_INTRUDERS,
    few: float = FEW_INTRUDERS,
) -> ClaimVerdict:
    """Claim 9 from ``spectrum/intruders`` (mean per matrix; top 10 directions, ε = 0.5) at the
    final best-LR checkpoint: the lowest-rank LoRA labels have at least ``minimum``, full FT at
    most ``few`` × the smallest of theirs. ``spectra`` (optional) adds how many matrices have
    any."""
    column = "spectrum/intruders"
    if (missing := needs_pair(s, 9)) is not None:
        return missing
    full = s.value(s.ref, column)
    loras = {lab: s.value(lab, column) for lab in s.loras()}
    loras = {lab: v for lab, v in loras.items() if math.isfinite(v)}
    if not math.isfinite(full) or not loras:
        return untestable(9, "intruder counts of full FT and LoRA (evaluation.spectrum: true)")
    ranks = {lab: int(m[1]) for lab in loras if (m := re.match(r"^lora-r(\d+)-", lab))}
    lowest = [lab for lab in loras if ranks.get(lab) == min(ranks.values(), default=None)]
    if not lowest:
        return untestable(9, "LoRA labels with a rank")
    low = min(loras[lab] for lab in lowest)
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
        "intruder dimensions per matrix (top 10 directions, ε = 0.5): "
        + "; ".join(detail)
        + f" (rule: the lowest-rank LoRA ≥ {minimum:g}, full FT ≤ {few:.0%} of it)"
    )
    return combine(
        9,
        [
            Part(
                "LoRA creates intruders, full FT few",
                HOLDS if holds else FAILS,
                evidence,
                main=True,
            )
        ],
    )
