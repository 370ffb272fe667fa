"""The paper's nine claims, each judged on a study's measurements: holds, does not hold, or not
testable (and then what is missing).

``judge_claims(frame)`` judges one study (a ``Frame`` from ``learnforget.report.frame``);
``judge_claims_across(frames)`` judges what needs several studies (claim 1's "the gap is larger
in CPT than in IFT"). Every verdict carries the numbers behind it and the rule used. This module
holds claims 1, 2, 5 and 6 (learning, forgetting, learning rates, target modules);
``curve_claims`` holds 3 and 4 (the learn–forget frontier), ``weight_claims`` 7–9, and
``claim_data`` what they share (the verdict rules are described there and in docs/report.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from learnforget.analysis.claim_data import (
    CLAIMS,
    FAILS,
    FEW_INTRUDERS,
    HIGH_EARLY,
    HOLDS,
    MIN_INTRUDERS,
    PARETO_TOLERANCE,
    PLAIN_LORA,
    SEVERAL,
    UNTESTABLE,
    ClaimData,
    ClaimVerdict,
    Part,
    Verdict,
    combine,
    fmt,
    fmt_tokens,
    needs_pair,
)
from learnforget.analysis.curve_claims import claim_beats_regularised, claim_one_curve
from learnforget.analysis.weight_claims import claim_delta_rank, claim_diversity, claim_intruders
from learnforget.report.frame import TARGET_ORDER, Frame, lr_table

__all__ = [
    "CLAIMS",
    "FAILS",
    "FEW_INTRUDERS",
    "HIGH_EARLY",
    "HOLDS",
    "MIN_INTRUDERS",
    "PARETO_TOLERANCE",
    "SEVERAL",
    "UNTESTABLE",
    "ClaimData",
    "ClaimVerdict",
    "Verdict",
    "claim_beats_regularised",
    "claim_delta_rank",
    "claim_diversity",
    "claim_intruders",
    "claim_learning_rates",
    "claim_learns_less",
    "claim_modules",
    "claim_one_curve",
    "judge_claims",
    "judge_claims_across",
]


# --- 1: learns less ----------------------------------------------------------------------------
def _every_budget(
    s: ClaimData, column: str, verb: str, lora_ok: Callable[[float, float], bool]
) -> tuple[list[str], list[str]]:
    """Full FT against each LoRA at every budget both measured: (one line per LoRA at the last
    shared budget, the budgets where ``lora_ok(lora, full)`` is false)."""
    full = s.curve(s.ref).dropna(subset=[column]).set_index("step")
    lines, violations = [], []
    for label in s.loras():
        curve = s.curve(label).dropna(subset=[column]).set_index("step")
        shared = full.index.intersection(curve.index)
        if shared.empty:
            continue
        last = shared.max()
        lines.append(
            f"full FT {fmt(full.loc[last, column])} vs {s.name(label)} "
            f"{fmt(curve.loc[last, column])} at {fmt_tokens(full.loc[last, 'tokens'])} tokens"
        )
        violations += [
            f"{s.name(label)} {verb} at {fmt_tokens(curve.loc[step, 'tokens'])} tokens "
            f"({fmt(curve.loc[step, column])} vs full FT {fmt(full.loc[step, column])})"
            for step in shared
            if not lora_ok(curve.loc[step, column], full.loc[step, column])
        ]
    return lines, violations


def claim_learns_less(s: ClaimData) -> ClaimVerdict:
    """Claim 1 within one study. Main part: full FT's learning ≥ each LoRA's at every budget
    both measured (best LRs). Also: the final gap to full FT shrinks as the rank grows (LoRA of
    equal targets at two or more ranks). The CPT-vs-IFT part needs ``judge_claims_across``."""
    if (missing := needs_pair(s, 1)) is not None:
        return missing
    lines, violations = _every_budget(s, "learn", "learned more", lambda lora, full: lora <= full)
    name = "full FT learns at least as much at every budget"
    if not lines:
        main = Part(name, UNTESTABLE, missing="full FT and LoRA at the same budgets", main=True)
    else:
        evidence = "; ".join(lines) + f" ({s.frame.learn_label})"
        evidence += "".join(f". {v}" for v in violations)
        share = _best_lora_share(s)
        if math.isfinite(share):
            evidence += f". The best LoRA kept {share:.0%} of full FT's final learning"
        unswept = [s.name(lab) for lab in [s.ref, *s.loras()] if len(s.lrs_tried(lab)) < 2]
        note = f"an LR sweep (two or more LRs) for {', '.join(unswept)}" if unswept else ""
        main = Part(name, FAILS if violations else HOLDS, evidence, note, main=True)
    cross = Part(
        "larger gap in CPT than in IFT",
        UNTESTABLE,
        missing=f"a CPT and an IFT study (this one is {_regime(s.frame)}); the "
        "index page of a multi-study run judges it",
    )
    return combine(1, [main, _gap_narrows(s), cross])


def _regime(frame: Frame) -> str:
    study = frame.study
    return f"{study.target.domain} {study.target.regime.upper()}" if study else "of unknown regime"


def _best_lora_share(s: ClaimData) -> float:
    """The best LoRA's final learning as a share of full FT's (NaN if full FT learned ≤ 0)."""
    full = s.value(s.ref, "learn") if s.ref else math.nan
    loras = [s.value(lab, "learn") for lab in s.loras()]
    loras = [v for v in loras if math.isfinite(v)]
    if not loras or not math.isfinite(full) or full <= 0:
        return math.nan
    return max(loras) / full


def _rank_groups(s: ClaimData) -> dict[str, dict[int, str]]:
    """LoRA labels grouped by everything but the rank: {label with r*: {r: label}}."""
    groups: dict[str, dict[int, str]] = {}
    for label in s.loras():
        match = re.match(r"^lora-r(\d+)-(.*)$", label)
        if match:
            groups.setdefault(match[2], {})[int(match[1])] = label
    return {key: ranks for key, ranks in groups.items() if len(ranks) >= 2}


def _gap_narrows(s: ClaimData) -> Part:
    name = "gap narrows as rank grows"
    groups = _rank_groups(s)
    full = s.value(s.ref, "learn") if s.ref else math.nan
    if not groups or not math.isfinite(full):
        return Part(name, UNTESTABLE, missing="LoRA at two or more ranks with the same targets")
    lines, narrows = [], True
    for key, ranks in groups.items():
        gaps = [(r, full - s.value(label, "learn")) for r, label in sorted(ranks.items())]
        gaps = [(r, g) for r, g in gaps if math.isfinite(g)]
        narrows &= all(b[1] < a[1] for a, b in zip(gaps, gaps[1:], strict=False))
        lines.append(f"{key}: " + " → ".join(f"r={r} {fmt(g)}" for r, g in gaps))
    return Part(name, HOLDS if narrows else FAILS, "final gap to full FT " + "; ".join(lines))


def _pair_studies(cpt: list[tuple], ift: list[tuple]) -> tuple[list[tuple], list[str]]:
    """The (CPT, IFT) pairs to compare and what else differs within them. Prefers pairs that
    share the base model and the target domain, then the base, then the domain, then any."""
    all_pairs = [(c, i) for c in cpt for i in ift]
    tiers = (
        (lambda c, i: c[0] == i[0] and c[4] == i[4], []),
        (lambda c, i: c[4] == i[4], ["target domain"]),
        (lambda c, i: c[0] == i[0], ["base model"]),
    )
    for keep, differences in tiers:
        pairs = [(c, i) for c, i in all_pairs if keep(c, i)]
        if pairs:
            return pairs, differences
    return all_pairs, ["target domain", "base model"]


def judge_claims_across(frames: Sequence[Frame]) -> list[ClaimVerdict]:
    """What needs several studies: claim 1's "the gap is larger in CPT than in IFT".

    The gap of a study is the share of full FT's final learning that its best LoRA misses
    (1 − best LoRA / full), a unitless number so that studies measured on different tasks
    compare. A CPT study is compared with the IFT studies of its base model and target domain;
    failing those, of its base model, then of its domain, then with all IFT studies, and the
    evidence names what else differs. Holds when every CPT gap is larger than every IFT gap it
    is compared with."""
    gaps: list[tuple[str, str, str, float, str]] = []  # (domain, regime, name, gap, base)
    for frame in frames:
        if frame.study is None:
            continue
        share = _best_lora_share(ClaimData(frame))
        if math.isfinite(share):
            target = frame.study.target
            base = frame.study.base.model
            gaps.append((target.domain, target.regime, frame.study.name, 1 - share, base))
    cpt = [g for g in gaps if g[1] == "cpt"]
    ift = [g for g in gaps if g[1] == "ift"]
    text = (
        "Full finetuning's learning advantage over LoRA (share of its final learning that the "
        "best LoRA misses) is larger in CPT than in IFT."
    )
    if not cpt or not ift:
        have = ", ".join(f"{g[2]} ({g[1].upper()})" for g in gaps) or "none"
        return [
            ClaimVerdict(
                1,
                text,
                UNTESTABLE,
                "",
                f"a CPT and an IFT study with full FT and "
                f"LoRA that learned (studies with a gap: {have})",
            )
        ]
    pairs, differences = _pair_studies(cpt, ift)
    holds = all(c[3] > i[3] for c, i in pairs)
    evidence = "; ".join(
        f"{c[2]} (CPT) gap {c[3]:.0%} vs {i[2]} (IFT) {i[3]:.0%}" for c, i in pairs
    )
    if differences:
        evidence += (
            f". The studies differ in {' and '.join(differences)} as well as regime (the paper "
            "compares within a domain and model), so the regime is not the only difference"
        )
    return [ClaimVerdict(1, text, HOLDS if holds else FAILS, evidence)]


# --- 2: forgets less -----------------------------------------------------------------------------
def _slope(curve: pd.DataFrame, column: str) -> float:
    """Least-squares slope of ``column`` over tokens (NaN with fewer than two checkpoints)."""
    rows = curve.dropna(subset=[column])
    if rows["tokens"].nunique() < 2:
        return math.nan
    return float(np.polyfit(rows["tokens"].astype(float), rows[column].astype(float), 1)[0])


def claim_forgets_less(s: ClaimData) -> ClaimVerdict:
    """Claim 2. Main part: each LoRA forgets strictly less than full FT at every budget both
    measured (best LRs). Also: the least-squares slope of forgetting over training tokens is
    positive for every method and largest for full FT."""
    if (missing := needs_pair(s, 2)) is not None:
        return missing
    lines, violations = _every_budget(
        s, "forget", "forgot as much or more", lambda lora, full: lora < full
    )
    name = "LoRA forgets less at every budget"
    if lines:
        evidence = "; ".join(lines) + f" ({s.frame.forget_label})"
        main = Part(
            name,
            FAILS if violations else HOLDS,
            evidence + "".join(f". {v}" for v in violations),
            main=True,
        )
    else:
        main = Part(name, UNTESTABLE, missing="full FT and LoRA at the same budgets", main=True)
    slopes = {label: _slope(s.curve(label), "forget") for label in [s.ref, *s.loras()]}
    slopes = {label: v for label, v in slopes.items() if math.isfinite(v)}
    per_m = "; ".join(f"{s.name(lab)} {v * 1e6:+.3g}" for lab, v in slopes.items())
    unit = "forgetting per million tokens (least-squares slope over the checkpoints)"
    if s.ref not in slopes or len(slopes) < 2:
        need = "two or more checkpoints per run for full FT and LoRA"
        grows = Part("both grow with training", UNTESTABLE, missing=need)
        faster = Part("full FT's grows faster", UNTESTABLE, missing=need)
    else:
        grows = Part(
            "both grow with training",
            HOLDS if all(v > 0 for v in slopes.values()) else FAILS,
            f"{unit}: {per_m}",
        )
        full_slope = slopes[s.ref]
        faster_ok = all(full_slope > v for lab, v in slopes.items() if lab != s.ref)
        faster = Part(
            "full FT's grows faster",
            HOLDS if faster_ok else FAILS,
            f"full FT {full_slope * 1e6:+.3g} per million tokens, the largest"
            if faster_ok
            else "a LoRA's slope is at least full FT's (see above)",
        )
    return combine(2, [main, grows, faster])


# --- 5: learning rates ---------------------------------------------------------------------------
def _bounds(s: ClaimData, label: str) -> tuple[float, float]:
    """Where ``label``'s best LR can lie given its sweep: (lower, upper) bound. A best LR at the
    edge of the LRs tried is open on that side (a wider sweep might find a better one)."""
    best, tried = s.best[label], s.lrs_tried(label)
    low = 0.0 if math.isclose(best, min(tried)) else best
    high = math.inf if math.isclose(best, max(tried)) else best
    return low, high


def _sensitivity(s: ClaimData, label: str) -> float:
    """Mean share of the best final learning lost per decade of LR away from the best LR.
    An LR whose runs all diverged counts as losing all of it; failed runs are left out."""
    table = lr_table(s.frame)
    rows = table[table["label"] == label]
    best = s.best[label]
    top = float(rows.loc[np.isclose(rows["lr"], best), "learn"].iloc[0])
    if top <= 0:
        return math.nan
    losses = []
    for row in rows.itertuples():
        if math.isclose(row.lr, best):
            continue
        decades = abs(math.log10(row.lr / best))
        if pd.notna(row.learn):
            losses.append((top - row.learn) / top / decades)
        elif row.diverged == row.runs:
            losses.append(1.0 / decades)
    return float(np.mean(losses)) if losses else math.nan


def claim_learning_rates(s: ClaimData, several: float = SEVERAL) -> ClaimVerdict:
    """Claim 5. Main part: each LoRA's best LR ≥ ``several`` × full FT's, judged only where a best
    LR at the edge of its sweep cannot change the answer. Also: each LoRA loses a larger share of
    its best learning per decade of LR away from its best LR than full FT does."""
    if (missing := needs_pair(s, 5)) is not None:
        return missing
    full_low, full_high = _bounds(s, s.ref)
    # A LoRA trained at one LR only (an extra axis of the grid) says nothing about its best LR.
    swept = [label for label in s.loras() if len(s.lrs_tried(label)) >= 2]
    lines, states = [], [] if swept else [UNTESTABLE]
    for label in swept:
        low, high = _bounds(s, label)
        ratio = s.best[label] / s.best[s.ref]
        at_least = low / full_high if full_high < math.inf else 0.0
        at_most = high / full_low if full_low > 0 else math.inf
        state = HOLDS if at_least >= several else FAILS if at_most < several else UNTESTABLE
        states.append(state)
        lines.append(
            f"{s.name(label)} {s.best[label]:g} = {ratio:.3g}× full FT's "
            f"{s.best[s.ref]:g}"
            + ("" if state != UNTESTABLE else " (inconclusive: a best LR at its sweep's edge)")
        )
    edges = [
        s.name(lab)
        for lab in [s.ref, *swept]
        if math.isinf(_bounds(s, lab)[1]) or _bounds(s, lab)[0] == 0
    ] or ["a LoRA (train one at two or more LRs)"]
    rule = (
        f"; rule: ≥ {several:g}×, judged only when a best LR at the edge of its sweep "
        "cannot change the answer"
    )
    single = [s.name(label) for label in s.loras() if label not in swept]
    if single:
        rule += f"; trained at one LR, not judged: {', '.join(single)}"
    evidence = "best LR " + "; ".join(lines) + rule
    if FAILS in states:
        main = Part("LoRA's best LR several times full FT's", FAILS, evidence, main=True)
    elif all(state == HOLDS for state in states):
        main = Part("LoRA's best LR several times full FT's", HOLDS, evidence, main=True)
    else:
        main = Part(
            "LoRA's best LR several times full FT's",
            UNTESTABLE,
            main=True,
            missing=f"{evidence}; widen the sweeps of {', '.join(edges)} past their best LR",
        )
    sens = {
        label: _sensitivity(s, label)
        for label in [s.ref, *s.loras()]
        if len(s.lrs_tried(label)) >= 2
    }
    sens = {label: v for label, v in sens.items() if math.isfinite(v)}
    if s.ref not in sens or len(sens) < 2:
        sensitive = Part(
            "LoRA more LR-sensitive",
            UNTESTABLE,
            missing="LR sweeps (two or more LRs) of full FT and LoRA that learned",
        )
    else:
        more = all(v > sens[s.ref] for lab, v in sens.items() if lab != s.ref)
        sensitive = Part(
            "LoRA more LR-sensitive",
            HOLDS if more else FAILS,
            "share of the best final learning lost per decade of LR away from the "
            "best LR (diverged LRs lose all): "
            + "; ".join(f"{s.name(lab)} {v:.2f}" for lab, v in sens.items()),
        )
    return combine(5, [main, sensitive])


# --- 6: target modules and rank ----------------------------------------------------------------
def claim_modules(s: ClaimData) -> ClaimVerdict:
    """Claim 6. Main part: at each rank with two or more target sets, final learning (best LR)
    orders all > mlp > attention. Also: the mean spread of learning across target sets at one
    rank exceeds the mean spread across ranks for one target set."""
    cells: dict[tuple[str, int], float] = {}
    for label in s.frame.labels:
        match = PLAIN_LORA.match(label)
        if match and label in s.best and bool(match[3]) == s.lion:
            value = s.value(label, "learn")
            if math.isfinite(value):
                cells[(match[2], int(match[1]))] = value
    by_rank: dict[int, dict[str, float]] = {}
    by_target: dict[str, dict[int, float]] = {}
    for (target, r), value in cells.items():
        by_rank.setdefault(r, {})[target] = value
        by_target.setdefault(target, {})[r] = value
    rank_rows = {r: t for r, t in sorted(by_rank.items()) if len(t) >= 2}
    if not rank_rows:
        main = Part(
            "all > MLP > attention",
            UNTESTABLE,
            main=True,
            missing="plain LoRA runs on two or more target-module sets at one rank",
        )
    else:
        lines, ordered = [], True
        for r, targets in rank_rows.items():
            order = sorted(targets, key=lambda t: -TARGET_ORDER[t])  # all, mlp, attention
            values = [targets[t] for t in order]
            in_order = all(a > b for a, b in zip(values, values[1:], strict=False))
            ordered &= in_order
            lines.append(
                f"r={r}: "
                + (" > " if in_order else " vs ").join(f"{t} {fmt(targets[t])}" for t in order)
            )
        main = Part(
            "all > MLP > attention",
            HOLDS if ordered else FAILS,
            "final learning at best LR: " + "; ".join(lines),
            main=True,
        )
    target_rows = {t: r for t, r in by_target.items() if len(r) >= 2}
    if not rank_rows or not target_rows:
        matters = Part(
            "modules matter more than rank",
            UNTESTABLE,
            missing="plain LoRA at two or more ranks and two or more target sets",
        )
    else:
        module_spread = float(
            np.mean([max(t.values()) - min(t.values()) for t in rank_rows.values()])
        )
        rank_spread = float(
            np.mean([max(r.values()) - min(r.values()) for r in target_rows.values()])
        )
        matters = Part(
            "modules matter more than rank",
            HOLDS if module_spread > rank_spread else FAILS,
            f"mean spread of final learning across target sets at one rank "
            f"{fmt(module_spread)} vs across ranks for one target set {fmt(rank_spread)}",
        )
    return combine(6, [main, matters])


# --- all of them -------------------------------------------------------------------------------
def judge_claims(
    frame: Frame,
    spectra: Sequence[dict] | None = None,
    pareto_tolerance: float = PARETO_TOLERANCE,
    several: float = SEVERAL,
) -> list[ClaimVerdict]:
    """The nine claims judged on one study, in order. ``spectra`` are the store's ``spectrum``
    artifacts (``[{run_id, step, data: [per-matrix dict]}]``), optional: they add per-matrix
    counts to claims 7 and 9, whose verdicts come from the ``spectrum/*`` summaries."""
    s = ClaimData(frame)
    return [
        claim_learns_less(s),
        claim_forgets_less(s),
        claim_one_curve(s, pareto_tolerance),
        claim_beats_regularised(s),
        claim_learning_rates(s, several),
        claim_modules(s),
        claim_delta_rank(s, spectra, several),
        claim_diversity(s),
        claim_intruders(s, spectra),
    ]
