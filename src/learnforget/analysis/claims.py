"""The paper's nine claims, each judged on a study's measurements: holds, does not hold,
inconclusive (a difference within noise) or not testable (and then what is missing).

``judge_claims(frame)`` judges one study (a ``Frame`` from ``learnforget.analysis.frame``);
``judge_claims_across(frames)`` judges what needs several studies (claim 1's "the gap is larger
in CPT than in IFT"). Every verdict carries the numbers behind it, their uncertainty and the rule
used. This module holds claims 1, 2, 5 and 6 (learning, forgetting, learning rates, target
modules); ``curve_claims`` holds 3 and 4 (the learn–forget frontier), ``weight_claims`` 7–9, and
``claim_data`` what they share (the verdict rules are described there and in docs/report.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from learnforget.analysis.claim_data import (
    CLAIMS,
    CPT_SIMILAR,
    FAILS,
    FAR_MORE,
    FEW_INTRUDERS,
    HIGH_EARLY,
    HOLDS,
    INCONCLUSIVE,
    MIN_INTRUDERS,
    PARETO_TOLERANCE,
    SEVERAL,
    UNTESTABLE,
    VERDICTS,
    ClaimData,
    ClaimVerdict,
    Part,
    Verdict,
    combine,
    fmt,
    fmt_tokens,
    needs_pair,
    tri_state,
)
from learnforget.analysis.curve_claims import claim_beats_regularised, claim_one_curve
from learnforget.analysis.frame import TARGET_ORDER, Frame, lr_table
from learnforget.analysis.uncertainty import Difference, Z
from learnforget.analysis.weight_claims import claim_delta_rank, claim_diversity, claim_intruders

__all__ = [
    "CLAIMS",
    "CPT_SIMILAR",
    "FAILS",
    "FAR_MORE",
    "FEW_INTRUDERS",
    "HIGH_EARLY",
    "HOLDS",
    "INCONCLUSIVE",
    "MIN_INTRUDERS",
    "PARETO_TOLERANCE",
    "SEVERAL",
    "UNTESTABLE",
    "VERDICTS",
    "ClaimData",
    "ClaimVerdict",
    "Verdict",
    "claim_beats_regularised",
    "claim_delta_rank",
    "claim_diversity",
    "claim_forgets_less",
    "claim_intruders",
    "claim_learning_rates",
    "claim_learns_less",
    "claim_modules",
    "claim_one_curve",
    "count_verdicts",
    "judge_claims",
    "judge_claims_across",
]


def count_verdicts(verdicts: Sequence[ClaimVerdict]) -> dict[str, int]:
    """How many verdicts are in each state, every state present (for summaries)."""
    return {state: sum(v.verdict == state for v in verdicts) for state in VERDICTS}


def item_count(s: ClaimData, column: str) -> float:
    """The number of items behind ``learn`` or ``forget`` (its task's stored ``n``; the smallest
    over the averaged tasks of ``forget_mean``), NaN when not stored."""
    frame = s.frame
    if column == "learn":
        tasks = [frame.learning[0].task] if frame.learning else []
    elif frame.forget_mean_tasks and frame.forgetting and frame.forgetting[0].higher_is_better:
        tasks = frame.forget_mean_tasks
    else:
        tasks = [frame.forgetting[0].task] if frame.forgetting else []
    counts = [frame.checkpoints[f"{t}/n"].max() for t in tasks if f"{t}/n" in frame.checkpoints]
    return float(min(counts)) if counts else math.nan


def settle_text(s: ClaimData, column: str, unresolved: list[Difference]) -> str:
    """What would resolve the differences within noise: more items (how many) or seeds."""
    if not unresolved:
        return ""
    n = item_count(s, column)
    smallest = min(unresolved, key=lambda d: abs(d.value))
    needed = smallest.items_to_resolve(n) if math.isfinite(n) else math.inf
    if math.isfinite(needed):
        return (f"{len(unresolved)} difference(s) within noise; about {needed:,.0f} items (now "
                f"{n:.0f}) would resolve the smallest ({smallest.text()}), or more seeds")
    return f"{len(unresolved)} difference(s) within noise: more items or more seeds"


def noise_note(s: ClaimData) -> str:
    """A note for verdicts read without standard errors."""
    return (" (no standard errors stored: compared without a noise estimate)"
            if s.no_noise_estimate else "")


# --- 1: learns less ----------------------------------------------------------------------------
def budget_comparison(
    s: ClaimData, column: str, verb: str, strict: bool, steps: set[int] | None = None
) -> tuple[list[str], list[bool | None], list[str], list[Difference]]:
    """Full FT against each judged LoRA at every budget both measured (of ``steps``, when
    given), as ``full − LoRA`` of ``column`` with its standard error: (one line per LoRA at the
    last shared budget, one result per budget — True when full FT is clearly above, False when
    the LoRA is, None within noise —, the budgets where the LoRA ``verb``, the differences
    within noise)."""
    full = s.curve(s.ref).dropna(subset=[column]).set_index("step")
    if steps is not None:
        full = full[full.index.isin(steps)]
    lines, results, violations, unresolved = [], [], [], []
    for label in s.judged():
        curve = s.curve(label).dropna(subset=[column]).set_index("step")
        shared = full.index.intersection(curve.index)
        for step in shared:
            diff = s.compare(s.ref, label, column, int(step))
            result = diff.exceeds(strict=strict)
            results.append(result)
            where = f"{s.name(label)} at {fmt_tokens(curve.loc[step, 'tokens'])} tokens"
            if result is False:
                violations.append(f"{where} {verb} ({fmt(curve.loc[step, column])} vs full FT "
                                  f"{fmt(full.loc[step, column])})")
            elif result is None:
                unresolved.append(diff)
                violations.append(f"{where}: full FT − LoRA {diff.text()}, within noise")
        if len(shared):
            last = shared.max()
            diff = s.compare(s.ref, label, column, int(last))
            lines.append(f"full FT {fmt(full.loc[last, column])} vs {s.name(label)} "
                         f"{fmt(curve.loc[last, column])} at "
                         f"{fmt_tokens(full.loc[last, 'tokens'])} tokens (difference "
                         f"{diff.text()})")
    return lines, results, violations, unresolved


def claim_learns_less(s: ClaimData) -> ClaimVerdict:
    """Claim 1 within one study. Main part: full FT's learning ≥ each judged LoRA's at every
    budget both measured (best LRs), each difference resolved beyond noise. Also: the final gap
    to full FT shrinks as the rank grows (LoRA of equal targets at two or more ranks). The
    CPT-vs-IFT part needs ``judge_claims_across``."""
    if (missing := needs_pair(s, 1)) is not None:
        return missing
    lines, results, violations, unresolved = budget_comparison(
        s, "learn", "learned more", strict=False)
    name = "full FT learns at least as much at every budget"
    if not lines:
        main = Part(name, UNTESTABLE, missing="full FT and LoRA at the same budgets", main=True)
    else:
        evidence = "; ".join(lines) + f" ({s.frame.learn_label}; ± is {Z} standard errors)"
        evidence += "".join(f". {v}" for v in violations) + noise_note(s)
        share = _best_lora_share(s)
        if math.isfinite(share):
            evidence += f". The best LoRA kept {share:.0%} of full FT's final learning"
        unswept = [s.name(lab) for lab in [s.ref, *s.judged()] if len(s.lrs_tried(lab)) < 2]
        note = f"an LR sweep (two or more LRs) for {', '.join(unswept)}" if unswept else ""
        main = Part(name, tri_state(results), evidence, note, main=True,
                    settle=settle_text(s, "learn", unresolved))
    cross = Part(
        "larger gap in CPT than in IFT",
        UNTESTABLE,
        missing=f"a CPT and an IFT study of the same domain and base model (this one is "
        f"{_regime(s.frame)}); the index page of a multi-study run judges it",
    )
    return combine(1, [main, _gap_narrows(s), cross], s.scope)


def _regime(frame: Frame) -> str:
    study = frame.study
    return f"{study.target.domain} {study.target.regime.upper()}" if study else "of unknown regime"


def _best_lora_share(s: ClaimData) -> float:
    """The best judged LoRA's final learning as a share of full FT's (NaN if full FT learned
    ≤ 0)."""
    full = s.value(s.ref, "learn") if s.ref else math.nan
    loras = [s.value(lab, "learn") for lab in s.judged()]
    loras = [v for v in loras if math.isfinite(v)]
    if not loras or not math.isfinite(full) or full <= 0:
        return math.nan
    return max(loras) / full


def _rank_groups(s: ClaimData) -> dict[str, dict[int, str]]:
    """Judged LoRA labels grouped by target set: {targets: {r: label}}, two or more ranks."""
    groups: dict[str, dict[int, str]] = {}
    for label in s.judged():
        r, targets = s.r(label), s.targets(label)
        if r is not None and targets is not None:
            groups.setdefault(targets, {})[r] = label
    return {key: ranks for key, ranks in groups.items() if len(ranks) >= 2}


def _gap_narrows(s: ClaimData) -> Part:
    """Claim 1's part: the final learning of a higher rank exceeds the lower rank's (the gap to
    full FT narrows), each step resolved beyond noise."""
    name = "gap narrows as rank grows"
    groups = _rank_groups(s)
    full = s.value(s.ref, "learn") if s.ref else math.nan
    if not groups or not math.isfinite(full):
        return Part(name, UNTESTABLE, missing="LoRA at two or more ranks with the same targets")
    lines, results, unresolved = [], [], []
    for key, ranks in groups.items():
        ordered = [(r, label) for r, label in sorted(ranks.items())
                   if math.isfinite(s.value(label, "learn"))]
        for (_, low), (_, high) in zip(ordered, ordered[1:], strict=False):
            diff = s.compare(high, low, "learn")
            results.append(diff.exceeds())
            if results[-1] is None:
                unresolved.append(diff)
        lines.append(f"{key}: " + " → ".join(
            f"r={r} {fmt(full - s.value(label, 'learn'))}" for r, label in ordered))
    return Part(name, tri_state(results), "final gap to full FT " + "; ".join(lines)
                + noise_note(s), settle=settle_text(s, "learn", unresolved))


def judge_claims_across(frames: Sequence[Frame]) -> list[ClaimVerdict]:
    """What needs several studies: claim 1's "the gap is larger in CPT than in IFT".

    The gap of a study is the share of full FT's final learning that its best LoRA misses
    (1 − best LoRA / full), a unitless number so that studies measured on different tasks
    compare. The paper compares CPT and IFT within one target domain and one base model, so a
    CPT study is compared only with the IFT studies of its domain and base model; without such
    a pair the part is not testable. Holds when every CPT gap is larger than every IFT gap it is
    compared with."""
    gaps: list[tuple[str, str, str, float, str]] = []  # (domain, regime, name, gap, base)
    for frame in frames:
        if frame.study is None:
            continue
        share = _best_lora_share(ClaimData(frame))
        if math.isfinite(share):
            target = frame.study.target
            base = frame.study.base.model
            gaps.append((target.domain, target.regime, frame.study.name, 1 - share, base))
    text = (
        "Full finetuning's learning advantage over LoRA (share of its final learning that the "
        "best LoRA misses) is larger in CPT than in IFT."
    )
    pairs = [(c, i) for c in gaps for i in gaps
             if c[1] == "cpt" and i[1] == "ift" and c[0] == i[0] and c[4] == i[4]]
    if not pairs:
        have = ", ".join(f"{g[2]} ({g[0]} {g[1].upper()}, base {g[4]})" for g in gaps) or "none"
        return [ClaimVerdict(
            1, text, UNTESTABLE, "",
            f"a CPT and an IFT study of the same target domain and base model, each with full "
            f"FT and LoRA that learned (studies with a gap: {have})")]
    holds = all(c[3] > i[3] for c, i in pairs)
    evidence = "; ".join(
        f"{c[2]} (CPT) gap {c[3]:.0%} vs {i[2]} (IFT) {i[3]:.0%}" for c, i in pairs
    )
    return [ClaimVerdict(1, text, HOLDS if holds else FAILS, evidence)]


# --- 2: forgets less -----------------------------------------------------------------------------
def _slope(curve, column: str) -> float:
    """Least-squares slope of ``column`` over tokens through the base model's point (0 tokens,
    0 forgetting) and every checkpoint (NaN without a checkpoint)."""
    rows = curve.dropna(subset=[column])
    if rows.empty:
        return math.nan
    tokens = np.concatenate([[0.0], rows["tokens"].astype(float).to_numpy()])
    values = np.concatenate([[0.0], rows[column].astype(float).to_numpy()])
    return float(np.polyfit(tokens, values, 1)[0])


def claim_forgets_less(s: ClaimData) -> ClaimVerdict:
    """Claim 2. Main part: each judged LoRA forgets less than full FT at every budget both
    measured (best LRs), each difference resolved beyond noise. Also: the least-squares slope of
    forgetting over training tokens, fitted through the base model's point (0 tokens, 0
    forgetting) and every checkpoint, is positive for every method and largest for full FT —
    a method that forgets most in its first steps grows fastest."""
    if (missing := needs_pair(s, 2)) is not None:
        return missing
    # "LoRA forgets less" needs full FT to forget: budgets where its forgetting is beyond noise
    changes = {int(step): s.change_from_base(s.ref, "forget", int(step))
               for step in s.curve(s.ref).dropna(subset=["forget"])["step"]}
    forgot = {step for step, change in changes.items() if change.exceeds() is True}
    if changes and not forgot:
        shown = "; ".join(f"{fmt_tokens(s.curve(s.ref).set_index('step').loc[step, 'tokens'])} "
                          f"tokens {change.text()}" for step, change in changes.items())
        need = (f"forgetting by full FT beyond noise (its forgetting against the base: {shown}, "
                f"{s.frame.forget_label}); more steps, a higher LR or more items")
        same = "full FT's forgetting beyond noise (as above)"
        return combine(2, [Part("LoRA forgets less at every budget", UNTESTABLE, missing=need,
                                main=True),
                           Part("both grow with training", UNTESTABLE, missing=same),
                           Part("full FT's grows faster", UNTESTABLE, missing=same)], s.scope)
    lines, results, violations, unresolved = budget_comparison(
        s, "forget", "forgot as much or more", strict=True, steps=forgot if changes else None)
    name = "LoRA forgets less at every budget"
    if lines and len(forgot) < len(changes):
        lines.append(f"budgets where full FT's forgetting is within noise of the base are left "
                     f"out ({len(changes) - len(forgot)} of {len(changes)})")
    if lines:
        evidence = "; ".join(lines) + f" ({s.frame.forget_label}; ± is {Z} standard errors)"
        main = Part(name, tri_state(results),
                    evidence + "".join(f". {v}" for v in violations) + noise_note(s),
                    main=True, settle=settle_text(s, "forget", unresolved))
    else:
        main = Part(name, UNTESTABLE, missing="full FT and LoRA at the same budgets", main=True)
    slopes = {label: _slope(s.curve(label), "forget") for label in [s.ref, *s.judged()]}
    slopes = {label: v for label, v in slopes.items() if math.isfinite(v)}
    per_m = "; ".join(f"{s.name(lab)} {v * 1e6:+.3g}" for lab, v in slopes.items())
    unit = ("forgetting per million tokens (least-squares slope through the base model's point "
            "and every checkpoint)")
    if s.ref not in slopes or len(slopes) < 2:
        need = "a measured checkpoint of full FT and of LoRA"
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
    return combine(2, [main, grows, faster], s.scope)


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
        if row.learn == row.learn:  # not NaN
            losses.append((top - row.learn) / top / decades)
        elif row.diverged == row.runs:
            losses.append(1.0 / decades)
    return float(np.mean(losses)) if losses else math.nan


def _ratio_rule(s: ClaimData, several: float) -> tuple[str, float, float]:
    """(rule text, lowest allowed ratio, highest allowed ratio) of LoRA's best LR over full FT's
    for the study's regime: IFT ≥ ``several``×; CPT within ``CPT_SIMILAR``× either way."""
    study = s.frame.study
    if study is not None and study.target.regime == "cpt":
        return (f"CPT: within {CPT_SIMILAR:g}× of full FT's (the paper's CPT best LRs: equal in "
                f"code, 4× in math)", 1 / CPT_SIMILAR, CPT_SIMILAR)
    return (f"IFT: ≥ {several:g}× full FT's (the paper's IFT best LRs: 4–10×)", several, math.inf)


def claim_learning_rates(s: ClaimData, several: float = SEVERAL) -> ClaimVerdict:
    """Claim 5. Main part, as the paper states it per regime: in IFT each judged LoRA's best LR
    ≥ ``several`` × full FT's; in CPT within ``CPT_SIMILAR``× of it. A best LR at the edge of its
    sweep bounds the ratio on one side only: when that bound cannot decide, the part is
    inconclusive (widen the sweep). Also: each LoRA loses a larger share of its best learning
    per decade of LR away from its best LR than full FT does."""
    if (missing := needs_pair(s, 5)) is not None:
        return missing
    rule_text, lowest, highest = _ratio_rule(s, several)
    full_low, full_high = _bounds(s, s.ref)
    # A LoRA trained at one LR only (an extra axis of the grid) says nothing about its best LR.
    swept = [label for label in s.judged() if len(s.lrs_tried(label)) >= 2]
    lines, states = [], []
    for label in swept:
        low, high = _bounds(s, label)
        ratio = s.best[label] / s.best[s.ref]
        at_least = low / full_high if full_high < math.inf else 0.0
        at_most = high / full_low if full_low > 0 else math.inf
        if lowest <= at_least and at_most <= highest:
            state = HOLDS
        elif at_most < lowest or at_least > highest:
            state = FAILS
        else:
            state = INCONCLUSIVE
        states.append(state)
        lines.append(f"{s.name(label)} {s.best[label]:g} = {ratio:.3g}× full FT's "
                     f"{s.best[s.ref]:g}"
                     + (" (a best LR at its sweep's edge leaves it open)"
                        if state == INCONCLUSIVE else ""))
    edges = [s.name(lab) for lab in [s.ref, *swept]
             if math.isinf(_bounds(s, lab)[1]) or _bounds(s, lab)[0] == 0]
    rule = f"; rule, {rule_text}, judged only when a best LR at a sweep's edge cannot change it"
    single = [s.name(label) for label in s.judged() if label not in swept]
    if single:
        rule += f"; trained at one LR, not judged: {', '.join(single)}"
    name = "LoRA's best LR relative to full FT's"
    if not swept:
        main = Part(name, UNTESTABLE, main=True,
                    missing="a LoRA trained at two or more LRs" + rule)
    else:
        verdict = FAILS if FAILS in states else INCONCLUSIVE if INCONCLUSIVE in states else HOLDS
        main = Part(name, verdict, "best LR " + "; ".join(lines) + rule, main=True,
                    settle=f"widen the sweeps of {', '.join(edges)} past their best LR"
                    if verdict == INCONCLUSIVE else "")
    sens = {label: _sensitivity(s, label)
            for label in [s.ref, *s.judged()] if len(s.lrs_tried(label)) >= 2}
    sens = {label: v for label, v in sens.items() if math.isfinite(v)}
    if s.ref not in sens or len(sens) < 2:
        sensitive = Part("LoRA more LR-sensitive", UNTESTABLE,
                         missing="LR sweeps (two or more LRs) of full FT and LoRA that learned")
    else:
        more = all(v > sens[s.ref] for lab, v in sens.items() if lab != s.ref)
        sensitive = Part(
            "LoRA more LR-sensitive",
            HOLDS if more else FAILS,
            "share of the best final learning lost per decade of LR away from the "
            "best LR (diverged LRs lose all): "
            + "; ".join(f"{s.name(lab)} {v:.2f}" for lab, v in sens.items()),
        )
    return combine(5, [main, sensitive], s.scope)


# --- 6: target modules and rank ----------------------------------------------------------------
def claim_modules(s: ClaimData) -> ClaimVerdict:
    """Claim 6 on plain LoRA (default init, no rsLoRA/DoRA). Main part: at each rank with two or
    more target sets, final learning (best LR) orders all > mlp > attention, each step resolved
    beyond noise. Also: the mean spread of learning across target sets at one rank exceeds the
    mean spread across ranks for one target set."""
    cells: dict[tuple[str, int], tuple[float, str]] = {}
    for label in s.plain_loras():
        value, targets, r = s.value(label, "learn"), s.targets(label), s.r(label)
        if math.isfinite(value) and targets is not None and r is not None:
            cells[(targets, r)] = (value, label)
    by_rank: dict[int, dict[str, tuple[float, str]]] = {}
    by_target: dict[str, dict[int, float]] = {}
    for (target, r), value in cells.items():
        by_rank.setdefault(r, {})[target] = value
        by_target.setdefault(target, {})[r] = value[0]
    rank_rows = {r: t for r, t in sorted(by_rank.items()) if len(t) >= 2}
    if not rank_rows:
        main = Part("all > MLP > attention", UNTESTABLE, main=True,
                    missing="plain LoRA runs on two or more target-module sets at one rank")
    else:
        lines, results, unresolved = [], [], []
        for r, targets in rank_rows.items():
            order = sorted(targets, key=lambda t: -TARGET_ORDER[t])  # all, mlp, attention
            for upper, lower in zip(order, order[1:], strict=False):
                diff = s.compare(targets[upper][1], targets[lower][1], "learn")
                results.append(diff.exceeds())
                if results[-1] is None:
                    unresolved.append(diff)
            lines.append(f"r={r}: " + " vs ".join(f"{t} {fmt(targets[t][0])}" for t in order))
        main = Part("all > MLP > attention", tri_state(results),
                    "final learning at best LR: " + "; ".join(lines) + noise_note(s), main=True,
                    settle=settle_text(s, "learn", unresolved))
    target_rows = {t: r for t, r in by_target.items() if len(r) >= 2}
    if not rank_rows or not target_rows:
        matters = Part("modules matter more than rank", UNTESTABLE,
                       missing="plain LoRA at two or more ranks and two or more target sets")
    else:
        module_spread = float(np.mean(
            [max(v[0] for v in t.values()) - min(v[0] for v in t.values())
             for t in rank_rows.values()]))
        rank_spread = float(np.mean(
            [max(r.values()) - min(r.values()) for r in target_rows.values()]))
        matters = Part(
            "modules matter more than rank",
            HOLDS if module_spread > rank_spread else FAILS,
            f"mean spread of final learning across target sets at one rank "
            f"{fmt(module_spread)} vs across ranks for one target set {fmt(rank_spread)}",
        )
    return combine(6, [main, matters], "LoRA = plain LoRA (default init, no rsLoRA or DoRA) "
                   "on every target set")


# --- all of them -------------------------------------------------------------------------------
def judge_claims(
    frame: Frame,
    spectra: Sequence[dict] | None = None,
    pareto_tolerance: float = PARETO_TOLERANCE,
    several: float = SEVERAL,
) -> list[ClaimVerdict]:
    """The nine claims judged on one study, in order. ``spectra`` are the store's ``spectrum``
    artifacts (``[{run_id, step, data: [per-matrix dict]}]``), optional: they add per-matrix
    counts and noise estimates to claims 7 and 9, whose verdicts come from the ``spectrum/*``
    summaries."""
    s = ClaimData(frame)
    return [
        claim_learns_less(s),
        claim_forgets_less(s),
        claim_one_curve(s, pareto_tolerance),
        claim_beats_regularised(s),
        claim_learning_rates(s, several),
        claim_modules(s),
        claim_delta_rank(s, spectra),
        claim_diversity(s),
        claim_intruders(s, spectra),
    ]
