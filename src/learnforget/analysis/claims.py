"""The paper's nine claims, each judged on a study's measurements: holds, does not hold,
inconclusive (a difference within noise) or not testable (and then what is missing).

``judge_claims(frame)`` judges one study (a ``Frame`` from ``learnforget.analysis.frame``);
``judge_claims_across(frames)`` judges what needs several studies (claim 1's "the gap is larger
in CPT than in IFT"). Every verdict carries the numbers behind it, their uncertainty and the rule
used. This module holds claims 1, 2 and 6 (learning, forgetting, target modules);
``curve_claims`` holds 3 and 4 (the learn–forget frontier), ``lr_claims`` 5 (learning rates),
``weight_claims`` 7 and 9 (ΔW rank, intruder dimensions), ``diversity_claim`` 8, ``estimates``
the estimate arithmetic of 7–9, and ``claim_data`` what they share (the verdict rules are
described there and in docs/report.md).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from learnforget.analysis.claim_data import ClaimData, needs_pair, settle_text
from learnforget.analysis.comparison import Difference
from learnforget.analysis.curve_claims import claim_beats_regularised, claim_one_curve
from learnforget.analysis.diversity_claim import claim_diversity
from learnforget.analysis.formatting import fmt, fmt_tokens, reading
from learnforget.analysis.frame import Frame
from learnforget.analysis.lr_claims import claim_learning_rates
from learnforget.analysis.method_names import TARGET_ORDER
from learnforget.analysis.verdicts import (
    PARETO_TOLERANCE,
    SEVERAL,
    UNTESTABLE,
    ClaimVerdict,
    Part,
    combine,
)
from learnforget.analysis.weight_claims import claim_delta_rank, claim_intruders


# --- 1: learns less ----------------------------------------------------------------------------
def budget_comparison(
    s: ClaimData, column: str, steps: set[int] | None = None
) -> tuple[list[str], list[Difference]]:
    """Full FT against each judged LoRA at every budget both measured (of ``steps``, when
    given), as ``full − LoRA`` of ``column`` with its error: (one line per LoRA and budget, the
    differences)."""
    full = s.curve(s.ref).dropna(subset=[column]).set_index("step")
    if steps is not None:
        full = full[full.index.isin(steps)]
    lines, tests = [], []
    for label in s.judged():
        curve = s.curve(label).dropna(subset=[column]).set_index("step")
        for step in full.index.intersection(curve.index):
            diff = s.compare(s.ref, label, column, int(step))
            tests.append(diff)
            note = reading(diff)
            lines.append(f"{s.name(label)} at {fmt_tokens(curve.loc[step, 'tokens'])} tokens: "
                         f"full FT − LoRA {diff.text()}" + (f" ({note})" if note else ""))
    return lines, tests


def claim_learns_less(s: ClaimData) -> ClaimVerdict:
    """Claim 1 within one study. Main part: full FT's learning ≥ each judged LoRA's at every
    budget both measured (best LRs, cross-fitted), each difference beyond noise. Also: the final
    learning grows with the rank (LoRA of equal targets at two or more ranks). The CPT-vs-IFT
    part needs ``judge_claims_across``."""
    if (missing := needs_pair(s, 1)) is not None:
        return missing
    lines, tests = budget_comparison(s, "learn")
    name = "full FT learns at least as much at every budget"
    if not tests:
        main = Part(name, UNTESTABLE, missing="full FT and LoRA at the same budgets", main=True)
    else:
        evidence = "; ".join(lines) + f" ({s.frame.learn_label}; ± is the 95% interval)"
        share = _best_lora_share(s)
        if math.isfinite(share):
            evidence += f". The best LoRA kept {share:.0%} of full FT's final learning"
        unswept = [s.name(lab) for lab in [s.ref, *s.judged()] if len(s.lrs_tried(lab)) < 2]
        note = f"an LR sweep (two or more LRs) for {', '.join(unswept)}" if unswept else ""
        main = Part(name, None, evidence, note, main=True, settle=settle_text(s, "learn", tests),
                    tests=tuple(tests), strict=False)
    cross = Part(
        "larger gap in CPT than in IFT",
        UNTESTABLE,
        missing=f"a CPT and an IFT study of the same domain and base model (this one is "
        f"{_regime(s.frame)}); the index page of a multi-study run judges it",
    )
    return combine(1, [main, _gap_narrows(s), cross], s.scope, s.noise(("learn",)))


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
    full FT narrows), each step beyond noise."""
    name = "gap narrows as rank grows"
    groups = _rank_groups(s)
    full = s.value(s.ref, "learn") if s.ref else math.nan
    if not groups or not math.isfinite(full):
        return Part(name, UNTESTABLE, missing="LoRA at two or more ranks with the same targets")
    lines, tests = [], []
    for key, ranks in groups.items():
        ordered = [(r, label) for r, label in sorted(ranks.items())
                   if math.isfinite(s.value(label, "learn"))]
        steps = []
        for (low_r, low), (high_r, high) in zip(ordered, ordered[1:], strict=False):
            diff = s.compare(high, low, "learn")
            tests.append(diff)
            steps.append(f"r={high_r} − r={low_r} {diff.text()}")
        lines.append(f"{key}: final gap to full FT " + " → ".join(
            f"r={r} {fmt(full - s.value(label, 'learn'))}" for r, label in ordered)
            + f" (final learning {'; '.join(steps)})")
    return Part(name, None, "; ".join(lines), settle=settle_text(s, "learn", tests),
                tests=tuple(tests))


def _gap_share(frame: Frame) -> tuple[Difference, str] | None:
    """The share of full FT's final learning that the study's best judged LoRA misses
    (1 − best LoRA / full FT, on every draw row: the best LoRA picked per row) with its error,
    and the study's description; None without full FT and LoRA that learned."""
    s = ClaimData(frame)
    if s.ref is None or not s.judged() or frame.study is None:
        return None
    full = s.draw(s.ref, "learn")
    loras = np.stack([s.draw(label, "learn") for label in s.judged()], axis=1)
    if not math.isfinite(full[0]) or full[0] <= 0 or np.isnan(loras[0]).all():
        return None
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw where no LoRA has a value
        gap = 1.0 - np.nanmax(loras, axis=1) / np.where(full > 0, full, np.nan)
    se, df = s.draws.layout.error(gap)
    return Difference(float(gap[0]), 0.0, se, df), s.noise(("learn",))


def _independent(a: Difference, b: Difference) -> Difference:
    """``a`` − ``b`` of two independent estimates (two studies): √(se_a² + se_b²) with
    Welch–Satterthwaite degrees of freedom."""
    va, vb = a.se ** 2, b.se ** 2
    denominator = (va * va / a.df if math.isfinite(a.df) else 0.0) + (
        vb * vb / b.df if math.isfinite(b.df) else 0.0)
    df = (va + vb) ** 2 / denominator if denominator > 0 else math.inf
    return Difference(a.value, b.value, math.sqrt(va + vb), df)


def judge_claims_across(frames: Sequence[Frame]) -> list[ClaimVerdict]:
    """What needs several studies: claim 1's "the gap is larger in CPT than in IFT".

    The gap of a study is the share of full FT's final learning that its best LoRA misses
    (1 − best LoRA / full), a unitless number so that studies measured on different tasks
    compare; its error comes from the study's own draws, and two studies are independent. The
    paper compares CPT and IFT within one target domain and one base model, so a CPT study is
    compared only with the IFT studies of its domain and base model; without such a pair the
    part is not testable. Holds when every CPT gap exceeds every IFT gap it is compared with
    beyond noise; fails only when one lies below beyond Holm's threshold."""
    gaps = []  # (domain, regime, name, gap, base, noise)
    for frame in frames:
        found = _gap_share(frame)
        if found is not None:
            target = frame.study.target
            gaps.append((target.domain, target.regime, frame.study.name, found[0],
                         frame.study.base.model, found[1]))
    pairs = [(c, i) for c in gaps for i in gaps
             if c[1] == "cpt" and i[1] == "ift" and c[0] == i[0] and c[4] == i[4]]
    name = "larger gap in CPT than in IFT"
    if not pairs:
        have = ", ".join(f"{g[2]} ({g[0]} {g[1].upper()}, base {g[4]})" for g in gaps) or "none"
        return [combine(1, [Part(name, UNTESTABLE, main=True, missing=(
            f"a CPT and an IFT study of the same target domain and base model, each with full "
            f"FT and LoRA that learned (studies with a gap: {have})"))])]
    tests = [_independent(c[3], i[3]) for c, i in pairs]
    evidence = "; ".join(
        f"{c[2]} (CPT) gap {c[3].a:.0%} vs {i[2]} (IFT) {i[3].a:.0%}: difference {t.text()}"
        for (c, i), t in zip(pairs, tests, strict=True))
    part = Part(name, None, evidence, main=True, tests=tuple(tests),
                settle="more items or seeds in the studies compared"
                if any(t.exceeds() is not True for t in tests) else "")
    verdict = combine(1, [part], "", f"each study's {gaps[0][5]}; studies independent")
    text = ("Full finetuning's learning advantage over LoRA (share of its final learning that the "
            "best LoRA misses) is larger in CPT than in IFT.")
    return [replace(verdict, claim=text)]


# --- 2: forgets less -----------------------------------------------------------------------------
def _slope_rows(tokens: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row, the least-squares slope of ``values`` (rows × checkpoints) over ``tokens``
    through the base model's point (0 tokens, 0) and every checkpoint with a value."""
    keep = ~np.isnan(values[0])
    x = np.concatenate([[0.0], tokens[keep]])
    y = np.concatenate([np.zeros((values.shape[0], 1)), values[:, keep]], axis=1)
    centred = x - x.mean()
    return (y - y.mean(axis=1, keepdims=True)) @ centred / float(centred @ centred)


def _forgetting_rows(s: ClaimData, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, forgetting rows × steps) of ``label``'s best-LR curve on the draws."""
    steps, values = s.draws.best_curve(label, "forget")
    curve = s.curve(label).set_index("step")
    tokens = np.array([float(curve["tokens"].get(step, np.nan)) for step in steps])
    return tokens, values


def claim_forgets_less(s: ClaimData) -> ClaimVerdict:
    """Claim 2. Main part: each judged LoRA forgets less than full FT at every budget where
    full FT's forgetting is beyond noise (best LRs), each difference beyond noise. Also: both
    grow with training — forgetting at the first checkpoint above the base model's and the last
    above the first, each beyond noise, for every method — and full FT's grows faster: the
    least-squares slope of forgetting over tokens through the base model's point and every
    checkpoint is larger for full FT than for each LoRA, beyond noise."""
    if (missing := needs_pair(s, 2)) is not None:
        return missing
    noise = s.noise(("forget",))
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
                           Part("full FT's grows faster", UNTESTABLE, missing=same)], s.scope,
                       noise)
    lines, tests = budget_comparison(s, "forget", steps=forgot if changes else None)
    name = "LoRA forgets less at every budget"
    if tests and len(forgot) < len(changes):
        lines.append(f"budgets where full FT's forgetting is within noise of the base are left "
                     f"out ({len(changes) - len(forgot)} of {len(changes)})")
    if tests:
        main = Part(name, None, "; ".join(lines) + f" ({s.frame.forget_label}; ± is the 95% "
                    "interval)", main=True, settle=settle_text(s, "forget", tests),
                    tests=tuple(tests))
    else:
        main = Part(name, UNTESTABLE, missing="full FT and LoRA at the same budgets", main=True)
    return combine(2, [main, *_growth(s)], s.scope, noise)


def _growth(s: ClaimData) -> list[Part]:
    """Claim 2's parts "both grow with training" and "full FT's grows faster"."""
    layout = s.draws.layout
    curves = {label: _forgetting_rows(s, label) for label in [s.ref, *s.judged()]}
    curves = {label: c for label, c in curves.items() if (~np.isnan(c[1][0])).sum() >= 1}
    if s.ref not in curves or len(curves) < 2:
        need = "a measured checkpoint of full FT and of LoRA"
        return [Part("both grow with training", UNTESTABLE, missing=need),
                Part("full FT's grows faster", UNTESTABLE, missing=need)]
    grow_tests, grow_lines = [], []
    for label, (_, values) in curves.items():
        observed = np.flatnonzero(~np.isnan(values[0]))
        first = layout.difference(values[:, observed[0]])
        grow_tests.append(first)
        line = f"{s.name(label)}: first checkpoint {first.text()}"
        if len(observed) >= 2:
            rise = layout.difference(values[:, observed[-1]], values[:, observed[0]])
            grow_tests.append(rise)
            line += f", last − first {rise.text()}"
        grow_lines.append(line)
    grows = Part("both grow with training", None,
                 "forgetting against the base model and its rise from the first to the last "
                 "checkpoint: " + "; ".join(grow_lines), tests=tuple(grow_tests),
                 settle=settle_text(s, "forget", grow_tests))
    slopes = {label: _slope_rows(tokens, values) * 1e6 for label, (tokens, values) in
              curves.items()}
    faster_tests = [layout.difference(slopes[s.ref], slopes[label])
                    for label in curves if label != s.ref]
    per_m = "; ".join(f"{s.name(lab)} {v[0]:+.3g}" for lab, v in slopes.items())
    faster = Part("full FT's grows faster", None,
                  f"forgetting per million tokens (least-squares slope through the base model's "
                  f"point and every checkpoint): {per_m}; full FT − LoRA "
                  + "; ".join(t.text() for t in faster_tests), tests=tuple(faster_tests),
                  settle=settle_text(s, "forget", faster_tests))
    return [grows, faster]


# --- 6: target modules and rank ----------------------------------------------------------------
def _module_cells(s: ClaimData) -> tuple[dict[tuple[str, int], np.ndarray], str]:
    """Final learning on the draws of every plain LoRA (targets, r), and how it was chosen:
    each at its best LR when every one was swept, otherwise all at one LR they share, else
    (no LR shared) each at its best LR, said as not tuned alike."""
    labels = {}
    for label in s.plain_loras():
        targets, r = s.targets(label), s.r(label)
        if targets is not None and r is not None and math.isfinite(s.value(label, "learn")):
            labels[(targets, r)] = label
    draws = s.draws
    if all(len(s.lrs_tried(label)) >= 2 for label in labels.values()):
        return ({key: s.draw(label, "learn") for key, label in labels.items()},
                "each at its best LR (every target set and rank swept)")
    shared = set.intersection(*(set(draws.contending_lrs(label)) for label in labels.values())) \
        if labels else set()
    if shared:
        lr = max(shared, key=lambda x: sum(draws.groups[(lab, x)].last("learn")[0]
                                           for lab in labels.values()))
        return ({key: draws.groups[(label, lr)].last("learn") for key, label in labels.items()},
                f"all at LR {lr:g}, which every one ran (not every one was swept, so best LRs "
                "would compare a tuned method with an untuned one)")
    return ({key: s.draw(label, "learn") for key, label in labels.items()},
            "each at its best LR, though not every one was swept and they share no LR: "
            "an unswept method may be compared at a poor LR")


def claim_modules(s: ClaimData) -> ClaimVerdict:
    """Claim 6 on plain LoRA (default init, no rsLoRA/DoRA, α = 2r). Main part: at each rank
    with two or more target sets, final learning orders all > mlp > attention, each step beyond
    noise. Also: the mean spread of learning across target sets at one rank exceeds the mean
    spread across ranks for one target set, beyond noise. Methods are compared at their best LRs
    only when each was swept, otherwise at an LR they share (``_module_cells``)."""
    cells, chosen = _module_cells(s)
    layout = s.draws.layout
    by_rank: dict[int, dict[str, np.ndarray]] = {}
    by_target: dict[str, dict[int, np.ndarray]] = {}
    for (target, r), rows in cells.items():
        by_rank.setdefault(r, {})[target] = rows
        by_target.setdefault(target, {})[r] = rows
    rank_rows = {r: t for r, t in sorted(by_rank.items()) if len(t) >= 2}
    scope = "LoRA = plain LoRA (default init, α = 2r, no rsLoRA or DoRA) on every target set"
    if not rank_rows:
        main = Part("all > MLP > attention", UNTESTABLE, main=True,
                    missing="plain LoRA runs on two or more target-module sets at one rank")
        return combine(6, [main, Part("modules matter more than rank", UNTESTABLE, missing=(
            "plain LoRA at two or more ranks and two or more target sets"))], scope)
    lines, tests = [], []
    for r, targets in rank_rows.items():
        order = sorted(targets, key=lambda t: -TARGET_ORDER[t])  # all, mlp, attention
        steps = []
        for upper, lower in zip(order, order[1:], strict=False):
            diff = layout.difference(targets[upper], targets[lower])
            tests.append(diff)
            steps.append(f"{upper} − {lower} {diff.text()}")
        lines.append(f"r={r}: " + " vs ".join(f"{t} {fmt(targets[t][0])}" for t in order)
                     + f" ({'; '.join(steps)})")
    main = Part("all > MLP > attention", None, f"final learning, {chosen}: " + "; ".join(lines),
                main=True, settle=settle_text(s, "learn", tests), tests=tuple(tests))
    target_rows = {t: r for t, r in by_target.items() if len(r) >= 2}
    if not target_rows:
        matters = Part("modules matter more than rank", UNTESTABLE,
                       missing="plain LoRA at two or more ranks and two or more target sets")
    else:
        def spread(groups: list[dict]) -> np.ndarray:
            return np.mean([np.max(np.stack(list(g.values())), axis=0)
                            - np.min(np.stack(list(g.values())), axis=0) for g in groups],
                           axis=0)

        module_spread = spread(list(rank_rows.values()))
        rank_spread = spread(list(target_rows.values()))
        diff = layout.difference(module_spread, rank_spread)
        matters = Part(
            "modules matter more than rank", None,
            f"mean spread of final learning across target sets at one rank "
            f"{fmt(module_spread[0])} vs across ranks for one target set {fmt(rank_spread[0])}: "
            f"difference {diff.text()}", tests=(diff,), settle=settle_text(s, "learn", [diff]))
    return combine(6, [main, matters], scope, s.noise(("learn",)))


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
