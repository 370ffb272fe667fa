"""Claim 5 of the checklist: LoRA's best LR against full finetuning's, and LoRA's sensitivity
to the LR. The best LR is judged on its *plausible* set (every LR not beaten by another beyond
noise), so that two LRs tied within noise never decide the ratio; the sensitivity is compared on
the offsets from each best LR that both sweeps share, so that a wider sweep neither helps nor
hurts. Both read the study's noise draws (``learnforget.analysis.draws``). When successive
halving cut a sweep (runs stopped early), the best LR is chosen among the LRs measured at the
last budget and the sensitivity is read at the last rung where every LR of both methods was
measured, and its evidence says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from learnforget.analysis.claim_data import ClaimData, needs_pair, settle_text
from learnforget.analysis.verdicts import (
    ALPHA,
    CPT_SIMILAR,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    SEVERAL,
    UNTESTABLE,
    ClaimVerdict,
    Part,
    combine,
    interval_verdict,
)


# --- 5: learning rates ---------------------------------------------------------------------------
def plausible_best(s: ClaimData, label: str) -> list[float]:
    """The LRs of ``label`` that may be its best (``Draws.plausible_best`` at the claims'
    level): LRs whose runs all diverged never are, nor LRs that successive halving stopped
    before the last budget."""
    return s.draws.plausible_best(label, ALPHA)


def _bounds(s: ClaimData, label: str, plausible: list[float]) -> tuple[float, float]:
    """Where ``label``'s best LR can lie: (lower, upper), from its plausible best LRs; a
    plausible LR at the edge of the LRs tried opens that side (a wider sweep might find a
    better one)."""
    tried = s.lrs_tried(label)
    low = 0.0 if math.isclose(min(plausible), min(tried)) else min(plausible)
    high = math.inf if math.isclose(max(plausible), max(tried)) else max(plausible)
    return low, high


def _ratio_rule(s: ClaimData, several: float) -> tuple[str, float, float]:
    """(rule text, lowest allowed ratio, highest allowed ratio) of LoRA's best LR over full FT's
    for the study's regime: IFT ≥ ``several``×; CPT within ``CPT_SIMILAR``× either way."""
    study = s.frame.study
    if study is not None and study.target.regime == "cpt":
        return (f"CPT: within {CPT_SIMILAR:g}× of full FT's (the paper's CPT best LRs: equal in "
                f"code, 4× in math)", 1 / CPT_SIMILAR, CPT_SIMILAR)
    return (f"IFT: ≥ {several:g}× full FT's (the paper's IFT best LRs: 4–10×)", several, math.inf)


def _lr_ratio_part(s: ClaimData, several: float) -> Part:
    """Claim 5's main part: each swept LoRA's best LR over full FT's, judged on the plausible
    best LRs of both (interval rule: holds when every plausible ratio obeys the regime's rule,
    fails when none does)."""
    rule_text, lowest, highest = _ratio_rule(s, several)
    full_plausible = plausible_best(s, s.ref)
    full_low, full_high = _bounds(s, s.ref, full_plausible)
    # A LoRA trained at one LR only (an extra axis of the grid) says nothing about its best LR.
    swept = [label for label in s.judged() if len(s.lrs_tried(label)) >= 2]
    lines, states = [], []
    for label in swept:
        plausible = plausible_best(s, label)
        low, high = _bounds(s, label, plausible)
        at_least = low / full_high if full_high < math.inf else 0.0
        at_most = high / full_low if full_low > 0 else math.inf
        state = interval_verdict(at_least, at_most, lowest, highest)
        states.append(state)
        ratio = s.best[label] / s.best[s.ref]
        lines.append(f"{s.name(label)} {s.best[label]:g} = {ratio:.3g}× full FT's "
                     f"{s.best[s.ref]:g} (plausible best LRs {_lrs(plausible)} vs "
                     f"{_lrs(full_plausible)}: ratio {_span(at_least, at_most)})")
    rule = (f"; rule, {rule_text}, judged on every LR whose final learning is not below the "
            "best's beyond noise; a plausible best LR at a sweep's edge leaves that side open")
    single = [s.name(label) for label in s.judged() if label not in swept]
    if single:
        rule += f"; trained at one LR, not judged: {', '.join(single)}"
    name = "LoRA's best LR relative to full FT's"
    if not swept:
        return Part(name, UNTESTABLE, main=True, missing="a LoRA trained at two or more LRs" + rule)
    verdict = FAILS if FAILS in states else INCONCLUSIVE if INCONCLUSIVE in states else HOLDS
    return Part(name, verdict, "best LR " + "; ".join(lines) + rule, main=True,
                settle="more items or seeds (to tell the plausible best LRs apart), or sweeps "
                "that extend past the best LR on both sides" if verdict == INCONCLUSIVE else "")


def _lrs(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _span(low: float, high: float) -> str:
    return f"{low:.3g}× … {'∞' if math.isinf(high) else f'{high:.3g}×'}"


SAME_OFFSET = 0.05  # decades: two LRs this close to the same offset from their best LR match


def _offsets(s: ClaimData, label: str) -> dict[float, float]:
    """{offset in decades from the observed best LR (rounded to ``SAME_OFFSET``): LR} over
    every LR tried for ``label`` except the best."""
    best = s.best[label]
    return {round(math.log10(lr / best) / SAME_OFFSET) * SAME_OFFSET: lr
            for lr in s.lrs_tried(label) if not math.isclose(lr, best)}


def _sensitivity_rows(s: ClaimData, label: str, offsets: list[float],
                      step: int | None = None) -> np.ndarray:
    """Per row, the mean share of the best LR's final learning (its learning at ``step`` when
    given) lost per decade at ``offsets`` from the best LR (an LR whose runs all diverged loses
    all of it)."""
    draws = s.draws
    top = draws.groups[(label, s.best[label])].at("learn", step)
    lrs = _offsets(s, label)
    shares = []
    for offset in offsets:
        group = draws.groups.get((label, lrs[offset]))
        if group is None:  # no usable run at that LR: diverged (or failed)
            lost = np.ones_like(top)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                lost = (top - group.at("learn", step)) / top
        shares.append(lost / abs(offset))
    return np.mean(shares, axis=0)


def _sensitivity_part(s: ClaimData) -> Part:
    """Claim 5's part "LoRA more LR-sensitive", on the offsets from the best LR that both
    sweeps share (so that a wider sweep does not read as more or less sensitive)."""
    name = "LoRA more LR-sensitive"
    swept = [label for label in [s.ref, *s.judged()]
             if len(s.lrs_tried(label)) >= 2 and s.value(label, "learn") > 0]
    if s.ref not in swept or len(swept) < 2:
        return Part(name, UNTESTABLE,
                    missing="LR sweeps (two or more LRs) of full FT and LoRA that learned")
    layout = s.draws.layout
    full_offsets = _offsets(s, s.ref)
    tests, lines, unmatched = [], [], []
    for label in swept[1:]:
        shared = sorted(set(full_offsets) & set(_offsets(s, label)))
        if not shared:
            unmatched.append(s.name(label))
            continue
        step, rung = _sensitivity_step(s, label)
        lora = _sensitivity_rows(s, label, shared, step)
        full = _sensitivity_rows(s, s.ref, shared, step)
        diff = layout.difference(lora, full)
        tests.append(diff)
        lines.append(f"{s.name(label)} {lora[0]:.2f} vs full FT {full[0]:.2f} per decade at "
                     f"{', '.join(f'{o:+.2g}' for o in shared)} decades from each best LR"
                     f"{rung} (difference {diff.text()})")
    missing = (f"LRs at the same offsets (in decades) from the best LR as full FT's sweep for "
               f"{', '.join(unmatched)}" if unmatched else "")
    if not tests:
        return Part(name, UNTESTABLE, missing=missing)
    return Part(name, None, "share of the best final learning lost per decade of LR away from "
                "the best LR (diverged LRs lose all), on the offsets both sweeps share: "
                + "; ".join(lines), missing=missing, tests=tuple(tests),
                settle=settle_text(s, "learn", tests))


def _sensitivity_step(s: ClaimData, label: str) -> tuple[int | None, str]:
    """(the step the sensitivity of ``label`` against full FT is read at, how the evidence says
    so): each LR's last step, or — when successive halving stopped LRs of either method — the
    last rung where every LR of both was measured."""
    draws = s.draws
    if not (draws.stopped(s.ref) or draws.stopped(label)):
        return None, ""
    step = draws.shared_step([s.ref, label])
    if step is None:
        return None, ", each LR at its last step (no step measured every LR of both)"
    return step, (f", at step {step}, the last rung where every LR of both methods was measured "
                  "(successive halving stopped the others there)")


def claim_learning_rates(s: ClaimData, several: float = SEVERAL) -> ClaimVerdict:
    """Claim 5. Main part, as the paper states it per regime: in IFT each judged LoRA's best LR
    ≥ ``several`` × full FT's; in CPT within ``CPT_SIMILAR``× of it — judged on every LR that
    may be the best (not below the best beyond noise) and open at a sweep's edge. Also: each
    LoRA loses a larger share of its best learning per decade of LR than full FT does, on the
    offsets from the best LR that both sweeps share, beyond noise."""
    if (missing := needs_pair(s, 5)) is not None:
        return missing
    return combine(5, [_lr_ratio_part(s, several), _sensitivity_part(s)], s.scope,
                   s.noise(("learn",)))
